"""Preprocessing images exactly as the source library does, and checking preprocessed batches.

:class:`Preprocessor` runs a :class:`~cliplens.images.config.PreprocessConfig`. For PIL inputs
its output is identical (maximum absolute difference 0) to the source's own transform (tested
against open_clip/torchvision and both Hugging Face backends). Tensor inputs are resized with
``torch.nn.functional.interpolate`` (antialiased). :func:`check_pixel_values` validates
already-preprocessed batches before the forward. Needs only PIL, numpy and torch (never
torchvision).
"""

from __future__ import annotations

import math
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from cliplens.core.view import VisionView
from cliplens.errors import ImageLoadError, InvalidInputError, PixelValueError
from cliplens.images.config import HIGH_BIT_MODES, PIL_FILTERS, TORCH_MODES, PreprocessConfig
from cliplens.images.io import DEFAULT_MAX_PIXELS, open_image, to_8bit, to_rgb, too_large

__all__ = ["ImageInput", "PreprocessResult", "Preprocessor", "SkippedImage", "check_pixel_values", "pixels_or_raise"]

ImageInput = str | os.PathLike | Image.Image | Tensor | np.ndarray


class _ResizeTooLarge(Exception):
    def __init__(self, size: tuple[int, int], out: tuple[int, int], pixels: int) -> None:
        self.size, self.out, self.pixels = size, out, pixels

# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedImage:
    """An input :class:`Preprocessor` skipped (``skip_bad=True``)."""

    index: int
    source: str
    reason: str


@dataclass(frozen=True)
class PreprocessResult:
    """What :meth:`Preprocessor.preprocess_with_report` returns.

    Attributes:
        pixel_values: ``[N, 3, H, W]`` float32 (``N`` may be 0 when everything was skipped).
        kept: index (into the inputs) of the input each row came from.
        skipped: the inputs that could not be loaded.
    """

    pixel_values: Tensor
    kept: list[int]
    skipped: list[SkippedImage]


def pixels_or_raise(report: PreprocessResult) -> Tensor:
    """The report's pixels; a warning naming skipped inputs; an error when nothing was loaded."""
    skipped = report.skipped
    if skipped and report.pixel_values.shape[0] == 0:
        first = skipped[0]
        raise ImageLoadError(f"none of the {len(skipped)} images could be loaded; first problem: "
                             f"{first.source}: {first.reason}", source=first.source, reason=first.reason)
    if skipped:
        shown = "; ".join(s.source for s in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} images that could not be loaded: {shown}", stacklevel=3)
    return report.pixel_values


def _describe(x: Any) -> str:
    if isinstance(x, (str, os.PathLike)):
        return os.fspath(x)
    if isinstance(x, Image.Image):
        return f"<PIL {x.mode} {x.width}x{x.height}>"
    if isinstance(x, (Tensor, np.ndarray)):
        return f"<{type(x).__name__} {tuple(x.shape)}>"
    return f"<{type(x).__name__}>"


_DIRECT_HINT = (
    "Already-normalised pixel values should not be preprocessed again: pass them straight to "
    "model.decompose() / model.encode_image()."
)


