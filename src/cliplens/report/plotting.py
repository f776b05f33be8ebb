"""Figures: token maps over the model's input and over the original image, bar charts, head grids
and plain images, drawn with matplotlib's object API (no pyplot, no display, no global state).

Conventions, the same for every figure cliplens draws:

* signed values use one diverging colour map, :data:`DIVERGING`, centred on zero (white = 0;
  red = toward the text, blue = away from it, as in the bars) with limits ``±max|value|`` and a
  colour bar saying what the colours mean;
* maps are drawn over a grey copy of the image, so that every colour is the map's;
* the heading (the image's name, the title, and a note) is wrapped to the figure's width; figures use
  matplotlib's constrained layout and are saved with a tight bounding box, so no title or label is ever
  clipped or drawn over another;
* every figure (and image) made for a model with random weights says so in red above its heading:
  :func:`mark_random_weights`, called by :func:`heading` with ``random_weights=True`` (the builders'
  keyword of that name), and by the atlas on its PNG thumbnails;
* a colour bar is as tall as the maps it belongs to (not the whole figure);
* every layer and head is named from 0: ``L5.H0`` is layer 5, head 0.

Each figure has a builder returning the :class:`~matplotlib.figure.Figure` (``*_figure``) and a
``save_*`` shortcut writing it to a PNG.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox
from PIL import Image
from torch import Tensor

from cliplens.evaluation.segmentation import upsample_map

__all__ = [
    "ACCURACY_LIMITS", "DIVERGING", "DPI", "MAX_SHOWN", "NEGATIVE", "POSITIVE", "RANDOM_WEIGHTS_NOTE", "SIGNED_LABEL",
    "ablation_figure", "bars_figure", "colorbar", "head_grid_figure", "heading", "image_figure", "mark_random_weights",
    "match_height", "new_figure", "overlay", "random_weights_mark", "save", "save_ablation_curve", "save_bars",
    "save_head_grid", "save_image", "save_token_map", "slug", "symmetric_limit", "token_map_figure", "unnormalize",
    "wrap",
]

#: the colour map of signed values (centred on zero: red = positive, blue = negative)
DIVERGING = "RdBu_r"
#: bar colours, from the two ends of :data:`DIVERGING`
POSITIVE, NEGATIVE = "#d6604d", "#4393c3"
#: the colour bar's label for contributions to a cosine similarity
SIGNED_LABEL = "contribution to cosine similarity\n(red: toward the text, blue: away)"
#: how opaque a map is over its (grey) image
MAP_ALPHA = 0.65
#: an original image is drawn from a copy at most this many pixels on its longer side
MAX_SHOWN = 1024
#: saved PNGs: pixels per inch, and the margin (inches) around everything drawn
DPI, PAD = 110, 0.08
HEADING_SIZE = 9.0
LABEL_SIZE = 8.0


def slug(text: str) -> str:
    """A short file-name-safe form of a text (``"A red circle!"`` -> ``"a-red-circle"``)."""
    s = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(filter(None, s.split("-")))[:40].strip("-") or "text"


def wrap(text: str, width: int = 48) -> str:
    """Wrap each line of ``text`` to ``width`` characters (long words are broken too)."""
    return "\n".join(textwrap.fill(line, width) if line else "" for line in text.split("\n"))


def _chars(width_in: float, fontsize: float) -> int:
    """How many characters of ``fontsize`` fit on a line ``width_in`` inches wide (a safe estimate)."""
    return max(16, int(width_in * 72 / (0.62 * fontsize)))


def new_figure(width: float, height: float) -> Figure:
    """A figure (inches) with constrained layout, drawn by Agg: nothing shared with pyplot."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def heading(fig: Figure, title: str, *, image_name: str = "", note: str = "", random_weights: bool = False) -> Text:
    """The figure's heading: the image's name, the title and a note, each wrapped to the figure's width;
    with ``random_weights``, the red :data:`RANDOM_WEIGHTS_NOTE` above it (:func:`mark_random_weights`)."""
    lines = [s for s in (image_name, title, note) if s]
    fig._cliplens_heading = wrap("\n".join(lines), _chars(fig.get_figwidth(), HEADING_SIZE))  # type: ignore[attr-defined]
    if random_weights:
        mark_random_weights(fig)
    return _draw_heading(fig)


