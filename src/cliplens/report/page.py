"""``cliplens report``: an HTML page explaining, for the user's own images and texts, which layers,
heads and image regions carry each text.

For every image (shown with its name, the part the model sees dashed) and every text:

* the cosine similarity of image and text;
* every layer's contribution to it (bars: the embedding term, each layer's attention and MLP, and
  their total, which is the similarity) and every head's (layers × heads grid), with the top
  layers and heads;
* the token map: each image region's direct effect through the attention heads, over the model's
  input and over the original, uncropped image.

The page opens with what a direct effect is and how parts are named (``L5.H0``: layer 5, head 0;
indices start at 0). Files, under an output folder that is never one with files already in it
(:func:`~cliplens.report.files.fresh_dir`): ``index.html``, PNG figures and ``summary.json`` (every
number on the page, the token maps included).

:class:`TextResult`, :func:`save_text_figures` and :func:`text_html` are also what the toy-world
demo (:mod:`cliplens.report.demo`) uses for each of its phrases.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplens.decomposition import resolve_layers, summarize
from cliplens.decomposition.scores import ComponentScores
from cliplens.decomposition.summary import Contribution, TextSummary
from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.images import DEFAULT_MAX_PIXELS, load_image
from cliplens.report import html as H
from cliplens.report.files import REPORT_DIR, fresh_dir
from cliplens.report.plotting import save_bars, save_head_grid, save_image, save_token_map, slug, unnormalize

__all__ = ["DEFAULT_OUT", "ImageResult", "ReportResult", "TextResult", "format_summary", "make_report",
           "save_text_figures", "text_html", "text_results"]

DEFAULT_OUT = REPORT_DIR


# --------------------------------------------------------------------------- one text, one image
@dataclass
class TextResult:
    """One text against one image: its similarity and every part's contribution to it."""

    text: str
    similarity: float  # cosine similarity of image and text (= the sum of all layer_scores)
    layer_labels: list[str]  # "embed", then "L0.attn", "L0.mlp", "L1.attn", ...
    layer_scores: np.ndarray  # [2L+1]
    head_layers: tuple[int, ...]  # the layers of head_scores' rows
    head_scores: np.ndarray  # [Lh, H]: each head's contribution (its image tokens and class token summed)
    top_layers: list[Contribution]
    top_heads: list[Contribution]
    top_regions: list[Contribution]
    token_map: np.ndarray | None = None  # [gh, gw]: each region's contribution through the heads of head_layers
    kind: str = "text"  # what the text is (the demo: "caption", "object", "background", "count")
    figures: dict[str, str] = field(default_factory=dict)  # "map", "layers", "heads" -> file name

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind, "text": self.text, "similarity": self.similarity,
            "layers": dict(zip(self.layer_labels, map(float, self.layer_scores), strict=True)),
            "heads": {"layers": list(self.head_layers), "scores": self.head_scores.tolist()},
            "top_layers": [asdict(c) for c in self.top_layers], "top_heads": [asdict(c) for c in self.top_heads],
            "top_regions": [asdict(c) for c in self.top_regions], "figures": dict(self.figures),
        }
        if self.token_map is not None:
            d["token_map"] = {"grid": self.token_map.tolist(), "sum": float(self.token_map.sum())}
        return d


def text_results(scores: ComponentScores, summaries: Sequence[TextSummary], b: int,
                 kinds: Sequence[str] | None = None) -> list[TextResult]:
    """Image ``b``'s :class:`TextResult` per text, from the scores of a normalised decomposition and
    :func:`~cliplens.decomposition.summarize`'s summaries of that image (one per text)."""
    L = scores.num_layers
    labels = ["embed"] + [f"L{i}.{part}" for i in range(L) for part in ("attn", "mlp")]
    per_head = scores.per_head()[b].double().cpu().numpy()  # [Lh, H, T]
    maps = scores.token_map()[b].double().cpu().numpy() if scores.spatial else None
    out = []
    for t, s in enumerate(summaries):
        layer = [float(scores.embed[b, t])]
        for i in range(L):
            layer += [float(scores.attention[b, i, t]), float(scores.mlp[b, i, t])]
        out.append(TextResult(
            text=s.text, similarity=float(scores.total[b, t]), layer_labels=labels, layer_scores=np.asarray(layer),
            head_layers=tuple(scores.head_layers), head_scores=per_head[:, :, t], top_layers=s.layers,
            top_heads=s.heads, top_regions=s.regions, token_map=None if maps is None else maps[t],
            kind=kinds[t] if kinds else "text"))
    return out


