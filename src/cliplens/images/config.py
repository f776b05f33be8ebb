"""Preprocessing as data: :class:`PreprocessConfig` describes every step of a source model's
inference-time image transform.

It says how the output size of the resize is computed, which filter is used and by which library
(PIL or torch), where the centre crop starts (and where a too-small image sits when it is padded),
when the image is converted to RGB and what happens to its alpha channel, and the exact float
arithmetic of the rescale/normalise step. :class:`cliplens.images.preprocess.Preprocessor` runs it.
Each model family builds its own configuration in its adapter module (``models/openclip.py``,
``models/hf.py``, ``models/toy.py``): the families' quirks live there, not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
from PIL import Image

from cliplens.errors import InvalidInputError

__all__ = ["HIGH_BIT_MODES", "OPENAI_CLIP_MEAN", "PIL_FILTERS", "TORCH_MODES", "OPENAI_CLIP_STD", "PreprocessConfig",
           "interpolation_name", "pair", "triple"]

#: the normalisation statistics of OpenAI's CLIP (also open_clip's and transformers' defaults)
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

ResizeMode = Literal["shortest", "longest", "squash", "max_patches"]
Interpolation = Literal["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"]
CropMode = Literal["center_round", "center_floor", "none"]
PadAlign = Literal["floor", "ceil"]
ConvertRGB = Literal["last", "first", "first_white"]
ResizeBackend = Literal["pil", "torch"]
RescaleArithmetic = Literal["div", "mul_f64", "fused"]

PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
PIL_FILTER_NAMES = {int(v): k for k, v in PIL_FILTERS.items()}
TORCH_MODES = ("nearest", "bilinear", "bicubic")
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise InvalidInputError(f"{name} must be an int or an (height, width) pair, got {size!r}")
    return size[0], size[1]


def triple(values: float | Sequence[float], name: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float, np.floating)):
        return (float(values),) * 3
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) != 3:
        raise InvalidInputError(f"{name} must have 3 values (one per RGB channel), got {values!r}")
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
            inside ``(h, w)`` (then it is padded); ``"squash"`` resizes to exactly ``(h, w)``;
            ``"max_patches"`` (SigLIP 2 NaFlex) keeps the aspect ratio, each side a multiple of ``patch``,
            the largest such size with at most ``max_patches`` patches (:func:`naflex_size`; no crop).
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
        max_patches, patch: ``resize_mode="max_patches"``'s budget of patches and patch side (0 otherwise; left
            out of :meth:`to_dict` then, so configurations from before them keep their fingerprints).
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
    max_patches: int = 0
    patch: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "image_size", pair(self.image_size, "image_size"))
        if self.resize_size is None:
            h, w = self.image_size
            set_(self, "resize_size", h if h == w else (h, w))
        elif isinstance(self.resize_size, (int, np.integer)):
            set_(self, "resize_size", int(self.resize_size))
        else:
            set_(self, "resize_size", pair(self.resize_size, "resize_size"))
        set_(self, "mean", triple(self.mean, "mean"))
        set_(self, "std", triple(self.std, "std"))
        if any(s == 0 for s in self.std):
            raise InvalidInputError(f"std must not contain zeros, got {self.std}")
        set_(self, "fill_color", int(self.fill_color))
        set_(self, "rescale_factor", float(self.rescale_factor))
        for name, allowed in (
            ("resize_mode", ("shortest", "longest", "squash", "max_patches")),
            ("interpolation", tuple(PIL_FILTERS)),
            ("crop", ("center_round", "center_floor", "none")),
            ("pad_align", ("floor", "ceil")),
            ("convert_rgb", ("last", "first", "first_white")),
            ("resize_backend", ("pil", "torch")),
            ("rescale_arithmetic", ("div", "mul_f64", "fused")),
        ):
            if getattr(self, name) not in allowed:
                raise InvalidInputError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if (self.resize_mode == "max_patches") != (self.max_patches > 0 and self.patch > 0):
            raise InvalidInputError("resize_mode='max_patches' needs max_patches > 0 and patch > 0 (and they "
                                    "mean nothing for the other modes)")
        if self.resize_mode == "max_patches" and self.crop != "none":
            raise InvalidInputError("resize_mode='max_patches' keeps the aspect ratio: it takes crop='none'")
        if self.resize_backend == "torch" and self.interpolation not in TORCH_MODES:
            raise InvalidInputError(
                f"interpolation {self.interpolation!r} needs resize_backend='pil'; the torch backend "
                f"supports {', '.join(TORCH_MODES)}"
            )

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out = asdict(self)
        for k in ("max_patches", "patch"):
            if not out[k]:
                del out[k]
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
            raise InvalidInputError(f"unknown PreprocessConfig keys: {sorted(unknown)}")
        return cls(**data)

    # ---- geometry ------------------------------------------------------------------------
    def resize_output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` after the resize step for an input of ``(height, width)``."""
        if not self.do_resize:
            return height, width
        size = self.resize_size
        if self.resize_mode == "max_patches":
            return naflex_size(height, width, self.patch, self.max_patches)
        if self.resize_mode == "squash":
            return pair(size, "resize_size")  # type: ignore[arg-type]
        if self.resize_mode == "shortest" and isinstance(size, int):
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = size, max(1, int(size * long / short))
            return (new_long, new_short) if width <= height else (new_short, new_long)
        th, tw = pair(size, "resize_size")  # type: ignore[arg-type]
        ratio_h, ratio_w = height / th, width / tw
        ratio = max(ratio_h, ratio_w) if self.resize_mode == "longest" else min(ratio_h, ratio_w)
        # (an extreme aspect ratio can round a side to 0, where the sources fail: keep 1 pixel)
        return max(1, round(height / ratio)), max(1, round(width / ratio))

    def input_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """Where the model's input lies in an original image of ``(height, width)``.

        Returns ``(top, left, bottom, right)`` in original pixels (floats; beyond the image where the
        transform pads it): the model input's row ``r`` is original row ``top + r * (bottom - top) / H``.
        Undoes the resize (scale per axis) and the crop (or padding).
        """
        rh, rw = self.resize_output_size(height, width)
        if self.crop == "none":
            return 0.0, 0.0, float(height), float(width)
        top, left = self.crop_window(rh, rw)
        th, tw = self.image_size
        sy, sx = height / rh, width / rw
        return top * sy, left * sx, (top + th) * sy, (left + tw) * sx

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


