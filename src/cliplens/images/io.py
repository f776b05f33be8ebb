"""Reading image files: full decode, EXIF orientation, high-bit greyscale, a guard on size.

Every failure is an :class:`~cliplens.errors.ImageLoadError` naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cliplens.errors import ImageLoadError
from cliplens.images.config import HIGH_BIT_MODES

__all__ = ["DEFAULT_MAX_PIXELS", "ImageTooLargeError", "describe_size", "load_image", "open_image", "to_8bit", "to_rgb", "too_large"]

#: the largest image, in pixels, that is decoded or produced by a resize (about 0.6 GB as RGB uint8,
#: 2.4 GB as float32); pass ``max_pixels=`` (``--max-pixels`` on the command line) to change it
DEFAULT_MAX_PIXELS = 200_000_000


def describe_size(pixels: int) -> str:
    """``123456789`` -> ``"123.5 M pixels (about 1.5 GB as float32 RGB)"``."""
    if pixels < 1_000_000:
        return f"{pixels:,} pixels"
    return f"{pixels / 1e6:.1f} M pixels (about {pixels * 12 / 1e9:.1f} GB as float32 RGB)"


def _limit(max_pixels: int) -> str:
    return f"{max_pixels / 1e6:.0f} M pixels" if max_pixels >= 10_000_000 else f"{max_pixels:,} pixels"


def bad_file(path: str, reason: str) -> ImageLoadError:
    return ImageLoadError(f"cannot load image {path!r}: {reason}", source=path, reason=reason)


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale -> 8-bit ``L``, scaling the values properly.

    (PIL's own ``convert`` would clip every value above 255 to white.)
    """
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = np.round(arr.astype(np.float64) / 257.0)
    else:
        a = arr.astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = np.round(a * 255.0)
        elif lo >= 0.0 and hi <= 255.0:
            out = np.round(a)
        elif lo >= 0.0 and hi <= 65535.0 and img.mode == "I":
            out = np.round(a / 257.0)
        else:
            out = np.round((a - lo) / max(hi - lo, 1e-12) * 255.0)
        out = np.nan_to_num(out, nan=0.0)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="L")


class ImageTooLargeError(ImageLoadError):
    """An image whose decoded or resized size is over the pixel limit (``max_pixels``)."""


def too_large(what: str, size: tuple[int, int], pixels: int, max_pixels: int, step: str) -> ImageTooLargeError:
    reason = (f"it is {size[1]}x{size[0]} (width x height) and {step} would hold {describe_size(pixels)}, over the "
              f"limit of {_limit(max_pixels)}. Crop or shrink it first, or raise the limit: max_pixels=... "
              "in Python, --max-pixels on the command line")
    return ImageTooLargeError(f"cannot load image {what}: {reason}", source=what, reason=reason)


@contextlib.contextmanager
def _pil_limit(max_pixels: int):
    """Let PIL decode up to ``max_pixels`` (its own decompression-bomb limit is lower)."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(old or 0, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def open_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, fully decode and EXIF-orient an image file, keeping its own mode.

    A file whose header announces more than ``max_pixels`` pixels is refused before decoding.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise bad_file(name, "no such file")
    if os.path.isdir(name):
        raise bad_file(name, "it is a directory, not an image file")
    try:
        with _pil_limit(max_pixels), Image.open(name) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise too_large(name, (h, w), w * h, max_pixels, "decoding it")
            im.load()  # force the full decode so truncated files fail here
            try:
                out = ImageOps.exif_transpose(im)
            except Exception:  # a broken EXIF block: keep the pixels as stored
                warnings.warn(f"ignoring unreadable EXIF orientation of {name!r}", stacklevel=3)
                out = im.copy()
            if out is None:  # pragma: no cover - only with in_place=True
                out = im.copy()
    except UnidentifiedImageError:
        raise bad_file(name, "not an image file PIL can read") from None
    except Image.DecompressionBombError as e:
        raise bad_file(name, f"too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower():
            reason = f"the file is truncated or corrupt ({reason})"
        else:
            reason = f"the file is corrupt or unreadable ({reason})"
        raise bad_file(name, reason) from None
    if out.mode in HIGH_BIT_MODES:
        out = to_8bit(out)
    return out


def has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or img.info.get("transparency") is not None


def to_rgb(img: Image.Image, background: tuple[int, int, int] | None = None) -> Image.Image:
    if img.mode in HIGH_BIT_MODES:
        img = to_8bit(img)
    if background is not None and has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(
    path: str | os.PathLike,
    *,
    mode: str | None = "RGB",
    background: tuple[int, int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Open an image file: full decode, EXIF orientation applied, converted to ``mode``.

    Args:
        path: the file.
        mode: ``"RGB"`` (default) converts like open_clip and ``transformers.image_utils.
            load_image`` do (``Image.convert("RGB")``: alpha is dropped, greyscale repeated,
            CMYK and palettes mapped); ``None`` keeps the file's own mode (what
            :class:`Preprocessor` uses, so that it can convert at the same step as the source).
            16-bit, 32-bit and float greyscale (``I;16``, ``I``, ``F``) are always scaled to
            8-bit ``L`` first (PIL's ``convert`` would clip them to white).
        background: composite any transparency onto this colour instead of dropping alpha
            (``(255, 255, 255)`` is what Hugging Face image processors do).
        max_pixels: refuse a file whose header announces more pixels than this.

    Raises:
        ImageLoadError: missing file, not an image, a truncated/corrupt file, or one over
            ``max_pixels`` (the message names the file and the reason).
    """
    img = open_image(path, max_pixels=max_pixels)
    if mode is None:
        return img
    if mode == "RGB":
        return to_rgb(img, background)
    if background is not None and has_alpha(img):
        img = to_rgb(img, background)
    return img.convert(mode)