def save_text_figures(r: TextResult, out: Path, stem: str, *, image_name: str = "", note: str = "",
                      random_weights: bool = False) -> list[Path]:
    """The bar chart of layers and the grid of heads of ``r``, as ``layers-<stem>.png`` and
    ``heads-<stem>.png`` in ``out`` (saying RANDOM WEIGHTS with ``random_weights``); records them in
    ``r.figures``."""
    bars = save_bars(r.layer_labels, r.layer_scores, out / f"layers-{stem}.png", total=r.similarity,
                     title=f"{r.text!r}: each layer's direct effect", image_name=image_name, note=note,
                     random_weights=random_weights)
    heads = save_head_grid(r.head_scores, out / f"heads-{stem}.png", layer_labels=list(r.head_layers),
                           title=f"{r.text!r}: each head's direct effect", image_name=image_name, note=note,
                           random_weights=random_weights)
    r.figures.update(layers=bars.name, heads=heads.name)
    return [bars, heads]


def _names(items: Sequence[Contribution]) -> str:
    """The parts that raise the similarity, with their scores (``none`` when no part does)."""
    def name(c: Contribution) -> str:
        if c.head is not None:
            return f'<abbr title="layer {c.layer}, head {c.head}">{H.esc(c.name)}</abbr>'
        return H.esc(c.name)

    return ", ".join(f"{name(c)} {H.signed(c.score)}" for c in items if c.score > 0) or "none"


def text_html(r: TextResult) -> str:
    """The block of one text: similarity, top layers and heads, what its map adds up to, its figures."""
    kind = "" if r.kind == "text" else f"{H.esc(r.kind)}: "
    figs = [H.figure(r.figures[k], f"{what} for {r.text!r}")
            for k, what in (("map", "token map"), ("layers", "layer contributions"), ("heads", "head contributions"))
            if k in r.figures]
    regions = ""
    if "map" in r.figures and r.token_map is not None:
        rest = "the class token, the MLPs and the embedding term"
        if len(r.head_layers) < (len(r.layer_labels) - 1) // 2:
            rest = "the class token, the MLPs, the embedding term and the other layers' attention"
        regions = (f"<br>all the regions on the map together: {H.signed(float(r.token_map.sum()))} (the similarity, "
                   f"{H.signed(r.similarity)}, also counts {rest})")
    return "\n".join([
        '<div class="block">',
        f"<h3>{kind}&ldquo;{H.esc(r.text)}&rdquo; &nbsp;·&nbsp; cosine similarity {H.signed(r.similarity)}</h3>",
        f"<p>pushing most toward the text: layers {_names(r.top_layers)}<br>"
        f"heads {_names(r.top_heads)}{regions}</p>",
        f'<div class="figs">{"".join(figs)}</div>',
        "</div>",
    ])


