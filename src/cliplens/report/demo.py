"""``cliplens demo``: the whole idea on one toy-world scene, offline, as an HTML page with figures.

One seeded scene (2-3 objects of distinct shapes and colours by default) is drawn, rendered at the
model's input size, and its image embedding decomposed exactly (per layer, head and source token).
The page shows:

* the scene, its caption, the cosine similarity of image and caption, and the decomposition's
  exactness (relative error of the sum of the parts against the model's own embedding);
* for each phrase of the caption (the caption itself, each object's name ``"a red circle"``, the
  background ``"a striped background"``, the count ``"three shapes"``): its similarity with the image,
  every layer's contribution to it (bar chart of the 2L+1 terms: embedding, each layer's attention,
  each layer's MLP) and every head's (layers x heads heatmap), with the top heads. Contributions
  are to the cosine similarity of the unit-norm embeddings: summed, they give it exactly;
* for each object, the decomposition heatmap (its name's token map minus the mean token map of
  the other objects' names, as in the paper's segmentation protocol; with a single object, minus
  the mean over all other colour-shape names) next to the object's true visible mask, and the IoU.
  Threshold rule (the original segmentation code's): upsample bilinearly to pixels, clip below 0,
  min-max normalise, foreground = map >= its mean; a map with nothing above 0 predicts nothing
  (see :mod:`cliplens.toyworld.bench`).

Files (all under the output folder, which is never one with files already in it): ``index.html``,
PNG figures, ``maps.npz`` (the image, and per object the token-grid map, the upsampled map, the
predicted and the true mask) and ``summary.json``.
"""

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplens.errors import CliplensError
from cliplens.evaluation.segmentation import score_map
from cliplens.maps import contrast_others
from cliplens.models import load
from cliplens.report.files import fresh_dir
from cliplens.report.plotting import save_bars, save_head_grid, slug
from cliplens.toyworld.bench import class_texts, object_text
from cliplens.toyworld.captions import bg_phrase, count_phrase, describe
from cliplens.toyworld.scenes import MAX_OBJECTS, render_scene, sample_scene

__all__ = ["run_demo", "make_demo", "demo_scene", "format_summary", "DemoResult",
           "PhraseResult", "ObjectResult", "DEFAULT_OUT"]

DEFAULT_OUT = "cliplens-demo"
#: scenes for the demo come from the held-out "test" stream of the scene generator
STREAM = "test"
MIN_VISIBLE = 0.6  # an object must show at least this fraction of its silhouette


@dataclass
class PhraseResult:
    kind: str  # "caption", "object", "background" or "count"
    text: str
    similarity: float  # cosine similarity of image and phrase (= the sum of all the scores below)
    layer_labels: list[str]
    layer_scores: np.ndarray  # [2L+1]: embed, then per layer attention and MLP
    head_scores: np.ndarray  # [Lh, H]
    head_layers: tuple[int, ...]
    top_heads: list[tuple[str, float]]
    figures: dict[str, str] = field(default_factory=dict)  # name -> file name in the output folder


@dataclass
class ObjectResult:
    text: str
    contrast: list[str]  # texts whose mean token map is subtracted
    grid: np.ndarray  # [gh, gw] contrast token map
    map: np.ndarray  # [H, W] upsampled (bilinear) contrast map
    normalized: np.ndarray  # [H, W] clipped below 0, min-max
    pred: np.ndarray  # [H, W] bool: normalized >= its mean
    mask: np.ndarray  # [H, W] bool: the object's true visible mask
    iou: float
    pixel_acc: float
    ap: float
    figure: str = ""


@dataclass
class DemoResult:
    out_dir: Path
    html: Path
    model: str
    seed: int
    scene: Any  # SceneFactors
    image: np.ndarray  # uint8 [H, W, 3]
    caption: str
    similarity: float
    exactness: float
    phrases: list[PhraseResult]
    objects: list[ObjectResult]
    files: list[Path]
    note: str = ""  # set when the output went to a numbered subfolder


# --------------------------------------------------------------------------- the scene
def demo_scene(seed: int = 0, objects: int = 3, *, image_size: int = 64, max_tries: int = 2000) -> Any:
    """The demo's scene: ``objects`` large objects of distinct shapes and distinct colours, each
    showing at least 60 % of itself (the first such scene of the seed's held-out stream)."""
    if not 1 <= objects <= MAX_OBJECTS:
        raise CliplensError(f"--objects must be between 1 and {MAX_OBJECTS}, got {objects}")
    for index in range(max_tries):
        sc = sample_scene(seed, index, stream=STREAM, count=objects, sizes="large", image_size=image_size)
        if len({o.shape for o in sc.objects}) < objects or len({o.colour for o in sc.objects}) < objects:
            continue
        _, masks = render_scene(sc)
        full = masks["full"].sum((1, 2))
        if (masks["visible"].sum((1, 2)) >= MIN_VISIBLE * np.maximum(full, 1)).all() and full.min() > 0:
            return sc
    raise CliplensError(f"no scene with {objects} distinct, visible objects in {max_tries} draws of seed {seed}")


