"""The HTML pieces every cliplens page shares (``cliplens demo`` and ``cliplens report``): the style
sheet, escaping, the page skeleton, the model's line with its RANDOM WEIGHTS warning, and the
block explaining what the numbers, names and colours mean.

Pages are plain, self-contained HTML next to their figures (relative links only), readable offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["CSS", "esc", "explanation", "figure", "model_block", "page", "signed"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.6em 0} td,th{padding:.25em .7em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top} .num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#666;font-size:.92em} img{max-width:100%;height:auto} .block{margin:1.2em 0 2em}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} code{background:#f4f4f4;padding:0 .25em}
.explain{background:#f7f9fc;border:1px solid #dde4ee;border-radius:6px;padding:.4em 1.2em;margin:1em 0}
.explain li{margin:.35em 0}
.warning{background:#fdecea;border:2px solid #c62828;color:#8e0000;border-radius:6px;padding:.6em 1em;
font-weight:600;margin:1em 0}
.grow{flex:1 1 320px} .pos{color:#b2182b} .neg{color:#2166ac}
"""


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def signed(value: float, digits: int = 4) -> str:
    """A signed number, red when it raises the similarity and blue when it lowers it (as in the figures)."""
    cls = "pos" if value > 0 else "neg" if value < 0 else "zero"
    return f'<span class="{cls}">{value:+.{digits}f}</span>'


def figure(src: str, alt: str, *, width: int | None = None) -> str:
    """An ``<img>`` of a figure next to the page."""
    size = f' width="{width}"' if width else ""
    return f'<img src="{esc(src)}" alt="{esc(alt)}"{size} loading="lazy">'


def page(title: str, body: Iterable[str]) -> str:
    """A complete HTML document: ``title`` in the tab, the shared style, then ``body``."""
    head = ['<!doctype html>', '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"]
    return "\n".join([*head, *body, "</body></html>"]) + "\n"


def model_block(info: Mapping[str, Any], exactness: float) -> str:
    """The model's name, weights and shape, and how exactly the parts add up; a red warning
    when its weights are random."""
    parts = [f'<p class="muted">model <code>{esc(info["name"])}</code> ({esc(info["family"])}) · weights '
             f'<code>{esc(info["weights"])}</code> · {info["layers"]} layers × {info["heads"]} heads · input '
             f'{info["image_size"][1]}×{info["image_size"][0]} px in {info["patch_size"][1]}×{info["patch_size"][0]} '
             f"px patches · the parts add up to the model's own image embedding within {exactness:.1e} "
             "(relative error)</p>"]
    if info.get("random_weights"):
        parts.insert(0, '<div class="warning">RANDOM WEIGHTS: this model was loaded with random weights '
                        "(<code>--pretrained random</code>). Every score, chart and map on this page is "
                        "meaningless; it only shows that the machinery runs.</div>")
    return "\n".join(parts)


def explanation(*, num_layers: int, num_heads: int, head_layers: Sequence[int], maps: str = "") -> str:
    """"How to read this page": what a direct effect is, how parts are named (from 0), what the
    colours mean and, when ``maps`` (what the page's maps show) is given, the maps."""
    last = num_layers - 1
    if len(head_layers) == num_layers:
        split = f"every layer's attention splits further into its {num_heads} heads"
    else:
        split = (f"the attention of layers {_layer_range(head_layers)} splits further into its {num_heads} heads "
                 "(the other layers' attention is one part each: see <code>--last</code> and <code>--layers</code>)")
    items = [
        "<b>Direct effects.</b> The image embedding is exactly a sum of parts: the embedding term "
        "(<code>embed</code>: patch, class and position embeddings carried straight to the output), and each "
        "layer's attention output and MLP output, each taken straight through the final LayerNorm (its "
        "statistics frozen at this image's values) and the projection. A part's <i>direct effect</i> is "
        "what it adds there; what it does through later layers is counted in those layers. "
        f"Further, {split}, and each head's part into the image regions (tokens) it reads from.",
        "<b>Scores.</b> A part's score for a text is its contribution to the cosine similarity of the image "
        "and the text: the part's dot product with the unit-length text embedding, divided by the length of "
        "the image embedding. All the parts' scores add up to the cosine similarity exactly (the final "
        "LayerNorm's mean and bias are shared out equally among the layers' parts, as in the original "
        "method's code).",
        f"<b>Names.</b> <code>L5.H0</code> is layer 5, head 0; <code>L5.attn</code> and <code>L5.mlp</code> "
        "are layer 5's attention and MLP. Indices start at 0: layer 0 (<code>L0</code>) is the first block and "
        f"head 0 the first head; this model has layers L0–L{last} and heads H0–H{num_heads - 1}.",
        "<b>Colours.</b> <span class=pos>Red</span> pushes the image toward the text (raises the similarity), "
        "<span class=neg>blue</span> pushes it away. Every colour map is centred on zero (white); its colour "
        "bar gives the scale, which differs from figure to figure.",
    ]
    if maps:
        items.append(f"<b>Maps.</b> {maps}")
    lis = "".join(f"<li>{i}</li>" for i in items)
    return f'<div class="explain"><h2 style="margin-top:.6em">How to read this page</h2><ul>{lis}</ul></div>'


def _layer_range(layers: Sequence[int]) -> str:
    ls = sorted(layers)
    if ls == list(range(ls[0], ls[-1] + 1)) and len(ls) > 1:
        return f"L{ls[0]}–L{ls[-1]}"
    return ", ".join(f"L{i}" for i in ls)
