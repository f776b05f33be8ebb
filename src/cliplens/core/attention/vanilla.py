"""The model's own attention: ``softmax(q kᵀ / √dh) v``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention.base import (
    AttentionContext,
    AttentionStrategy,
    register_attention,
    scaled_scores,
    softmax_rows,
)


@register_attention("vanilla")
class Vanilla(AttentionStrategy):
    """Softmax attention as the model was trained; the fused kernel when no pattern is needed."""

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        return softmax_rows(scaled_scores(q, k, ctx.rows), q.dtype)

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)
