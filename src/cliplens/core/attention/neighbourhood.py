"""Neighbourhood attention (NACLIP, Hajimiri et al. 2025): ``softmax(s·k kᵀ + Ω) v``.

``Ω`` is an unnormalised 2-D Gaussian over the patch grid, ``Ω[(i, j), (k, l)] = exp(−((i−k)² + (j−l)²) / 2σ²)``
(1 for a patch and itself), added to the logits; it is 0 wherever the CLS token is involved (CLS is not
masked). ``σ = 5`` patches in the original; ``gaussian=False`` leaves plain k-k attention.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.attention.base import (
    AttentionContext,
    AttentionStrategy,
    register_attention,
    scaled_scores,
    softmax_rows,
)

_OMEGA: dict[tuple, Tensor] = {}


def gaussian_prior(grid: tuple[int, int], sigma: float, *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, prefix: int = 1) -> Tensor:
    """``Ω`` ``[k + gh·gw, k + gh·gw]`` for a ``grid`` of patches after ``k = prefix`` tokens (CLS first, or none
    for a tower without one; patches row-major); 0 wherever a prefix token is involved; cached."""
    key = (tuple(grid), float(sigma), str(device), dtype, int(prefix))
    hit = _OMEGA.get(key)
    if hit is None:
        gh, gw = grid
        rows = torch.arange(gh, dtype=torch.float64).repeat_interleave(gw)
        cols = torch.arange(gw, dtype=torch.float64).repeat(gh)
        d2 = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2
        omega = torch.zeros(prefix + gh * gw, prefix + gh * gw, dtype=torch.float64)
        omega[prefix:, prefix:] = torch.exp(-d2 / (2.0 * sigma ** 2))
        hit = omega.to(device=device, dtype=dtype)
        if len(_OMEGA) > 16:
            _OMEGA.clear()
        _OMEGA[key] = hit
    return hit


def neighbourhood_logits(q: Tensor, k: Tensor, ctx: AttentionContext, sigma: float, gaussian: bool) -> Tensor:
    """``s·k kᵀ + Ω`` for the query rows ``ctx.rows`` (float32 for half inputs)."""
    logits = scaled_scores(k, k, ctx.rows)
    if gaussian:
        prefix = k.shape[-2] - ctx.grid[0] * ctx.grid[1]
        omega = gaussian_prior(ctx.grid, sigma, device=logits.device, dtype=logits.dtype, prefix=prefix)
        logits = logits + (omega if ctx.rows is None else omega[ctx.rows])
    return logits


@register_attention("neighbourhood")
class Neighbourhood(AttentionStrategy):
    """NACLIP's attention (see the module docs)."""

    def __init__(self, sigma: float = 5.0, gaussian: bool = True) -> None:
        super().__init__(sigma=float(sigma), gaussian=bool(gaussian))

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        return softmax_rows(neighbourhood_logits(q, k, ctx, self.params["sigma"], self.params["gaussian"]), q.dtype)
