"""Model families behind one interface (:mod:`.base`): open_clip (:mod:`.openclip`), Hugging Face
transformers (:mod:`.hf`) and the embedded toy CLIP (:mod:`.toy`); :mod:`.registry` maps names to
families (:func:`load`, :func:`wrap`, :func:`list_models`)."""

from __future__ import annotations

from cliplens.models.base import CLIPAdapter
from cliplens.models.registry import (
    ModelInfo,
    UnsupportedModelTypeError,
    list_models,
    load,
    register_embedded,
    wrap,
)

__all__ = [
    "CLIPAdapter",
    "ModelInfo",
    "UnsupportedModelTypeError",
    "list_models",
    "load",
    "register_embedded",
    "wrap",
]
