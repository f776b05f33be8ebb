"""The ground-truth benchmark: exactness and zero-shot segmentation against the toy world's true masks.

``cliplens toy bench`` / :func:`run_bench` draws held-out scenes, decomposes each image embedding,
and scores every *map method* against the exact object masks the scene generator knows.

**Scenes.** ``n`` scenes of the ``"test"`` stream (:data:`cliplens.toyworld.scenes.STREAMS`),
which training (``"train"``), ``toy eval`` (``"eval"``) and the spurious split (streams 20/21)
never draw from, with their own seed (default 2024; training's default is 0). Each scene has 2-4
objects (``objects``), rendered at the model's input size so that the masks line up with the
model's pixels exactly. An object's *text* is ``"a {colour} {shape}"`` (``"an orange star"``);
objects sharing a text are one target whose mask is the union of their *visible* masks; an
object hidden entirely by others is no target. Scenes with fewer than two distinct visible texts
are passed over (the next index is drawn), so every scene has something to contrast with.

**Rows.** Each row is a map method of :mod:`cliplens.maps` with its settings (:data:`DEFAULT_ROWS`):
CLIP Surgery with both surgeries, with architecture surgery only, with feature surgery only; the
decomposition map; raw token similarity (the unmodified model's dense tokens); every dense successor
(MaskCLIP, SCLIP, ClearCLIP, NACLIP with and without its Gaussian prior, ResCLIP's RCS, GEM) and gradient
method (GradCAM, Chefer et al., LeGrad) with its paper's defaults; two text-independent attention maps
(the CLS row of the last block's attention, attention rollout: one map for every text, so no
segmentation row); and baselines that
ignore the text (``uniform``: a constant map; ``gaussian``: a centred Gaussian, ``sigma`` = side / 4;
``nothing``: predicts no pixel). Each method scores the *contrast set*'s texts with its own default
contrast (the decomposition map and token similarity subtract the mean map of the other texts, as
the paper does; CLIP Surgery's feature surgery removes what the texts share).

**Contrast set** (``contrast``): ``"classes"`` (default), all 56 colour–shape texts, of which the
scene's objects are scored: what a user without the answer would do; ``"scene"``, only the texts of
the scene's visible objects: an *oracle* that knows which objects are there (its rows are labelled so).

**Open-vocabulary segmentation** (``seg_miou``, ``seg_pixel_acc``): every pixel labelled with the best of
the 56 colour–shape texts and the 6 background texts (``"a striped background"``, …), by the raw maps
upsampled bilinearly (a background text means background); mIoU over the classes present in the
ground truth or the predictions, from one confusion matrix over all scenes
(:class:`~cliplens.evaluation.segmentation.ConfusionMatrix`). Text-independent baselines have no
argmax (``nothing`` labels everything background).

**Protocol** (the segmentation code of Gandelsman et al., per object instead of per predicted
class): upsample the map bilinearly to pixels (``align_corners=False``); clip below 0; min-max
normalise; foreground = normalised map >= its mean. Two edge cases: a constant map predicts
every pixel (the uniform baseline); a map with nothing above 0 predicts nothing (clipping left
nothing; the original code divides by zero there and predicts nothing too). Per object: IoU of the foreground with the mask, pixel
accuracy, and average precision of the normalised (clipped) map as a score for the mask
(scikit-learn's ``average_precision_score`` when installed, else :func:`average_precision_np`, the
same definition). Reported: ``miou`` (mean over objects), ``pixel_acc`` (mean over objects), ``map``
(mean AP over objects) and ``miou_fgbg``, the original code's IoU: foreground and background IoU
each pooled over all objects, then averaged. Exactness is the largest relative error
``‖Σ parts − z‖ / ‖z‖`` of the decomposition over the scenes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError, MissingDependencyError
from cliplens.evaluation.segmentation import (
    ConfusionMatrix,
    average_precision_np,
    score_map,
    sklearn_average_precision,
)
from cliplens.experiments.choices import BENCH_N, BENCH_SEED
from cliplens.maps import MapMethod, Surgery, Targets, TextEmbeddings, contrast_others, get_map, map_names
from cliplens.models import load
from cliplens.progress import progress_bar
from cliplens.toyworld.captions import background_texts, class_texts, object_text
from cliplens.toyworld.scenes import SceneFactors, render_scene, sample_scene

__all__ = [
    "BenchScene", "DEFAULT_ROWS", "bench_scenes", "class_texts", "default_rows", "format_rows", "object_text",
    "run_bench", "DEFAULT_SEED", "DEFAULT_N", "STREAM",
]

STREAM = "test"
DEFAULT_SEED = BENCH_SEED
DEFAULT_N = BENCH_N
def default_rows() -> dict[str, MapMethod]:
    """The table's rows: ``{row name: method}`` (CLIP Surgery with its default 6 blocks: every block of the
    toy CLIP)."""
    return {
        "surgery": Surgery(),
        "surgery (architecture only)": Surgery(feature="none"),
        "surgery (feature only)": Surgery(architecture=False),
        "decomposition": get_map("decomposition"),
        "token similarity": get_map("token-similarity"),
        "MaskCLIP": get_map("maskclip"),
        "SCLIP": get_map("sclip"),
        "ClearCLIP": get_map("clearclip"),
        "NACLIP": get_map("naclip"),
        "NACLIP (no Gaussian prior)": get_map("naclip", gaussian=False),
        "ResCLIP (RCS)": get_map("resclip"),
        "SC-CLIP": get_map("sc-clip"),
        "SFP": get_map("sfp"),
        "CLIPer (no diffusion)": get_map("cliper"),
        "GEM": get_map("gem"),
        "GradCAM": get_map("gradcam"),
        "Chefer et al.": get_map("chefer"),
        "LeGrad": get_map("legrad"),
        "raw attention (CLS row)": get_map("raw-attention"),
        "attention rollout": get_map("rollout"),
        "uniform": get_map("uniform"),
        "gaussian": get_map("gaussian"),
        "nothing": get_map("nothing"),
    }


DEFAULT_ROWS: tuple[str, ...] = tuple(default_rows())


# --------------------------------------------------------------------------- scenes
@dataclass
class BenchScene:
    """One held-out scene: its factors, pixels, and one target per distinct visible object text."""

    index: int
    scene: SceneFactors
    image: np.ndarray  # uint8 [S, S, 3]
    texts: list[str]  # distinct visible object texts, in scene order
    masks: np.ndarray  # bool [len(texts), S, S], union of the visible masks of the objects with that text


def bench_scenes(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, *, image_size: int = 64,
                 objects: Sequence[int] = (2, 3, 4), max_tries: int = 100) -> list[BenchScene]:
    """The benchmark's ``n`` held-out scenes (deterministic in ``seed``; see the module docs)."""
    if n < 1:
        raise InvalidInputError(f"n must be at least 1, got {n}")
    counts = tuple(int(c) for c in objects)
    if not counts or min(counts) < 2 or max(counts) > 4:
        raise InvalidInputError(f"objects per scene must be in 2..4, got {objects}")
    out: list[BenchScene] = []
    index = 0
    while len(out) < n:
        if index >= max_tries * n:
            raise RuntimeError(f"only {len(out)} usable scenes in {index} draws")
        sc = sample_scene(seed, index, stream=STREAM, count=counts, image_size=image_size)
        img, masks = render_scene(sc)
        texts: list[str] = []
        target: dict[str, np.ndarray] = {}
        for o, vis in zip(sc.objects, masks["visible"], strict=True):
            if not vis.any():
                continue
            t = object_text(o.colour, o.shape)
            if t not in target:
                texts.append(t)
                target[t] = vis.copy()
            else:
                target[t] |= vis
        if len(texts) >= 2:
            out.append(BenchScene(index, sc, img, texts, np.stack([target[t] for t in texts])))
        index += 1
    return out


