"""How images become model inputs for maps, and how maps go back onto the original images.

``fit``:
* ``"whole"`` (default): the whole image, resized so that its short side is ``size`` (default: the
  model's input size) and both sides are multiples of the patch size, aspect ratio kept (the
  positional embedding is interpolated for the other grid); nothing is cropped.
* ``"squash"``: the whole image resized to exactly ``size × size`` (CLIP Surgery's demo does this).
* ``"crop"``: the model's own preprocessing (resize and centre crop); outside the crop a map is NaN.
* ``"short"``: the segmentation benchmarks' rule (mmcv's ``rescale`` with ``keep_ratio``): scale by
  ``min(size / short side, max_long / long side)`` (``max_long`` = 2048), each side ``int(side · scale + 0.5)``,
  bilinear; sides are *not* rounded to the patch size, so use it with a sliding window (whose size is a
  multiple of the patch) — without one, the last partial row/column of patches is dropped by the model.

The box ``(top, left, bottom, right)`` says where the model's input lies in the original image (in
original pixels), so every map can be drawn on the original.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.images.io import DEFAULT_MAX_PIXELS, open_image
from cliplens.images.preprocess import Preprocessor

__all__ = ["FITS", "FittedImage", "fit_images", "to_image", "window_positions"]

Fit = Literal["whole", "squash", "crop", "short"]
FITS: tuple[str, ...] = ("whole", "squash", "crop", "short")
#: the long-side limit of ``fit="short"`` (the benchmarks resize to ``(2048, short side)`` keeping the ratio)
MAX_LONG = 2048
#: the largest token grid one forward takes (attention grows with its square); larger inputs need ``window``
MAX_TOKENS = 8192


@dataclass(frozen=True)
class FittedImage:
    """One image as the model sees it, and where that lies in the original."""

    pixels: Tensor  # [3, H, W], normalised
    image_size: tuple[int, int]  # original (h, w)
    box: tuple[float, float, float, float]  # (top, left, bottom, right) of the model input, original pixels
    source: str


def _describe(x: Any) -> str:
    if isinstance(x, (str, os.PathLike)):
        return os.fspath(x)
    if isinstance(x, Image.Image):
        return f"<PIL {x.width}x{x.height}>"
    return f"<{type(x).__name__} {tuple(getattr(x, 'shape', ()))}>"


def _original(image: Any, max_pixels: int) -> tuple[Any, tuple[int, int]]:
    """The image, opened once when it is a path, and its (h, w)."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return image, (image.height, image.width)
    if isinstance(image, np.ndarray):
        return image, tuple(int(s) for s in image.shape[:2])  # type: ignore[return-value]
    if isinstance(image, Tensor):
        if image.ndim != 3:
            raise InvalidInputError(f"map methods take one image per tensor ([3, H, W]), got shape {tuple(image.shape)}")
        return image, (int(image.shape[-2]), int(image.shape[-1]))
    raise InvalidInputError(f"unsupported image input {type(image).__name__}; expected a path, a PIL image, a numpy "
                            "array or a [3, H, W] tensor")


def _round_to(n: float, p: int) -> int:
    return max(p, int(round(n / p)) * p)


def fit_images(
    model: Any,
    images: Any,
    *,
    fit: Fit = "whole",
    size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skip_bad: bool = False,
) -> tuple[list[FittedImage], list[tuple[str, str]]]:
    """The model inputs of ``images`` (a path, PIL image, array or tensor, or a list of them).

    Returns the fitted images and the skipped ones ``(source, reason)`` (only with ``skip_bad``).
    """
    if fit not in FITS:
        raise InvalidInputError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, Tensor)) else list(images)
    if not items:
        raise InvalidInputError("no images given")
    cfg = model.preprocess_config
    ph, pw = model.vision.patch_size
    s = int(size or min(model.vision.image_size))
    if s < 1:
        raise InvalidInputError(f"size must be a positive number of pixels, got {size}")
    out: list[FittedImage] = []
    skipped: list[tuple[str, str]] = []
    for item in items:
        source = _describe(item)
        try:
            image, (h, w) = _original(item, max_pixels)
            if fit == "crop":
                pre = Preprocessor(cfg, max_pixels=max_pixels)
                box = cfg.input_box(h, w)
            else:
                interpolation = cfg.interpolation
                if fit == "squash":
                    th, tw = _round_to(s, ph), _round_to(s, pw)
                elif fit == "short":
                    scale = min(s / min(h, w), MAX_LONG / max(h, w))
                    th, tw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
                    interpolation = "bilinear"
                else:
                    scale = s / min(h, w)
                    th, tw = _round_to(h * scale, ph), _round_to(w * scale, pw)
                pre = Preprocessor(dataclasses.replace(cfg, image_size=(th, tw), resize_size=(th, tw),
                                                       resize_mode="squash", crop="none", interpolation=interpolation),
                                   max_pixels=max_pixels)
                box = (0.0, 0.0, float(h), float(w))
            pixels = pre.process_one(image)[0]
        except ImageLoadError as e:
            if not skip_bad:
                raise
            skipped.append((source, e.reason))
            continue
        out.append(FittedImage(pixels, (h, w), box, source))
    return out, skipped


def check_tokens(pixels: Tensor, patch: tuple[int, int], window: int | None) -> None:
    """Refuse inputs whose token grid one forward cannot take; say to use a sliding window."""
    H, W = pixels.shape[-2:]
    n = (H // patch[0]) * (W // patch[1]) if window is None else (min(window, H) // patch[0]) * (min(window, W) // patch[1])
    if n > MAX_TOKENS:
        raise InvalidInputError(
            f"an input of {W}x{H} pixels is {n} tokens for one forward (over {MAX_TOKENS}): attention grows with the "
            "square of that. Use a sliding window (window=..., stride=...; --window/--stride on the command line), "
            "or a smaller size."
        )


def window_positions(n: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` covering ``n`` with ``stride`` (the last one flush with the end)."""
    if window >= n:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def to_image(maps: Tensor, box: tuple[float, float, float, float], image_size: tuple[int, int]) -> Tensor:
    """Maps ``[..., h, w]`` over the model input -> ``[..., H0, W0]`` over the original image (bilinear); NaN
    where the model did not see the image (outside a crop)."""
    h0, w0 = image_size
    top, left, bottom, right = box
    lead = maps.shape[:-2]
    m = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    if (top, left, bottom, right) == (0.0, 0.0, float(h0), float(w0)):
        up = F.interpolate(m, size=(h0, w0), mode="bilinear", align_corners=False)
        return up.reshape(*lead, h0, w0)
    bh, bw = max(1, round(bottom - top)), max(1, round(right - left))
    up = F.interpolate(m, size=(bh, bw), mode="bilinear", align_corners=False)
    canvas = torch.full((m.shape[0], 1, h0, w0), math.nan)
    t0, l0 = round(top), round(left)
    ys, xs = max(0, t0), max(0, l0)
    ye, xe = min(h0, t0 + bh), min(w0, l0 + bw)
    canvas[..., ys:ye, xs:xe] = up[..., ys - t0:ye - t0, xs - l0:xe - l0]
    return canvas.reshape(*lead, h0, w0)


def group_by_size(fitted: Sequence[FittedImage]) -> dict[tuple[int, int], list[int]]:
    """Indices of the fitted images, grouped by input size (each group is one batch)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(fitted):
        groups.setdefault(tuple(f.pixels.shape[-2:]), []).append(i)  # type: ignore[arg-type]
    return groups
