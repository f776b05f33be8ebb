"""Figures: heatmap overlays and bar charts, drawn with matplotlib (Agg, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    """A short file-name-safe form of a text (``"A red circle!"`` -> ``"a-red-circle"``)."""
    s = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(filter(None, s.split("-")))[:40].strip("-") or "text"


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
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
    g = grid.detach().float()[None, None]
    return torch.nn.functional.interpolate(g, size=size, mode="bilinear", align_corners=False)[0, 0]


def save_overlay(
    image: np.ndarray,
    heat: Tensor,
    path: str | Path,
    *,
    title: str = "",
    mask: np.ndarray | None = None,
    cmap: str = "jet",
) -> Path:
    """Save ``image`` with ``heat`` (any grid, upsampled) overlaid, and optionally a mask beside it."""
    plt = _plt()
    h, w = image.shape[:2]
    up = upsample(heat, (h, w)).numpy()
    cols = 3 if mask is not None else 2
    fig, axes = plt.subplots(1, cols, figsize=(3 * cols, 3.2))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(image)
    im = axes[1].imshow(up, cmap=cmap, alpha=0.55)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[1].set_title(title, fontsize=9)
    if mask is not None:
        axes[2].imshow(mask, cmap="gray")
        axes[2].set_title("true mask", fontsize=9)
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)


def save_bars(labels: Sequence[str], values: Sequence[float], path: str | Path, *, title: str = "",
              xlabel: str = "") -> Path:
    """A horizontal bar chart (e.g. per-layer contributions)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(labels) + 1.2))
    y = np.arange(len(labels))
    vals = np.asarray(values, dtype=float)
    ax.barh(y, vals, color=["#d62728" if v < 0 else "#1f77b4" for v in vals])
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    return _save(fig, path)


def save_head_grid(values: Tensor, path: str | Path, *, title: str = "", layer_labels: Sequence[int] | None = None
                   ) -> Path:
    """A ``[layers, heads]`` heatmap (e.g. each head's score for a text)."""
    plt = _plt()
    v = values.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(0.45 * v.shape[1] + 1.8, 0.35 * v.shape[0] + 1.2))
    lim = float(np.abs(v).max()) or 1.0
    im = ax.imshow(v, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xlabel("head", fontsize=8)
    ax.set_ylabel("layer", fontsize=8)
    ax.set_xticks(range(v.shape[1]))
    labels = list(layer_labels) if layer_labels is not None else list(range(v.shape[0]))
    ax.set_yticks(range(v.shape[0]), labels)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)