# --------------------------------------------------------------------------- the report
@dataclass
class ImageResult:
    source: str  # the path as given
    name: str  # what the page and the figures call it (its file name, or its path when names repeat)
    size: tuple[int, int]  # original (width, height)
    box: tuple[float, float, float, float]  # the model input in the original: top, left, bottom, right
    texts: list[TextResult]
    figure: str = ""  # the image itself
    description: dict[str, Any] | None = None  # the embedding as a sparse sum of pool texts (``pool=``)

    def to_dict(self) -> dict[str, Any]:
        top, left, bottom, right = self.box
        return {"image": self.source, "name": self.name, "size": {"width": self.size[0], "height": self.size[1]},
                "model_input_box": {"top": top, "left": left, "bottom": bottom, "right": right},
                "figure": self.figure, "texts": [t.to_dict() for t in self.texts],
                **({"description": self.description} if self.description is not None else {})}


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    model: dict[str, Any]  # the adapter's describe()
    texts: list[str]
    head_layers: tuple[int, ...]
    exactness: float  # the largest relative error of the parts' sum against the model's embedding
    images: list[ImageResult]
    skipped: list[dict[str, str]]  # {"image", "error"} for images left out (skip_bad)
    files: list[Path]
    note: str = ""  # set when the output went to a numbered subfolder

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "texts": self.texts, "head_layers": list(self.head_layers),
                "exactness_relative_error": self.exactness, "images": [i.to_dict() for i in self.images],
                "skipped": self.skipped}


def _load_all(adapter: Any, images: Sequence[str], skip_bad: bool, max_pixels: int,
              batch_size: int) -> tuple[list[str], torch.Tensor, list[dict[str, str]]]:
    """Preprocess every image before anything is written: (kept paths, pixels, skipped)."""
    kept: list[str] = []
    pixels: list[torch.Tensor] = []
    skipped: list[dict[str, str]] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start:start + batch_size])
        rep = adapter.preprocess_with_report(chunk, skip_bad=True, max_pixels=max_pixels)
        if rep.skipped and not skip_bad:
            bad = rep.skipped[0]
            raise ImageLoadError(f"cannot load image {chunk[bad.index]!r}: {bad.reason}. Nothing was written. Fix "
                                 "or remove the file, or pass --skip-bad to leave unreadable images out of the report.",
                                 source=chunk[bad.index], reason=bad.reason)
        skipped += [{"image": chunk[s.index], "error": s.reason} for s in rep.skipped]
        kept += [chunk[i] for i in rep.kept]
        pixels.append(rep.pixel_values)
    if not kept:
        raise ImageLoadError(f"none of the {len(images)} images could be loaded; first problem: "
                             f"{skipped[0]['image']}: {skipped[0]['error']}", source=skipped[0]["image"],
                             reason=skipped[0]["error"])
    return kept, torch.cat(pixels), skipped


def _display_names(paths: Sequence[str]) -> list[str]:
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths, strict=True)]