#: what every figure and image made with a random-weight model says, in red
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS: its scores and maps mean nothing"
RANDOM_COLOUR = "#c8102e"
#: the ``gid`` of the red line (find it with :func:`random_weights_mark`)
RANDOM_GID = "cliplens-random-weights"


def mark_random_weights(target: Figure | Image.Image, random_weights: bool = True) -> Any:
    """Say "RANDOM WEIGHTS" on a figure or an image (returned; unchanged when ``random_weights`` is false).

    A figure gets :data:`RANDOM_WEIGHTS_NOTE` in bold red as the first line(s) of its heading (room is kept for
    it in the heading, so constrained layout places it and nothing is drawn over it; calling :func:`heading`
    later keeps it). An image (PIL; the atlas's thumbnails) gets a copy with a red band along its top edge
    reading "RANDOM WEIGHTS"."""
    if not random_weights:
        return target
    if isinstance(target, Image.Image):
        return _mark_image(target)
    target._cliplens_random = True  # type: ignore[attr-defined]
    _draw_heading(target)
    return target


def random_weights_mark(fig: Figure) -> Text | None:
    """The red RANDOM WEIGHTS line of a figure (``None`` when it has none)."""
    return next((t for t in fig.artists if isinstance(t, Text) and t.get_gid() == RANDOM_GID), None)


def _draw_heading(fig: Figure) -> Text:
    """The suptitle: the heading (:func:`heading`), below blank lines that the red random-weights line covers."""
    body = getattr(fig, "_cliplens_heading", "")
    old = random_weights_mark(fig)
    if old is not None:
        old.remove()
    if not getattr(fig, "_cliplens_random", False):
        return fig.suptitle(body, fontsize=HEADING_SIZE)
    warn = wrap(RANDOM_WEIGHTS_NOTE, _chars(fig.get_figwidth(), HEADING_SIZE * 1.12))
    reserved = "\n".join(" " for _ in warn.split("\n"))
    sup = fig.suptitle(reserved + ("\n" + body if body else ""), fontsize=HEADING_SIZE)
    # over the blank lines at the top of the heading (constrained layout has made room for them), wherever it goes
    fig.add_artist(Annotation(warn, xy=(0.5, 1.0), xycoords=sup, ha="center", va="top", fontsize=HEADING_SIZE,
                              fontweight="bold", color=RANDOM_COLOUR, gid=RANDOM_GID))
    return sup


def _mark_image(img: Image.Image) -> Image.Image:
    """A copy of ``img`` with a red band reading RANDOM WEIGHTS along its top edge."""
    from PIL import ImageDraw

    out = img.convert("RGB")
    w, h = out.size
    band = max(9, round(0.14 * h))
    text = "RANDOM WEIGHTS" if w >= 6 * band else "RANDOM"
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, w - 1, band - 1), fill=RANDOM_COLOUR)
    size = max(6, min(band - 3, int(w / (0.68 * len(text)))))
    draw.text((w / 2, band / 2), text, fill="white", anchor="mm", font_size=size)
    return out


def save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write a PNG with a tight bounding box (nothing clipped); its heading (with the random-weights line, if
    any) and its caption (the settings under the panels, if any) are also the PNG's ``Title``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mark = random_weights_mark(fig)
    caption = fig._supxlabel.get_text() if fig._supxlabel is not None else ""
    title = "\n".join(filter(None, [mark.get_text() if mark else "", getattr(fig, "_cliplens_heading", None)
                                     if mark else fig.get_suptitle(), caption]))
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=PAD, metadata={"Title": title})
    return path