class Preprocessor:
    """Load and preprocess images exactly as the source transform described by ``config``.

    ``preprocessor(images)`` takes one input or a sequence of them: file paths, PIL images,
    uint8 ``HWC``/``HW`` numpy arrays (treated as PIL images), float ``HWC`` numpy arrays in
    ``[0, 1]``, or tensors (``[3, H, W]`` or ``[B, 3, H, W]``, uint8 0-255 or float in
    ``[0, 1]``; resized with antialiased ``interpolate``). It returns a float32
    ``[B, 3, H, W]`` batch. With ``skip_bad=True`` unreadable files are skipped with one
    warning; :attr:`last_report` (or :meth:`preprocess_with_report`) says which inputs survived.
    """

    def __init__(self, config: PreprocessConfig, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not isinstance(config, PreprocessConfig):
            raise TypeError(f"Preprocessor needs a PreprocessConfig, got {type(config).__name__}")
        if not isinstance(max_pixels, int) or max_pixels < 1:
            raise InvalidInputError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.config = config
        #: the largest image (pixels) decoded or produced by the resize step (see cliplens.images.io)
        self.max_pixels = max_pixels
        self.last_report: PreprocessResult | None = None
        c = config
        self._mean = torch.tensor(c.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(c.std, dtype=torch.float32).view(3, 1, 1)
        if c.rescale_arithmetic == "fused":
            self._fused_mean = (torch.tensor(c.mean, dtype=torch.float32) * (1.0 / c.rescale_factor)).view(3, 1, 1)
            self._fused_std = (torch.tensor(c.std, dtype=torch.float32) * (1.0 / c.rescale_factor)).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"Preprocessor({self.config!r})"

    @property
    def last_kept(self) -> list[int] | None:
        """Indices of the inputs kept by the last call (``None`` before any call)."""
        return None if self.last_report is None else self.last_report.kept

    # ---- public --------------------------------------------------------------------------
    def __call__(self, images: ImageInput | Sequence[ImageInput], *, skip_bad: bool = False) -> Tensor:
        return pixels_or_raise(self.preprocess_with_report(images, skip_bad=skip_bad))

    def preprocess_with_report(
        self, images: ImageInput | Sequence[ImageInput], *, skip_bad: bool = False
    ) -> PreprocessResult:
        """Like calling the preprocessor, but also returns which inputs were kept/skipped."""
        items = self._as_list(images)
        rows: list[Tensor] = []
        kept: list[int] = []
        skipped: list[SkippedImage] = []
        for i, item in enumerate(items):
            try:
                out = self.process_one(item)
            except ImageLoadError as e:
                if not skip_bad:
                    raise ImageLoadError(f"{e}. Check the file, or pass skip_bad=True to skip unreadable images "
                                         "with a warning.", source=e.source, reason=e.reason) from None
                skipped.append(SkippedImage(i, e.source or _describe(item), e.reason))
                continue
            rows.append(out)
            kept.extend([i] * out.shape[0])
        if rows:
            shapes = {tuple(r.shape[-2:]) for r in rows}
            if len(shapes) > 1:
                why = ("NaFlex keeps each image's aspect ratio, so images of different shapes get different token "
                       "grids; preprocess and run them one at a time (a batch size of 1), or load the model "
                       "without naflex for one fixed square size") if self.config.resize_mode == "max_patches" \
                    else "the configuration has no centre crop; preprocess them one at a time"
                raise PixelValueError(f"preprocessed images have different sizes {sorted(shapes)}: {why}")
            pixel_values = torch.cat(rows, 0)
        else:
            pixel_values = torch.empty(0, 3, *self.config.image_size, dtype=torch.float32)
        report = PreprocessResult(pixel_values, kept, skipped)
        self.last_report = report
        return report

    def process_one(self, image: ImageInput) -> Tensor:
        """Preprocess one input -> ``[B, 3, H, W]`` (``B`` = 1 except for a batched tensor)."""
        try:
            if isinstance(image, (str, os.PathLike)):
                return self._from_pil(open_image(image, max_pixels=self.max_pixels))
            if isinstance(image, Image.Image):
                if image.mode in HIGH_BIT_MODES:
                    image = to_8bit(image)
                return self._from_pil(image)
            if isinstance(image, np.ndarray):
                return self._from_numpy(image)
            if isinstance(image, Tensor):
                return self._from_tensor(image)
        except _ResizeTooLarge as e:
            raise too_large(_describe(image), e.size, e.pixels, self.max_pixels,
                            f"resizing it to {e.out[1]}x{e.out[0]} (the model's resize rule)") from None
        raise TypeError(
            f"unsupported image input {type(image).__name__}; expected a path, PIL image, numpy array "
            "or tensor"
        )

    # ---- inputs --------------------------------------------------------------------------
    @staticmethod
    def _as_list(images: Any) -> list[Any]:
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
            return [images]
        if isinstance(images, Sequence) or hasattr(images, "__iter__"):
            items = list(images)
            if not items:
                raise ValueError("no images given (an empty sequence)")
            return items
        raise TypeError(f"unsupported image input {type(images).__name__}")

    def _from_numpy(self, arr: np.ndarray) -> Tensor:
        shape = tuple(arr.shape)
        if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
            raise PixelValueError(
                f"numpy image of shape {shape} looks channels-first; numpy images must be HWC "
                "(height, width, channels): use arr.transpose(1, 2, 0), or torch.from_numpy(arr) "
                "for a CHW tensor"
            )
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
            raise PixelValueError(
                f"numpy image of shape {shape}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
            )
        if arr.dtype == np.uint8:
            a = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
            mode = "L" if a.ndim == 2 else ("RGB" if a.shape[-1] == 3 else "RGBA")
            return self._from_pil(Image.fromarray(np.ascontiguousarray(a), mode=mode))
        if np.issubdtype(arr.dtype, np.floating):
            a = arr[..., None] if arr.ndim == 2 else arr
            if a.shape[-1] == 4:
                raise PixelValueError(
                    f"float numpy image of shape {shape} has 4 channels; drop or composite the alpha "
                    "channel first (or pass a uint8 RGBA array)"
                )
            t = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)
            if t.shape[0] == 1:
                t = t.expand(3, -1, -1)
            return self._from_tensor(t)
        raise PixelValueError(
            f"numpy image of dtype {arr.dtype}: expected uint8 (0-255) or float (0-1)"
        )

    def _from_tensor(self, t: Tensor) -> Tensor:
        shape = tuple(t.shape)
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[1] != 3:
            hint = ""
            if t.ndim == 4 and t.shape[-1] == 3:
                hint = " It looks channels-last: use t.permute(0, 3, 1, 2)."
            elif t.ndim == 3 and t.shape[-1] == 3:
                hint = " It looks channels-last (HWC): use t.permute(2, 0, 1)."
            raise PixelValueError(
                f"image tensor of shape {shape}: expected [3, H, W] or [B, 3, H, W] (RGB), uint8 0-255 "
                f"or float 0-1.{hint} {_DIRECT_HINT}"
            )
        if t.shape[-1] == 0 or t.shape[-2] == 0 or t.shape[0] == 0:
            raise PixelValueError(f"image tensor of shape {shape} is empty")
        t = t.detach().cpu()
        if t.dtype == torch.uint8:
            u8 = self._geometry_uint8(t)
            return self._to_float(u8)
        if not t.is_floating_point():
            raise PixelValueError(
                f"image tensor of dtype {t.dtype}: expected uint8 (0-255) or float (0-1); convert with "
                ".to(torch.uint8) or .float() / 255"
            )
        if not bool(torch.isfinite(t).all()):
            raise PixelValueError(f"image tensor of shape {shape} contains NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        tol = 1e-3
        if lo < -tol or hi > 1 + tol:
            if lo >= 0 and hi <= 255:
                why = "it looks like 0-255 values in a float tensor: divide by 255 or convert to uint8"
            else:
                why = (f"values in [{lo:.3g}, {hi:.3g}] look already normalised. {_DIRECT_HINT}")
            raise PixelValueError(
                f"float image tensor of shape {shape} must hold values in [0, 1]; {why}"
            )
        x = t if t.dtype in (torch.float32, torch.float64) else t.float()
        x = self._geometry_float(x).float()
        if self.config.do_normalize:
            x = (x - self._mean) / self._std
        return x

    def _from_pil(self, img: Image.Image) -> Tensor:
        c = self.config
        if c.convert_rgb != "last":
            img = to_rgb(img, (255, 255, 255) if c.convert_rgb == "first_white" else None)
        if c.resize_backend == "torch":
            img = to_rgb(img)
            u8 = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0)
            return self._to_float(self._geometry_uint8(u8.contiguous()))
        if c.do_resize:
            h, w = self._resize_size(img.height, img.width)
            if (h, w) != (img.height, img.width):
                img = img.resize((w, h), resample=PIL_FILTERS[c.interpolation])
        if c.crop != "none":
            img = self._crop_pil(img)
        img = to_rgb(img)
        u8 = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0)
        return self._to_float(u8)

    # ---- geometry ------------------------------------------------------------------------
    def _resize_size(self, height: int, width: int) -> tuple[int, int]:
        h, w = self.config.resize_output_size(height, width)
        if h * w > self.max_pixels:
            raise _ResizeTooLarge((height, width), (h, w), h * w)
        return h, w

    def _crop_pil(self, img: Image.Image) -> Image.Image:
        c = self.config
        th, tw = c.image_size
        top, left = c.crop_window(img.height, img.width)
        pad_t, pad_l = max(-top, 0), max(-left, 0)
        pad_b = max(top + th - img.height, 0)
        pad_r = max(left + tw - img.width, 0)
        if pad_t or pad_l or pad_b or pad_r:
            bands = len(img.getbands())
            fill: Any = c.fill_color if img.mode == "F" else int(c.fill_color)
            if bands > 1:
                fill = (fill,) * bands
            palette = img.getpalette() if img.mode == "P" else None
            img = ImageOps.expand(img, border=(pad_l, pad_t, pad_r, pad_b), fill=fill)
            if palette is not None:
                img.putpalette(palette)
            top, left = top + pad_t, left + pad_l
        if (img.height, img.width) == (th, tw) and top == 0 and left == 0:
            return img
        return img.crop((left, top, left + tw, top + th))

    def _crop_tensor(self, x: Tensor, fill: float) -> Tensor:
        th, tw = self.config.image_size
        h, w = x.shape[-2:]
        top, left = self.config.crop_window(h, w)
        pad_t, pad_l = max(-top, 0), max(-left, 0)
        pad_b = max(top + th - h, 0)
        pad_r = max(left + tw - w, 0)
        if pad_t or pad_l or pad_b or pad_r:
            x = F.pad(x, (pad_l, pad_r, pad_t, pad_b), value=fill)
            top, left = top + pad_t, left + pad_l
        return x[..., top:top + th, left:left + tw]

    def _interp_mode(self) -> str:
        mode = self.config.interpolation
        if mode not in TORCH_MODES:
            raise PixelValueError(
                f"interpolation {mode!r} is only available for PIL inputs; convert the tensor to a PIL "
                "image, or use a bicubic/bilinear/nearest configuration"
            )
        if mode == "nearest":
            return "nearest-exact" if self.config.resize_backend == "torch" else "nearest"
        return mode

    def _geometry_uint8(self, u8: Tensor) -> Tensor:
        c = self.config
        if c.do_resize:
            h, w = self._resize_size(u8.shape[-2], u8.shape[-1])
            if (h, w) != tuple(u8.shape[-2:]):
                mode = self._interp_mode()
                if mode in ("bilinear", "bicubic"):
                    native = mode == "bicubic" or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") \
                        or _is_arm()
                    if native:
                        u8 = F.interpolate(u8, size=(h, w), mode=mode, align_corners=False, antialias=True)
                    else:
                        y = F.interpolate(u8.float(), size=(h, w), mode=mode, align_corners=False, antialias=True)
                        u8 = y.round_().to(torch.uint8)
                else:
                    u8 = F.interpolate(u8, size=(h, w), mode=mode)
        if c.crop != "none":
            u8 = self._crop_tensor(u8, float(c.fill_color))
        return u8

    def _geometry_float(self, x: Tensor) -> Tensor:
        c = self.config
        if c.do_resize:
            h, w = self._resize_size(x.shape[-2], x.shape[-1])
            if (h, w) != tuple(x.shape[-2:]):
                mode = self._interp_mode()
                if mode in ("bilinear", "bicubic"):
                    x = F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True)
                else:
                    x = F.interpolate(x, size=(h, w), mode=mode)
        if c.crop != "none":
            x = self._crop_tensor(x, c.fill_color / 255.0)
        return x

    # ---- arithmetic ----------------------------------------------------------------------
    def _to_float(self, u8: Tensor) -> Tensor:
        """uint8 ``[B, 3, H, W]`` -> float32 with the source's exact rescale/normalise arithmetic."""
        c = self.config
        u8 = u8.contiguous()
        if c.rescale_arithmetic == "fused":
            if c.do_normalize and c.do_rescale:
                return (u8.to(torch.float32) - self._fused_mean) / self._fused_std
            x = u8 * c.rescale_factor if c.do_rescale else u8.to(torch.float32)
        elif not c.do_rescale:
            x = u8.to(torch.float32)
        elif c.rescale_arithmetic == "mul_f64":
            x = (u8.to(torch.float64) * c.rescale_factor).to(torch.float32)
        else:  # "div": torchvision ToTensor
            x = u8.to(torch.float32).div(1.0 / c.rescale_factor)
        if c.do_normalize:
            x = (x - self._mean) / self._std
        return x.contiguous()


