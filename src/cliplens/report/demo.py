"""``cliplens demo``: the whole idea on one toy-world scene, offline, as an HTML page with figures.

One seeded scene (2-3 objects of distinct shapes and colours by default) is drawn, rendered at the
model's input size, and its image embedding decomposed exactly (per layer, head and source token).
The page shows:

* the model (a RANDOM WEIGHTS warning when it has random weights), the decomposition's exactness
  (relative error of the sum of the parts against the model's own embedding), what a direct effect
  is and how parts are named (shared with ``cliplens report``: :mod:`cliplens.report.html`);
* the scene, its caption and the cosine similarity of image and caption;
* for each phrase of the caption (the caption itself, each object's name ``"a red circle"``, the
  background ``"a striped background"``, the count ``"three shapes"``): its similarity with the image,
  every layer's contribution to it (bar chart of the 2L+1 terms: embedding, each layer's attention,
  each layer's MLP) and every head's (layers x heads heatmap), with the top heads, drawn as in
  ``cliplens report`` (:func:`cliplens.report.page.text_html`). Contributions are to the cosine
  similarity of the unit-norm embeddings: summed, they give it exactly;
* for each object, the decomposition heatmap (its name's token map minus the mean token map of
  the other objects' names, as in the paper's segmentation protocol; with a single object, minus
  the mean over all other colour-shape names) next to the object's true visible mask, and the IoU.
  Threshold rule (the original segmentation code's): upsample bilinearly to pixels, clip below 0,
  min-max normalise, foreground = map >= its mean; a map with nothing above 0 predicts nothing
  (see :mod:`cliplens.experiments.bench`).

Files (all under the output folder, which is never one with files already in it): ``index.html``,
PNG figures, ``maps.npz`` (the image, and per object the token-grid map, the upsampled map, the
predicted and the true mask) and ``summary.json``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from cliplens.core.model import ImageTextModel
from cliplens.decomposition import summarize
from cliplens.errors import CliplensError
from cliplens.evaluation.segmentation import score_map
from cliplens.maps import contrast_others
from cliplens.models import load
from cliplens.report import html as H
from cliplens.report.files import DEMO_DIR, fresh_dir
from cliplens.report.page import TextResult, save_text_figures, text_html, text_results
from cliplens.report.plotting import (
    LABEL_SIZE,
    colorbar,
    heading,
    new_figure,
    overlay,
    save,
    save_image,
    slug,
    wrap,
)
from cliplens.toyworld.captions import bg_phrase, class_texts, count_phrase, describe, object_text
from cliplens.toyworld.scenes import MAX_OBJECTS, render_scene, sample_scene

__all__ = ["run_demo", "make_demo", "demo_scene", "format_summary", "DemoResult", "ObjectResult", "DEFAULT_OUT"]

DEFAULT_OUT = DEMO_DIR
#: scenes for the demo come from the held-out "test" stream of the scene generator
STREAM = "test"
MIN_VISIBLE = 0.6  # an object must show at least this fraction of its silhouette


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
    model: dict[str, Any]  # the adapter's describe()
    seed: int
    scene: Any  # SceneFactors
    image: np.ndarray  # uint8 [H, W, 3]
    caption: str
    similarity: float
    exactness: float
    phrases: list[TextResult]  # kind: caption, object, background or count
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
def _segmentation_figure(image: np.ndarray, obj: ObjectResult, grid: tuple[int, int], *,
                         random_weights: bool = False) -> Figure:
    fig = new_figure(12, 3.9)
    axes = fig.subplots(1, 4)
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title("the scene", fontsize=LABEL_SIZE)
    axes[0].set_axis_off()
    im = overlay(axes[1], image, obj.map)
    axes[1].set_title(wrap(f"{obj.text!r} minus the others: direct effect of each region ({grid[0]}x{grid[1]} "
                           "tokens)", 40), fontsize=LABEL_SIZE)
    colorbar(fig, im, axes[1], "contribution to cosine similarity\n(red: toward the name, blue: away)")
    axes[2].imshow(obj.pred, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if obj.mask.any() and not obj.mask.all():
        axes[2].contour(obj.mask, levels=[0.5], colors="#d62728", linewidths=1.0)
    axes[2].set_title(wrap("predicted (white): min-max map >= its mean; red: the true outline", 36),
                      fontsize=LABEL_SIZE)
    axes[3].imshow(obj.mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[3].set_title(f"true mask · IoU {obj.iou:.3f}", fontsize=LABEL_SIZE)
    for ax in axes[2:]:
        ax.set_axis_off()
    heading(fig, f"segmenting {obj.text!r} from the decomposition", random_weights=random_weights)
    return fig


# --------------------------------------------------------------------------- the demo
@torch.no_grad()
def make_demo(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    model: ImageTextModel | str = "toy",
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
    info = adapter.describe()
    random_weights = bool(info.get("random_weights"))  # then every figure says so
    image, masks = render_scene(scene)
    pixels = adapter.preprocess([image])
    dec = adapter.decompose(pixels, spatial=True)
    exactness = dec.check(rtol=float("inf"))
    ndec = dec.normalized()
    files: list[Path] = []

    # ---- phrases: layers and heads
    kinds_texts = _phrases(scene)
    texts = [t for _, t in kinds_texts]
    directions = adapter.encode_text(texts)
    scores = ndec.project(directions, labels=texts)
    phrases = text_results(scores, summarize(dec, directions, texts, top=top)[0], 0,
                           kinds=[k for k, _ in kinds_texts])
    for t, ph in enumerate(phrases):
        files += save_text_figures(ph, out, f"{t:02d}-{ph.kind}-{slug(ph.text)}", random_weights=random_weights)

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
        png = save(_segmentation_figure(image, obj, dec.grid, random_weights=random_weights),
                   out / f"segmentation-{k}-{slug(name)}.png")
        obj.figure = png.name
        files.append(png)
        obj_results.append(obj)
        arrays.update({f"grid_{k}": obj.grid, f"map_{k}": obj.map, f"pred_{k}": obj.pred, f"mask_{k}": mask})

    files.append(save_image(image, out / "scene.png", title=f"the scene (seed {seed})", size=3.0,
                            random_weights=random_weights))
    npz = out / "maps.npz"
    np.savez_compressed(npz, **arrays)
    files.append(npz)

    caption = kinds_texts[0][1]
    result = DemoResult(out_dir=out, html=out / "index.html", model=info, seed=seed, scene=scene, image=image,
                        caption=caption, similarity=phrases[0].similarity, exactness=exactness, phrases=phrases,
                        objects=obj_results, files=files, note=note)
    summary = out / "summary.json"
    summary.write_text(json.dumps(_summary_dict(result), indent=2) + "\n")
    files.append(summary)
    result.html.write_text(_html(result, dec.grid))
    return result


def _summary_dict(r: DemoResult) -> dict[str, Any]:
    return {
        "model": r.model, "seed": r.seed, "caption": r.caption, "similarity": r.similarity,
        "exactness_relative_error": r.exactness, "scene": r.scene.to_dict(),
        "phrases": [p.to_dict() for p in r.phrases],
        "segmentation": {
            "rule": "token map of the object's name minus the mean token map of the contrast texts; bilinear "
                    "upsampling to pixels; clip below 0; min-max normalise; foreground = map >= its mean "
                    "(nowhere if no value is above 0)",
            "objects": [{"text": o.text, "contrast": o.contrast, "iou": o.iou, "pixel_acc": o.pixel_acc,
                         "ap": o.ap, "mask_fraction": float(o.mask.mean())} for o in r.objects],
        },
    }


def _html(r: DemoResult, grid: tuple[int, int]) -> str:
    e = H.esc
    mean_iou = float(np.mean([o.iou for o in r.objects])) if r.objects else float("nan")
    info = r.model
    maps = ("In the segmentation figures, each map shows every image region's direct effect through all heads "
            "of all layers, scored against an object's name minus the same map for the other objects' names.")
    body = [
        "<h1>cliplens demo</h1>",
        H.model_block(info, r.exactness),
        f'<p class="muted">seed {r.seed} · scene drawn from the scene generator\'s held-out stream, with exact '
        "object masks</p>",
        '<div class="figs">' + H.figure("scene.png", "the scene", width=260),
        '<div class="grow"><table>',
        f"<tr><th>caption</th><td>{e(r.caption)}</td></tr>",
        f'<tr><th>cosine similarity (image, caption)</th><td class="num">{H.signed(r.similarity)}</td></tr>',
        f'<tr><th>mean IoU over objects</th><td class="num">{mean_iou:.3f}</td></tr>',
        "</table></div></div>",
        H.explanation(num_layers=info["layers"], num_heads=info["heads"], head_layers=r.phrases[0].head_layers,
                      maps=maps),
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
        body.append(f"<tr><td>{e(o.text)}</td><td>{e(contrast)}</td><td class=num>{o.iou:.3f}</td>"
                    f"<td class=num>{o.pixel_acc:.3f}</td><td class=num>{o.ap:.3f}</td>"
                    f"<td class=num>{100 * float(o.mask.mean()):.1f}%</td></tr>")
    body.append("</table>")
    body += [f"<p>{H.figure(o.figure, f'segmentation of {o.text}')}</p>" for o in r.objects]
    body += [
        "<h2>Which layers and heads carry each phrase</h2>",
        "<p>Each phrase's text embedding scored against every part of the image embedding: the embedding "
        "term, every layer's attention and MLP (bars, with their total: the cosine similarity), and every "
        "attention head (grid; each head's image tokens and class token summed).</p>",
    ]
    body += [text_html(p) for p in r.phrases]
    body.append('<p class="muted">Files next to this page: <a href="summary.json">summary.json</a> (all numbers), '
                '<a href="maps.npz">maps.npz</a> (the image and, per object, the token-grid map, the upsampled map, '
                "the predicted and the true mask). Made by <code>cliplens demo</code>.</p>")
    return H.page(f"cliplens demo · {r.caption}", body)


def format_summary(r: DemoResult) -> str:
    """The short text summary the command prints."""
    lines = [f"cliplens demo · model {r.model['name']} · seed {r.seed}",
             f"scene: {r.caption}",
             f"cosine similarity (image, caption): {r.similarity:+.4f}",
             f"exactness: the parts sum to the embedding within {r.exactness:.1e} (relative)",
             "", "phrase → similarity · top heads (contribution to the similarity)"]
    width = max(len(p.text) for p in r.phrases[1:]) if len(r.phrases) > 1 else 20
    for p in r.phrases[1:]:
        heads = ", ".join(f"{c.name} {c.score:+.4f}" for c in p.top_heads)
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
    model: ImageTextModel | str = "toy",
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
