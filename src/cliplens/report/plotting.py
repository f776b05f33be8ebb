"""Figures: token maps over the model's input and over the original image, bar charts and head
grids, drawn with matplotlib (Agg, no display needed).

Conventions: signed maps use a diverging colour map centred on zero (``RdBu_r``: red pushes toward
the text, blue away) with a colour bar; titles are wrapped and figures saved with a tight bounding
box, so no title is ever clipped; every figure of an image carries the image's name.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DIVERGING", "save_bars", "save_head_grid", "save_token_map", "slug", "symmetric_limit", "unnormalize",
    "upsample", "wrap",
]

#: the colour map of signed maps (centred on zero)
DIVERGING = "RdBu_r"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    """A short file-name-safe form of a text (``"A red circle!"`` -> ``"a-red-circle"``)."""
    s = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(filter(None, s.split("-")))[:40].strip("-") or "text"


def wrap(text: str, width: int = 48) -> str:
    """Wrap a title so that it fits over its axes."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def save(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save with a tight bounding box (nothing clipped) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    _plt().close(fig)
    return path


def unnormalize(pixel_values: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``[3, H, W]`` normalised pixels -> ``[H, W, 3]`` float RGB in [0, 1] for display."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    img = pixel_values.detach().float().cpu() * s + m
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def upsample(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample a ``[gh, gw]`` map to ``size``."""
    g = torch.as_tensor(grid).detach().float()[None, None]
    return torch.nn.functional.interpolate(g, size=size, mode="bilinear", align_corners=False)[0, 0]


def symmetric_limit(*arrays: Any) -> float:
    """The largest absolute value over the arrays (1 when all are zero): colour limits ``±lim``."""
    lim = max((float(np.abs(np.asarray(a)).max()) for a in arrays if np.asarray(a).size), default=0.0)
    return lim if lim > 0 else 1.0


def save_token_map(
    grid: Tensor | np.ndarray,
    path: str | Path,
    *,
    model_input: np.ndarray,
    original: np.ndarray | None = None,
    box: tuple[float, float, float, float] | None = None,
    title: str = "",
    image_name: str = "",
    colorbar_label: str = "contribution to cosine similarity",
    note: str = "",
) -> Path:
    """A signed token map over the model's input and, when given, over the original image.

    ``grid`` is ``[gh, gw]``; ``model_input`` the (un-normalised) ``[H, W, 3]`` model input;
    ``original`` the uncropped image and ``box`` where the model input lies in it
    (:meth:`cliplens.images.PreprocessConfig.input_box`). Colours: :data:`DIVERGING`, centred on 0.
    """
    plt = _plt()
    g = torch.as_tensor(grid).detach().float()
    h, w = model_input.shape[:2]
    up = upsample(g, (h, w)).numpy()
    lim = symmetric_limit(up)
    panels = 2 if original is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.4), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(model_input)
    im = ax.imshow(up, cmap=DIVERGING, vmin=-lim, vmax=lim, alpha=0.6)
    ax.set_title(wrap(f"model input ({w}x{h}, {g.shape[0]}x{g.shape[1]} tokens)", 40), fontsize=8)
    if original is not None:
        ax2 = axes[0, 1]
        oh, ow = original.shape[:2]
        ax2.imshow(original)
        top, left, bottom, right = box if box is not None else (0.0, 0.0, float(oh), float(ow))
        ax2.imshow(up, cmap=DIVERGING, vmin=-lim, vmax=lim, alpha=0.6, extent=(left, right, bottom, top))
        if (top, left, bottom, right) != (0.0, 0.0, float(oh), float(ow)):
            ax2.add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False, lw=1, ec="k", ls="--"))
        ax2.set_xlim(min(0, left), max(ow, right))
        ax2.set_ylim(max(oh, bottom), min(0, top))
        ax2.set_title(wrap(f"original image ({ow}x{oh}); dashed: what the model sees", 40), fontsize=8)
    for a in axes.flat:
        a.axis("off")
    cb = fig.colorbar(im, ax=list(axes.flat), fraction=0.046 / panels, pad=0.02)
    cb.set_label(colorbar_label, fontsize=8)
    head = f"{image_name}\n{title}" if image_name else title
    if note:
        head += f"\n{note}"
    fig.suptitle(wrap(head, 60 * panels), fontsize=9)
    return save(fig, path)


def save_bars(labels: Sequence[str], values: Sequence[float], path: str | Path, *, title: str = "",
              xlabel: str = "") -> Path:
    """A horizontal bar chart (e.g. per-layer contributions): red below zero, blue above."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(labels) + 1.2))
    y = np.arange(len(labels))
    vals = np.asarray(values, dtype=float)
    ax.barh(y, vals, color=["#d62728" if v < 0 else "#1f77b4" for v in vals])
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_title(wrap(title, 60), fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    return save(fig, path)


def save_head_grid(values: Tensor | np.ndarray, path: str | Path, *, title: str = "",
                   layer_labels: Sequence[int] | None = None) -> Path:
    """A ``[layers, heads]`` heatmap (e.g. each head's score for a text), centred on zero."""
    plt = _plt()
    v = torch.as_tensor(values).detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(0.45 * v.shape[1] + 2.4, 0.35 * v.shape[0] + 1.4))
    lim = symmetric_limit(v)
    im = ax.imshow(v, cmap=DIVERGING, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xlabel("head (index from 0)", fontsize=8)
    ax.set_ylabel("layer (index from 0)", fontsize=8)
    ax.set_xticks(range(v.shape[1]))
    labels = list(layer_labels) if layer_labels is not None else list(range(v.shape[0]))
    ax.set_yticks(range(v.shape[0]), labels)
    ax.set_title(wrap(title, max(30, int(6 * v.shape[1]))), fontsize=9)
    fig.colorbar(im, ax=ax)
    return save(fig, path)
