"""CLIPer's fused attention (Sun et al., ICCV 2025): the early layers' attention maps in place of the last one's.

``S`` is the sum, per head, of the model's own attention patterns over the blocks before the last one (the map
method collects it during the forward). Its "sum to 1" step, as CLIPer's code runs it:

1. ``rounds`` times: divide each column by its sum, then each row by its sum (a Sinkhorn round);
2. symmetrise: ``(S + Sᵀ) / 2``;
3. subtract each column's mean (over the queries) and clip below at 0;
4. divide each row by its sum.

The official code normalises its summed tensor *in place* in step 1 each time it attends, and it attends once
per fused feature (``L`` times for an ``L``-block tower): the ``k``-th feature (0-based) sees ``k + 1`` rounds.
:func:`balance` is one round, :func:`fused_pattern` steps 2–4, so a caller can keep the rounds as the code
does; the strategy :class:`EarlyFusion` applies ``rounds`` rounds and steps 2–4 to the pattern handed over
with :meth:`EarlyFusion.use`. q and k are not read. Computed in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.attention.base import AttentionContext, AttentionStrategy, register_attention
from cliplens.errors import InvalidInputError


def balance(summed: Tensor) -> Tensor:
    """One round of step 1: columns, then rows, each divided by its sum (``[..., N, N]``)."""
    out = summed / summed.sum(-2, keepdim=True)
    return out / out.sum(-1, keepdim=True)


def fused_pattern(balanced: Tensor) -> Tensor:
    """Steps 2–4 on a balanced ``[..., N, N]``: symmetrise, subtract the column means, clip at 0, rows to sum 1."""
    sym = (balanced + balanced.transpose(-1, -2)) / 2
    sym = (sym - sym.mean(-2, keepdim=True)).clamp_min(0)
    return sym / sym.sum(-1, keepdim=True)


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
        a = self.summed if self.summed.dtype == torch.float64 else self.summed.float()
        for _ in range(self.params["rounds"]):
            a = balance(a)
        p = fused_pattern(a).to(v.dtype)
        return p if ctx.rows is None else p[:, :, ctx.rows]
