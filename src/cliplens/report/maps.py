"""Pictures of maps (:mod:`cliplens.maps`) and segmentations (:mod:`cliplens.tasks.segment`), over the
original photo, with the conventions of :mod:`cliplens.report.plotting`:

* min–max maps (0..1 per map) use one sequential colour map, :data:`SEQUENTIAL` (dark: 0, bright: 1);
  raw maps use :data:`~cliplens.report.plotting.DIVERGING`, centred on 0; each with a colour bar;
* maps lie over a grey copy of the photo, exactly where the model's input lies (a centre crop is
  dashed; nothing is drawn outside it); the photo's name, the text and the method (its display name,
  :func:`display_name`) head every figure, in a few words; the settings go in a caption under the
  panels (also in the PNG's Title);
* label maps are palette PNGs (:data:`PALETTE`: 0, background, black; 255, not seen by the model), made by
  :mod:`cliplens.report.labels` (its names are re-exported here).

Figures: :func:`map_overlay_figure` (one text), :func:`map_grid_figure` (every text of one image),
:func:`methods_figure` (texts × methods: per row the photo, the methods' maps and one colour bar), :func:`segmentation_figure` (labels with a legend) and
:func:`surgery_parts_figure` (which heads make a CLIP Surgery map); each has a ``save_*`` shortcut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image
from torch import Tensor

from cliplens.evaluation.segmentation import upsample_map
from cliplens.report.labels import IGNORE_COLOUR, PALETTE, label_image, label_rgba, save_label_png
from cliplens.report.plotting import (
    DIVERGING,
    LABEL_SIZE,
    MAP_ALPHA,
    NEGATIVE,
    POSITIVE,
    _chars,
    _display,
    _grey,
    colorbar,
    heading,
    match_height,
    new_figure,
    save,
    symmetric_limit,
    wrap,
)

__all__ = [
    "DISPLAY_NAMES", "IGNORE_COLOUR", "MINMAX_LABEL", "PALETTE", "RAW_LABEL", "SEQUENTIAL", "describe_settings",
    "display_name", "evaluation_figure", "methods_caption",
    "label_image", "save_evaluation_overlay",
    "method_words", "setting_words",
    "map_grid_figure", "map_overlay_figure", "methods_figure", "part_shares", "save_label_png", "save_map_grid",
    "save_map_overlay", "save_methods", "save_segmentation", "save_surgery_parts", "segmentation_figure",
    "surgery_parts_figure",
]

#: the colour map of min–max maps (0..1): dark where the text is weakest, bright where it is strongest
SEQUENTIAL = "inferno"
MINMAX_LABEL = "map, min–max per map\n(1: where the text scores highest)"
RAW_LABEL = "raw score (0 is white)\nred: toward the text, blue: away"


# --------------------------------------------------------------------------- words
_COMMON = {"method", "targets", "templates", "contrast", "fit", "size", "window", "stride", "normalization",
           "background", "threshold", "logit_scale", "rule"}


def method_words(settings: Mapping[str, Any]) -> str:
    """The method and its own parameters: ``"surgery (blocks 6, feature redundancy)"``; a feature surgery that
    fell back to another variant reads ``"feature redundancy (used: empty)"``."""
    s = dict(settings)
    used = s.pop("feature_used", None)
    if used is not None and used != s.get("feature"):
        s["feature"] = f"{_word(s.get('feature'))} (used: {used})"
    params = ", ".join(f"{k} {_word(v)}" for k, v in s.items() if k not in _COMMON and v is not None)
    return f"{s.get('method', '')}" + (f" ({params})" if params else "")


def setting_words(settings: Mapping[str, Any]) -> list[str]:
    """The other settings, each a few words: prompts, contrast, fit, sliding window, normalisation."""
    s = dict(settings)
    parts = []
    n = s.get("templates")
    parts.append(f"{n} prompt template{'s' if n != 1 else ''}" if n else "texts as given")
    if s.get("contrast"):
        parts.append(f"contrast: {s['contrast']}")
    size, fit = s.get("size"), s.get("fit")
    parts.append({"whole": f"whole image, short side {size} px", "squash": f"squashed to {size}x{size} px",
                  "crop": f"centre crop {size} px"}.get(str(fit), f"fit {fit}"))
    if s.get("window"):
        parts.append(f"sliding window {s['window']} px, stride {s.get('stride')} px")
    if s.get("normalization"):
        parts.append("min–max per map" if s["normalization"] == "minmax" else "raw scores")
    return parts


def describe_settings(settings: Mapping[str, Any], *, method: bool = True) -> str:
    """One line stating how maps were made, from :attr:`Maps.settings <cliplens.maps.Maps.settings>`:
    the method and its parameters, the prompts, the contrast, the fit and the normalisation."""
    head = [method_words(settings)] if method and settings.get("method") else []
    return " · ".join(head + setting_words(settings))


def _word(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_word(x) for x in v) + "]"
    return str(v)


# --------------------------------------------------------------------------- drawing one map
def _geometry(maps: Any) -> tuple[tuple[float, float, float, float], tuple[int, int], tuple[int, int]]:
    return tuple(float(b) for b in maps.box), tuple(maps.input_size), tuple(maps.image_size)  # type: ignore[return-value]


def _whole(box: Sequence[float], image_size: tuple[int, int]) -> bool:
    return tuple(box) == (0.0, 0.0, float(image_size[0]), float(image_size[1]))


def _draw(ax: Any, shown: np.ndarray, image_size: tuple[int, int], values: np.ndarray | None,
          box: Sequence[float], *, cmap: str = SEQUENTIAL, norm: Normalize | None = None) -> Any:
    """The photo in grey at its own pixel coordinates and ``values`` (over the model's input) over the
    part of it the model saw (``box``: top, left, bottom, right), dashed when it is not all of it."""
    h0, w0 = image_size
    top, left, bottom, right = box
    ax.imshow(_grey(shown), cmap="gray", vmin=0, vmax=1, extent=(0, w0, h0, 0))
    im = None
    if values is not None:
        im = ax.imshow(values, cmap=cmap, norm=norm, alpha=MAP_ALPHA, extent=(left, right, bottom, top))
    _frame(ax, image_size, box)
    return im


def _frame(ax: Any, image_size: tuple[int, int], box: Sequence[float]) -> None:
    """The photo's whole extent in view, the model's part of it (``box``) dashed when it is not all of it."""
    h0, w0 = image_size
    top, left, bottom, right = box
    if not _whole(box, image_size):
        ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, lw=1.2, ec="k", ls="--"))
    ax.set_xlim(min(0.0, left), max(float(w0), right))
    ax.set_ylim(max(float(h0), bottom), min(0.0, top))
    ax.set_axis_off()


def _scale(normalization: str, *arrays: Any) -> tuple[str, Normalize, str]:
    """Colour map, limits and colour-bar label of maps normalised as named."""
    if normalization == "minmax":
        return SEQUENTIAL, Normalize(0.0, 1.0), MINMAX_LABEL
    lim = symmetric_limit(*arrays)
    return DIVERGING, Normalize(-lim, lim), RAW_LABEL


def _crop_note(box: Sequence[float], image_size: tuple[int, int]) -> str:
    return "" if _whole(box, image_size) else "dashed: the part the model sees (nothing is mapped outside it)"


#: the size of a caption's letters (under a figure's panels)
CAPTION_SIZE = LABEL_SIZE - 0.5


def _caption(fig: Figure, text: str) -> None:
    """``text`` (wrapped already) under every panel, in small grey letters: how the maps were made."""
    if text:
        fig.supxlabel(text, fontsize=CAPTION_SIZE, color="#333333")


def _who(settings: Mapping[str, Any] | None) -> str:
    """The method named in ``settings`` (its display name), or "the model"."""
    method = (settings or {}).get("method")
    return display_name(str(method)) if method else "the model"


def _panel_size(image_size: tuple[int, int], height: float, max_width: float) -> tuple[float, float]:
    h0, w0 = image_size
    aspect = w0 / max(h0, 1)
    w = min(height * aspect, max_width)
    return w, w / aspect


# --------------------------------------------------------------------------- one text
def map_overlay_figure(image: np.ndarray | Image.Image, maps: Any, t: int, *, text: str | None = None,
                       settings: Mapping[str, Any] | None = None, image_name: str = "", note: str = "",
                       random_weights: bool = False) -> Figure:
    """Target ``t`` of one image's maps (an :class:`~cliplens.maps.ImageMaps`) over the photo, with a
    colour bar; the heading names the image, the text and the method, a caption under it the settings."""
    shown, h0, w0 = _display(image)
    box, _, image_size = _geometry(maps)
    values = maps.on_input(t).numpy()
    cmap, norm, label = _scale(maps.normalization, values)
    pw, ph = _panel_size(image_size, 4.2, 7.0)
    words = wrap(describe_settings(settings or {}), _chars(pw + 1.5, CAPTION_SIZE))
    fig = new_figure(pw + 1.5, ph + 1.3 + 0.15 * (words.count("\n") + 1))
    ax = fig.add_subplot()
    ax.set_label("map")
    im = _draw(ax, shown, image_size, values, box, cmap=cmap, norm=norm)
    crop = _crop_note(box, image_size)
    if crop:
        ax.set_title(wrap(crop, _chars(pw, LABEL_SIZE)), fontsize=LABEL_SIZE)
    colorbar(fig, im, ax, label)
    what = repr(text) if text is not None else f"target {t}"
    _caption(fig, words)
    heading(fig, f"{what}: where {_who(settings)} puts it", image_name=image_name, note=note,
            random_weights=random_weights)
    return fig


def save_map_overlay(image: np.ndarray | Image.Image, maps: Any, t: int, path: str | Path, **kwargs: Any) -> Path:
    """:func:`map_overlay_figure` written to ``path``."""
    return save(map_overlay_figure(image, maps, t, **kwargs), path)


# --------------------------------------------------------------------------- every text of one image
def map_grid_figure(image: np.ndarray | Image.Image, maps: Any, labels: Sequence[str], *,
                    settings: Mapping[str, Any] | None = None, image_name: str = "", note: str = "",
                    columns: int = 4, title: str = "where the model puts each text",
                    captions: Sequence[str] | None = None, random_weights: bool = False) -> Figure:
    """The photo and one panel per text, with one colour bar (min–max maps share 0..1; raw maps share
    one scale, ``±max|score|`` over the texts, so that they compare). ``captions``: the panels' titles
    (default: each text, quoted). The settings go in a caption under the panels."""
    shown, h0, w0 = _display(image)
    box, _, image_size = _geometry(maps)
    values = maps.on_input().numpy()  # [T, H, W]
    cmap, norm, label = _scale(maps.normalization, values)
    n = len(labels) + 1
    cols = max(1, min(n, columns if w0 <= 1.4 * h0 else max(2, columns - 1)))
    rows = -(-n // cols)
    cols = -(-n // rows)  # balanced: no row much shorter than the others
    pw, ph = _panel_size(image_size, 2.6, 3.6)
    crop = _crop_note(box, image_size)
    words = wrap("\n".join(filter(None, [describe_settings(settings or {}), crop])),
                 _chars(pw * cols + 1.6, CAPTION_SIZE))
    fig = new_figure(pw * cols + 1.6, (ph + 0.45) * rows + 1.1 + 0.15 * (words.count("\n") + 1))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    width = _chars(pw, LABEL_SIZE)
    axes[0].imshow(shown, extent=(0, w0, h0, 0))
    axes[0].set_axis_off()
    axes[0].set_label("photo")
    axes[0].set_title(wrap(f"the photo ({w0}x{h0} px)", width), fontsize=LABEL_SIZE)
    im = None
    for t, text in enumerate(labels):
        ax = axes[t + 1]
        ax.set_label(f"map {t}")
        im = _draw(ax, shown, image_size, values[t], box, cmap=cmap, norm=norm)
        ax.set_title(wrap(repr(text) if captions is None else captions[t], width), fontsize=LABEL_SIZE)
    for ax in axes[n:]:
        ax.remove()
    colorbar(fig, im, list(axes[1:n]), label)
    _caption(fig, words)
    heading(fig, title.replace("the model", _who(settings)), image_name=image_name, note=note,
            random_weights=random_weights)
    return fig


def save_map_grid(image: np.ndarray | Image.Image, maps: Any, labels: Sequence[str], path: str | Path,
                  **kwargs: Any) -> Path:
    """:func:`map_grid_figure` written to ``path``."""
    return save(map_grid_figure(image, maps, labels, **kwargs), path)


# --------------------------------------------------------------------------- methods side by side
#: how each registered method is named on figures (others: their registered name)
DISPLAY_NAMES = {
    "surgery": "CLIP Surgery", "maskclip": "MaskCLIP", "sclip": "SCLIP", "clearclip": "ClearCLIP", "naclip": "NACLIP",
    "resclip": "ResCLIP", "gem": "GEM", "legrad": "LeGrad", "gradcam": "Grad-CAM", "chefer": "Chefer et al.",
    "decomposition": "decomposition", "token-similarity": "token similarity", "raw-attention": "raw attention",
    "rollout": "rollout",
}
#: the widest a methods figure is drawn (inches), and the height a panel aims at
METHODS_WIDTH, METHODS_PANEL, METHODS_PER_ROW = 15.0, 2.0, 7
MAX_TITLE_LINES = 2


def display_name(method: str) -> str:
    """The name a figure gives a map method (``"surgery"`` -> ``"CLIP Surgery"``)."""
    return DISPLAY_NAMES.get(method, method)


def _short(text: str, width: int, lines: int = MAX_TITLE_LINES) -> str:
    """``text`` wrapped to ``width`` characters, at most ``lines`` lines (the last cut with "…")."""
    out = wrap(text, width).split("\n")
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][:max(1, width - 1)].rstrip() + "…"
    return "\n".join(out)


def _methods_layout(image_size: tuple[int, int], M: int) -> tuple[int, float, float]:
    """``(methods per row, panel width, panel height)`` (inches): at most :data:`METHODS_PER_ROW` methods a
    row (rows balanced), panels near :data:`METHODS_PANEL` high, the figure at most :data:`METHODS_WIDTH` wide
    (wide photos get thinner panels, very tall ones narrower)."""
    h0, w0 = image_size
    aspect = w0 / max(h0, 1)
    per_row = -(-M // -(-M // METHODS_PER_ROW))
    pw = min(METHODS_PANEL * aspect, 3.2, (METHODS_WIDTH - 1.2) / (per_row + 1), 1.3 * METHODS_PANEL * aspect)
    return per_row, pw, pw / aspect


def methods_caption(settings: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> str:
    """The settings of a methods figure in a few words (normalisation left out: the colours say it): those
    every method shares, then those that differ, each value with its methods (``"contrast: none (CLIP Surgery,
    GEM), others (decomposition)"``). Each method's own parameters are left to the settings file."""
    words = {m: setting_words({k: v for k, v in settings.get(m, {}).items() if k != "normalization"})
             for m in names}
    common = [w for w in words[names[0]] if all(w in words[m] for m in names)] if names else []
    differ: dict[str, dict[str, list[str]]] = {}
    for m in names:
        for w in words[m]:
            if w not in common:
                key, _, value = w.partition(": ") if ": " in w else ("", "", w)
                differ.setdefault(key, {}).setdefault(value, []).append(display_name(m))
    lines = [" · ".join(common)] if common else []
    for key, values in differ.items():
        lines.append((f"{key}: " if key else "") + ", ".join(f"{v} ({', '.join(ms)})" for v, ms in values.items()))
    return "\n".join(lines)


def methods_figure(image: np.ndarray | Image.Image, maps: Mapping[str, Any], labels: Sequence[str], *,
                   settings: Mapping[str, Mapping[str, Any]] | None = None, image_name: str = "",
                   note: str = "", random_weights: bool = False) -> Figure:
    """The same texts by each method: one row per text (more when the methods do not fit one row), each
    row the photo (titled with the text), then one map per method (``maps``: method name -> that method's
    :class:`~cliplens.maps.ImageMaps` of this image, titled with the method's :func:`display_name`), then
    one colour bar as tall as the row's maps. Min–max maps share 0..1; raw maps are each drawn on their own
    scale ``±max|score|`` (written under the method's name), and the bar reads −max .. 0 .. +max. The
    settings go in a caption under the panels (:func:`methods_caption`); the methods' own parameters are
    left to the settings file (the ``settings`` given are the maps' :attr:`~cliplens.maps.Maps.settings`)."""
    shown, h0, w0 = _display(image)
    names = list(maps)
    if not names:
        raise ValueError("methods_figure needs at least one method's maps")
    settings = settings or {}
    box, _, image_size = _geometry(maps[names[0]])
    values = {m: maps[m].on_input().numpy() for m in names}
    T, M = len(labels), len(names)
    per_row, pw, ph = _methods_layout(image_size, M)
    blocks = -(-M // per_row)  # rows of each text
    normalizations = list(dict.fromkeys(maps[m].normalization for m in names))
    bar_w = 0.62
    width = pw * (per_row + 1) + bar_w * len(normalizations) + 0.4
    chars = _chars(pw + 0.1, LABEL_SIZE)
    crop = _crop_note(box, image_size)
    scale = "; ".join(_SCALE_WORDS[k] for k in normalizations)
    caption = wrap("\n".join(filter(None, [f"each row: a text over the photo, then its map by each method; {scale}",
                                            methods_caption(settings, names), crop])), _chars(width, CAPTION_SIZE))
    title_lines = [max(_short(repr(t), chars).count("\n") + 1, 1 if all(maps[m].normalization == "minmax"
                                                                        for m in names) else 2) for t in labels]
    rows_h = sum(blocks * (ph + 0.16 * n + 0.16) for n in title_lines)
    head_lines = 2 + (1 if note else 0) + (1 if random_weights else 0)
    fig = new_figure(width, rows_h + 0.18 * head_lines + 0.15 * (caption.count("\n") + 1) + 0.3)
    grid = fig.add_gridspec(T * blocks, per_row + 1 + len(normalizations),
                            width_ratios=[pw] * (per_row + 1) + [bar_w] * len(normalizations),
                            height_ratios=[ph + 0.16 * n for n in title_lines for _ in range(blocks)])
    for t, text in enumerate(labels):
        for b in range(blocks):
            r = t * blocks + b
            row = names[b * per_row:(b + 1) * per_row]
            photo = fig.add_subplot(grid[r, 0])
            photo.imshow(shown, extent=(0, w0, h0, 0))
            _frame(photo, image_size, box)
            photo.set_label(f"photo {r}")
            photo.set_title(_short(repr(text), chars), fontsize=LABEL_SIZE, fontweight="bold")
            drawn: dict[str, list[Any]] = {}
            for c, m in enumerate(row):
                ax = fig.add_subplot(grid[r, c + 1])
                ax.set_label(f"{m} {t}")
                cmap, norm, _ = _scale(maps[m].normalization, values[m][t])
                _draw(ax, shown, image_size, values[m][t], box, cmap=cmap, norm=norm)
                title = display_name(m)
                if maps[m].normalization != "minmax":
                    title += f"\n±{norm.vmax:.3g}"
                ax.set_title(_short(title, chars), fontsize=LABEL_SIZE)
                drawn.setdefault(maps[m].normalization, []).append(ax)
            for k, kind in enumerate(normalizations):
                if kind not in drawn:
                    continue
                cax = fig.add_subplot(grid[r, per_row + 1 + k])
                cax.set_label(f"colour bar {r}")
                _row_bar(fig, cax, kind, drawn[kind])
    _caption(fig, caption)
    what = "the same texts by each method" if M > 1 else f"each text by {display_name(names[0])}"
    heading(fig, what + (f"\n{note}" if note else ""), image_name=image_name,
            random_weights=random_weights)
    return fig


_SCALE_WORDS = {"minmax": "colours: each map min–max (0: where the text scores lowest, 1: highest)",
                "raw": "colours: raw scores, each map on its own scale ±max|score| (under the method's name), "
                       "0 white"}


def _row_bar(fig: Figure, cax: Any, normalization: str, axes: list[Any]) -> Any:
    """One row's colour bar, as tall as its maps: 0..1 for min–max maps, −max .. +max for raw ones."""
    from matplotlib.cm import ScalarMappable

    if normalization == "minmax":
        sm = ScalarMappable(Normalize(0.0, 1.0), SEQUENTIAL)
        ticks, words = [0.0, 0.5, 1.0], ["0 low", "0.5", "1 high"]
    else:
        sm = ScalarMappable(Normalize(-1.0, 1.0), DIVERGING)
        ticks, words = [-1.0, 0.0, 1.0], ["−max", "0", "+max"]
    cb = fig.colorbar(sm, cax=cax)
    cb.set_ticks(ticks, labels=words)
    cb.ax.tick_params(labelsize=6.5)
    match_height(cax, axes)
    return cb


def save_methods(image: np.ndarray | Image.Image, maps: Mapping[str, Any], labels: Sequence[str],
                 path: str | Path, **kwargs: Any) -> Path:
    """:func:`methods_figure` written to ``path``."""
    return save(methods_figure(image, maps, labels, **kwargs), path)


# --------------------------------------------------------------------------- segmentation
def _areas(labels: np.ndarray, count: int) -> np.ndarray:
    """Pixels per label 0..count, and those not seen (255) last."""
    counts = np.bincount(labels.ravel(), minlength=256)
    return np.concatenate([counts[:count + 1], counts[255:256]])


def segmentation_figure(image: np.ndarray | Image.Image, seg: Any, *, image_name: str = "", note: str = "",
                        settings: Mapping[str, Any] | None = None, random_weights: bool = False) -> Figure:
    """The photo, and its labels (a :class:`~cliplens.tasks.segment.Segmentation`) over a grey copy:
    each class in its :data:`PALETTE` colour, background uncoloured; a legend names every class
    present with its share of the pixels the model saw; a caption under them the rule and the settings."""
    shown, h0, w0 = _display(image)
    labels = np.asarray(seg.labels.cpu() if isinstance(seg.labels, Tensor) else seg.labels)
    C = len(seg.classes)
    bg = list((settings or {}).get("background") or [])
    areas = _areas(labels, C)
    seen = max(1, int(areas[:-1].sum()))
    step = max(1, int(np.ceil(max(labels.shape) / max(shown.shape[:2]))))
    small = labels[::step, ::step]
    rgba = np.zeros((*small.shape, 4), dtype=np.float32)
    colours = np.asarray(PALETTE, dtype=np.float32) / 255.0
    rgba[..., :3] = colours[small]
    rgba[..., 3] = np.where(small == 0, 0.0, np.where(small == 255, 0.75, 0.6))
    pw, ph = _panel_size((h0, w0), 3.4, 4.6)
    fig = new_figure(2 * pw + 2.4, ph + 1.3)
    axes = fig.subplots(1, 2)
    axes[0].imshow(shown, extent=(0, w0, h0, 0))
    axes[0].set_title(f"the photo ({w0}x{h0} px)", fontsize=LABEL_SIZE)
    axes[0].set_axis_off()
    axes[0].set_label("photo")
    ax = axes[1]
    ax.set_label("labels")
    ax.imshow(_grey(shown), cmap="gray", vmin=0, vmax=1, extent=(0, w0, h0, 0))
    ax.imshow(rgba, extent=(0, w0, h0, 0), interpolation="nearest")
    if areas[-1]:  # dashed: the edge of what the model saw
        ys = (np.arange(small.shape[0]) + 0.5) * h0 / small.shape[0]
        xs = (np.arange(small.shape[1]) + 0.5) * w0 / small.shape[1]
        ax.contour(xs, ys, (small != 255).astype(float), levels=[0.5], colors="k", linewidths=1.2,
                   linestyles="--")
        ax.set_xlim(0, w0)
        ax.set_ylim(h0, 0)
    ax.set_axis_off()
    ax.set_title("each pixel's label", fontsize=LABEL_SIZE)
    handles = []
    for i in np.argsort(-areas[1:C + 1], kind="stable"):
        if areas[1 + i]:
            handles.append(Patch(facecolor=colours[1 + i], edgecolor="k", lw=0.4,
                                 label=f"{seg.classes[i]}  {100 * areas[1 + i] / seen:.1f} %"))
    bg_words = f"background: {', '.join(bg)}" if bg else "background"
    handles.append(Patch(facecolor="white", edgecolor="k", lw=0.4,
                         label=f"{wrap(bg_words, 36)} (uncoloured)  {100 * areas[0] / seen:.1f} %"))
    if areas[-1]:
        handles.append(Patch(facecolor=np.asarray(IGNORE_COLOUR) / 255, edgecolor="k", lw=0.4,
                             label="not seen by the model\n(outside the dashed line)"))
    leg = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False,
                    title="share of the pixels seen", title_fontsize=7)
    leg._legend_box.align = "left"
    found = len(handles) - 1 - (1 if areas[-1] else 0)
    title = f"segmentation: {found} of {C} class{'es' if C != 1 else ''} found"
    if settings:
        rule = ["each pixel: the class whose raw map scores highest"]
        if bg:
            rule.append("background where a background name scores highest")
        if settings.get("threshold") is not None:
            rule.append(("or" if bg else "background") + " where the top probability (softmax, logit scale "
                        f"{settings.get('logit_scale')}) is below {settings['threshold']}")
        words = "; ".join(rule) + f"\n{describe_settings({**settings, 'normalization': None})}"
        _caption(fig, wrap(words, _chars(fig.get_figwidth(), CAPTION_SIZE)))
    heading(fig, title, image_name=image_name, note=note, random_weights=random_weights)
    return fig


def save_segmentation(image: np.ndarray | Image.Image, seg: Any, path: str | Path, **kwargs: Any) -> Path:
    """:func:`segmentation_figure` written to ``path``."""
    return save(segmentation_figure(image, seg, **kwargs), path)


def evaluation_figure(image: np.ndarray | Image.Image, mask: np.ndarray, pred: np.ndarray,
                      class_names: Sequence[str], *, image_name: str = "", note: str = "",
                      ignore_index: int = 255, background: int | None = None, max_legend: int = 14,
                      random_weights: bool = False) -> Figure:
    """The photo, its ground truth and the prediction side by side (the same colour per class over a grey
    copy; the ``background`` class uncoloured); the legend names the classes present, largest first, with
    each one's IoU on this image."""
    shown, h0, w0 = _display(image)
    gt = np.asarray(mask)
    pr = np.where(gt == ignore_index, ignore_index, np.asarray(pred))
    step = max(1, int(np.ceil(max(gt.shape) / max(shown.shape[:2]))))
    pw, ph = _panel_size((h0, w0), 3.0, 4.0)
    fig = new_figure(3 * pw + 2.6, ph + 1.2)
    axes = fig.subplots(1, 3)
    axes[0].imshow(shown, extent=(0, w0, h0, 0))
    axes[0].set_title(f"the photo ({w0}x{h0} px)", fontsize=LABEL_SIZE)
    for ax, lab, title in ((axes[1], gt, "ground truth"), (axes[2], pr, "prediction")):
        ax.imshow(_grey(shown), cmap="gray", vmin=0, vmax=1, extent=(0, w0, h0, 0))
        ax.imshow(label_rgba(lab, step, background), extent=(0, w0, h0, 0), interpolation="nearest")
        ax.set_title(title, fontsize=LABEL_SIZE)
    for ax in axes:
        ax.set_axis_off()
    valid = gt != ignore_index
    C = len(class_names)
    area = np.bincount(gt[valid].ravel().clip(0, C), minlength=C + 1)[:C] + np.bincount(
        pr[valid].ravel().clip(0, C), minlength=C + 1)[:C]
    colours = np.asarray(PALETTE, dtype=np.float32) / 255.0
    handles = []
    for c in np.argsort(-area, kind="stable")[:max_legend]:
        if not area[c]:
            break
        inter = int(((gt == c) & (pr == c) & valid).sum())
        union = int((((gt == c) | (pr == c)) & valid).sum())
        face = "white" if c == background else colours[min(c + 1, 254)]
        handles.append(Patch(facecolor=face, edgecolor="k", lw=0.4,
                             label=f"{class_names[c]}{' (uncoloured)' if c == background else ''}  "
                                   f"IoU {100 * inter / max(union, 1):.0f} %"))
    if (~valid).any():
        handles.append(Patch(facecolor=np.asarray(IGNORE_COLOUR) / 255, edgecolor="k", lw=0.4,
                             label="ignored (255)"))
    axes[2].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False,
                   title="classes on this image", title_fontsize=7)
    acc = 100 * float((gt[valid] == pr[valid]).mean()) if valid.any() else float("nan")
    heading(fig, f"ground truth and prediction · pixel accuracy on this image {acc:.1f} %", image_name=image_name,
            note=note, random_weights=random_weights)
    return fig


