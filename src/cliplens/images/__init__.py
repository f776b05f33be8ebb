"""Images: preprocessing as data (:mod:`.config`), reading files (:mod:`.io`) and running the
sources' exact transforms (:mod:`.preprocess`)."""

from __future__ import annotations

from cliplens.images.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig
from cliplens.images.io import DEFAULT_MAX_PIXELS, load_image
from cliplens.images.preprocess import (
    ImageInput,
    Preprocessor,
    PreprocessResult,
    SkippedImage,
    check_pixel_values,
)

__all__ = [
    "DEFAULT_MAX_PIXELS", "ImageInput", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "PreprocessConfig", "PreprocessResult",
    "Preprocessor", "SkippedImage", "check_pixel_values", "load_image",
]
