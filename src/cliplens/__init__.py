"""cliplens: open up CLIP image encoders and explain, with text, what every part contributes.

Quick tour::

    import cliplens
    model = cliplens.load("toy")                      # or "ViT-B-16" + pretrained=..., an HF id, a path
    pixels = model.preprocess(["cat.jpg"])            # the source model's own preprocessing
    dec = model.decompose(pixels)                     # exact: dec.check() <= 1e-5 relative
    scores = dec.normalized().project(model.encode_text(["a cat", "grass"]))
    scores.per_head()                                 # [B, layers, heads, texts]
    scores.token_map()                                # [B, texts, gh, gw]

Layout: ``core`` (views, hooks, attention strategies, the plan, the forward), ``models`` (one file
per family), ``images``, ``text``, ``decomposition``, ``maps``, ``evaluation``, ``report``, ``cli``,
``toyworld``.
"""

from __future__ import annotations

from cliplens.core import (
    AttentionStrategy,
    BlockPlan,
    ForwardOutput,
    Plan,
    SidePath,
    VisionView,
    get_attention,
    hook_names,
    register_attention,
    run_vision,
)
from cliplens.decomposition import ComponentScores, Decomposition, decompose, summarize
from cliplens.errors import (
    CliplensError,
    EmptyTextError,
    HookNameError,
    ImageLoadError,
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    OutputExistsError,
    PixelValueError,
    PretrainedRequiredError,
    RandomWeightsWarning,
    TextTruncatedWarning,
    UnsupportedArchitectureError,
)
from cliplens.models import CLIPAdapter, ModelInfo, list_models, load, wrap

__version__ = "0.1.0"

__all__ = [
    "AttentionStrategy",
    "BlockPlan",
    "CLIPAdapter",
    "CliplensError",
    "ComponentScores",
    "Decomposition",
    "EmptyTextError",
    "ForwardOutput",
    "HookNameError",
    "ImageLoadError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutputExistsError",
    "PixelValueError",
    "Plan",
    "PretrainedRequiredError",
    "RandomWeightsWarning",
    "SidePath",
    "TextTruncatedWarning",
    "UnsupportedArchitectureError",
    "VisionView",
    "decompose",
    "get_attention",
    "hook_names",
    "list_models",
    "load",
    "register_attention",
    "run_vision",
    "summarize",
    "wrap",
]
