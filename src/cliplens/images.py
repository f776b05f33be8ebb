"""Loading and preprocessing images exactly as the source library does.

A :class:`PreprocessConfig` describes, as plain data, every step of a source
model's inference-time image transform: how the output size of the resize is
computed, which filter is used and by which library (PIL or torch), where the
centre crop starts (and where a too-small image sits when it is padded), when
the image is converted to RGB and what happens to its alpha channel, and the
exact float arithmetic of the rescale/normalise step. :class:`Preprocessor`
runs that description. For PIL inputs its output is identical (maximum absolute
difference 0) to the source's own transform:

* ``open_clip`` / ``torchvision`` (``PreprocessConfig.from_open_clip``): PIL resize
  *in the image's own mode* (RGBA is resized premultiplied, palette images with
  nearest-neighbour), centre crop with ``int(round((h - th) / 2))`` (Python's
  round-half-to-even, so an odd margin sometimes loses its extra row at the top
  and sometimes at the bottom), zero padding in the image's own mode, then
  ``convert("RGB")`` (alpha dropped), ``/ 255`` in float32 and ``(x - mean) / std``.
* Hugging Face ``CLIPImageProcessor`` (``PreprocessConfig.from_hf_processor``):
  alpha composited onto white *first*, then either torch's uint8 antialiased
  resize (the default torchvision backend of transformers 5) or a PIL resize
  (``CLIPImageProcessorPil`` / the slow processor), centre crop at
  ``(h - th) // 2``, and the backend's own float arithmetic.

Tensor inputs are resized with ``torch.nn.functional.interpolate`` (antialiased).
:func:`check_pixel_values` validates already-preprocessed batches before the
forward.

This module needs only PIL, numpy and torch (never torchvision).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from cliplens.errors import ImageLoadError, PixelValueError

if TYPE_CHECKING:  # pragma: no cover
    from cliplens.models.view import VisionView

__all__ = [
    "ImageInput",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PreprocessConfig",
    "PreprocessResult",
    "Preprocessor",
    "SkippedImage",
    "check_pixel_values",
    "load_image",
]

ImageInput = str | os.PathLike | Image.Image | Tensor | np.ndarray

#: the normalisation statistics of OpenAI's CLIP (also open_clip's and transformers' defaults)
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

ResizeMode = Literal["shortest", "longest", "squash"]
Interpolation = Literal["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"]
CropMode = Literal["center_round", "center_floor", "none"]
PadAlign = Literal["floor", "ceil"]
ConvertRGB = Literal["last", "first", "first_white"]
ResizeBackend = Literal["pil", "torch"]
RescaleArithmetic = Literal["div", "mul_f64", "fused"]

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_PIL_FILTER_NAMES = {int(v): k for k, v in _PIL_FILTERS.items()}
_TORCH_MODES = ("nearest", "bilinear", "bicubic")
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"{name} must be an int or an (height, width) pair, got {size!r}")
    return size[0], size[1]


def _triple(values: float | Sequence[float], name: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float, np.floating)):
        return (float(values),) * 3
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (one per RGB channel), got {values!r}")
    return values  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreprocessConfig:
    """Everything a source model's inference image transform does, as data.

    Attributes:
        image_size: ``(height, width)`` of the output (the centre crop).
        resize_size: the resize target. With ``resize_mode="shortest"``, an int is the
            target of the shorter side and the longer side becomes
            ``int(size * long / short)`` (torchvision's ``Resize(int)`` and Hugging Face's
            ``shortest_edge``); a ``(h, w)`` pair keeps the aspect ratio so that the image
            *covers* ``(h, w)``, each side ``round(side / ratio)`` (open_clip's
            ``ResizeKeepRatio``). ``"longest"`` keeps the aspect ratio so that the image fits
            inside ``(h, w)`` (then it is padded); ``"squash"`` resizes to exactly ``(h, w)``.
            ``None`` means ``image_size`` (an int when it is square).
        resize_mode: ``"shortest"``, ``"longest"`` or ``"squash"``.
        interpolation: the resize filter (``"bicubic"``, ``"bilinear"``, ``"nearest"``; the
            PIL backend also takes ``"lanczos"``, ``"box"``, ``"hamming"``).
        crop: ``"center_round"`` (crop start ``int(round((h - th) / 2))``, torchvision),
            ``"center_floor"`` (``(h - th) // 2``, Hugging Face) or ``"none"``.
        pad_align: where an image smaller than the crop sits in the padded output:
            ``"floor"`` puts ``(th - h) // 2`` rows above it (torchvision, HF torchvision
            backend), ``"ceil"`` puts ``ceil((th - h) / 2)`` (HF PIL backend).
        mean, std: per-channel normalisation statistics (of ``[0, 1]`` pixel values).
        fill_color: the padding value, 0-255 (padding happens in the image's own mode
            when ``convert_rgb="last"``: 0 is palette index 0 for a ``P`` image, white for
            ``CMYK``).
        convert_rgb: when PIL images become RGB: ``"last"`` (after resize and crop, with
            ``Image.convert("RGB")``, dropping alpha: open_clip/torchvision), ``"first"``
            (plain ``convert("RGB")`` before anything else) or ``"first_white"`` (first,
            compositing transparency onto white: Hugging Face).
        resize_backend: ``"pil"`` (``Image.resize``) or ``"torch"`` (antialiased
            ``interpolate`` on the uint8 tensor: the HF torchvision backend).
        do_resize: whether to resize at all.
        do_rescale, rescale_factor: whether and by what uint8 values are scaled (1/255).
        do_normalize: whether to apply ``(x - mean) / std``.
        rescale_arithmetic: the exact float32 arithmetic of rescale + normalise:
            ``"div"`` (``x.float() / 255`` then normalise: torchvision ``ToTensor``),
            ``"mul_f64"`` (``float32(float64(x) * factor)`` then normalise: HF numpy),
            ``"fused"`` (``(x.float() - mean / factor) / (std / factor)``: HF torchvision).
        source: free-form provenance (``"open_clip"``, ``"transformers"``, ``"toy"``).
    """

    image_size: tuple[int, int] = (224, 224)
    resize_size: int | tuple[int, int] | None = None
    resize_mode: ResizeMode = "shortest"
    interpolation: Interpolation = "bicubic"
    crop: CropMode = "center_round"
    pad_align: PadAlign = "floor"
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    fill_color: int = 0
    convert_rgb: ConvertRGB = "last"
    resize_backend: ResizeBackend = "pil"
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    rescale_arithmetic: RescaleArithmetic = "div"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "image_size", _pair(self.image_size, "image_size"))
        if self.resize_size is None:
            h, w = self.image_size
            set_(self, "resize_size", h if h == w else (h, w))
        elif isinstance(self.resize_size, (int, np.integer)):
            set_(self, "resize_size", int(self.resize_size))
        else:
            set_(self, "resize_size", _pair(self.resize_size, "resize_size"))
        set_(self, "mean", _triple(self.mean, "mean"))
        set_(self, "std", _triple(self.std, "std"))
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must not contain zeros, got {self.std}")
        set_(self, "fill_color", int(self.fill_color))
        set_(self, "rescale_factor", float(self.rescale_factor))
        for name, allowed in (
            ("resize_mode", ("shortest", "longest", "squash")),
            ("interpolation", tuple(_PIL_FILTERS)),
            ("crop", ("center_round", "center_floor", "none")),
            ("pad_align", ("floor", "ceil")),
            ("convert_rgb", ("last", "first", "first_white")),
            ("resize_backend", ("pil", "torch")),
            ("rescale_arithmetic", ("div", "mul_f64", "fused")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.resize_backend == "torch" and self.interpolation not in _TORCH_MODES:
            raise ValueError(
                f"interpolation {self.interpolation!r} needs resize_backend='pil'; the torch backend "
                f"supports {', '.join(_TORCH_MODES)}"
            )

    # ---- constructors --------------------------------------------------------------------
    @classmethod
    def from_open_clip(cls, model: Any) -> PreprocessConfig:
        """The inference transform of an open_clip model (``image_transform(..., is_train=False)``).

        Reads ``model.visual.preprocess_cfg`` (open_clip >= 2.24); older versions fall back
        to ``visual.image_size`` / ``image_mean`` / ``image_std``. Mirrors open_clip's
        quirks: for a non-square ``shortest`` size it always resizes bicubic, and only the
        ``longest`` mode pads with ``fill_color`` (the others pad with 0).
        """
        visual = getattr(model, "visual", model)
        cfg: Any = getattr(visual, "preprocess_cfg", None) or {}
        if not isinstance(cfg, dict):  # an open_clip PreprocessCfg dataclass
            cfg = {k: getattr(cfg, k) for k in ("size", "mean", "std", "interpolation", "resize_mode",
                                                 "fill_color") if hasattr(cfg, k)}
        size = cfg.get("size") or getattr(visual, "image_size", None) or 224
        mean = cfg.get("mean") or getattr(visual, "image_mean", None) or OPENAI_CLIP_MEAN
        std = cfg.get("std") or getattr(visual, "image_std", None) or OPENAI_CLIP_STD
        interpolation = cfg.get("interpolation") or "bicubic"
        # open_clip: 'bilinear' -> BILINEAR, anything else ('bicubic', 'random') -> BICUBIC
        interpolation = {"bilinear": "bilinear", "nearest": "nearest"}.get(interpolation, "bicubic")
        resize_mode = cfg.get("resize_mode") or "shortest"
        fill_color = int(cfg.get("fill_color") or 0)
        h, w = _pair(size, "size")
        common = dict(image_size=(h, w), mean=mean, std=std, convert_rgb="last", resize_backend="pil",
                      rescale_arithmetic="div", source="open_clip")
        if resize_mode == "squash":
            return cls(resize_size=(h, w), resize_mode="squash", interpolation=interpolation, crop="none",
                       **common)
        if resize_mode == "longest":
            return cls(resize_size=(h, w), resize_mode="longest", interpolation=interpolation,
                       crop="center_round", fill_color=fill_color, **common)
        if resize_mode != "shortest":
            raise ValueError(f"unknown open_clip resize_mode {resize_mode!r}")
        if h == w:
            return cls(resize_size=h, resize_mode="shortest", interpolation=interpolation,
                       crop="center_round", **common)
        return cls(resize_size=(h, w), resize_mode="shortest", interpolation="bicubic",
                   crop="center_round", **common)

    @classmethod
    def from_hf_processor(cls, processor: Any) -> PreprocessConfig:
        """The transform of a Hugging Face ``CLIPImageProcessor`` (or a ``CLIPProcessor``).

        Handles the torchvision backend (transformers 5's ``CLIPImageProcessor``, and the
        ``...Fast`` classes of 4.x) and the PIL/numpy backend (``CLIPImageProcessorPil`` and
        4.x's slow ``CLIPImageProcessor``). Reads ``size`` (``shortest_edge`` or
        ``height``/``width``), ``crop_size``, ``resample``, ``do_resize``, ``do_center_crop``,
        ``do_rescale``, ``rescale_factor``, ``do_normalize``, ``image_mean``, ``image_std``.
        """
        ip = getattr(processor, "image_processor", None) or processor

        def get(name: str, default: Any = None) -> Any:
            value = getattr(ip, name, None)
            return default if value is None else value

        def size_dict(value: Any) -> dict[str, Any]:
            if value is None:
                return {}
            if isinstance(value, (int, np.integer)):
                return {"shortest_edge": int(value)}
            if isinstance(value, (tuple, list)):
                h, w = _pair(value, "size")
                return {"height": h, "width": w}
            if isinstance(value, dict):
                return {k: v for k, v in value.items() if v is not None}
            return {k: getattr(value, k) for k in ("shortest_edge", "longest_edge", "height", "width",
                                                     "max_height", "max_width")
                    if getattr(value, k, None) is not None}

        backend = getattr(ip, "backend", None)
        if not isinstance(backend, str):
            backend = "torchvision" if type(ip).__name__.endswith("Fast") else "pil"
        torch_backend = backend != "pil"

        resample = get("resample", 3)
        interpolation = _interpolation_name(resample)
        size = size_dict(get("size", {"shortest_edge": 224}))
        do_resize = bool(get("do_resize", True))
        if "shortest_edge" in size and "longest_edge" not in size:
            resize_mode, resize_size = "shortest", int(size["shortest_edge"])
        elif "height" in size and "width" in size:
            resize_mode, resize_size = "squash", (int(size["height"]), int(size["width"]))
        elif do_resize:
            raise ValueError(
                f"unsupported image-processor size {size!r}; cliplens supports 'shortest_edge' or "
                "'height'/'width'"
            )
        else:
            resize_mode, resize_size = "squash", (224, 224)
        do_crop = bool(get("do_center_crop", True))
        crop_size = size_dict(get("crop_size", {"height": 224, "width": 224}))
        if do_crop:
            if "height" not in crop_size:
                raise ValueError(f"unsupported crop_size {crop_size!r}; expected height and width")
            image_size = (int(crop_size["height"]), int(crop_size["width"]))
        else:
            image_size = _pair(resize_size, "size")
        rescale_factor = float(get("rescale_factor", 1 / 255))
        return cls(
            image_size=image_size,
            resize_size=resize_size,
            resize_mode=resize_mode,
            interpolation=interpolation,
            crop="center_floor" if do_crop else "none",
            pad_align="floor" if torch_backend else "ceil",
            mean=get("image_mean", OPENAI_CLIP_MEAN),
            std=get("image_std", OPENAI_CLIP_STD),
            fill_color=0,
            convert_rgb="first_white" if get("do_convert_rgb", True) else "first",
            resize_backend="torch" if torch_backend else "pil",
            do_resize=do_resize,
            do_rescale=bool(get("do_rescale", True)),
            rescale_factor=rescale_factor,
            do_normalize=bool(get("do_normalize", True)),
            rescale_arithmetic="fused" if torch_backend else "mul_f64",
            source="transformers",
        )

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown PreprocessConfig keys: {sorted(unknown)}")
        return cls(**data)

    # ---- geometry ------------------------------------------------------------------------
    def resize_output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` after the resize step for an input of ``(height, width)``."""
        if not self.do_resize:
            return height, width
        size = self.resize_size
        if self.resize_mode == "squash":
            return _pair(size, "resize_size")  # type: ignore[arg-type]
        if self.resize_mode == "shortest" and isinstance(size, int):
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = size, max(1, int(size * long / short))
            return (new_long, new_short) if width <= height else (new_short, new_long)
        th, tw = _pair(size, "resize_size")  # type: ignore[arg-type]
        ratio_h, ratio_w = height / th, width / tw
        ratio = max(ratio_h, ratio_w) if self.resize_mode == "longest" else min(ratio_h, ratio_w)
        # (an extreme aspect ratio can round a side to 0, where the sources fail: keep 1 pixel)
        return max(1, round(height / ratio)), max(1, round(width / ratio))

    def crop_window(self, height: int, width: int) -> tuple[int, int]:
        """Top-left ``(top, left)`` of the crop in input coordinates; negative means padding."""
        th, tw = self.image_size
        return self._start(height, th), self._start(width, tw)

    def _start(self, n: int, c: int) -> int:
        if c > n:
            before = (c - n) // 2 if self.pad_align == "floor" else (c - n + 1) // 2
            return -before
        if self.crop == "center_round":
            return int(round((n - c) / 2.0))
        return (n - c) // 2


