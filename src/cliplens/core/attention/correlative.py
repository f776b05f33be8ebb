"""Correlative self-attention (SCLIP, Wang et al. 2024): ``(softmax(s·q qᵀ) + softmax(s·k kᵀ)) v``.

The two patterns are added, not averaged (rows sum to 2), as the original does; ``s = d_head^-½``.
"""

from __future__ import annotations

from torch import Tensor

from cliplens.core.attention.base import (
    AttentionContext,
    AttentionStrategy,
    register_attention,
    scaled_scores,
    softmax_rows,
)


@register_attention("correlative")
class Correlative(AttentionStrategy):
    """SCLIP's correlative self-attention (see the module docs)."""

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        return (softmax_rows(scaled_scores(q, q, ctx.rows), q.dtype)
                + softmax_rows(scaled_scores(k, k, ctx.rows), q.dtype))
