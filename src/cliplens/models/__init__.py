"""Model adapters: one abstraction over open_clip, transformers and embedded CLIPs.

Entry points: :func:`load` (by name, Hub id or local path), :func:`wrap` (a model object you
already have, no copies) and :func:`list_models`.
"""

from __future__ import annotations

from cliplens.models.base import CLIPAdapter
from cliplens.models.loading import (
    ModelInfo,
    RandomWeightsWarning,
    UnsupportedModelTypeError,
    list_models,
    load,
    register_embedded,
    wrap,
)
from cliplens.models.view import BlockView, LayerNormView, VisionView

__all__ = [
    "BlockView",
    "CLIPAdapter",
    "LayerNormView",
    "ModelInfo",
    "RandomWeightsWarning",
    "UnsupportedModelTypeError",
    "VisionView",
    "list_models",
    "load",
    "register_embedded",
    "wrap",
]
