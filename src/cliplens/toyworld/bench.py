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

**Map methods.** A map method is ``fn(model, pixels, texts) -> [T, h, w]``: ``pixels`` is one
preprocessed image ``[1, 3, H, W]``, ``texts`` the contrast set (below), and the result one map
per text, at the token grid (``h, w = gh, gw``) or at pixels (``H, W``). :data:`MAP_METHODS` maps
names to methods; adding a method is one line (``MAP_METHODS["surgery"] = surgery_map``).
:data:`BASELINES` names the rows every real method must beat.

* ``decomposition``: per image token, the direct effect of all heads of all layers on the
  unit-norm embedding, scored against each text (``ComponentScores.token_map``), minus the mean
  over the other texts of the contrast set. (The paper subtracts the mean over *all* classes,
  itself included: that is the same map times ``(T-1)/T``, so identical after normalisation.)
* ``uniform``: a constant map (predicts every pixel; IoU = the mask's area fraction, AP = the same).
* ``gaussian``: a centred isotropic Gaussian, ``sigma = image side / 4``, whatever the text.

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

import functools
import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.toyworld.captions import object_phrase
from cliplens.toyworld.scenes import COLOURS, SHAPES, SceneFactors, render_scene, sample_scene

__all__ = [
    "MAP_METHODS", "BASELINES", "MapMethod", "BenchScene", "bench_scenes", "class_texts",
    "decomposition_map", "uniform_map", "gaussian_map", "contrast_maps",
    "upsample_map", "normalize_map", "foreground", "iou", "pixel_accuracy", "average_precision",
    "average_precision_np", "score_map", "run_bench", "format_rows", "bench_cmd",
    "DEFAULT_SEED", "DEFAULT_N", "STREAM",
]

#: ``fn(model, pixels [1, 3, H, W], texts) -> [T, h, w]`` (token grid or pixels)
MapMethod = Callable[[Any, Tensor, Sequence[str]], Tensor]

STREAM = "test"
DEFAULT_SEED = 2024
DEFAULT_N = 500
GAUSSIAN_SIGMA = 0.25  # fraction of the image side


# --------------------------------------------------------------------------- map methods
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


def contrast_maps(maps: Tensor) -> Tensor:
    """``maps[k] - mean_{j != k} maps[j]`` over the first axis (unchanged when there is one map)."""
    T = maps.shape[0]
    if T < 2:
        return maps.clone()
    total = maps.sum(0, keepdim=True)
    return maps - (total - maps) / (T - 1)


@torch.no_grad()
def decomposition_map(model: Any, pixels: Tensor, texts: Sequence[str]) -> Tensor:
    """The decomposition map ``[T, gh, gw]``: each image token's direct effect (all heads, all
    layers) on the unit-norm embedding, scored against each text, minus the mean over the others."""
    dec = model.decompose(pixels, spatial=True)
    maps = dec.normalized().project(_encode(model, texts)).token_map()[0]
    return contrast_maps(maps)


def uniform_map(model: Any, pixels: Tensor, texts: Sequence[str]) -> Tensor:
    """Baseline: the same constant map for every text (``[T, 1, 1]``, upsampled to a constant)."""
    return torch.ones(len(texts), 1, 1)


@functools.lru_cache(maxsize=8)
def _gaussian(H: int, W: int) -> Tensor:
    y = torch.arange(H, dtype=torch.float64) - (H - 1) / 2
    x = torch.arange(W, dtype=torch.float64) - (W - 1) / 2
    sy, sx = GAUSSIAN_SIGMA * H, GAUSSIAN_SIGMA * W
    return torch.exp(-0.5 * ((y[:, None] / sy) ** 2 + (x[None, :] / sx) ** 2))


def gaussian_map(model: Any, pixels: Tensor, texts: Sequence[str]) -> Tensor:
    """Baseline: a centred isotropic Gaussian at pixels, ``sigma = side / 4``, for every text."""
    H, W = pixels.shape[-2:]
    return _gaussian(int(H), int(W)).expand(len(texts), H, W).clone()


#: name -> map method; add a row to the benchmark with one line
MAP_METHODS: dict[str, MapMethod] = {
    "decomposition": decomposition_map,
    "uniform": uniform_map,
    "gaussian": gaussian_map,
}
#: rows that other methods must beat
BASELINES: tuple[str, ...] = ("uniform", "gaussian")


# --------------------------------------------------------------------------- metrics
def upsample_map(m: Tensor, size: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` -> float64 ``[H, W]``: bilinear (``align_corners=False``) unless already that size."""
    m = m.detach().to("cpu", torch.float64)
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return m.numpy()


def normalize_map(m: np.ndarray, clip: bool = True) -> np.ndarray:
    """Clip below 0 (``clip``), then min-max to [0, 1]; a constant map becomes all zeros."""
    m = np.asarray(m, dtype=np.float64)
    if clip:
        m = np.maximum(m, 0.0)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 0.0 or not math.isfinite(hi - lo):
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


def foreground(normalized: np.ndarray, upsampled: np.ndarray | None = None, clip: bool = True) -> np.ndarray:
    """The threshold rule: foreground where the normalised map is >= its mean (a constant map:
    everywhere), except that a map with nothing above 0 (``upsampled``, with ``clip``) is foreground nowhere."""
    if clip and upsampled is not None and not (np.asarray(upsampled) > 0).any():
        return np.zeros(normalized.shape, dtype=bool)
    return normalized >= normalized.mean()


def iou(pred: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(pred, mask).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, mask).sum() / union)


def pixel_accuracy(pred: np.ndarray, mask: np.ndarray) -> float:
    return float((pred == mask).mean())


def average_precision_np(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision ``Σ_n (R_n − R_{n−1}) P_n`` over the distinct score thresholds
    (tied scores form one threshold), the definition of scikit-learn's ``average_precision_score``."""
    y = np.asarray(y_true, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in size: {y.shape} vs {s.shape}")
    positives = int(y.sum())
    if positives == 0:
        raise ValueError("average precision needs at least one positive pixel")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision(y_true: np.ndarray, scores: np.ndarray, *, use_sklearn: bool | None = None) -> float:
    """Average precision of ``scores`` for the bool labels ``y_true``.

    scikit-learn's ``average_precision_score`` when it is installed (``use_sklearn=None``), else
    :func:`average_precision_np` (same definition); ``use_sklearn`` forces one or the other.
    """
    if use_sklearn is not False:
        try:
            from sklearn.metrics import average_precision_score
        except ImportError:
            if use_sklearn:
                raise
        else:
            y = np.asarray(y_true, dtype=bool).ravel()
            if not y.any():
                raise ValueError("average precision needs at least one positive pixel")
            return float(average_precision_score(y, np.asarray(scores, dtype=np.float64).ravel()))
    return average_precision_np(y_true, scores)


def score_map(m: Tensor | np.ndarray, mask: np.ndarray, *, clip: bool = True,
              ap: Callable[[np.ndarray, np.ndarray], float] = average_precision_np) -> dict[str, Any]:
    """Score one map (any grid; upsampled to the mask's size) against one bool mask.

    Returns ``iou``, ``pixel_acc``, ``ap`` and the arrays ``map`` (upsampled, float64),
    ``normalized`` and ``pred`` (bool), plus the pooled counts the original protocol needs.
    """
    mask = np.asarray(mask, dtype=bool)
    t = torch.as_tensor(m) if isinstance(m, np.ndarray) else m
    up = upsample_map(t, mask.shape)
    norm = normalize_map(up, clip=clip)
    pred = foreground(norm, up, clip)
    return {
        "iou": iou(pred, mask), "pixel_acc": pixel_accuracy(pred, mask), "ap": ap(mask, norm),
        "map": up, "normalized": norm, "pred": pred,
        "inter_fg": int((pred & mask).sum()), "union_fg": int((pred | mask).sum()),
        "inter_bg": int((~pred & ~mask).sum()), "union_bg": int((~pred | ~mask).sum()),
    }


def _sklearn_ap() -> Callable[[np.ndarray, np.ndarray], float] | None:
    try:
        from sklearn.metrics import average_precision_score
    except ImportError:
        return None

    def ap(y: np.ndarray, s: np.ndarray) -> float:
        return float(average_precision_score(np.asarray(y, bool).ravel(), np.asarray(s, np.float64).ravel()))

    return ap


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
        raise ValueError(f"n must be at least 1, got {n}")
    counts = tuple(int(c) for c in objects)
    if not counts or min(counts) < 2 or max(counts) > 4:
        raise ValueError(f"objects per scene must be in 2..4, got {objects}")
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
def _resolve_methods(methods: Sequence[str] | Mapping[str, MapMethod] | None) -> dict[str, MapMethod]:
    if methods is None:
        return dict(MAP_METHODS)
    if isinstance(methods, Mapping):
        return dict(methods)
    unknown = [m for m in methods if m not in MAP_METHODS]
    if unknown:
        raise ValueError(f"unknown map methods {unknown}; known: {sorted(MAP_METHODS)}")
    return {m: MAP_METHODS[m] for m in methods}


def _load(model: Any, pretrained: str | None, device: str) -> Any:
    if isinstance(model, str):
        from cliplens.models import load

        return load(model, pretrained=pretrained, device=device)
    return model


@torch.no_grad()
def run_bench(
    model: Any = "toy",
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    *,
    pretrained: str | None = None,
    methods: Sequence[str] | Mapping[str, MapMethod] | None = None,
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
        methods: names from :data:`MAP_METHODS` or a ``{name: fn}`` mapping (default: all of them).
        contrast: ``"scene"`` (the scene's object texts) or ``"classes"`` (all colour-shape texts).
        ap_backend: ``"numpy"`` (:func:`average_precision_np`; when scikit-learn is installed, the
            first object of every method is also scored by ``average_precision_score`` and a
            disagreement above 1e-9 raises) or ``"sklearn"`` (every object; ~100x slower).
        details: also return one record per object (``"objects"``) with each method's scores.

    Returns:
        ``{"model", "n", "seed", "stream", "contrast", "protocol", "exactness", "rows": [{"method",
        "baseline", "miou", "miou_fgbg", "pixel_acc", "map", "n_objects", "seconds"}, ...],
        "beats_baselines": {method: bool}, ...}``.
    """
    if contrast not in ("scene", "classes"):
        raise ValueError(f"contrast must be 'scene' or 'classes', got {contrast!r}")
    sk_ap = _sklearn_ap()
    if ap_backend == "sklearn":
        if sk_ap is None:
            from cliplens.errors import MissingDependencyError

            raise MissingDependencyError("ap_backend='sklearn' needs scikit-learn: pip install scikit-learn")
        ap_fn = sk_ap
    elif ap_backend == "numpy":
        ap_fn = average_precision_np
    else:
        raise ValueError(f"ap_backend must be 'numpy' or 'sklearn', got {ap_backend!r}")
    ap_checked = 0
    adapter = _load(model, pretrained, device)
    fns = _resolve_methods(methods)
    ih, iw = adapter.vision.image_size
    if ih != iw:
        raise ValueError(f"the toy-world scenes are square; this model's input is {ih}x{iw}")
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
    from rich.progress import Progress

    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("bench", total=len(scenes))
        for k, bs in enumerate(scenes):
            px = pixels[k : k + 1]
            if contrast == "scene":
                texts, rows = bs.texts, list(range(len(bs.texts)))
            else:
                texts, rows = all_texts, [all_texts.index(t) for t in bs.texts]
            per_obj: list[dict[str, Any]] = [
                {"scene": bs.index, "text": t, "mask_fraction": float(bs.masks[j].mean()), "scores": {}}
                for j, t in enumerate(bs.texts)]
            for name, fn in fns.items():
                s0 = time.perf_counter()
                maps = fn(adapter, px, texts)
                acc[name]["seconds"] += time.perf_counter() - s0
                if maps.dim() != 3 or maps.shape[0] != len(texts):
                    raise ValueError(f"map method {name!r} returned shape {tuple(maps.shape)}; "
                                     f"expected [{len(texts)}, h, w] (one map per text)")
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
            "method": name, "baseline": name in BASELINES,
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


# --------------------------------------------------------------------------- CLI
@click.command("bench")
@click.option("--model", "-m", "model", default="toy", show_default=True,
              help="Model to benchmark (the toy-world scenes are rendered at its input size).")
@click.option("--pretrained", "-p", default=None, help="Weights: for 'toy', a .safetensors file from 'toy train'.")
@click.option("-n", "n", type=int, default=DEFAULT_N, show_default=True, help="Held-out scenes.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Scene seed (the 'test' stream, never used in training).")
@click.option("--method", "methods", multiple=True, metavar="NAME",
              help="Only this map method (repeat for several; default all): "
                   "decomposition, uniform, gaussian, or any method registered in MAP_METHODS.")
@click.option("--contrast", type=click.Choice(["scene", "classes"]), default="scene", show_default=True,
              help="Subtract the mean map of the scene's other object texts, or of all 56 colour-shape texts.")
@click.option("--ap", "ap_backend", type=click.Choice(["numpy", "sklearn"]), default="numpy", show_default=True,
              help="Average precision: cliplens's own (checked against scikit-learn when installed) or "
                   "scikit-learn's for every object (much slower).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="Torch threads (the toy model's per-image work is small: 1 is usually fastest).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_cmd(model: str, pretrained: str | None, n: int, seed: int, methods: tuple[str, ...], contrast: str,
              ap_backend: str, threads: int, device: str, as_json: bool) -> None:
    """Ground-truth benchmark: decomposition exactness and zero-shot segmentation of the toy world's
    true object masks, next to a uniform and a centred-Gaussian baseline."""
    import json

    if n < 1:
        raise click.BadParameter("must be at least 1", param_hint="-n")
    unknown = [m for m in methods if m not in MAP_METHODS]
    if unknown:
        raise click.BadParameter(f"unknown map method(s) {', '.join(unknown)}; known: {', '.join(MAP_METHODS)}",
                                 param_hint="--method")
    torch.set_num_threads(threads)
    res = run_bench(model, n=n, seed=seed, pretrained=pretrained, methods=list(methods) or None,
                    contrast=contrast, device=device, ap_backend=ap_backend, progress=not as_json)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    t = Table(title=f"toy-world segmentation, {res['model']}: {res['n']} held-out scenes "
                    f"(stream '{res['stream']}', seed {res['seed']}), {res['n_objects']} objects, "
                    f"contrast: {res['contrast']}", title_justify="left")
    for col in ("method", "mIoU %", "mIoU fg/bg %", "pixel acc %", "mAP %", "beats baselines"):
        t.add_column(col, justify="left" if col in ("method", "beats baselines") else "right")
    for row in format_rows(res):
        t.add_row(*row)
    con.print(t)
    con.print(f"decomposition exactness: max relative error {res['exactness']:.2e} over {res['n']} scenes")
    con.print(f"protocol: {res['protocol']}; {res['seconds']:.1f} s")
