"""GEM's self-self attention (Bousselham et al., "Grounding Everything", 2024).

For each of ``x ∈ {q, k, v}`` (per head): ``iterations`` times ``x ← softmax(β x̂ x̂ᵀ) x̂`` with ``x̂ = x/‖x‖``
per token; then ``A_x = softmax(β x̂ x̂ᵀ)``. The pattern is the mean ``(A_q + A_k + A_v) / 3``, applied to the
original ``v``. The inverse temperature ``β`` is ``temperature`` if given, else, per image, the mean over
tokens of the block input's norm ``‖ln_1(x)_n‖`` (over the full width) times ``d_head^-½`` (the original's
adaptive rule). GEM runs it on a side path over the last blocks (see :mod:`cliplens.maps.gem`).

The iterations and, when no pattern is asked for, the output ``(A_q v + A_k v + A_v v) / 3`` run through the fused
``scaled_dot_product_attention`` with ``β`` as its scale, image by image (folded into the queries instead under
autograd, so that its gradient flows), the iterations over q, k and v stacked as one batch of ``3H`` heads and the
output as three passes over the one ``v`` (no repeated copy), so that no ``[B, H, N, N]`` pattern is formed.
Outside autograd q, k and v are normalised straight into the stacked buffer and every later step runs in place
(the same numbers as :func:`torch.nn.functional.normalize` and the sums). :meth:`Grounding.pattern` forms the
pattern only for the rows asked (recording ``attn.pattern``, ``attn.cls_pattern``). Half-precision inputs are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention.base import AttentionContext, AttentionStrategy, register_attention
from cliplens.errors import InvalidInputError


@register_attention("grounding")
class Grounding(AttentionStrategy):
    """GEM's iterated self-self attention over q, k and v (see the module docs)."""

    def __init__(self, iterations: int = 1, temperature: float | None = None) -> None:
        if iterations < 0:
            raise InvalidInputError(f"GEM's iterations must be 0 or more, got {iterations}")
        super().__init__(iterations=int(iterations), temperature=None if temperature is None else float(temperature))

    def beta(self, q: Tensor, ctx: AttentionContext) -> Tensor:
        """``[B, 1, 1, 1]`` the inverse temperature (float32, or float64 for float64 inputs)."""
        if self.params["temperature"] is not None:
            return q.new_full((q.shape[0], 1, 1, 1), self.params["temperature"],
                              dtype=torch.promote_types(q.dtype, torch.float32))
        if ctx.x is None:
            raise InvalidInputError("GEM's adaptive temperature needs the block input (ctx.x); give temperature=")
        x = ctx.x.to(torch.promote_types(ctx.x.dtype, torch.float32))  # float32 for half inputs
        return (x.norm(dim=-1).mean(-1) * q.shape[-1] ** -0.5).view(-1, 1, 1, 1)

    def _self_self(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor, int]:
        """``(x̂, β, H)``: the iterated, normalised q, k and v stacked over heads, ``[B, 3H, N, dh]`` (q's heads
        first, then k's, then v's; float32 for half inputs), the inverse temperature ``[B, 1, 1, 1]`` in the same
        dtype, and the number of heads ``H``."""
        dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        beta = self.beta(q, ctx).to(dtype)
        H = q.shape[1]
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, beta)):
            x = torch.cat((q, k, v), dim=1).to(dtype)
            for _ in range(self.params["iterations"]):
                xn = F.normalize(x, dim=-1)
                x = _softmax_attend(xn, xn, beta)  # softmax(β x̂ x̂ᵀ) x̂
            return F.normalize(x, dim=-1), beta, H
        # outside autograd: F.normalize's numbers, each written once (into the stacked buffer, or in place)
        x = q.new_empty(q.shape[0], 3 * H, *q.shape[2:], dtype=dtype)
        for i, t in enumerate((q, k, v)):
            torch.div(t, _norms(t, dtype), out=x[:, i * H:(i + 1) * H])
        for _ in range(self.params["iterations"]):
            x = _softmax_attend(x, x, beta)
            x.div_(_norms(x, dtype))
        return x, beta, H

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        xn, beta, H = self._self_self(q, k, v, ctx)
        rows = xn if ctx.rows is None else xn[:, :, ctx.rows]
        total = None
        for i in range(3):
            a = torch.softmax(beta * (rows[:, i * H:(i + 1) * H] @ xn[:, i * H:(i + 1) * H].transpose(-1, -2)), -1)
            total = a if total is None else total + a
        return (total / 3.0).to(q.dtype)  # type: ignore[operator]

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        xn, beta, H = self._self_self(q, k, v, ctx)
        vals = v.to(xn.dtype)
        z = _softmax_attend(xn[:, :H], vals, beta)
        fresh = not (torch.is_grad_enabled() and z.requires_grad)  # the kernel's backward reads its output
        for i in (1, 2):
            y = _softmax_attend(xn[:, i * H:(i + 1) * H], vals, beta)
            z = z.add_(y) if fresh else z + y
        return (z.div_(3.0) if fresh else z / 3.0).to(q.dtype)


def _norms(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``max(‖t‖, ε)`` over the last dimension, in ``dtype``, as :func:`torch.nn.functional.normalize` divides."""
    return torch.linalg.vector_norm(t, dim=-1, keepdim=True, dtype=dtype).clamp_min_(1e-12)


def _softmax_attend(xn: Tensor, values: Tensor, beta: Tensor) -> Tensor:
    """``softmax(β x̂ x̂ᵀ) · values`` per image through the fused kernel, ``β`` as its scale (no scaled copy of
    ``x̂``); under autograd, ``β`` is folded into the queries instead, so that its gradient flows."""
    if torch.is_grad_enabled() and (beta.requires_grad or xn.requires_grad):
        return F.scaled_dot_product_attention(beta * xn, xn, values, scale=1.0)
    scales = beta.flatten().tolist()
    if len(set(scales)) == 1:
        return F.scaled_dot_product_attention(xn, xn, values, scale=scales[0])
    return torch.cat([F.scaled_dot_product_attention(xn[b:b + 1], xn[b:b + 1], values[b:b + 1], scale=s)
                      for b, s in enumerate(scales)])
