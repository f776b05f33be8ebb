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

**Map methods** are those of :mod:`cliplens.maps` (any registered name, or a
:class:`~cliplens.maps.MapMethod` instance): each gives raw score maps ``[B, T, h, w]`` for the
contrast set's texts (below). For text-dependent methods the map of each text is then its raw
map minus the mean over the other texts of the contrast set
(:func:`cliplens.maps.contrast_others`; the paper subtracts the mean over *all* classes, itself
included: the same map times ``(T-1)/T``, identical after normalisation). :data:`BASELINES`
(``uniform``: a constant map; ``gaussian``: a centred Gaussian, ``sigma`` = side / 4) ignore the
text and are the rows every real method must beat. The methods and the metrics
(:mod:`cliplens.evaluation.segmentation`) live outside the toy world; this module only draws
the scenes and runs the protocol.

**Contrast set** (``contrast``): ``"scene"`` (default), the distinct texts of the scene's visible
objects; ``"classes"``, the fixed set of all colour-shape texts (56), of which the scene's are scored.

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
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from cliplens.errors import InvalidInputError, MissingDependencyError
from cliplens.evaluation.segmentation import average_precision_np, score_map, sklearn_average_precision
from cliplens.maps import MapMethod, contrast_others, get_map, map_names
from cliplens.models import load
from cliplens.toyworld.captions import object_phrase
from cliplens.toyworld.scenes import COLOURS, SHAPES, SceneFactors, render_scene, sample_scene

__all__ = [
    "BASELINES", "BenchScene", "bench_scenes", "class_texts", "object_text", "run_bench", "format_rows",
    "DEFAULT_METHODS", "DEFAULT_SEED", "DEFAULT_N", "STREAM",
]

STREAM = "test"
DEFAULT_SEED = 2024
DEFAULT_N = 500
#: the rows of the table by default
DEFAULT_METHODS: tuple[str, ...] = ("decomposition", "uniform", "gaussian")
#: rows that other methods must beat
BASELINES: tuple[str, ...] = ("uniform", "gaussian")

_TEXT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _encode(model: Any, texts: Sequence[str]) -> Tensor:
    """Unit-norm text embeddings ``[T, E]``, cached per model (the contrast sets repeat)."""
    try:
        cache = _TEXT_CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        cache = {}
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        for t, e in zip(missing, model.encode_text(missing), strict=True):
            cache[t] = e
    return torch.stack([cache[t] for t in texts])


# --------------------------------------------------------------------------- scenes
@dataclass
class BenchScene:
    """One held-out scene: its factors, pixels, and one target per distinct visible object text."""

    index: int
    scene: SceneFactors
    image: np.ndarray  # uint8 [S, S, 3]
    texts: list[str]  # distinct visible object texts, in scene order
    masks: np.ndarray  # bool [len(texts), S, S], union of the visible masks of the objects with that text


def object_text(colour: str, shape: str) -> str:
    """``"a red circle"`` / ``"an orange star"``."""
    return object_phrase(colour, shape)


def class_texts() -> list[str]:
    """The fixed class set: every colour-shape text (colours outer, shapes inner)."""
    return [object_text(c, s) for c in COLOURS for s in SHAPES]


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
def resolve_methods(methods: Sequence[str | MapMethod] | Mapping[str, MapMethod] | None) -> dict[str, MapMethod]:
    """``{row name: method}`` from names, instances or a mapping (default: :data:`DEFAULT_METHODS`)."""
    if methods is None:
        methods = DEFAULT_METHODS
    if isinstance(methods, Mapping):
        return {name: get_map(m) for name, m in methods.items()}
    out: dict[str, MapMethod] = {}
    for m in methods:
        if isinstance(m, str) and m not in map_names():
            raise InvalidInputError(f"unknown map method {m!r}; known: {', '.join(map_names())}")
        method = get_map(m)
        out[m if isinstance(m, str) else method.name] = method
    return out


