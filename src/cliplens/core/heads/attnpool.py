"""Attention pooling with a mean-token query (OpenAI ResNet CLIP's ``AttentionPool2d``).

The pool reads the trunk's tokens ``t_0 … t_P`` (:mod:`cliplens.core.trunk`): ``t_0`` the mean of the spatial
features, ``t_1 … t_P`` the positions in row-major order, each plus its positional embedding (the mean token is
FIRST, as in the source's own sequence). Only the mean token queries, with ``H_p`` pool heads:

    α[h, n] = softmax_n(q_h(t_0) · k_h(t_n) / √d),   z = W_c · concat_h(Σ_n α[h, n] v_h(t_n)) + b_c.

Decomposition rule: one readout per pool head ``h`` with the pattern frozen (``a = α[h]``; no LayerNorm: ``ω = a``,
``s = 1``, ``m = 0``), ``M_h = W_v^h · W_c^h`` (``in_h`` ``[C, d]``, ``out_h`` ``[d, E]``) and the constant
``b = W_c · b_v + b_c`` (the value bias arrives once per head since ``Σ_n α[h, n] = 1``). With α frozen the head is
affine (``affine = True``, no lumped term): the embedding splits exactly per pool head × token (the ``P`` positions
and the mean token), :meth:`cliplens.decomposition.Decomposition.pool_terms`. The trunk before it is not decomposed.

Dense output (every token through the head on its own): the value path, ``z_n = W_c(v(t_n)) + b_c`` — the rule
MaskCLIP and CLIP Surgery apply to ResNets (the pool's attention restricted to the token itself, ``α = 1``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.heads.base import AttentionPooling, Readout

__all__ = ["AttnPoolHead"]


class AttnPoolHead(AttentionPooling):
    """OpenAI's ``AttentionPool2d`` over tokens ``[B, 1 + P, C]`` (mean token first); weights follow ``F.linear``."""

    kind: ClassVar[str] = "attnpool"
    affine: ClassVar[bool] = True

    def __init__(self, *, q_weight: Tensor, q_bias: Tensor | None, k_weight: Tensor, k_bias: Tensor | None,
                 v_weight: Tensor, v_bias: Tensor | None, out_weight: Tensor, out_bias: Tensor | None,
                 num_heads: int) -> None:
        self.q_weight, self.q_bias = q_weight, q_bias
        self.k_weight, self.k_bias = k_weight, k_bias
        self.v_weight, self.v_bias = v_weight, v_bias
        self.out_weight, self.out_bias = out_weight, out_bias
        self.num_heads = int(num_heads)

    # ---- running it -----------------------------------------------------------------------------------------
    def values(self, x: Tensor) -> Tensor:
        """``[B, Hp, N, d]``: every token's value per pool head (with the value bias)."""
        return self.split(F.linear(x, self.v_weight, self.v_bias))

    def pattern(self, x: Tensor) -> Tensor:
        """``[B, Hp, N]``: the mean token's attention over all tokens (itself included)."""
        q = self.split(F.linear(x[:, :1], self.q_weight, self.q_bias))  # [B, Hp, 1, d]
        k = self.split(F.linear(x, self.k_weight, self.k_bias))  # [B, Hp, N, d]
        half = x.dtype in (torch.float16, torch.bfloat16)
        logits = torch.matmul(q.float() if half else q, (k.float() if half else k).transpose(-1, -2))
        return (logits * self.head_dim ** -0.5).softmax(-1)[:, :, 0].to(x.dtype)

    def project_heads(self, o: Tensor) -> Tensor:
        """``[B, (N,) Hp, d]`` concatenated over heads and through ``c_proj`` -> ``[B, (N,) E]``."""
        return F.linear(o.flatten(-2), self.out_weight, self.out_bias)

    def __call__(self, x: Tensor, rec: Any = None) -> Tensor:
        alpha = self.pattern(x)
        if rec is not None and rec.wants("head.pattern"):
            alpha = rec("head.pattern", alpha)
        o = torch.matmul(alpha[:, :, None], self.values(x))[:, :, 0]  # [B, Hp, d]
        return self.project_heads(o)

    def dense(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.v_weight, self.v_bias), self.out_weight, self.out_bias)

    def readout(self, x: Tensor) -> Readout:
        with torch.no_grad():  # frozen: the readout carries no autograd history
            alpha = self.pattern(x)
        dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        B, N = x.shape[:2]
        ones = torch.ones(B, N, dtype=dt, device=x.device)
        return Readout(pooling=alpha.to(dt), token_scale=ones, token_mean=torch.zeros_like(ones),
                       scale=torch.ones(B, self.num_heads, dtype=dt, device=x.device))

    def parameters(self) -> list[Tensor]:
        out = [self.q_weight, self.k_weight, self.v_weight, self.out_weight]
        return out + [t for t in (self.q_bias, self.k_bias, self.v_bias, self.out_bias) if t is not None]
