"""cliplens: open up CLIP image encoders and explain, with text, what every part contributes.

Quick tour::

    import cliplens
    model = cliplens.load("toy")                      # or "ViT-B-16" + pretrained=..., an HF id, a path
    pixels = model.preprocess(["cat.jpg"])            # the source model's own preprocessing
    dec = model.decompose(pixels)                     # exact: dec.check() <= 1e-5 relative
    scores = dec.normalized().project(model.encode_text(["a cat", "grass"]))
    scores.per_head()                                 # [B, layers, heads, texts]
    scores.token_map()                                # [B, texts, gh, gw]

Every analysis has a Python entry point here too: ``cliplens.textspan`` (TEXTSPAN on a store or on any head
outputs), ``cliplens.Targets`` / ``cliplens.Maps`` (maps of any method, from texts or embeddings, or built from
your own grids), ``cliplens.text_points`` / ``points_from_maps`` / ``sam_masks`` / ``text_masks`` (SAM).
Sparse text explanations and data-free head descriptions: ``cliplens.sparse_texts`` (any vector as a sparse
sum of pool texts, SpLiCE), ``cliplens.describe_images`` (an image and its top heads so), ``cliplens.describe_heads``
(each head's OV map's top singular directions in texts, from the weights alone).

Layout: ``core`` (views, hooks, attention strategies, the plan, the forward), ``models`` (one file
per family), ``images``, ``text``, ``decomposition``, ``maps``, ``evaluation``, ``report``, ``cli``,
``toyworld``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.errors import (
    AssumedTokenizerWarning,
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
from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.analyses.head_descriptions import describe_heads
    from cliplens.analyses.sparse import describe_images, sparse_texts
    from cliplens.analyses.textspan import textspan
    from cliplens.core.attention.base import AttentionStrategy, get_attention, register_attention
    from cliplens.core.forward import ForwardOutput, run_vision
    from cliplens.core.hooks import hook_names
    from cliplens.core.plan import BlockPlan, Plan, SidePath
    from cliplens.core.view import VisionView
    from cliplens.decomposition.decomposition import Decomposition
    from cliplens.decomposition.recording import decompose
    from cliplens.decomposition.scores import ComponentScores
    from cliplens.decomposition.summary import summarize
    from cliplens.maps.base import Maps
    from cliplens.maps.targets import Targets
    from cliplens.models.base import CLIPAdapter
    from cliplens.models.registry import ModelInfo, list_models, load, wrap
    from cliplens.tasks.points import points_from_map, points_from_maps, sam_masks, text_masks, text_points

#: what ``import cliplens`` exports lazily: name -> the module that defines it (see :mod:`cliplens.lazy`)
_LAZY = {
    "AttentionStrategy": "cliplens.core.attention.base",
    "BlockPlan": "cliplens.core.plan",
    "CLIPAdapter": "cliplens.models.base",
    "ComponentScores": "cliplens.decomposition.scores",
    "Decomposition": "cliplens.decomposition.decomposition",
    "ForwardOutput": "cliplens.core.forward",
    "Maps": "cliplens.maps.base",
    "ModelInfo": "cliplens.models.registry",
    "Plan": "cliplens.core.plan",
    "SidePath": "cliplens.core.plan",
    "Targets": "cliplens.maps.targets",
    "VisionView": "cliplens.core.view",
    "decompose": "cliplens.decomposition.recording",
    "describe_heads": "cliplens.analyses.head_descriptions",
    "describe_images": "cliplens.analyses.sparse",
    "get_attention": "cliplens.core.attention.base",
    "hook_names": "cliplens.core.hooks",
    "list_models": "cliplens.models.registry",
    "load": "cliplens.models.registry",
    "points_from_map": "cliplens.tasks.points",
    "points_from_maps": "cliplens.tasks.points",
    "register_attention": "cliplens.core.attention.base",
    "run_vision": "cliplens.core.forward",
    "sam_masks": "cliplens.tasks.points",
    "sparse_texts": "cliplens.analyses.sparse",
    "summarize": "cliplens.decomposition.summary",
    "text_masks": "cliplens.tasks.points",
    "text_points": "cliplens.tasks.points",
    "textspan": "cliplens.analyses.textspan",
    "wrap": "cliplens.models.registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__version__ = "0.1.0"

__all__ = [
    "AssumedTokenizerWarning",
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
    "Maps",
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
    "Targets",
    "TextTruncatedWarning",
    "UnsupportedArchitectureError",
    "VisionView",
    "decompose",
    "describe_heads",
    "describe_images",
    "get_attention",
    "hook_names",
    "list_models",
    "load",
    "points_from_map",
    "points_from_maps",
    "register_attention",
    "run_vision",
    "sam_masks",
    "sparse_texts",
    "summarize",
    "text_masks",
    "text_points",
    "textspan",
    "wrap",
]
