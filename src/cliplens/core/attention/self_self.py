"""Self-self attention: one projection attends to itself, ``softmax(s · x xᵀ) v`` with x ∈ {q, k, v}.

CLIP Surgery's v-v attention (``source="v"``), ClearCLIP's q-q (``source="q"``) and the k-k part of
NACLIP (``source="k"``). ``s`` is ``d_head^-½`` unless ``scale`` is given.
"""

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
from cliplens.errors import InvalidInputError


@register_attention("self-self")
class SelfSelf(AttentionStrategy):
    """``softmax(s · x xᵀ) v`` for ``x`` the queries, keys or values (``source``)."""

    def __init__(self, source: str = "v", scale: float | None = None) -> None:
        if source not in ("q", "k", "v"):
            raise InvalidInputError(f"self-self attention: source must be 'q', 'k' or 'v', got {source!r}")
        super().__init__(source=source, scale=scale)

    def _x(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return {"q": q, "k": k, "v": v}[self.params["source"]]

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        x = self._x(q, k, v)
        return softmax_rows(scaled_scores(x, x, ctx.rows, self.params["scale"]), q.dtype)

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        x = self._x(q, k, v)
        return F.scaled_dot_product_attention(x, x, v, scale=self.params["scale"])
