"""How images become model inputs for maps, and how maps go back onto the original images.

``fit``:
* ``"whole"`` (default): the whole image, resized so that its short side is ``size`` (default: the
  model's input size) and both sides are multiples of the patch size, aspect ratio kept (the
  positional embedding is interpolated for the other grid); nothing is cropped.
* ``"squash"``: the whole image resized to exactly ``size × size`` (CLIP Surgery's demo does this).
* ``"crop"``: the model's own preprocessing (resize and centre crop); outside the crop a map is NaN.
* ``"short"``: the segmentation benchmarks' rule (mmcv's ``rescale`` with ``keep_ratio``): scale by
  ``min(size / short side, max_long / long side)`` (``max_long`` = 2048), each side ``int(side · scale + 0.5)``,
  bilinear. A sliding window (a multiple of the patch) takes those sides as they are, as the benchmarks do; a
  side the model sees whole — every side without a window, a side shorter than the window with one — is
  rounded to the nearest multiple of the patch size (at least one patch), so that the model accepts it
  (336x501 with patch 16 becomes 336x496). The map still covers the whole image and goes back onto its
  original pixels.

The box ``(top, left, bottom, right)`` says where the model's input lies in the original image (in
original pixels), so every map can be drawn on the original.

An image smaller than one patch along a side (a 5x3 icon) is still fitted (upscaled to the input size: an
honest result on interpolated pixels), with a warning, once per image, that says by how much.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.images.io import DEFAULT_MAX_PIXELS, open_image
from cliplens.images.preprocess import Preprocessor
from cliplens.maps.choices import FITS

__all__ = ["FITS", "MAX_TOKENS", "FittedImage", "check_tokens", "fit_images", "fitted_shape", "image_size", "labels_to_image",
           "to_image", "token_count", "window_positions"]

Fit = Literal["whole", "squash", "crop", "short"]
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


def image_size(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The ``(h, w)`` of an image input (a path is opened and decoded, as :func:`fit_images` does)."""
    return _original(image, max_pixels)[1]


def fitted_shape(model: ImageTextModel, hw: tuple[int, int], *, fit: Fit = "whole", size: int | None = None,
                 window: int | None = None) -> tuple[int, int]:
    """The ``(H, W)`` of the model input :func:`fit_images` makes from an image of ``hw`` pixels (no pixel is
    read: the arithmetic of the fit alone). ``window``: the sliding window the input will be seen through
    (``"short"`` keeps the sides a window covers as mmcv makes them; see the module docs)."""
    if fit not in FITS:
        raise InvalidInputError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    h, w = hw
    cfg = model.preprocess_config
    if fit == "crop":
        return tuple(int(x) for x in cfg.image_size)  # type: ignore[return-value]
    ph, pw = model.vision.patch_size
    s = int(size or min(model.vision.image_size))
    if s < 1:
        raise InvalidInputError(f"size must be a positive number of pixels, got {size}")
    if fit == "squash":
        return _round_to(s, ph), _round_to(s, pw)
    if fit == "short":
        scale = min(s / min(h, w), MAX_LONG / max(h, w))
        H, W = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        seen_whole = (lambda side: True) if window is None else (lambda side: side < window)
        return (_round_to(H, ph) if seen_whole(H) else H), (_round_to(W, pw) if seen_whole(W) else W)
    scale = s / min(h, w)
    return _round_to(h * scale, ph), _round_to(w * scale, pw)


def _upscale_note(source: str, hw: tuple[int, int], patch: tuple[int, int], pixels: Tensor,
                  box: tuple[float, float, float, float]) -> str | None:
    """A note for an image smaller than one patch along a side: by how much the model input enlarges it."""
    (h, w), (ph, pw) = hw, patch
    if h >= ph and w >= pw:
        return None
    H, W = pixels.shape[-2:]
    top, left, bottom, right = box
    fy, fx = H / max(bottom - top, 1e-9), W / max(right - left, 1e-9)
    factor = f"×{max(fy, fx):.1f}" if abs(fy - fx) <= 0.05 * max(fy, fx) else f"×{fx:.1f} in width and ×{fy:.1f} in height"
    return (f"image {source} is {w}x{h} pixels, smaller than one {pw}x{ph} patch: it was upscaled {factor} to "
            f"{W}x{H} pixels for the model, so its result is computed on interpolated pixels (kept, but read it "
            "with that in mind)")