@torch.no_grad()
def run_bench(
    model: Any = "toy",
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    *,
    pretrained: str | None = None,
    methods: Sequence[str | MapMethod] | Mapping[str, MapMethod] | None = None,
    contrast: str = "scene",
    objects: Sequence[int] = (2, 3, 4),
    clip: bool = True,
    device: str = "cpu",
    ap_backend: str = "numpy",
    details: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the ground-truth benchmark (see the module docs for the protocol).

    Args:
        model: a model name for :func:`cliplens.load` (default the embedded ``"toy"``) or a loaded adapter.
        n: held-out scenes; seed: their seed (stream ``"test"``).
        methods: map-method names or instances, or ``{row name: method}`` (default :data:`DEFAULT_METHODS`).
        contrast: ``"scene"`` (the scene's object texts) or ``"classes"`` (all colour-shape texts).
        ap_backend: ``"numpy"`` (:func:`~cliplens.evaluation.segmentation.average_precision_np`; when
            scikit-learn is installed, the first object of every method is also scored by
            ``average_precision_score`` and a disagreement above 1e-9 raises) or ``"sklearn"``.
        details: also return one record per object (``"objects"``) with each method's scores.

    Returns:
        ``{"model", "n", "seed", "stream", "contrast", "protocol", "exactness", "rows": [{"method",
        "baseline", "miou", "miou_fgbg", "pixel_acc", "map", "n_objects", "seconds"}, ...],
        "beats_baselines": {method: bool}, ...}``.
    """
    if contrast not in ("scene", "classes"):
        raise InvalidInputError(f"contrast must be 'scene' or 'classes', got {contrast!r}")
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
    ih, iw = adapter.vision.image_size
    if ih != iw:
        raise InvalidInputError(f"the toy-world scenes are square; this model's input is {ih}x{iw}")
    t0 = time.perf_counter()
    scenes = bench_scenes(n, seed, image_size=ih, objects=objects)
    all_texts = class_texts()

    # exactness over every scene, in batches
    worst = 0.0
    pixels_all = []
    for i in range(0, len(scenes), 64):
        px = adapter.preprocess([s.image for s in scenes[i : i + 64]])
        pixels_all.append(px)
        worst = max(worst, adapter.decompose(px, spatial=True).check(rtol=float("inf")))

    acc = {m: {"iou": [], "pixel_acc": [], "ap": [], "inter_fg": 0, "union_fg": 0, "inter_bg": 0, "union_bg": 0,
               "seconds": 0.0} for m in fns}
    records: list[dict[str, Any]] = []
    pixels = torch.cat(pixels_all)
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("bench", total=len(scenes))
        for k, bs in enumerate(scenes):
            px = pixels[k : k + 1]
            if contrast == "scene":
                texts, rows = bs.texts, list(range(len(bs.texts)))
            else:
                texts, rows = all_texts, [all_texts.index(t) for t in bs.texts]
            directions = _encode(adapter, texts)
            per_obj: list[dict[str, Any]] = [
                {"scene": bs.index, "text": t, "mask_fraction": float(bs.masks[j].mean()), "scores": {}}
                for j, t in enumerate(bs.texts)]
            for name, method in fns.items():
                s0 = time.perf_counter()
                raw = method.raw(adapter, px, directions)
                if raw.dim() != 4 or raw.shape[:2] != (1, len(texts)):
                    raise InvalidInputError(f"map method {name!r} returned shape {tuple(raw.shape)}; "
                                            f"expected [1, {len(texts)}, h, w] (one map per image and text)")
                maps = contrast_others(raw[0]) if method.text_dependent else raw[0]
                acc[name]["seconds"] += time.perf_counter() - s0
                for j, r in enumerate(rows):
                    sc = score_map(maps[r], bs.masks[j], clip=clip, ap=ap_fn)
                    if k == 0 and j == 0 and sk_ap is not None and ap_fn is not sk_ap:
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
                    per_obj[j]["scores"][name] = {key: sc[key] for key in ("iou", "pixel_acc", "ap")}
            records += per_obj
            bar.advance(task)

    rows_out = []
    for name, a in acc.items():
        rows_out.append({
            "method": name, "baseline": not fns[name].text_dependent,
            "miou": float(np.mean(a["iou"])),
            "miou_fgbg": 0.5 * (a["inter_fg"] / max(a["union_fg"], 1) + a["inter_bg"] / max(a["union_bg"], 1)),
            "pixel_acc": float(np.mean(a["pixel_acc"])),
            "map": float(np.mean(a["ap"])),
            "n_objects": len(a["iou"]),
            "seconds": a["seconds"],
        })
    base = [r for r in rows_out if r["baseline"]]
    beats = {r["method"]: all(r["miou"] > b["miou"] and r["map"] > b["map"] for b in base)
             for r in rows_out if not r["baseline"]} if base else {}
    out: dict[str, Any] = {
        "model": getattr(adapter, "name", str(model)),
        "n": len(scenes), "seed": seed, "stream": STREAM, "contrast": contrast,
        "objects_per_scene": list(objects), "n_objects": len(records), "clip": clip,
        "protocol": ("map per object text minus mean over the other texts of the contrast set; bilinear "
                     "upsampling to pixels; clip < 0; min-max; foreground = map >= its mean (nowhere if no value "
                     "> 0); IoU, pixel "
                     "accuracy, AP per object then averaged; miou_fgbg: fg and bg IoU pooled over objects, "
                     "averaged"),
        "exactness": worst,
        "ap_backend": ap_backend, "ap_checked_against_sklearn": ap_checked,
        "rows": rows_out,
        "beats_baselines": beats,
        "seconds": time.perf_counter() - t0,
    }
    if details:
        out["objects"] = records
    return out


def format_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows ``(method, mIoU, mIoU fg/bg, pixel acc, mAP, beats baselines)`` in percent."""
    rows = []
    any_baseline = any(r["baseline"] for r in result["rows"])
    for r in result["rows"]:
        if r["baseline"]:
            verdict = "baseline"
        elif not any_baseline:
            verdict = "n/a"  # no baseline in this run
        else:
            verdict = "yes" if result["beats_baselines"].get(r["method"]) else "NO"
        rows.append((r["method"], f"{100 * r['miou']:.1f}", f"{100 * r['miou_fgbg']:.1f}",
                     f"{100 * r['pixel_acc']:.1f}", f"{100 * r['map']:.1f}", verdict))
    return rows