def interpolation_name(resample: Any) -> Interpolation:
    """A PIL resampling constant, torchvision ``InterpolationMode`` or name -> our name."""
    value = getattr(resample, "value", resample)
    if isinstance(value, str):
        name = value.lower().replace("-", "_")
        if name == "nearest_exact":
            name = "nearest"
        if name in PIL_FILTERS:
            return name  # type: ignore[return-value]
        raise InvalidInputError(f"unsupported interpolation {resample!r}")
    try:
        return PIL_FILTER_NAMES[int(value)]  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"unsupported resample value {resample!r}") from None




def naflex_size(height: int, width: int, patch: int, max_patches: int) -> tuple[int, int]:
    """SigLIP 2 NaFlex's resize target: the aspect ratio kept, each side rounded *up* to a multiple of ``patch``
    (at least one patch), for the largest scale whose patch count stays within ``max_patches``.

    The scale is found as ``Siglip2ImageProcessor`` finds it (``get_image_size_for_max_num_patches``): bisection
    on ``[1e-6, 100]`` until the interval is narrower than 1e-5, keeping the lower end, so the sizes are the
    source's to the pixel (tested against it)."""

    def side(scale: float, n: int) -> int:
        return max(patch, math.ceil(n * scale / patch) * patch)

    lo, hi = 1e-6, 100.0
    while hi - lo >= 1e-5:
        mid = (lo + hi) / 2
        if (side(mid, height) / patch) * (side(mid, width) / patch) <= max_patches:
            lo = mid
        else:
            hi = mid
    return side(lo, height), side(lo, width)