def _phrases(scene: Any) -> list[tuple[str, str]]:
    out = [("caption", describe(scene))]
    out += [("object", object_text(o.colour, o.shape)) for o in scene.objects]
    out.append(("background", bg_phrase(scene.bg_kind, None)))
    out.append(("count", count_phrase(scene.count, None, None)))
    return out


# --------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_scene(image: np.ndarray, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(image, interpolation="nearest")
    ax.axis("off")
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save_segmentation(image: np.ndarray, obj: ObjectResult, path: Path, grid: tuple[int, int]) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(image.mean(-1), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    lim = float(np.abs(obj.map).max()) or 1.0
    im = axes[1].imshow(obj.map, cmap="coolwarm", vmin=-lim, vmax=lim, alpha=0.75)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set_title(f"{obj.text!r} minus others\n(direct effect per region, {grid[0]}x{grid[1]} tokens)",
                      fontsize=8)
    axes[2].imshow(obj.pred, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if obj.mask.any() and not obj.mask.all():
        axes[2].contour(obj.mask, levels=[0.5], colors="#d62728", linewidths=1.0)
    axes[2].set_title("predicted: min-max map >= its mean\n(red: the true outline)", fontsize=8)
    axes[3].imshow(obj.mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[3].set_title(f"true mask  ·  IoU {obj.iou:.3f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)




# --------------------------------------------------------------------------- the demo
@torch.no_grad()
def make_demo(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    model: Any = "toy",
    pretrained: str | None = None,
    seed: int = 0,
    objects: int = 3,
    device: str = "cpu",
    top: int = 3,
) -> DemoResult:
    """Build the demo and write it under ``out_dir`` (see the module docs); returns everything,
    arrays included. :func:`run_demo` is the same plus a terminal summary, returning the page's path."""
    if isinstance(model, str):
        adapter = load(model, pretrained=pretrained, device=device)
    else:
        adapter = model
    ih, iw = adapter.vision.image_size
    if ih != iw:
        raise CliplensError(f"the toy-world scenes are square; this model's input is {ih}x{iw}")
    scene = demo_scene(seed, objects, image_size=ih)  # before touching the disk: bad options fail cleanly
    out, note = fresh_dir(out_dir)
    image, masks = render_scene(scene)
    pixels = adapter.preprocess([image])
    dec = adapter.decompose(pixels, spatial=True)
    exactness = dec.check(rtol=float("inf"))
    ndec = dec.normalized()
    files: list[Path] = []

    # ---- phrases: layers and heads
    kinds_texts = _phrases(scene)
    texts = [t for _, t in kinds_texts]
    scores = ndec.project(adapter.encode_text(texts), labels=texts)
    L = scores.mlp.shape[1]
    layer_labels = ["embed"] + [f"L{i}.{part}" for i in range(L) for part in ("attn", "mlp")]
    per_head = scores.per_head()[0]  # [Lh, H, T]
    phrases: list[PhraseResult] = []
    for t, (kind, text) in enumerate(kinds_texts):
        ls = [float(scores.embed[0, t])]
        for i in range(L):
            ls += [float(scores.attention[0, i, t]), float(scores.mlp[0, i, t])]
        hs = per_head[:, :, t].cpu().numpy().astype(np.float64)
        order = np.argsort(-hs, axis=None)[:top]
        tops = [(f"L{scores.head_layers[i // hs.shape[1]]}.H{i % hs.shape[1]}", float(hs.flat[i])) for i in order]
        sim = float(scores.total[0, t])
        ph = PhraseResult(kind, text, sim, layer_labels, np.asarray(ls), hs, tuple(scores.head_layers), tops)
        stem = f"{t:02d}-{kind}-{slug(text)}"
        bars = save_bars(layer_labels, ls, out / f"layers-{stem}.png", xlabel="contribution to cosine similarity",
                         title=f"{text!r}: each layer's direct effect (sum {sim:+.4f})")
        grid_png = save_head_grid(torch.from_numpy(hs), out / f"heads-{stem}.png",
                                  layer_labels=list(scores.head_layers), title=f"{text!r}: each head")
        ph.figures = {"layers": bars.name, "heads": grid_png.name}
        files += [bars, grid_png]
        phrases.append(ph)

    # ---- segmentation: each object's name against the others'
    names = [t for k, t in kinds_texts if k == "object"]
    if len(names) >= 2:
        contrasts = [[n for n in names if n != own] for own in names]
        grids = contrast_others(ndec.project(adapter.encode_text(names)).token_map()[0])
    else:
        others = [c for c in class_texts() if c != names[0]]
        contrasts = [others]
        grids = contrast_others(ndec.project(adapter.encode_text(names + others)).token_map()[0])[:1]
    obj_results: list[ObjectResult] = []
    arrays: dict[str, np.ndarray] = {"image": image}
    for k, (name, grid) in enumerate(zip(names, grids, strict=True)):
        mask = masks["visible"][k]
        sc = score_map(grid, mask)
        obj = ObjectResult(name, contrasts[k], grid.cpu().numpy().astype(np.float64), sc["map"], sc["normalized"],
                           sc["pred"], mask, sc["iou"], sc["pixel_acc"], sc["ap"])
        png = out / f"segmentation-{k}-{slug(name)}.png"
        _save_segmentation(image, obj, png, dec.grid)
        obj.figure = png.name
        files.append(png)
        obj_results.append(obj)
        arrays.update({f"grid_{k}": obj.grid, f"map_{k}": obj.map, f"pred_{k}": obj.pred, f"mask_{k}": mask})

    scene_png = out / "scene.png"
    _save_scene(image, scene_png)
    files.append(scene_png)
    npz = out / "maps.npz"
    np.savez_compressed(npz, **arrays)
    files.append(npz)

    caption = kinds_texts[0][1]
    result = DemoResult(out_dir=out, html=out / "index.html", model=getattr(adapter, "name", str(model)), seed=seed,
                        scene=scene, image=image, caption=caption, similarity=phrases[0].similarity,
                        exactness=exactness, phrases=phrases, objects=obj_results, files=files, note=note)
    summary = out / "summary.json"
    summary.write_text(json.dumps(_summary_dict(result), indent=2) + "\n")
    files.append(summary)
    result.html.write_text(_html(result, dec.grid))
    return result


def _summary_dict(r: DemoResult) -> dict[str, Any]:
    return {
        "model": r.model, "seed": r.seed, "caption": r.caption, "similarity": r.similarity,
        "exactness_relative_error": r.exactness, "scene": r.scene.to_dict(),
        "phrases": [{"kind": p.kind, "text": p.text, "similarity": p.similarity,
                     "layers": dict(zip(p.layer_labels, map(float, p.layer_scores), strict=True)),
                     "top_heads": [{"head": h, "score": s} for h, s in p.top_heads]} for p in r.phrases],
        "segmentation": {
            "rule": "token map of the object's name minus the mean token map of the contrast texts; bilinear "
                    "upsampling to pixels; clip below 0; min-max normalise; foreground = map >= its mean "
                    "(nowhere if no value is above 0)",
            "objects": [{"text": o.text, "contrast": o.contrast, "iou": o.iou, "pixel_acc": o.pixel_acc,
                         "ap": o.ap, "mask_fraction": float(o.mask.mean())} for o in r.objects],
        },
    }


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0} td,th{padding:.25em .7em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top} .num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#666;font-size:.92em} img{max-width:100%} .phrase{margin:1.6em 0}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} code{background:#f4f4f4;padding:0 .25em}
"""


def _html(r: DemoResult, grid: tuple[int, int]) -> str:
    e = html.escape
    mean_iou = float(np.mean([o.iou for o in r.objects])) if r.objects else float("nan")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>cliplens demo · {e(r.caption)}</title><style>{_CSS}</style></head><body>",
        "<h1>cliplens demo</h1>",
        f'<p class="muted">model <code>{e(r.model)}</code> · seed {r.seed} · scene drawn from the '
        f"scene generator's held-out stream, with exact object masks</p>",
        '<div class="figs"><img src="scene.png" alt="the scene" width="260">',
        "<div><table>",
        f"<tr><th>caption</th><td>{e(r.caption)}</td></tr>",
        f'<tr><th>cosine similarity (image, caption)</th><td class="num">{r.similarity:+.4f}</td></tr>',
        f'<tr><th>exactness</th><td>the parts sum to the model\'s own embedding within '
        f"{r.exactness:.1e} (relative)</td></tr>",
        f'<tr><th>mean IoU over objects</th><td class="num">{mean_iou:.3f}</td></tr>',
        "</table></div></div>",
        "<h2>Segmentation from the decomposition</h2>",
        "<p>For each object, the direct effect of every image token (summed over all heads of all layers) "
        "on the unit-norm image embedding, scored against the object's name, minus the mean of the same map "
        "for the other objects' names (the paper's segmentation protocol). Threshold rule, as in the original "
        "segmentation code: upsample bilinearly to pixels, clip below 0, min-max normalise, foreground = "
        f"map &ge; its mean (nowhere if no value is above 0). The token grid is {grid[0]}&times;{grid[1]}.</p>",
        "<table><tr><th>object</th><th>minus the mean over</th><th class=num>IoU</th>"
        "<th class=num>pixel acc.</th><th class=num>AP</th><th class=num>mask area</th></tr>",
    ]
    for o in r.objects:
        contrast = ", ".join(o.contrast) if len(o.contrast) <= 4 else f"all {len(o.contrast)} other colour-shape names"
        parts.append(f"<tr><td>{e(o.text)}</td><td>{e(contrast)}</td><td class=num>{o.iou:.3f}</td>"
                     f"<td class=num>{o.pixel_acc:.3f}</td><td class=num>{o.ap:.3f}</td>"
                     f"<td class=num>{100 * float(o.mask.mean()):.1f}%</td></tr>")
    parts.append("</table>")
    for o in r.objects:
        parts.append(f'<p><img src="{e(o.figure)}" alt="segmentation of {e(o.text)}"></p>')
    parts += [
        "<h2>Which layers and heads carry each phrase</h2>",
        "<p>Each phrase's text embedding scored against every component of the image embedding: the "
        "embedding term, every layer's attention and MLP (bars), and every attention head (heatmap, tokens "
        "summed). Scores are contributions to the cosine similarity: all of them together add up to it "
        "exactly.</p>",
    ]
    for p in r.phrases:
        tops = ", ".join(f"{h} ({s:+.4f})" for h, s in p.top_heads)
        parts += [
            '<div class="phrase">',
            f"<h3>{e(p.kind)}: &ldquo;{e(p.text)}&rdquo; &nbsp;<span class=muted>similarity {p.similarity:+.4f}"
            f" · top heads {e(tops)}</span></h3>",
            f'<div class="figs"><img src="{e(p.figures["layers"])}" alt="layers for {e(p.text)}">'
            f'<img src="{e(p.figures["heads"])}" alt="heads for {e(p.text)}"></div>',
            "</div>",
        ]
    parts += [
        '<p class="muted">Files next to this page: <a href="summary.json">summary.json</a> (all numbers), '
        '<a href="maps.npz">maps.npz</a> (the image and, per object, the token-grid map, the upsampled map, '
        "the predicted and the true mask). Made by <code>cliplens demo</code>.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def format_summary(r: DemoResult) -> str:
    """The short text summary the command prints."""
    lines = [f"cliplens demo · model {r.model} · seed {r.seed}",
             f"scene: {r.caption}",
             f"cosine similarity (image, caption): {r.similarity:+.4f}",
             f"exactness: the parts sum to the embedding within {r.exactness:.1e} (relative)",
             "", "phrase → similarity · top heads (contribution to the similarity)"]
    width = max(len(p.text) for p in r.phrases[1:]) if len(r.phrases) > 1 else 20
    for p in r.phrases[1:]:
        heads = ", ".join(f"{h} {s:+.4f}" for h, s in p.top_heads)
        lines.append(f"  {p.text:<{width}}  {p.similarity:+.4f} · {heads}")
    lines += ["", "segmentation (name's map minus the others' mean; min-max, foreground = map >= its mean):"]
    for o in r.objects:
        lines.append(f"  {o.text:<{width}}  IoU {o.iou:.3f}  (pixel acc {o.pixel_acc:.3f}, AP {o.ap:.3f})")
    if r.objects:
        lines.append(f"  {'mean':<{width}}  IoU {float(np.mean([o.iou for o in r.objects])):.3f}")
    lines += ["", f"wrote {r.html} (+ {sum(f.suffix == '.png' for f in r.files)} PNG figures, maps.npz, "
                  "summary.json)", f"open: {r.html.resolve().as_uri()}"]
    return "\n".join(lines)


def run_demo(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    model: Any = "toy",
    pretrained: str | None = None,
    seed: int = 0,
    objects: int = 3,
    device: str = "cpu",
    quiet: bool = False,
) -> Path:
    """Write the demo page (and its figures) under ``out_dir``; print a summary; return the HTML path.

    ``out_dir`` is used if it is new or empty; otherwise a fresh numbered subfolder of it is created
    (``run-2``, ``run-3``, ...), so no existing file is ever overwritten.
    """
    r = make_demo(out_dir, model=model, pretrained=pretrained, seed=seed, objects=objects, device=device)
    if not quiet:
        if r.note:
            print(r.note, file=sys.stderr)
        print(format_summary(r))
    return r.html
