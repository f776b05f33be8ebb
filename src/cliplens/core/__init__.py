"""The core every method stands on: weight views, hook names, attention strategies, the plan and
the functional forward. Nothing here imports anything above it."""

from __future__ import annotations

from cliplens.core.attention import AttentionContext, AttentionStrategy, get_attention, register_attention
from cliplens.core.forward import ForwardOutput, positional_embedding_for, project_tokens, run_vision
from cliplens.core.hooks import hook_names, resolve_names
from cliplens.core.plan import POSITIONAL_MODES, BlockPlan, Plan, SidePath
from cliplens.core.view import BlockView, LayerNormView, VisionView

__all__ = [
    "AttentionContext", "AttentionStrategy", "BlockPlan", "BlockView", "ForwardOutput", "LayerNormView", "Plan",
    "POSITIONAL_MODES", "SidePath", "VisionView", "get_attention", "hook_names", "positional_embedding_for", "project_tokens",
    "register_attention", "resolve_names", "run_vision",
]
