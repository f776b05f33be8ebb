"""cliplens: open up CLIP image encoders and explain, with text, what every part contributes.

Quick tour::

    import cliplens
    model = cliplens.load("toy")                      # or "ViT-B-16" + pretrained=..., an HF id, a path
    pixels = model.preprocess(["cat.jpg"])            # the source model's own preprocessing
    dec = model.decompose(pixels)                     # exact: dec.check() <= 1e-5 relative
    scores = dec.normalized().project(model.encode_text(["a cat", "grass"]))
    scores.per_head()                                 # [B, layers, heads, texts]
    scores.token_map()                                # [B, texts, gh, gw]
"""

from __future__ import annotations

from cliplens.decomposition import ComponentScores, Decomposition, decompose
from cliplens.errors import (
    CliplensError,
    EmptyTextError,
    ImageLoadError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    PixelValueError,
    TextTruncatedWarning,
    UnsupportedArchitectureError,
)
from cliplens.explain import explain
from cliplens.forward import ForwardOutput, hook_names, run_vision
from cliplens.models import CLIPAdapter, ModelInfo, VisionView, list_models, load, wrap

__version__ = "0.1.0"

__all__ = [
    "CLIPAdapter",
    "CliplensError",
    "ComponentScores",
    "Decomposition",
    "EmptyTextError",
    "ForwardOutput",
    "ImageLoadError",
    "MissingDependencyError",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFoundError",
    "PixelValueError",
    "TextTruncatedWarning",
    "UnsupportedArchitectureError",
    "VisionView",
    "decompose",
    "explain",
    "hook_names",
    "list_models",
    "load",
    "run_vision",
    "wrap",
]
