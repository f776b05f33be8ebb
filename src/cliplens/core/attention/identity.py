"""Identity attention: every token attends only to itself, ``z_n = v_n`` (MaskCLIP's value path)."""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.attention.base import AttentionContext, AttentionStrategy, register_attention


@register_attention("identity")
class Identity(AttentionStrategy):
    """``P = I``: the output of each token is its own value vector."""

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        B, H, N, _ = q.shape
        eye = torch.eye(N, dtype=q.dtype, device=q.device)
        eye = eye if ctx.rows is None else eye[ctx.rows]
        return eye.expand(B, H, *eye.shape)

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        return v
