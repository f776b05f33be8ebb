"""Images: preprocessing as data (:mod:`.config`), reading files (:mod:`.io`) and running the
sources' exact transforms (:mod:`.preprocess`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.images.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig
    from cliplens.images.io import DEFAULT_MAX_PIXELS, load_image
    from cliplens.images.preprocess import (
        ImageInput,
        Preprocessor,
        PreprocessResult,
        SkippedImage,
        check_pixel_values,
    )

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "DEFAULT_MAX_PIXELS": "cliplens.images.io",
    "ImageInput": "cliplens.images.preprocess",
    "OPENAI_CLIP_MEAN": "cliplens.images.config",
    "OPENAI_CLIP_STD": "cliplens.images.config",
    "PreprocessConfig": "cliplens.images.config",
    "PreprocessResult": "cliplens.images.preprocess",
    "Preprocessor": "cliplens.images.preprocess",
    "SkippedImage": "cliplens.images.preprocess",
    "check_pixel_values": "cliplens.images.preprocess",
    "load_image": "cliplens.images.io",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "DEFAULT_MAX_PIXELS", "ImageInput", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "PreprocessConfig", "PreprocessResult",
    "Preprocessor", "SkippedImage", "check_pixel_values", "load_image",
]
