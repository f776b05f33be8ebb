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
from cliplens.core.attention.correlative import Correlative
from cliplens.core.attention.early_fusion import EarlyFusion
from cliplens.core.attention.grounding import Grounding
from cliplens.core.attention.identity import Identity
from cliplens.core.attention.neighbourhood import Neighbourhood, gaussian_prior
from cliplens.core.attention.residual_correlation import ResidualCorrelation
from cliplens.core.attention.self_adjusting import SelfAdjusting
from cliplens.core.attention.self_self import SelfSelf
from cliplens.core.attention.semantic_enhancer import SemanticEnhancer
from cliplens.core.attention.vanilla import Vanilla

__all__ = [
    "AttentionContext",
    "AttentionStrategy",
    "Correlative",
    "EarlyFusion",
    "Grounding",
    "Identity",
    "Neighbourhood",
    "ResidualCorrelation",
    "SelfAdjusting",
    "SelfSelf",
    "SemanticEnhancer",
    "Vanilla",
    "attention_names",
    "gaussian_prior",
    "get_attention",
    "register_attention",
    "scaled_scores",
    "softmax_rows",
]