def unnormalize(pixel_values: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``[3, H, W]`` normalised pixels -> ``[H, W, 3]`` float RGB in [0, 1] for display."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    img = pixel_values.detach().float().cpu() * s + m
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def symmetric_limit(*arrays: Any) -> float:
    """The largest absolute value over the arrays (1 when all are zero): colour limits ``±lim``."""
    lim = max((float(np.abs(np.asarray(a)).max()) for a in arrays if np.asarray(a).size), default=0.0)
    return lim if lim > 0 else 1.0


def _grey(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` (uint8 or float in [0, 1]) or ``[H, W]`` -> float grey in [0, 1], lightened a little."""
    img = np.asarray(image)
    img = img / 255.0 if img.dtype.kind in "ui" else img.astype(np.float64)
    g = img @ np.array([0.299, 0.587, 0.114]) if img.ndim == 3 else img
    return 0.25 + 0.75 * g


def _display(image: np.ndarray | Image.Image) -> tuple[np.ndarray, int, int]:
    """``(copy, height, width)``: a copy of ``image`` at most :data:`MAX_SHOWN` pixels on its longer
    side (to be drawn at the original's coordinates), and the original's size."""
    if isinstance(image, Image.Image):
        w, h = image.size
        if max(w, h) > MAX_SHOWN:
            image = image.copy()
            image.thumbnail((MAX_SHOWN, MAX_SHOWN))
        return np.asarray(image), h, w
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    step = math.ceil(max(h, w) / MAX_SHOWN)
    return (arr[::step, ::step] if step > 1 else arr), h, w


def overlay(ax: Any, image: np.ndarray, values: np.ndarray, *, lim: float | None = None,
            extent: tuple[float, float, float, float] | None = None, image_extent: tuple[float, ...] | None = None,
            ) -> Any:
    """Draw ``image`` in grey and the signed ``values`` over it (:data:`DIVERGING`, ``±lim``, default
    ``max|values|``); ``extent`` places the values and ``image_extent`` the image (left, right, bottom,
    top). Returns the values' ``AxesImage`` (for :func:`colorbar`)."""
    lim = symmetric_limit(values) if lim is None else lim
    ax.imshow(_grey(image), cmap="gray", vmin=0, vmax=1, extent=image_extent)
    im = ax.imshow(values, cmap=DIVERGING, norm=Normalize(-lim, lim), alpha=MAP_ALPHA, extent=extent)
    ax.set_axis_off()
    return im


def colorbar(fig: Figure, im: Any, axes: Any, label: str = SIGNED_LABEL) -> Any:
    """A colour bar for ``im`` next to ``axes`` (one axes or a list), its colours fully opaque, as tall as the
    axes drawn (:func:`match_height`)."""
    cb = fig.colorbar(im, ax=axes, shrink=0.9, aspect=25)
    cb.solids.set_alpha(1.0)
    cb.set_label(label, fontsize=LABEL_SIZE)
    cb.ax.tick_params(labelsize=7)
    match_height(cb.ax, axes)
    return cb


#: the width of a colour bar (inches)
BAR_WIDTH = 0.14


def match_height(cax: Any, axes: Any, width: float = BAR_WIDTH) -> None:
    """Draw the colour bar ``cax`` from the top of ``axes`` (one or a list) to their bottom as drawn (images
    keep their aspect, so their boxes are often shorter than their cells), ``width`` inches wide, where
    constrained layout put it."""
    refs = list(np.atleast_1d(axes).ravel()) if not hasattr(axes, "get_position") else [axes]

    def locate(ax: Any, renderer: Any) -> Bbox:
        boxes = []
        for a in refs:
            a.apply_aspect()
            boxes.append(a.get_position())
        own = ax.get_position(original=True)
        ax.set_box_aspect(None)  # (constrained layout sets one; the height is the maps')
        y0, y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
        return Bbox.from_bounds(own.x0, y0, min(own.width, width / ax.figure.get_figwidth()), y1 - y0)

    cax.set_axes_locator(locate)


# --------------------------------------------------------------------------- token maps
def token_map_figure(
    grid: Tensor | np.ndarray,
    *,
    model_input: np.ndarray,
    original: np.ndarray | Image.Image | None = None,
    box: tuple[float, float, float, float] | None = None,
    title: str = "",
    image_name: str = "",
    colorbar_label: str = SIGNED_LABEL,
    note: str = "",
    random_weights: bool = False,
) -> Figure:
    """A signed token map over the model's input and, when given, over the original image.

    ``grid`` is ``[gh, gw]``; ``model_input`` the (un-normalised) ``[H, W, 3]`` model input;
    ``original`` the uncropped image (an array or a PIL image; drawn from a copy at most
    :data:`MAX_SHOWN` pixels wide, in the original's pixel coordinates) and ``box`` where the model
    input lies in it, ``(top, left,
    bottom, right)`` in original pixels (:meth:`cliplens.images.PreprocessConfig.input_box`;
    default: all of it). The map is upsampled bilinearly to the model input; over the original it
    covers exactly ``box`` (dashed). One colour scale, centred on zero, for both panels.
    Axes are labelled ``"model input"`` and ``"original"`` (``ax.get_label()``).
    """
    g = torch.as_tensor(grid).detach().float()
    h, w = model_input.shape[:2]
    up = upsample_map(g, (h, w))
    lim = symmetric_limit(up)
    ratios = [w / h]
    if original is not None:
        shown, oh, ow = _display(original)
        top, left, bottom, right = box if box is not None else (0.0, 0.0, float(oh), float(ow))
        x0, x1, y0, y1 = min(0.0, left), max(float(ow), right), min(0.0, top), max(float(oh), bottom)
        ratios.append((x1 - x0) / (y1 - y0))
    # panels of one height; the whole figure at most ~11 inches wide
    height = min(3.4, 9.5 / sum(ratios))
    fig = new_figure(height * sum(ratios) + 1.6, height + 1.4)
    axes = fig.subplots(1, len(ratios), squeeze=False, width_ratios=ratios)[0]
    ax = axes[0]
    ax.set_label("model input")
    im = overlay(ax, model_input, up, lim=lim)
    ax.set_title(wrap(f"the model's input ({w}x{h} px, {g.shape[0]}x{g.shape[1]} tokens)",
                      _chars(height * ratios[0] + 0.4, LABEL_SIZE)), fontsize=LABEL_SIZE)
    if original is not None:
        ax2 = axes[1]
        ax2.set_label("original")
        overlay(ax2, shown, up, lim=lim, extent=(left, right, bottom, top), image_extent=(0, ow, oh, 0))
        ax2.set_xlim(x0, x1)
        ax2.set_ylim(y1, y0)
        if (top, left, bottom, right) != (0.0, 0.0, float(oh), float(ow)):
            ax2.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, lw=1.2, ec="k", ls="--"))
            what = f"the original image ({ow}x{oh} px); dashed: the part the model sees"
        else:
            what = f"the original image ({ow}x{oh} px), all of it seen by the model"
        ax2.set_title(wrap(what, _chars(height * ratios[1] + 0.4, LABEL_SIZE)), fontsize=LABEL_SIZE)
    colorbar(fig, im, list(axes), colorbar_label)
    heading(fig, title, image_name=image_name, note=note, random_weights=random_weights)
    return fig


def save_token_map(grid: Tensor | np.ndarray, path: str | Path, **kwargs: Any) -> Path:
    """:func:`token_map_figure` written to ``path``."""
    return save(token_map_figure(grid, **kwargs), path)


# --------------------------------------------------------------------------- images
def image_figure(image: np.ndarray | Image.Image, *, title: str = "", image_name: str = "",
                 box: tuple[float, float, float, float] | None = None, note: str = "", size: float = 3.4,
                 random_weights: bool = False) -> Figure:
    """An image as it is, its longer side ``size`` inches, with its name; ``box`` (top, left, bottom,
    right), when it is not the whole image, is drawn dashed and called the model's input."""
    shown, h, w = _display(image)
    width = max(2.6, size * min(1.0, w / h))
    fig = new_figure(width, size)
    ax = fig.add_subplot()
    ax.imshow(shown, extent=(0, w, h, 0))
    ax.set_axis_off()
    if box is not None and tuple(box) != (0.0, 0.0, float(h), float(w)):
        top, left, bottom, right = box
        ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, lw=1.2, ec="k", ls="--"))
        ax.set_xlim(min(0, left), max(w, right))
        ax.set_ylim(max(h, bottom), min(0, top))
        ax.set_title(wrap("dashed: the part the model sees", _chars(width, LABEL_SIZE)), fontsize=LABEL_SIZE)
    lines = heading(fig, title, image_name=image_name, note=note, random_weights=random_weights).get_text().count("\n") + 1
    # the image's own height, plus room for the heading and the axes title (no gaps)
    fig.set_figheight(size * min(1.0, h / w) + 0.2 + 0.17 * lines + (0.2 if ax.get_title() else 0.0))
    return fig


def save_image(image: np.ndarray | Image.Image, path: str | Path, **kwargs: Any) -> Path:
    """:func:`image_figure` written to ``path``."""
    return save(image_figure(image, **kwargs), path)


# --------------------------------------------------------------------------- bars and grids
def bars_figure(labels: Sequence[str], values: Sequence[float], *, title: str = "", xlabel: str = SIGNED_LABEL,
                total: float | None = None, total_label: str = "total (cosine similarity)", image_name: str = "",
                note: str = "", random_weights: bool = False) -> Figure:
    """Horizontal bars, one per label (red above zero, blue below, as in the maps), each with its
    value; with ``total``, a last grey bar for the sum, below a line."""
    vals = [float(v) for v in values]
    names = list(labels)
    colours = [POSITIVE if v > 0 else NEGATIVE for v in vals]
    if total is not None:
        vals.append(float(total))
        names.append(total_label)
        colours.append("#555555")
    fig = new_figure(5.4, 0.24 * len(vals) + 1.6)
    ax = fig.add_subplot()
    y = np.arange(len(vals))
    ax.barh(y, vals, color=colours)
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.6)
    if total is not None:
        ax.axhline(len(vals) - 1.5, color="#999999", lw=0.6, ls=":")
    lim = symmetric_limit(vals)
    ax.set_xlim(-1.3 * lim, 1.3 * lim)
    for yi, v in zip(y, vals, strict=True):
        ax.annotate(f"{v:+.4f}", (v, yi), xytext=(3 if v >= 0 else -3, 0), textcoords="offset points",
                    ha="left" if v >= 0 else "right", va="center", fontsize=6, color="#333333")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    heading(fig, title, image_name=image_name, note=note, random_weights=random_weights)
    return fig


def save_bars(labels: Sequence[str], values: Sequence[float], path: str | Path, **kwargs: Any) -> Path:
    """:func:`bars_figure` written to ``path``."""
    return save(bars_figure(labels, values, **kwargs), path)


def head_grid_figure(values: Tensor | np.ndarray, *, title: str = "", layer_labels: Sequence[int] | None = None,
                     image_name: str = "", note: str = "", colorbar_label: str = SIGNED_LABEL,
                     random_weights: bool = False) -> Figure:
    """A ``[layers, heads]`` heatmap (each head's score for a text), centred on zero; rows ``L0``,
    ``L1``, … (or ``layer_labels``), columns ``H0``, ``H1``, …: cell ``(L5, H0)`` is head ``L5.H0``."""
    v = torch.as_tensor(values).detach().float().cpu().numpy()
    layers = list(layer_labels) if layer_labels is not None else list(range(v.shape[0]))
    fig = new_figure(max(4.6, 0.42 * v.shape[1] + 2.8), 0.3 * v.shape[0] + 2.0)
    ax = fig.add_subplot()
    lim = symmetric_limit(v)
    im = ax.imshow(v, cmap=DIVERGING, norm=Normalize(-lim, lim), aspect="auto", interpolation="nearest")
    ax.set_xticks(range(v.shape[1]), [f"H{h}" for h in range(v.shape[1])], fontsize=7,
                  rotation=90 if v.shape[1] > 12 else 0)
    ax.set_yticks(range(v.shape[0]), [f"L{layer}" for layer in layers], fontsize=7)
    ax.set_xlabel("head (H0 = the first)", fontsize=LABEL_SIZE)
    ax.set_ylabel("layer (L0 = the first block)", fontsize=LABEL_SIZE)
    colorbar(fig, im, ax, colorbar_label)
    heading(fig, title, image_name=image_name, note=note, random_weights=random_weights)
    return fig


def save_head_grid(values: Tensor | np.ndarray, path: str | Path, **kwargs: Any) -> Path:
    """:func:`head_grid_figure` written to ``path``."""
    return save(head_grid_figure(values, **kwargs), path)


#: the y-limits of an accuracy plot (%): a little beyond 0 and 100, so that no line lies on the frame
ACCURACY_LIMITS = (-5.0, 105.0)


def ablation_figure(accuracies: Sequence[float], baseline: float, *, title: str = "",
                    extra: dict[str, float] | None = None, chance: float | None = None,
                    random_weights: bool = False) -> Figure:
    """Zero-shot accuracy with the attention of layers 0..l mean-ablated, against l (the paper's curve), with
    horizontal reference lines: the model as it is, ``chance`` (e.g. 1 / the number of classes) and the other
    studies of ``extra`` (name -> accuracy). Accuracies are fractions (0..1), drawn in %.

    Every line lies inside the axes (the y-axis runs from -5 to 105 %, ticks 0..100), and the legend, which
    gives each line's value, sits under the axes, where it covers nothing."""
    fig = new_figure(6.4, 4.6)
    ax = fig.add_subplot()
    ax.set_label("curve")
    layers = np.arange(len(accuracies))
    ax.plot(layers, 100 * np.asarray(accuracies, dtype=float), marker="o", color="#1f77b4", zorder=3,
            label="attention of layers 0..l mean-ablated", gid="curve")
    refs = [("nothing ablated (the model as it is)", baseline, "k", "--")]
    refs += [(name, value, colour, style) for (name, value), colour, style in
             zip((extra or {}).items(), ("#d62728", "#9467bd", "#2ca02c"), (":", "-.", (0, (5, 2, 1, 2))),
                 strict=False)]
    if chance is not None:
        refs.append(("chance", chance, "#7f7f7f", (0, (1, 3))))
    for name, value, colour, style in refs:
        ax.axhline(100 * value, color=colour, lw=1.2, ls=style, label=f"{name}: {100 * value:.1f} %", zorder=2,
                   gid="reference")
    ax.set_xlabel("l (layers counted from 0)", fontsize=LABEL_SIZE)
    ax.set_ylabel("zero-shot accuracy (%)", fontsize=LABEL_SIZE)
    ax.set_xticks(layers)
    if len(layers):
        ax.set_xlim(-0.4, len(layers) - 0.6)
    ax.set_ylim(*ACCURACY_LIMITS)
    ax.set_yticks(range(0, 101, 20))
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", color="#eeeeee", lw=0.6, zorder=0)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=7, frameon=False)
    heading(fig, "zero-shot accuracy with components mean-ablated", note=title, random_weights=random_weights)
    return fig


def save_ablation_curve(accuracies: Sequence[float], baseline: float, path: str | Path, **kwargs: Any) -> Path:
    """:func:`ablation_figure` written to ``path``."""
    return save(ablation_figure(accuracies, baseline, **kwargs), path)