# --------------------------------------------------------------------------- the benchmark
def resolve_methods(methods: Sequence[str | MapMethod] | Mapping[str, MapMethod | str] | None) -> dict[str, MapMethod]:
    """``{row name: method}`` from names, instances or a mapping (default: :func:`default_rows`)."""
    if methods is None:
        return default_rows()
    if isinstance(methods, Mapping):
        return {name: get_map(m) for name, m in methods.items()}
    rows = default_rows()
    out: dict[str, MapMethod] = {}
    for m in methods:
        if isinstance(m, str) and m in rows:
            out[m] = rows[m]
        elif isinstance(m, str) and m not in map_names():
            raise InvalidInputError(f"unknown map method {m!r}; rows: {', '.join(rows)}; methods: {', '.join(map_names())}")
        else:
            method = get_map(m)
            out[m if isinstance(m, str) else method.name] = method
    return out


def _contrast(method: MapMethod, raw: Tensor) -> Tensor:
    """The method's default contrast over the texts (axis 1)."""
    if method.text_dependent and method.default_contrast == "others":
        return contrast_others(raw, dim=1)
    return raw


def _label_image(bs: BenchScene, classes: list[str]) -> np.ndarray:
    """Ground truth: 0 background, 1 + class index where an object of that text is visible."""
    labels = np.zeros(bs.masks.shape[1:], dtype=np.int64)
    for t, m in zip(bs.texts, bs.masks, strict=True):
        labels[m] = 1 + classes.index(t)
    return labels