def save_evaluation_overlay(image: np.ndarray | Image.Image, mask: np.ndarray, pred: np.ndarray,
                            class_names: Sequence[str], path: str | Path, **kwargs: Any) -> Path:
    """:func:`evaluation_figure` written to ``path``."""
    return save(evaluation_figure(image, mask, pred, class_names, **kwargs), path)


# --------------------------------------------------------------------------- CLIP Surgery by head
def part_shares(parts: Tensor | np.ndarray) -> np.ndarray:
    """Each part's share of a map's pattern: ``cov(part, map) / var(map)`` over the patches, where the
    map is the sum of the parts ``[P, gh, gw]``; the shares add up to 1 (all 0 for a constant map)."""
    p = torch.as_tensor(parts).detach().double().flatten(1)
    p = p - p.mean(1, keepdim=True)
    m = p.sum(0)
    var = float((m * m).sum())
    return (p @ m / var).numpy() if var > 0 else np.zeros(p.shape[0])


def surgery_parts_figure(image: np.ndarray | Image.Image, maps: Any, parts: Tensor | np.ndarray,
                         labels: Sequence[str], *, text: str, top: int = 4, bars: int = 12,
                         settings: Mapping[str, Any] | None = None, image_name: str = "", note: str = "",
                         random_weights: bool = False) -> Figure:
    """Which parts of CLIP Surgery's side path make the map of ``text``: ``parts`` ``[P, gh, gw]`` (from
    :func:`~cliplens.maps.surgery_parts`, summing to the raw map) named by ``labels`` (``"start"``,
    ``"L6.H0"``, …); ``maps`` gives where the map lies on the photo.

    Above: the ``bars`` largest shares of the map's pattern (:func:`part_shares`), the rest summed, and
    the total (100 %). Below, on one scale centred on 0: the raw map (the sum of every part) and the
    maps of the ``top`` largest parts."""
    shown, h0, w0 = _display(image)
    box, input_size, image_size = _geometry(maps)
    p = torch.as_tensor(parts).detach().float().cpu()
    total = p.sum(0)
    shares = part_shares(p)
    order = [int(i) for i in np.argsort(-np.abs(shares), kind="stable")]
    shown_bars = order[:bars]
    rest = float(shares[order[bars:]].sum()) if len(order) > bars else None
    first = next((lab for lab in labels if lab != "start"), "")
    start_name = f"start (the residual entering {first.split('.')[0]})" if first else "start"
    names = [start_name if labels[i] == "start" else labels[i] for i in shown_bars]
    vals = [100 * float(shares[i]) for i in shown_bars]
    if rest is not None:
        names.append(f"the other {len(order) - bars} parts")
        vals.append(100 * rest)
    k = min(top, len(order))
    h0_, w0_ = image_size
    width = 11.0
    pw = min(3.0, (width - 1.6) / (k + 1))
    ph = pw * h0_ / max(w0_, 1)
    if ph > 3.0:
        pw, ph = pw * 3.0 / ph, 3.0
    bar_h = 0.2 * (len(vals) + 1) + 1.0
    fig = new_figure(width, bar_h + ph + 2.2)
    top_fig, bottom_fig = fig.subfigures(2, 1, height_ratios=[bar_h, ph + 0.9])
    ax = top_fig.add_subplot()
    ax.set_label("bars")
    y = np.arange(len(vals) + 1)
    allv = [*vals, 100.0]
    ax.barh(y, allv, color=[POSITIVE if v > 0 else NEGATIVE for v in vals] + ["#555555"])
    ax.set_yticks(y, [*names, "all parts: the map (100 %)"], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.6)
    ax.axhline(len(vals) - 0.5, color="#999999", lw=0.6, ls=":")
    lim = max(abs(v) for v in allv)
    ax.set_xlim(min(0.0, 1.25 * min(allv)) - (0.12 * lim if min(allv) < 0 else 0.0), 1.25 * lim)
    for yi, v in zip(y, allv, strict=True):
        ax.annotate(f"{v:+.1f} %", (v, yi), xytext=(3 if v >= 0 else -3, 0), textcoords="offset points",
                    ha="left" if v >= 0 else "right", va="center", fontsize=6, color="#333333")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("share of the map's pattern: cov(part, map) / var(map) over the patches (%)", fontsize=LABEL_SIZE)
    axes = bottom_fig.subplots(1, k + 1, squeeze=False)[0]
    # each map minus its mean over the patches: the pattern that min–max keeps (and that the shares measure),
    # each on its own scale (a single part is much weaker than the map), centred on 0
    centred = [total - total.mean()] + [p[i] - p[i].mean() for i in order[:k]]
    cw = _chars(pw, LABEL_SIZE)
    for j, (a, c) in enumerate(zip(axes, centred, strict=True)):
        v = upsample_map(c, input_size)
        lim = symmetric_limit(v)
        a.set_label("map" if j == 0 else f"part {labels[order[j - 1]]}")
        im = _draw(a, shown, image_size, v, box, cmap=DIVERGING, norm=Normalize(-lim, lim))
        name = "the map (all parts)" if j == 0 else (  # panel titles stay on one line (the bars name the start)
            "start" if labels[order[j - 1]] == "start" else f"head {labels[order[j - 1]]}")
        a.set_title(wrap(name + ("" if j == 0 else f" ({100 * shares[order[j - 1]]:+.0f} %)"), cw),
                    fontsize=LABEL_SIZE)
        cb = bottom_fig.colorbar(im, ax=a, location="bottom", shrink=0.85, aspect=12, pad=0.02)
        cb.solids.set_alpha(1.0)
        cb.ax.tick_params(labelsize=6)
        cb.locator = MaxNLocator(3, symmetric=True)
        cb.update_ticks()
    bottom_fig.suptitle(f"the map and its {k} largest parts: raw score minus its mean over the patches (the pattern; "
                        "min–max ignores the mean), each on its own scale centred on 0 (white)", fontsize=LABEL_SIZE)
    if settings:
        words = describe_settings({k: v for k, v in settings.items() if k != "normalization"})
        _caption(fig, wrap(words, _chars(width, CAPTION_SIZE)))
        fig.set_figheight(fig.get_figheight() + 0.15 * (words.count("\n") + 1))
    heading(fig, f"{text!r}: which heads make CLIP Surgery's map\nthe map is exactly the sum of {len(labels)} parts: "
                 f"the start and each head of the surgical layers (LAYER.HEAD, from 0)",
            image_name=image_name, note=note, random_weights=random_weights)
    return fig


def save_surgery_parts(image: np.ndarray | Image.Image, maps: Any, parts: Tensor | np.ndarray,
                       labels: Sequence[str], path: str | Path, **kwargs: Any) -> Path:
    """:func:`surgery_parts_figure` written to ``path``."""
    return save(surgery_parts_figure(image, maps, parts, labels, **kwargs), path)
