"""The head atlas as HTML: an index page and one page per layer, with small PNGs, readable offline.

:func:`write_atlas` writes an :class:`~cliplens.analyses.atlas.Atlas` into a fresh folder (never over a
user's files: a folder that is not empty gets a fresh ``run-N`` sub-folder, see
:func:`cliplens.report.files.fresh_dir`)::

    index.html            what the atlas shows and how to read it; every layer and head, with its top texts
    layer-05.html         every analysed head of layer 5: its texts, and for each text the images at both
                          ends of its direction, each with its map
    images/000123.png     the data set's image 123 as the model saw it (its input crop)
    maps/L05.H03/t01-000123.png
                          the map of head L5.H3 along its text 1 over image 123
    atlas.json            every number on the pages (texts, shares of variance removed, images, scores, map scales)

Maps are drawn over a grey copy of the image with the diverging colour map of every cliplens figure
(:data:`cliplens.report.plotting.DIVERGING`, centred on zero: red toward the text, blue away); the maps of
one text share one scale, written next to the text. Links are relative, and nothing is fetched from the
network, so a copy of the folder works anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from cliplens.analyses.atlas import Atlas, AtlasHead, ShownImage
from cliplens.report import html as H
from cliplens.report.files import fresh_dir
from cliplens.report.plotting import DIVERGING, MAP_ALPHA, mark_random_weights

__all__ = ["AtlasFiles", "layer_page", "map_image", "write_atlas"]

#: how wide a thumbnail is drawn on the pages (CSS pixels)
THUMB = 88

_CSS = """
nav{margin:.5em 0 1em;font-size:.95em} nav a{margin-right:.6em} nav .here{font-weight:700;margin-right:.6em}
.text{margin:1.1em 0 1.6em;padding-top:.2em;border-top:1px solid #eee}
.text h3{margin:.3em 0 .5em;font-size:1em} .text h3 .rank{color:#888;margin-right:.3em}
.end{display:flex;gap:.6em;align-items:flex-start;margin:.35em 0}
.end-label{flex:0 0 4.2em;font-size:.85em;color:#555;padding-top:.2em}
.cards{display:flex;flex-wrap:wrap;gap:.6em}
.card{margin:0;width:%(pair)dpx} .pair{display:flex;gap:2px}
.pair img{width:%(thumb)dpx;height:%(thumb)dpx;object-fit:contain;background:#eee;display:block}
.card figcaption{font-size:.75em;line-height:1.25;color:#444;margin-top:.15em;overflow:hidden;
white-space:nowrap;text-overflow:ellipsis}
.scale{display:inline-block;width:140px;height:10px;vertical-align:middle;border:1px solid #ccc;
background:linear-gradient(to right,%(gradient)s)}
.headrow td{vertical-align:top} .texts{font-size:.92em} .texts span.f{color:#777}
section.head{margin-top:2.2em} section.head h2{margin-bottom:.3em}
""".replace("%(pair)d", str(2 * THUMB + 2)).replace("%(thumb)d", str(THUMB))


def _gradient() -> str:
    cmap = colormaps[DIVERGING]
    stops = []
    for x in np.linspace(0, 1, 11):
        r, g, b, _ = cmap(float(x))
        stops.append(f"rgb({round(255 * r)},{round(255 * g)},{round(255 * b)}) {round(100 * x)}%")
    return ",".join(stops)


CSS = _CSS.replace("%(gradient)s", _gradient())


@dataclass
class AtlasFiles:
    """What :func:`write_atlas` wrote."""

    folder: Path
    note: str = ""  # said when the folder given was not empty and a fresh sub-folder was used
    pages: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.folder / "index.html"


# ---- pictures ------------------------------------------------------------------------------------------

def map_image(view: np.ndarray, values: np.ndarray, limit: float) -> Image.Image:
    """``values`` ``[gh, gw]`` upsampled bilinearly over a grey copy of ``view`` (uint8 ``[h, w, 3]``), in the
    diverging colours centred on zero with limits ``±limit``."""
    h, w = view.shape[:2]
    grid = torch.from_numpy(np.asarray(values, dtype=np.float64))[None, None]
    up = torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    rgb = colormaps[DIVERGING]((np.clip(up / limit, -1, 1) + 1) / 2)[..., :3]
    grey = 0.25 + 0.75 * (view.astype(np.float64) / 255.0) @ np.array([0.299, 0.587, 0.114])
    out = (1 - MAP_ALPHA) * grey[..., None] + MAP_ALPHA * rgb
    return Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))


def _save_png(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# ---- names ---------------------------------------------------------------------------------------------

def page_name(layer: int) -> str:
    return f"layer-{layer:02d}.html"


def image_name(index: int) -> str:
    return f"images/{index:06d}.png"


def map_name(layer: int, head: int, text: int, index: int) -> str:
    return f"maps/L{layer:02d}.H{head:02d}/t{text + 1:02d}-{index:06d}.png"


def _anchor(head: AtlasHead) -> str:
    return head.name


def _num(x: float) -> str:
    """A signed number with 4 decimals, never "-0.0000"."""
    return f"{round(x, 4) + 0.0:+.4f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


# ---- pages ---------------------------------------------------------------------------------------------

def _title(atlas: Atlas) -> str:
    info = atlas.info
    return f"Head atlas · {info['model'].get('name', '?')} on {info['dataset'].get('name') or 'its data set'}"


def _model_line(atlas: Atlas) -> str:
    info = atlas.info
    m, shape = info["model"], info["shape"]
    parts = [f'<p class="muted">model <code>{H.esc(m.get("name"))}</code> · weights <code>{H.esc(m.get("weights"))}'
             f"</code> · {shape['layers']} layers × {shape['heads']} heads · store <code>{H.esc(info['store'])}</code> "
             f"with {info['images']} images of <code>{H.esc(info['dataset'].get('name'))}</code> "
             f"({H.esc(info['dataset'].get('layout'))})</p>"]
    if m.get("random_weights"):
        parts.insert(0, '<div class="warning">RANDOM WEIGHTS: the store was made with a model with random weights. '
                        "Every text, score and map in this atlas is meaningless; it only shows that the machinery "
                        "runs.</div>")
    return "\n".join(parts)


def _nav(atlas: Atlas, current: int | None) -> str:
    links = ['<a href="index.html">index</a>' if current is not None else '<span class="here">index</span>']
    for layer in atlas.layers:
        links.append(f'<span class="here">layer {layer}</span>' if layer == current
                     else f'<a href="{page_name(layer)}">layer {layer}</a>')
    return f"<nav>{' · '.join(links)}</nav>"


def _how_to_read(atlas: Atlas) -> str:
    info = atlas.info
    ts = info["textspan"]
    g = atlas.grid
    sources = sorted(set(atlas.map_source.values()))
    where = {"store": "from the per-token terms kept in the store (its spatial layers)",
             "model": "by running the model again on just the images shown (a spatial decomposition at that layer)"}
    items = [
        "<b>Heads.</b> <code>L5.H3</code> is layer 5, head 3; layers and heads are numbered from 0. A head's "
        "<i>direct effect</i> is what it adds to the unit-length image embedding, carried straight through the "
        "final LayerNorm (its statistics frozen at each image's values) and the projection.",
        "<b>Texts.</b> TEXTSPAN describes each head by a few texts from a pool: it picks, one after another, the "
        "text whose direction explains the most variance of the head's direct effect over the store's images, "
        "then removes that direction. The percentage after a text is the share of the head's total variance that "
        "removing its direction removed (after the texts before it), and the cumulative share up to it; the "
        "head's percentage is the share its texts remove together.",
        "<b>Images.</b> For each text, every image of the store gets a <i>score</i>: the head's direct effect on "
        "that image dotted with the text's unit-length embedding (its contribution to the image's cosine "
        "similarity with the text). <i>Highest</i> shows the images with the largest scores (most along the "
        "text), <i>lowest</i> those with the smallest; each image is shown as the model saw it (its input crop).",
        f"<b>Maps.</b> Next to each image, the head's direct effect split over the image's {g[0]}&times;{g[1]} "
        "patches, each patch's part projected on the same text: which regions drive the score. "
        '<span class="pos">Red</span> pushes toward the text, <span class="neg">blue</span> away, white is zero '
        f'(<span class="scale"></span> from −scale to +scale). All maps of one text share one scale, written next '
        "to the text. The patches and the class token (CLS, given under the image) add up to the score exactly. "
        f"Maps are computed {' and '.join(where[s] for s in sources)}.",
    ]
    pool = ts.get("pool")
    settings = (f"TEXTSPAN: {ts['texts_per_head']} texts per head from "
                + (f"the pool <code>{H.esc(pool)}</code> " if pool else "a pool ")
                + f"of {ts['pool_size']} texts, span rank {ts['rank']}, over {ts['images']} images")
    if ts.get("accuracy_rebuilt") is not None:
        settings += (f"; zero-shot accuracy {_pct(ts.get('accuracy_baseline'))} as it is and "
                     f"{_pct(ts['accuracy_rebuilt'])} with the analysed heads rebuilt from their texts (every "
                     "other part mean-ablated)")
    items.append(f"<b>Settings.</b> {settings}. {atlas.images_per_text} images at each end of each text.")
    lis = "".join(f"<li>{i}</li>" for i in items)
    return f'<div class="explain"><h2 style="margin-top:.6em">How to read this atlas</h2><ul>{lis}</ul></div>'


def _texts_cell(head: AtlasHead, n: int = 3) -> str:
    shown = [f'{H.esc(t.text)} <span class="f">({100 * t.fraction:.1f} %)</span>' for t in head.texts[:n]]
    more = f' <span class="f">… {len(head.texts) - n} more</span>' if len(head.texts) > n else ""
    return '<span class="texts">' + "; ".join(shown) + more + "</span>"


def index_page(atlas: Atlas) -> str:
    """The index: what the atlas shows, and every layer and head with its top texts and the variance they remove."""
    body = [f"<h1>{H.esc(_title(atlas))}</h1>", _nav(atlas, None), _model_line(atlas), _how_to_read(atlas)]
    for layer in atlas.layers:
        heads = atlas.heads_of(layer)
        source = "store" if atlas.map_source.get(layer) == "store" else "model"
        body.append(f'<h2><a href="{page_name(layer)}">Layer {layer}</a> <span class="muted">· {len(heads)} '
                    f"head{'s' if len(heads) != 1 else ''} · maps from the {source}</span></h2>")
        body.append("<table><tr><th>head</th><th class=num>variance removed</th><th>top texts (share of the "
                    "head's variance each removes)</th></tr>")
        for h in heads:
            body.append(f'<tr class="headrow"><td><a href="{page_name(layer)}#{_anchor(h)}">{h.name}</a></td>'
                        f"<td class=num>{100 * h.explained:.1f} %</td><td>{_texts_cell(h)}</td></tr>")
        body.append("</table>")
    body.append('<p class="muted">Every number on these pages is in <a href="atlas.json">atlas.json</a>. Made by '
                "<code>cliplens atlas</code>.</p>")
    return H.page(_title(atlas), body).replace("</style>", CSS + "</style>", 1)


def _card(layer: int, head: int, j: int, s: ShownImage) -> str:
    label = f" · {s.label}" if s.label else ""
    cls = "" if s.cls is None else f" · CLS {_num(s.cls)}"
    tip = f"{s.id}{label} · score {s.score:+.4f}{cls}"
    return (f'<figure class="card" title="{H.esc(tip)}"><div class="pair">'
            f'<img src="{image_name(s.index)}" alt="image {H.esc(s.id)}" loading="lazy">'
            f'<img src="{map_name(layer, head, j, s.index)}" alt="map of image {H.esc(s.id)}" loading="lazy"></div>'
            f"<figcaption>{H.signed(s.score)} <span class=muted>{'' if s.cls is None else 'CLS ' + _num(s.cls)}</span>"
            f"<br>{H.esc(s.id)}"
            f"{H.esc(label)}</figcaption></figure>")


def layer_page(atlas: Atlas, layer: int) -> str:
    """One layer: every analysed head, its texts, and for each text the images at both ends with their maps."""
    heads = atlas.heads_of(layer)
    title = f"Layer {layer} · {_title(atlas)}"
    body = [f"<h1>Layer {layer}</h1>", _nav(atlas, layer), _model_line(atlas),
            '<p>For each head: its TEXTSPAN texts (the share of the head\'s variance each removes), and for each '
            "text the images "
            "scoring highest and lowest along it, each with its map (<span class=pos>red</span> toward the text, "
            '<span class=neg>blue</span> away, <span class="scale"></span> from −scale to +scale; the score is in '
            'red or blue under the pair). <a href="index.html">How to read this atlas</a>.</p>',
            "<table><tr><th>head</th><th class=num>variance removed</th><th>top texts</th></tr>"]
    for h in heads:
        body.append(f'<tr class="headrow"><td><a href="#{_anchor(h)}">{h.name}</a></td>'
                    f"<td class=num>{100 * h.explained:.1f} %</td><td>{_texts_cell(h)}</td></tr>")
    body.append("</table>")
    for h in heads:
        body.append(f'<section class="head" id="{_anchor(h)}"><h2>{h.name} <span class="muted">· '
                    f"its {len(h.texts)} texts remove {100 * h.explained:.1f} % of its variance</span></h2>")
        for j, t in enumerate(h.texts):
            body.append(f'<div class="text"><h3><span class="rank">{j + 1}.</span>{H.esc(t.text)} '
                        f'<span class="muted">· removes {100 * t.fraction:.1f} % of the variance (cumulative '
                        f'{100 * t.cumulative:.1f} %) · maps ±{t.limit:.2g}'
                        "</span></h3>")
            for label, shown in (("highest", t.top), ("lowest", t.bottom)):
                cards = "".join(_card(h.layer, h.head, j, s) for s in shown)
                body.append(f'<div class="end"><div class="end-label">{label}</div><div class="cards">{cards}'
                            "</div></div>")
            body.append("</div>")
        body.append("</section>")
    body.append(_nav(atlas, layer))
    return H.page(title, body).replace("</style>", CSS + "</style>", 1)


# ---- the whole atlas -----------------------------------------------------------------------------------

def write_atlas(atlas: Atlas, out_dir: str | os.PathLike[str], *,
                progress: Callable[[int, int], None] | None = None) -> AtlasFiles:
    """Write ``atlas`` into ``out_dir`` (or a fresh sub-folder of it if it is not empty; nothing already there
    is touched). ``progress`` is called with ``(files written, files to write)``."""
    folder, note = fresh_dir(Path(out_dir))
    files = AtlasFiles(folder, note)
    jobs: list[tuple[str, Callable[[], Image.Image]]] = []
    index_of = {s.row: s.index for h in atlas.heads for t in h.texts for s in (*t.top, *t.bottom)}
    for row, index in sorted(index_of.items(), key=lambda x: x[1]):
        jobs.append((image_name(index), lambda v=atlas.views[row]: Image.fromarray(v)))
    for h in atlas.heads:
        for j, t in enumerate(h.texts):
            lim = t.limit
            for s in dict((s.index, s) for s in [*t.top, *t.bottom]).values():
                jobs.append((map_name(h.layer, h.head, j, s.index),
                             lambda s=s, lim=lim: map_image(atlas.views[s.row], s.map, lim)))
    pages = [("index.html", lambda: index_page(atlas))]
    pages += [(page_name(layer), lambda layer=layer: layer_page(atlas, layer)) for layer in atlas.layers]
    total = len(jobs) + len(pages) + 1
    done = 0
    random_weights = bool(atlas.info["model"].get("random_weights"))  # then every picture says so
    for name, make in jobs:
        files.images.append(_save_png(mark_random_weights(make(), random_weights), folder / name))
        done += 1
        if progress is not None:
            progress(done, total)
    (folder / "atlas.json").write_text(json.dumps(atlas.to_dict(), indent=1) + "\n")
    for name, make in pages:
        path = folder / name
        path.write_text(make(), encoding="utf-8")
        files.pages.append(path)
        done += 1
        if progress is not None:
            progress(done, total)
    if progress is not None:
        progress(total, total)
    return files

