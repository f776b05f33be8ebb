"""Model families behind one interface (:mod:`.base`; its typed protocol, :class:`ImageTextModel`, is
:mod:`cliplens.core.model`'s, for signatures): open_clip (:mod:`.openclip`), Hugging Face
transformers (:mod:`.hf`) and the embedded toy CLIP (:mod:`.toy`); :mod:`.registry` maps names to
families (:func:`load`, :func:`wrap`, :func:`list_models`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.core.model import ImageTextModel
    from cliplens.models.base import CLIPAdapter
    from cliplens.models.registry import (
        ModelInfo,
        UnsupportedModelTypeError,
        list_models,
        load,
        register_embedded,
        wrap,
    )

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "CLIPAdapter": "cliplens.models.base",
    "ImageTextModel": "cliplens.core.model",
    "ModelInfo": "cliplens.models.registry",
    "UnsupportedModelTypeError": "cliplens.models.registry",
    "list_models": "cliplens.models.registry",
    "load": "cliplens.models.registry",
    "register_embedded": "cliplens.models.registry",
    "wrap": "cliplens.models.registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "CLIPAdapter",
    "ImageTextModel",
    "ModelInfo",
    "UnsupportedModelTypeError",
    "list_models",
    "load",
    "register_embedded",
    "wrap",
]