@torch.no_grad()
def run_bench(
    model: ImageTextModel | str = "toy",
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    *,
    pretrained: str | None = None,
    methods: Sequence[str | MapMethod] | Mapping[str, MapMethod | str] | None = None,
    contrast: str = "classes",
    objects: Sequence[int] = (2, 3, 4),
    clip: bool = True,
    device: str = "cpu",
    ap_backend: str = "numpy",
    batch_size: int = 50,
    details: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the ground-truth benchmark (see the module docs for the protocol).

    Args:
        model: a model name for :func:`cliplens.load` (default the embedded ``"toy"``) or a loaded adapter.
        n: held-out scenes; seed: their seed (stream ``"test"``).
        methods: row names of :func:`default_rows`, map-method names or instances, or ``{row name: method}``.
        contrast: ``"classes"`` (all 56 colour-shape texts) or ``"scene"`` (the scene's object texts: an oracle).
        ap_backend: ``"numpy"`` (:func:`~cliplens.evaluation.segmentation.average_precision_np`; when
            scikit-learn is installed, the first object of every method is also scored by
            ``average_precision_score`` and a disagreement above 1e-9 raises) or ``"sklearn"``.
        details: also return one record per object (``"objects"``) with each method's scores.

    Returns:
        ``{"model", "n", "seed", "stream", "contrast", "protocol", "exactness", "rows": [{"method",
        "baseline", "miou", "miou_fgbg", "pixel_acc", "map", "seg_miou", "seg_pixel_acc", "n_objects",
        "seconds", "settings"}, ...], "beats_baselines": {method: bool}, ...}``.
    """
    if contrast not in ("scene", "classes"):
        raise InvalidInputError(f"contrast must be 'classes' or 'scene', got {contrast!r}")
    sk_ap = sklearn_average_precision()
    if ap_backend == "sklearn":
        if sk_ap is None:
            raise MissingDependencyError("ap_backend='sklearn' needs scikit-learn: pip install scikit-learn")
        ap_fn = sk_ap
    elif ap_backend == "numpy":
        ap_fn = average_precision_np
    else:
        raise InvalidInputError(f"ap_backend must be 'numpy' or 'sklearn', got {ap_backend!r}")
    ap_checked = 0
    adapter = load(model, pretrained=pretrained, device=device) if isinstance(model, str) else model
    fns = resolve_methods(methods)
    left_out: dict[str, str] = {}
    for row, method in list(fns.items()):
        why = method.unsupported(adapter)
        if why and methods is None:  # the default rows: those that cannot run on this model are left out, saying why
            left_out[row] = why
            del fns[row]
        elif why:  # a row asked for by name is refused, with the reason
            raise InvalidInputError(f"the row {row!r} cannot run on this model: {why}")
    ih, iw = adapter.vision.image_size
    if ih != iw:
        raise InvalidInputError(f"the toy-world scenes are square; this model's input is {ih}x{iw}")
    t0 = time.perf_counter()
    scenes = bench_scenes(n, seed, image_size=ih, objects=objects)
    classes = class_texts()
    seg_texts = classes + background_texts()
    all_dirs = Targets.texts(seg_texts).embed(adapter, with_empty=any(m.needs_empty for m in fns.values()))
    class_dirs = TextEmbeddings(all_dirs.directions[:len(classes)], tuple(classes), all_dirs.empty)

    worst = 0.0
    acc = {m: {"iou": [], "pixel_acc": [], "ap": [], "inter_fg": 0, "union_fg": 0, "inter_bg": 0, "union_bg": 0,
               "seconds": 0.0} for m in fns}
    seg = {m: ConfusionMatrix(len(classes) + 1) for m in fns}
    records: list[dict[str, Any]] = []
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("bench", total=len(scenes))
        for start in range(0, len(scenes), batch_size):
            batch = scenes[start:start + batch_size]
            px = adapter.preprocess([s.image for s in batch])
            worst = max(worst, adapter.decompose(px, spatial=True).check(rtol=float("inf")))
            gt = [_label_image(bs, classes) for bs in batch]
            per_obj = [[{"scene": bs.index, "text": t, "mask_fraction": float(bs.masks[j].mean()), "scores": {}}
                        for j, t in enumerate(bs.texts)] for bs in batch]
            for name, method in fns.items():
                s0 = time.perf_counter()
                maps = _object_maps(name, method, adapter, px, batch, class_dirs, contrast)
                _segmentation(name, method, adapter, px, all_dirs, len(classes), gt, seg[name])
                acc[name]["seconds"] += time.perf_counter() - s0
                for b, bs in enumerate(batch):
                    for j in range(len(bs.texts)):
                        sc = score_map(maps[b][j], bs.masks[j], clip=clip, ap=ap_fn)
                        if start == 0 and b == 0 and j == 0 and sk_ap is not None and ap_fn is not sk_ap:
                            ref = sk_ap(bs.masks[j], sc["normalized"])
                            if abs(ref - sc["ap"]) > 1e-9:
                                raise AssertionError(f"average precision disagrees with scikit-learn for {name!r}: "
                                                     f"{sc['ap']!r} vs {ref!r}")
                            ap_checked += 1
                        a = acc[name]
                        for key in ("iou", "pixel_acc", "ap"):
                            a[key].append(sc[key])
                        for key in ("inter_fg", "union_fg", "inter_bg", "union_bg"):
                            a[key] += sc[key]
                        per_obj[b][j]["scores"][name] = {key: sc[key] for key in ("iou", "pixel_acc", "ap")}
            records += [r for rs in per_obj for r in rs]
            bar.advance(task, len(batch))

    rows_out = []
    for name, a in acc.items():
        method = fns[name]
        cm = seg[name]
        has_seg = method.text_dependent or method.name == "nothing"
        rows_out.append({
            "method": name, "baseline": method.baseline, "text_dependent": method.text_dependent,
            "oracle": contrast == "scene" and method.text_dependent,
            "miou": float(np.mean(a["iou"])),
            "miou_fgbg": 0.5 * (a["inter_fg"] / max(a["union_fg"], 1) + a["inter_bg"] / max(a["union_bg"], 1)),
            "pixel_acc": float(np.mean(a["pixel_acc"])),
            "map": float(np.mean(a["ap"])),
            "seg_miou": cm.miou() if has_seg else None,
            "seg_pixel_acc": cm.pixel_accuracy() if has_seg else None,
            "n_objects": len(a["iou"]),
            "seconds": a["seconds"],
            "settings": method.describe(),
        })
    base = [r for r in rows_out if r["baseline"]]
    beats = {r["method"]: all(r["miou"] > b["miou"] for b in base)
             for r in rows_out if not r["baseline"]} if base else {}
    out: dict[str, Any] = {
        "model": getattr(adapter, "name", str(model)), "weights": getattr(adapter, "weights", ""),
        "random_weights": bool(getattr(adapter, "random_weights", False)),
        "n": len(scenes), "seed": seed, "stream": STREAM, "contrast": contrast,
        "objects_per_scene": list(objects), "n_objects": len(records), "clip": clip,
        "protocol": (f"per object: its text's map ({'contrast set: the scene' + chr(39) + 's object texts (oracle)' if contrast == 'scene' else 'contrast set: all 56 colour-shape texts'}, "
                     "each method's own contrast); bilinear upsampling to pixels; clip < 0; min-max; foreground = map "
                     ">= its mean (nowhere if no value > 0); IoU, pixel accuracy, AP per object then averaged; "
                     "miou_fgbg: fg and bg IoU pooled over objects, averaged. Segmentation: argmax over the 56 "
                     "colour-shape texts and 6 background texts of the raw maps upsampled bilinearly; mIoU over "
                     "classes in ground truth or prediction, one confusion matrix over all scenes"),
        "exactness": worst,
        "ap_backend": ap_backend, "ap_checked_against_sklearn": ap_checked,
        "rows": rows_out,
        "left_out": left_out,
        "beats_baselines": beats,
        "seconds": time.perf_counter() - t0,
    }
    if details:
        out["objects"] = records
    return out


def _object_maps(name: str, method: MapMethod, adapter: Any, px: Tensor, batch: list[BenchScene],
                 classes: TextEmbeddings, contrast: str) -> list[Tensor]:
    """Per scene, its objects' maps ``[objects, h, w]`` under the contrast set."""
    if contrast == "classes":
        raw = _contrast(method, _checked_raw(name, method, adapter, px, classes))
        return [raw[b, [classes.labels.index(t) for t in bs.texts]] for b, bs in enumerate(batch)]
    out = []
    for b, bs in enumerate(batch):
        idx = [classes.labels.index(t) for t in bs.texts]
        texts = TextEmbeddings(classes.directions[idx], tuple(bs.texts), classes.empty)
        out.append(_contrast(method, _checked_raw(name, method, adapter, px[b:b + 1], texts))[0])
    return out


def _checked_raw(name: str, method: MapMethod, adapter: Any, px: Tensor, texts: TextEmbeddings) -> Tensor:
    raw = method.raw(adapter, px, texts)
    if raw.dim() != 4 or raw.shape[:2] != (px.shape[0], texts.directions.shape[0]):
        raise InvalidInputError(f"map method {name!r} returned shape {tuple(raw.shape)}; expected "
                                f"[{px.shape[0]}, {texts.directions.shape[0]}, h, w] (one map per image and text)")
    return raw.float().cpu()


def _segmentation(name: str, method: MapMethod, adapter: Any, px: Tensor, texts: TextEmbeddings, num_classes: int,
                  gt: list[np.ndarray], cm: ConfusionMatrix) -> None:
    """Open-vocabulary segmentation of the batch over classes and background texts, into ``cm``."""
    if not method.text_dependent:
        if method.name == "nothing":
            for g in gt:
                cm.update(np.zeros_like(g), g)
        return
    raw = _contrast(method, _checked_raw(name, method, adapter, px, texts))
    H, W = gt[0].shape
    up = F.interpolate(raw, size=(H, W), mode="bilinear", align_corners=False) if raw.shape[-2:] != (H, W) else raw
    arg = up.argmax(1)  # [B, H, W]
    pred = torch.where(arg < num_classes, arg + 1, torch.zeros_like(arg))
    for b, g in enumerate(gt):
        cm.update(pred[b], g)


def format_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows ``(method, mIoU, mIoU fg/bg, pixel acc, mAP, seg mIoU, seg pixel acc, beats baselines)`` in
    percent (an oracle row is labelled so)."""
    rows = []
    any_baseline = any(r["baseline"] for r in result["rows"])

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    for r in result["rows"]:
        if r["baseline"]:
            verdict = "baseline"
        elif not any_baseline:
            verdict = "n/a"  # no baseline in this run
        else:
            verdict = "yes" if result["beats_baselines"].get(r["method"]) else "NO"
        name = r["method"] + (" (oracle: the scene's objects)" if r.get("oracle") else "")
        rows.append((name, pct(r["miou"]), pct(r["miou_fgbg"]), pct(r["pixel_acc"]), pct(r["map"]),
                     pct(r.get("seg_miou")), pct(r.get("seg_pixel_acc")), verdict))
    return rows
