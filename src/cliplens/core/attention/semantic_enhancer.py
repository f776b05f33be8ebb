"""SFP's semantic-aware attention enhancer (Jin et al., ICCV 2025): q-q and k-k attention guided by
a token similarity.

``P = (softmax(s·q qᵀ) + softmax(s·k kᵀ) + softmax(G)) / 3`` with ``s = d_head^-½`` and the guidance
``G = τ·(S − mean(S))``, set to ``−∞`` where it is negative (tokens less similar than average are not attended
through it). ``S`` ``[B, N, N]`` is a similarity between the tokens of one image, the same for every head, and
``mean(S)`` is over all of its entries (per image). ``correlative=False`` keeps ``softmax(G)`` alone (how SFP
attends over its fused multi-layer state). ``τ = 3`` in the original (``clip/model.py``'s ``custom_attn`` and
``sinkhorn_attn``, Kimsure/SFP@2804f5b).

Where ``S`` has been cut to 0 below a threshold (SFP's 0.4), any mean between 0 and the threshold masks the same
entries and softmax ignores the shift: the guidance is then a softmax of ``τ·S`` over the entries above the cut.

``S`` is not a parameter: the map method (:mod:`cliplens.maps.sfp`) computes it from intermediate layers and
hands it over with :meth:`SemanticEnhancer.use`.
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


def guidance_pattern(similarity: Tensor, temperature: float) -> Tensor:
    """``softmax(G)`` ``[B, N, N]`` for a similarity ``S`` ``[B, N, N]`` (see the module docs)."""
    mean = similarity.mean(dim=(-2, -1), keepdim=True)
    logits = (similarity - mean) * temperature
    return logits.masked_fill(logits < 0, float("-inf")).softmax(-1)


@register_attention("semantic-enhancer")
class SemanticEnhancer(AttentionStrategy):
    """SFP's enhancer (see the module docs)."""

    def __init__(self, temperature: float = 3.0, correlative: bool = True) -> None:
        if not temperature > 0:
            raise InvalidInputError(f"the semantic enhancer's temperature must be positive, got {temperature}")
        super().__init__(temperature=float(temperature), correlative=bool(correlative))
        self.similarity: Tensor | None = None

    def use(self, similarity: Tensor | None) -> SemanticEnhancer:
        """Set ``S`` ``[B, N, N]`` (over the tokens the attention runs on) for the next calls."""
        self.similarity = similarity
        return self

    def _guide(self, q: Tensor) -> Tensor:
        if self.similarity is None:
            raise InvalidInputError("semantic-enhancer attention needs a token similarity: use the 'sfp' map method, "
                                    "or call .use(S) before the forward")
        if self.similarity.shape[-1] != q.shape[-2]:
            raise InvalidInputError(f"semantic-enhancer attention: the similarity is over {self.similarity.shape[-1]} "
                                    f"tokens, the attention over {q.shape[-2]}")
        return guidance_pattern(self.similarity, self.params["temperature"])

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        guide = self._guide(q)[:, None]  # [B, 1, N, N]
        guide = guide if ctx.rows is None else guide[:, :, ctx.rows]
        if not self.params["correlative"]:
            return guide.to(q.dtype).expand(q.shape[0], q.shape[1], *guide.shape[-2:])
        own = softmax_rows(scaled_scores(q, q, ctx.rows), q.dtype) + softmax_rows(scaled_scores(k, k, ctx.rows), q.dtype)
        return (own + guide.to(q.dtype)) / 3.0

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        """The same as ``pattern · v`` without a ``[B, H, N, N]`` tensor: the guidance is one pattern for every head
        (one matmul over the concatenated heads), the q-q and k-k parts are fused softmax attention."""
        B, H, N, dh = v.shape
        flat = v.transpose(1, 2).reshape(B, N, H * dh)
        guided = (self._guide(q).to(v.dtype) @ flat).view(B, N, H, dh).transpose(1, 2)
        if not self.params["correlative"]:
            return guided
        return (F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v) + guided) / 3.0
