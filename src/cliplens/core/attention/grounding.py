"""GEM's self-self attention (Bousselham et al., "Grounding Everything", 2024).

For each of ``x ∈ {q, k, v}`` (per head): ``iterations`` times ``x ← softmax(β x̂ x̂ᵀ) x̂`` with ``x̂ = x/‖x‖``
per token; then ``A_x = softmax(β x̂ x̂ᵀ)``. The pattern is the mean ``(A_q + A_k + A_v) / 3``, applied to the
original ``v``. The inverse temperature ``β`` is ``temperature`` if given, else, per image, the mean over
tokens of the block input's norm ``‖ln_1(x)_n‖`` (over the full width) times ``d_head^-½`` (the original's
adaptive rule). GEM runs it on a side path over the last blocks (see :mod:`cliplens.maps.gem`).
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
        """``[B, 1, 1, 1]`` the inverse temperature."""
        if self.params["temperature"] is not None:
            return q.new_full((q.shape[0], 1, 1, 1), self.params["temperature"], dtype=torch.float32)
        if ctx.x is None:
            raise InvalidInputError("GEM's adaptive temperature needs the block input (ctx.x); give temperature=")
        return (ctx.x.float().norm(dim=-1).mean(-1) * q.shape[-1] ** -0.5).view(-1, 1, 1, 1)

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        beta = self.beta(q, ctx)
        total = None
        for x in (q, k, v):
            x = x.float()
            for _ in range(self.params["iterations"]):
                xn = F.normalize(x, dim=-1)
                x = torch.softmax(beta * (xn @ xn.transpose(-1, -2)), -1) @ xn
            xn = F.normalize(x, dim=-1)
            rows = xn if ctx.rows is None else xn[:, :, ctx.rows]
            a = torch.softmax(beta * (rows @ xn.transpose(-1, -2)), -1)
            total = a if total is None else total + a
        return (total / 3.0).to(q.dtype)  # type: ignore[operator]
