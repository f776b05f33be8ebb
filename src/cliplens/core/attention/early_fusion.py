"""CLIPer's fused attention (Sun et al., ICCV 2025): the early layers' attention maps in place of the last one's.

``S`` is the sum, per head, of the model's own attention patterns over the blocks before the last one (the map
method collects it during the forward). Its "sum to 1" step, as CLIPer's code runs it:

1. ``rounds`` times: divide each column by its sum, then each row by its sum (a Sinkhorn round);
2. symmetrise: ``(S + Sᵀ) / 2``;
3. subtract each column's mean (over the queries) and clip below at 0;
4. divide each row by its sum.

The official code normalises its summed tensor *in place* in step 1 each time it attends, and it attends once
per fused feature (``L`` times for an ``L``-block tower): the ``k``-th feature (0-based) sees ``k + 1`` rounds.

Computed without rewriting ``S`` (the same numbers, fewer passes over ``[B, H, N, N]``): after any round the
balanced matrix is ``diag(r) · S · diag(c)`` with ``c = 1 / (Sᵀ r_prev)`` and ``r = 1 / (S c)`` (matrix–vector
products; :func:`sinkhorn_rounds`); its rows sum to 1, so the column means of step 3 are
``(colsum + 1) / 2N``, and the factor ½ of steps 2–3 cancels in step 4 (:func:`fused_unnormalised` returns
step 3 times 2; divide by its row sums). The strategy :class:`EarlyFusion` applies ``rounds`` rounds and steps
2–4 to the pattern handed over with :meth:`EarlyFusion.use`; q and k are not read. Computed in float32
(float64 for float64 inputs).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from cliplens.core.attention.base import AttentionContext, AttentionStrategy, register_attention
from cliplens.errors import InvalidInputError


def sinkhorn_rounds(summed: Tensor, rounds: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """After each of ``rounds`` rounds of step 1 on ``summed`` ``[..., N, N]``: ``(r, c, colsum)``, the balanced
    matrix being ``r_i · S_ij · c_j`` and ``colsum`` its column sums (its row sums are 1)."""
    u = summed.sum(-2)  # Sᵀ 1: the column sums before the first round
    for _ in range(rounds):
        c = 1.0 / u
        r = 1.0 / torch.matmul(summed, c.unsqueeze(-1)).squeeze(-1)
        u = torch.matmul(r.unsqueeze(-2), summed).squeeze(-2)  # Sᵀ r
        yield r, c, c * u


def fused_unnormalised(summed: Tensor, r: Tensor, c: Tensor, colsum: Tensor,
                       out: tuple[Tensor, Tensor] | None = None, transposed: Tensor | None = None) -> Tensor:
    """Steps 2–3 (times 2) on the balanced ``r_i · S_ij · c_j``: ``max(B + Bᵀ − (colsum + 1) / N, 0)``; rows not yet
    normalised. ``out``: two buffers shaped like ``summed`` to write into (no allocation). ``transposed``: ``Sᵀ``
    made contiguous, for callers that form many fused matrices from one ``S``: ``Bᵀ = c_i · Sᵀ_ij · r_j`` is then
    read in memory order instead of across rows."""
    n = summed.shape[-1]
    b = torch.mul(summed, c.unsqueeze(-2), out=None if out is None else out[0]).mul_(r.unsqueeze(-1))
    if transposed is None:
        sym = torch.add(b, b.transpose(-1, -2), out=None if out is None else out[1])
    else:
        bt = torch.mul(transposed, r.unsqueeze(-2), out=None if out is None else out[1])
        sym = b.addcmul_(bt, c.unsqueeze(-1))
    return sym.sub_(((colsum + 1.0) / n).unsqueeze(-2)).clamp_(min=0)


def fused_pattern(summed: Tensor, rounds: int) -> Tensor:
    """CLIPer's fused attention ``[..., N, N]`` (steps 1–4) of a summed pattern after ``rounds`` rounds."""
    if rounds < 1:
        raise InvalidInputError(f"the fused attention needs at least one Sinkhorn round, got {rounds}")
    *_, last = sinkhorn_rounds(summed, rounds)
    m = fused_unnormalised(summed, *last)
    return m / m.sum(-1, keepdim=True)


@register_attention("early-fusion")
class EarlyFusion(AttentionStrategy):
    """CLIPer's fused attention from a summed early-layer pattern (see the module docs)."""

    def __init__(self, rounds: int = 1) -> None:
        if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 1:
            raise InvalidInputError(f"early-fusion's rounds must be a whole number of at least 1, got {rounds!r}")
        super().__init__(rounds=int(rounds))
        self.summed: Tensor | None = None

    def use(self, summed: Tensor | None) -> EarlyFusion:
        """Set the summed early-layer pattern ``[B, H, N, N]`` for the next forward."""
        self.summed = summed
        return self

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        if self.summed is None:
            raise InvalidInputError("early-fusion attention needs the early layers' summed pattern: use the "
                                    "'cliper' map method, or call .use(S) before the forward")
        s = self.summed if self.summed.dtype == torch.float64 else self.summed.float()
        p = fused_pattern(s, self.params["rounds"]).to(v.dtype)
        return p if ctx.rows is None else p[:, :, ctx.rows]