def _is_arm() -> bool:
    return platform.machine() in ("aarch64", "arm64")


# ---------------------------------------------------------------------------------------------
# validation of preprocessed batches
# ---------------------------------------------------------------------------------------------
def _multiples(n: int, p: int) -> str:
    lo, hi = (n // p) * p, math.ceil(n / p) * p
    return f"{hi}" if lo == 0 or lo == hi else f"{lo} or {hi}"


def check_pixel_values(pixel_values: Tensor, view: VisionView) -> Tensor:
    """Validate a preprocessed ``[B, C, H, W]`` batch for the forward; returns it cast.

    Checks: a 4-D floating tensor, ``C == view.in_channels``, ``H`` and ``W`` multiples of the
    patch size, finite values, and a loose range check (``|x| > 50`` means un-normalised
    0-255 input). Returns the tensor on ``view.device`` in ``view.dtype``.

    Raises:
        PixelValueError: naming what was wrong and what to do.
    """
    use = "use model.preprocess(images) to load and normalise images"
    if isinstance(pixel_values, np.ndarray):
        raise PixelValueError(
            f"pixel values must be a torch tensor, got a numpy array of shape {pixel_values.shape}; {use}, "
            "or torch.from_numpy() for an already-normalised array"
        )
    if not isinstance(pixel_values, Tensor):
        raise PixelValueError(
            f"pixel values must be a [B, C, H, W] tensor, got {type(pixel_values).__name__}; {use}"
        )
    shape = tuple(pixel_values.shape)
    if pixel_values.ndim != 4:
        hint = " Add the batch dimension with .unsqueeze(0)." if pixel_values.ndim == 3 else ""
        raise PixelValueError(f"pixel values must be 4-D [B, C, H, W], got shape {shape}.{hint}")
    if not pixel_values.is_floating_point():
        raise PixelValueError(
            f"pixel values must be floating point (normalised), got {pixel_values.dtype}; {use}"
        )
    c = view.in_channels
    if shape[1] != c:
        hint = " It looks channels-last: use .permute(0, 3, 1, 2)." if shape[-1] == c else ""
        raise PixelValueError(f"pixel values have {shape[1]} channels, the model expects {c} (shape {shape}).{hint}")
    if shape[0] == 0:
        raise PixelValueError("pixel values hold an empty batch (B = 0)")
    ph, pw = view.patch_size
    h, w = shape[2], shape[3]
    if h % ph or w % pw or h == 0 or w == 0:
        raise PixelValueError(
            f"image size {h}x{w} is not a multiple of the patch size {ph}x{pw}; use a height of "
            f"{_multiples(h, ph)} and a width of {_multiples(w, pw)} (the model's native size is "
            f"{view.image_size[0]}x{view.image_size[1]}; model.preprocess produces it)"
        )
    finite = torch.isfinite(pixel_values)
    if not bool(finite.all()):
        bad = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        raise PixelValueError(f"pixel values contain NaN or infinite values (batch items {bad[:10]})")
    peak = float(pixel_values.detach().abs().amax())
    if peak > 50:
        raise PixelValueError(
            f"pixel values reach {peak:.4g}: this looks like un-normalised 0-255 input; {use} (it "
            "rescales to [0, 1] and normalises with the model's mean and std)"
        )
    return pixel_values.to(device=view.device, dtype=view.dtype)
