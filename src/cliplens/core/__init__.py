"""The core every method stands on: weight views, hook names, attention strategies, the plan and
the functional forward. Nothing here imports anything above it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.core.attention import AttentionContext, AttentionStrategy, get_attention, register_attention
    from cliplens.core.forward import ForwardOutput, positional_embedding_for, project_tokens, run_vision
    from cliplens.core.hooks import hook_names, resolve_names
    from cliplens.core.model import ImageTextModel
    from cliplens.core.plan import POSITIONAL_MODES, BlockPlan, Plan, SidePath
    from cliplens.core.view import BlockView, LayerNormView, VisionView

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "AttentionContext": "cliplens.core.attention",
    "AttentionStrategy": "cliplens.core.attention",
    "BlockPlan": "cliplens.core.plan",
    "BlockView": "cliplens.core.view",
    "ForwardOutput": "cliplens.core.forward",
    "ImageTextModel": "cliplens.core.model",
    "LayerNormView": "cliplens.core.view",
    "POSITIONAL_MODES": "cliplens.core.plan",
    "Plan": "cliplens.core.plan",
    "SidePath": "cliplens.core.plan",
    "VisionView": "cliplens.core.view",
    "get_attention": "cliplens.core.attention",
    "hook_names": "cliplens.core.hooks",
    "positional_embedding_for": "cliplens.core.forward",
    "project_tokens": "cliplens.core.forward",
    "register_attention": "cliplens.core.attention",
    "resolve_names": "cliplens.core.hooks",
    "run_vision": "cliplens.core.forward",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "AttentionContext", "AttentionStrategy", "BlockPlan", "BlockView", "ForwardOutput", "ImageTextModel",
    "LayerNormView", "Plan",
    "POSITIONAL_MODES", "SidePath", "VisionView", "get_attention", "hook_names", "positional_embedding_for", "project_tokens",
    "register_attention", "resolve_names", "run_vision",
]