def fit_images(
    model: ImageTextModel,
    images: Any,
    *,
    fit: Fit = "whole",
    size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skip_bad: bool = False,
    window: int | None = None,
) -> tuple[list[FittedImage], list[tuple[str, str]]]:
    """The model inputs of ``images`` (a path, PIL image, array or tensor, or a list of them). ``window``: the
    sliding window the inputs will be seen through, if any (it matters to ``fit="short"`` only).

    Returns the fitted images and the skipped ones ``(source, reason)`` (only with ``skip_bad``). An image
    smaller than one patch along a side is fitted all the same, with a warning giving the upscale factor.
    """
    if fit not in FITS:
        raise InvalidInputError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, Tensor)) else list(images)
    if not items:
        raise InvalidInputError("no images given")
    cfg = model.preprocess_config
    patch = model.vision.patch_size
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
                th, tw = fitted_shape(model, (h, w), fit=fit, size=s, window=window)
                interpolation = "bilinear" if fit == "short" else cfg.interpolation
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
        note = _upscale_note(source, (h, w), patch, pixels, box)
        if note is not None:
            warnings.warn(note, UserWarning, stacklevel=2)
        out.append(FittedImage(pixels, (h, w), box, source))
    return out, skipped


def token_count(shape: tuple[int, int], patch: tuple[int, int], window: int | None = None) -> int:
    """Tokens of one forward over an input of ``shape`` ``(H, W)`` pixels (one window's, with ``window``)."""
    H, W = shape
    if window is not None:
        H, W = min(window, H), min(window, W)
    return (H // patch[0]) * (W // patch[1])


def check_tokens(pixels: Tensor, patch: tuple[int, int], window: int | None, *, advice: str | None = None) -> None:
    """Refuse inputs whose token grid one forward cannot take (over :data:`MAX_TOKENS`); say what to do:
    ``advice``, or by default a sliding window or a smaller size."""
    H, W = pixels.shape[-2:]
    n = token_count((H, W), patch, window)
    if n > MAX_TOKENS:
        advice = advice or ("Use a sliding window (window=..., stride=...; --window/--stride on the command line), "
                            "or a smaller size.")
        raise InvalidInputError(
            f"an input of {W}x{H} pixels is {n} tokens for one forward (over {MAX_TOKENS}): attention grows with the "
            f"square of that. {advice}"
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


def labels_to_image(labels: Tensor, box: tuple[float, float, float, float], image_size: tuple[int, int],
                    fill: int) -> Tensor:
    """Integer labels ``[h, w]`` over the model input -> ``[H0, W0]`` over the original image (nearest, placed as
    :func:`to_image` places maps); ``fill`` where the model did not see the image."""
    h0, w0 = image_size
    top, left, bottom, right = box
    bh, bw = max(1, round(bottom - top)), max(1, round(right - left))
    up = F.interpolate(labels[None, None].double(), size=(bh, bw), mode="nearest")[0, 0].to(labels.dtype)
    if (bh, bw) == (h0, w0) and round(top) == 0 and round(left) == 0:
        return up
    canvas = torch.full((h0, w0), fill, dtype=labels.dtype)
    t0, l0 = round(top), round(left)
    ys, xs = max(0, t0), max(0, l0)
    ye, xe = min(h0, t0 + bh), min(w0, l0 + bw)
    canvas[ys:ye, xs:xe] = up[ys - t0:ye - t0, xs - l0:xe - l0]
    return canvas


def group_by_size(fitted: Sequence[FittedImage]) -> dict[tuple[int, int], list[int]]:
    """Indices of the fitted images, grouped by input size (each group is one batch)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(fitted):
        groups.setdefault(tuple(f.pixels.shape[-2:]), []).append(i)  # type: ignore[arg-type]
    return groups
