"""Attention strategies, one file each, registered by name (see :mod:`.base`)."""

from __future__ import annotations

from cliplens.core.attention.base import (
    AttentionContext,
    AttentionStrategy,
    attention_names,
    get_attention,
    register_attention,
    scaled_scores,
    softmax_rows,
)
from cliplens.core.attention.self_self import SelfSelf
from cliplens.core.attention.vanilla import Vanilla

__all__ = [
    "AttentionContext",
    "AttentionStrategy",
    "SelfSelf",
    "Vanilla",
    "attention_names",
    "get_attention",
    "register_attention",
    "scaled_scores",
    "softmax_rows",
]