@torch.no_grad()
def make_report(
    adapter: Any,
    images: Sequence[str | Path],
    texts: Sequence[str],
    out_dir: str | Path = DEFAULT_OUT,
    *,
    top: int = 5,
    layers: int | Sequence[int] | None = None,
    last: int | None = None,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    pool: str | None = None,
) -> ReportResult:
    """Write the report for image files ``images`` and ``texts`` under ``out_dir`` (see the module docs).

    ``out_dir`` is used if it is new or empty, else a fresh numbered subfolder of it (``run-2``, …):
    nothing is ever overwritten. Every image is read before anything is written: an unreadable one
    stops the report (naming it) unless ``skip_bad``, which leaves it out and lists it on the page.
    ``layers`` (layer indices, negatives from the end) or ``last`` (the last ``k`` layers) limits the per-head terms, the head
    grids and the token maps to those layers. Repeated texts are kept once. ``on_progress(done, total)``
    is called after each image. ``pool`` (a pool name or file, :mod:`cliplens.analyses.pools`): also describe
    each image's embedding as a sparse sum of the pool's texts (SpLiCE, :mod:`cliplens.analyses.sparse`).
    """
    texts = list(dict.fromkeys(texts))
    if not texts:
        raise InvalidInputError("give at least one text to explain (--text)")
    if not images:
        raise InvalidInputError("give at least one image")
    if top < 1:
        raise InvalidInputError(f"--top must be at least 1, got {top}")
    info = adapter.describe()
    head_layers = resolve_layers(layers, adapter.vision.num_layers, last=last)
    directions = adapter.encode_text(texts)
    from cliplens.analyses.pools import load_pool
    from cliplens.analyses.sparse import sparse_texts

    pool_texts = load_pool(pool) if pool is not None else None
    pool_emb = adapter.encode_text(pool_texts) if pool_texts is not None else None
    paths, pixels, skipped = _load_all(adapter, [str(p) for p in images], skip_bad, max_pixels, batch_size)
    out, note = fresh_dir(Path(out_dir))
    cfg = adapter.preprocess_config
    random_weights = bool(info.get("random_weights"))  # then every figure says so
    names = _display_names(paths)
    files: list[Path] = []
    results: list[ImageResult] = []
    worst = 0.0
    for start in range(0, len(paths), batch_size):
        px = pixels[start:start + batch_size]
        dec = adapter.decompose(px, spatial=True, layers=head_layers)
        worst = max(worst, dec.check(rtol=float("inf")))
        scores = dec.normalized().project(directions, labels=texts)
        summaries = summarize(dec, directions, texts, top=top)
        described = (sparse_texts(dec.reconstruct().float().cpu(), pool_emb.float().cpu(), pool_texts).to_dicts(8)
                     if pool_texts is not None and pool_emb is not None else None)
        for b in range(px.shape[0]):
            i = start + b
            original = load_image(paths[i], max_pixels=max_pixels)
            ow, oh = original.size
            box = cfg.input_box(oh, ow)
            stem = f"{i:02d}-{slug(Path(paths[i]).stem)}"
            img = save_image(original, out / f"image-{stem}.png", image_name=names[i], title=f"{ow}x{oh} px",
                             box=box, random_weights=random_weights)
            files.append(img)
            shown = unnormalize(px[b], cfg.mean, cfg.std)
            per_text = text_results(scores, summaries[b], b)
            for t, r in enumerate(per_text):
                tstem = f"{stem}--{t:02d}-{slug(r.text)}"
                files += save_text_figures(r, out, tstem, image_name=names[i], random_weights=random_weights)
                png = save_token_map(r.token_map, out / f"map-{tstem}.png", model_input=shown, original=original,
                                     box=box, image_name=names[i], random_weights=random_weights,
                                     title=f"{r.text!r}: direct effect of each image region, through the heads "
                                           f"of {_layers_text(head_layers, adapter.vision.num_layers)}")
                r.figures["map"] = png.name
                files.append(png)
            desc = None if described is None else {"pool": pool, **described[b]}
            results.append(ImageResult(paths[i], names[i], (ow, oh), box, per_text, img.name, desc))
            if on_progress is not None:
                on_progress(i + 1, len(paths))
    result = ReportResult(out_dir=out, html=out / "index.html", model=info, texts=texts, head_layers=head_layers,
                          exactness=worst, images=results, skipped=skipped, files=files, note=note)
    summary = out / "summary.json"
    summary.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    files.append(summary)
    result.html.write_text(_html(result, dec.grid))
    files.append(result.html)
    return result


def _layers_text(head_layers: Sequence[int], num_layers: int) -> str:
    if len(head_layers) == num_layers:
        return "all layers"
    if list(head_layers) == list(range(head_layers[0], head_layers[-1] + 1)):
        return f"layers {head_layers[0]}-{head_layers[-1]}" if len(head_layers) > 1 else f"layer {head_layers[0]}"
    return "layers " + ", ".join(map(str, head_layers))