def _interpolation_name(resample: Any) -> Interpolation:
    """A PIL resampling constant, torchvision ``InterpolationMode`` or name -> our name."""
    value = getattr(resample, "value", resample)
    if isinstance(value, str):
        name = value.lower().replace("-", "_")
        if name == "nearest_exact":
            name = "nearest"
        if name in _PIL_FILTERS:
            return name  # type: ignore[return-value]
        raise ValueError(f"unsupported interpolation {resample!r}")
    try:
        return _PIL_FILTER_NAMES[int(value)]  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"unsupported resample value {resample!r}") from None


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _bad_file(path: str, reason: str) -> ImageLoadError:
    return ImageLoadError(
        f"cannot load image {path!r}: {reason}. Check the file, or pass skip_bad=True "
        "(--skip-bad on the command line) to skip unreadable images with a warning."
    )


def _to_8bit(img: Image.Image) -> Image.Image:
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


def _open_image(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and EXIF-orient an image file, keeping its own mode."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise _bad_file(name, "no such file")
    if os.path.isdir(name):
        raise _bad_file(name, "it is a directory, not an image file")
    try:
        with Image.open(name) as im:
            im.load()  # force the full decode so truncated files fail here
            try:
                out = ImageOps.exif_transpose(im)
            except Exception:  # a broken EXIF block: keep the pixels as stored
                warnings.warn(f"ignoring unreadable EXIF orientation of {name!r}", stacklevel=3)
                out = im.copy()
            if out is None:  # pragma: no cover - only with in_place=True
                out = im.copy()
    except UnidentifiedImageError:
        raise _bad_file(name, "not an image file PIL can read") from None
    except Image.DecompressionBombError as e:
        raise _bad_file(name, f"too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower():
            reason = f"the file is truncated or corrupt ({reason})"
        else:
            reason = f"the file is corrupt or unreadable ({reason})"
        raise _bad_file(name, reason) from None
    if out.mode in _HIGH_BIT_MODES:
        out = _to_8bit(out)
    return out


def _has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or img.info.get("transparency") is not None


def _to_rgb(img: Image.Image, background: tuple[int, int, int] | None = None) -> Image.Image:
    if img.mode in _HIGH_BIT_MODES:
        img = _to_8bit(img)
    if background is not None and _has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(
    path: str | os.PathLike,
    *,
    mode: str | None = "RGB",
    background: tuple[int, int, int] | None = None,
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

    Raises:
        ImageLoadError: missing file, not an image, or a truncated/corrupt file (the message
            names the file and the reason).
    """
    img = _open_image(path)
    if mode is None:
        return img
    if mode == "RGB":
        return _to_rgb(img, background)
    if background is not None and _has_alpha(img):
        img = _to_rgb(img, background)
    return img.convert(mode)


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

    def __init__(self, config: PreprocessConfig) -> None:
        if not isinstance(config, PreprocessConfig):
            raise TypeError(f"Preprocessor needs a PreprocessConfig, got {type(config).__name__}")
        self.config = config
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
        report = self.preprocess_with_report(images, skip_bad=skip_bad)
        if report.pixel_values.shape[0] == 0 and report.skipped:
            raise ImageLoadError(
                f"none of the {len(report.skipped)} images could be loaded; first problem: "
                f"{report.skipped[0].source}: {report.skipped[0].reason}"
            )
        return report.pixel_values

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
                    raise
                skipped.append(SkippedImage(i, _describe(item), str(e)))
                continue
            rows.append(out)
            kept.extend([i] * out.shape[0])
        if skipped:
            shown = "; ".join(f"{s.source}" for s in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
            warnings.warn(f"skipped {len(skipped)} of {len(items)} images that could not be loaded: {shown}",
                          stacklevel=2)
        if rows:
            shapes = {tuple(r.shape[-2:]) for r in rows}
            if len(shapes) > 1:
                raise PixelValueError(
                    f"preprocessed images have different sizes {sorted(shapes)} (the configuration has "
                    "no centre crop); preprocess them one at a time"
                )
            pixel_values = torch.cat(rows, 0)
        else:
            pixel_values = torch.empty(0, 3, *self.config.image_size, dtype=torch.float32)
        report = PreprocessResult(pixel_values, kept, skipped)
        self.last_report = report
        return report

    def process_one(self, image: ImageInput) -> Tensor:
        """Preprocess one input -> ``[B, 3, H, W]`` (``B`` = 1 except for a batched tensor)."""
        if isinstance(image, (str, os.PathLike)):
            return self._from_pil(_open_image(image))
        if isinstance(image, Image.Image):
            if image.mode in _HIGH_BIT_MODES:
                image = _to_8bit(image)
            return self._from_pil(image)
        if isinstance(image, np.ndarray):
            return self._from_numpy(image)
        if isinstance(image, Tensor):
            return self._from_tensor(image)
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
            img = _to_rgb(img, (255, 255, 255) if c.convert_rgb == "first_white" else None)
        if c.resize_backend == "torch":
            img = _to_rgb(img)
            u8 = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0)
            return self._to_float(self._geometry_uint8(u8.contiguous()))
        if c.do_resize:
            h, w = c.resize_output_size(img.height, img.width)
            if (h, w) != (img.height, img.width):
                img = img.resize((w, h), resample=_PIL_FILTERS[c.interpolation])
        if c.crop != "none":
            img = self._crop_pil(img)
        img = _to_rgb(img)
        u8 = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0)
        return self._to_float(u8)

    # ---- geometry ------------------------------------------------------------------------
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
        if mode not in _TORCH_MODES:
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
            h, w = c.resize_output_size(u8.shape[-2], u8.shape[-1])
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
            h, w = c.resize_output_size(x.shape[-2], x.shape[-1])
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
    import platform

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
