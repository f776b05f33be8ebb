"""Label maps as pictures: the fixed palette (:data:`PALETTE`: 0, background, black; 1..20 Kelly's colours of
maximum contrast; 255, not seen by the model, light grey), label maps as palette PNGs whose pixel values are the
labels (:func:`label_image`, :func:`save_label_png`), and data-set labels as a translucent overlay
(:func:`label_rgba`). The figures that draw them are in :mod:`cliplens.report.maps`, which re-exports these
names.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["IGNORE_COLOUR", "PALETTE", "label_image", "label_rgba", "save_label_png"]

#: label 255 (not seen by the model, outside a centre crop)
IGNORE_COLOUR = (224, 224, 224)
#: Kelly's colours of maximum contrast (white and black left out): labels 1..20
_KELLY = ["#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280", "#848482", "#008856", "#e68fac",
          "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300", "#882d17", "#8db600", "#654522",
          "#e25822", "#2b3d26"]


def _palette() -> list[tuple[int, int, int]]:
    """256 RGB colours: 0 black (background), 1..20 Kelly's colours, then golden-ratio hues (never dark),
    255 light grey (not seen)."""
    cols = [(0, 0, 0)] + [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in _KELLY]
    k = 0
    while len(cols) < 255:
        h = (k * 0.618033988749895) % 1.0
        s, v = (0.85, 0.95) if k % 2 == 0 else (0.55, 0.75)
        cols.append(tuple(int(round(255 * x)) for x in colorsys.hsv_to_rgb(h, s, v)))
        k += 1
    return [*cols, IGNORE_COLOUR]  # type: ignore[list-item]


#: the fixed palette of label PNGs: ``PALETTE[label]`` is the RGB colour of that label
PALETTE: list[tuple[int, int, int]] = _palette()


def label_image(labels: Tensor | np.ndarray) -> Image.Image:
    """Labels ``[H, W]`` (0..255) -> a palette PNG image (mode ``"P"``, :data:`PALETTE`) of the same size."""
    arr = np.asarray(torch.as_tensor(labels).cpu()) if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"labels must lie in 0..255, got {arr.min()}..{arr.max()}")
    img = Image.fromarray(arr.astype(np.uint8), mode="P")
    img.putpalette([c for rgb in PALETTE for c in rgb])
    return img


def save_label_png(labels: Tensor | np.ndarray, path: str | Path) -> Path:
    """The label map as a palette PNG (its pixel values are the labels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label_image(labels).save(path)
    return path


def label_rgba(labels: np.ndarray, step: int, background: int | None = None) -> np.ndarray:
    """Data-set labels (class ``c`` in :data:`PALETTE` colour ``c + 1``; 255 grey; ``background`` uncoloured)."""
    small = labels[::step, ::step]
    colours = np.asarray(PALETTE, dtype=np.float32) / 255.0
    idx = np.where(small == 255, 255, np.clip(small + 1, 0, 254))
    rgba = np.ones((*small.shape, 4), dtype=np.float32)
    rgba[..., :3] = colours[idx]
    rgba[..., 3] = np.where(small == 255, 0.85, np.where(small == background, 0.0, 0.65))
    return rgba