def _html(r: ReportResult, grid: tuple[int, int]) -> str:
    e = H.esc
    info = r.model
    h, w = info["image_size"]
    layers_text = _layers_text(r.head_layers, info["layers"])
    maps = (f"Each map shows, for one text, every image region's direct effect through the attention heads of "
            f"{layers_text}: what those heads add to the similarity by reading that region (summed over heads). "
            f"The model sees a {w}×{h} px input made from the image by its own preprocessing (resize, then "
            "crop the centre): the left panel shows the map over that input, the right one over the whole, "
            "uncropped image, where the dashed box is the part the model sees (nothing outside it counts). "
            f"Maps are smoothed up from the {grid[0]}×{grid[1]} grid of image tokens. Together the regions make "
            "up only part of the similarity (given under each text); the rest comes from the class token, the "
            f"MLPs and the embedding term{'' if layers_text == 'all layers' else ', and the other layers’ attention'}.")
    body = [
        "<h1>cliplens report</h1>",
        H.model_block(info, r.exactness),
        H.explanation(num_layers=info["layers"], num_heads=info["heads"], head_layers=r.head_layers, maps=maps),
        "<h2>Overview: cosine similarity of each image and text</h2>",
        "<table><tr><th>image</th>" + "".join(f"<th class=num>&ldquo;{e(t)}&rdquo;</th>" for t in r.texts) + "</tr>",
    ]
    for k, im in enumerate(r.images):
        cells = "".join(f"<td class=num>{H.signed(t.similarity)}</td>" for t in im.texts)
        body.append(f'<tr><td><a href="#image-{k}">{e(im.name)}</a></td>{cells}</tr>')
    body.append("</table>")
    if r.skipped:
        items = "".join(f"<li><code>{e(s['image'])}</code>: {e(s['error'])}</li>" for s in r.skipped)
        body.append(f"<p>Left out, could not be read ({len(r.skipped)}):</p><ul>{items}</ul>")
    for k, im in enumerate(r.images):
        rows = "".join(f"<tr><td>&ldquo;{e(t.text)}&rdquo;</td><td class=num>{H.signed(t.similarity)}</td></tr>"
                       for t in im.texts)
        body += [
            f'<h2 id="image-{k}">{e(im.name)}</h2>',
            f'<div class="figs">{H.figure(im.figure, f"the image {im.name}")}<div class="grow">'
            f'<p class="muted"><code>{e(im.source)}</code><br>{im.size[0]}×{im.size[1]} px</p>'
            f"<table><tr><th>text</th><th class=num>cosine similarity</th></tr>{rows}</table>"
            f"{_description_html(im.description)}</div></div>",
        ]
        body += [text_html(t) for t in im.texts]
    body.append('<p class="muted">Every number on this page, and the token maps, are in '
                '<a href="summary.json">summary.json</a>. Made by <code>cliplens report</code>.</p>')
    title = f"cliplens report · {', '.join(r.texts)}"
    return H.page(title, body)


def _description_html(d: dict[str, Any] | None) -> str:
    """The image as a sparse sum of pool texts (SpLiCE), one line."""
    if d is None:
        return ""
    terms = " + ".join(f"{t['weight']:.2f}&nbsp;&ldquo;{H.esc(t['text'])}&rdquo;" for t in d["terms"]) or "(no text)"
    more = " + …" if d["count"] > len(d["terms"]) else ""
    return (f"<p>In texts of the pool <code>{H.esc(d['pool'])}</code> (a sparse non-negative sum, SpLiCE): "
            f"{terms}{more}<br><span class=muted>{d['count']} texts; the sum's cosine with the image embedding "
            f"{d['cosine']:.2f}</span></p>")


def format_summary(r: ReportResult) -> str:
    """The short text summary the command prints."""
    lines = [f"cliplens report · model {r.model['name']} (weights: {r.model['weights']})"]
    if r.model["random_weights"]:
        lines.append("RANDOM WEIGHTS: every score is meaningless")
    width = max(len(i.name) for i in r.images)
    for im in r.images:
        for t in im.texts:
            heads = ", ".join(f"{c.name} {c.score:+.4f}" for c in t.top_heads[:3])
            lines.append(f"  {im.name:<{width}}  {t.text!r}: cosine similarity {t.similarity:+.4f} · top heads {heads}")
    if r.skipped:
        lines.append(f"left out {len(r.skipped)} unreadable image(s): " + ", ".join(s["image"] for s in r.skipped))
    n_png = sum(f.suffix == ".png" for f in r.files)
    lines += [f"the parts sum to the embedding within {r.exactness:.1e} (relative)",
              f"wrote {r.html} (+ {n_png} PNG figures, summary.json)", f"open: {r.html.resolve().as_uri()}"]
    return "\n".join(lines)
