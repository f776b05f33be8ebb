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
step 3 times 2; divide by its row sums). Every ``c_j`` is positive, so a column scaling passes through the clip:
:func:`fused_scaled` forms that matrix with each column divided by ``c_j``, in fewer passes, and a product with
values takes the ``c_j`` on the values' side. The strategy :class:`EarlyFusion` applies ``rounds`` rounds and steps
2–4 to the pattern handed over with :meth:`EarlyFusion.use`; q and k are not read. Computed in float32
(float64 for float64 inputs).

``S`` itself comes from :class:`PatternSum`: the model's own attention over the early blocks, each pattern added
into ``S`` as it is formed. Outside autograd it runs image by image and :data:`HEADS_PER_CHUNK` heads at a time,
so that a chunk's scores, softmax, product with ``v`` and sum into ``S`` read it while it is still in cache
instead of streaming a ``[B, H, N, N]`` tensor through memory four times; the numbers are those of
``softmax(q kᵀ / √dh)``, summed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from cliplens.core.attention.base import AttentionContext, AttentionStrategy, register_attention
from cliplens.core.attention.vanilla import Vanilla
from cliplens.errors import InvalidInputError

#: heads of one image whose ``[N, N]`` matrices are worked on together: two ``[2, 785, 785]`` float32 chunks
#: (ViT-B/16 at 448 px) stay in a 2-core machine's cache (with 4 and 6, the fastest of 1, 2, 3, 4, 6 and 12 heads)
HEADS_PER_CHUNK = 2


def sinkhorn_rounds(summed: Tensor, rounds: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """After each of ``rounds`` rounds of step 1 on ``summed`` ``[..., N, N]``: ``(r, c, colsum)``, the balanced
    matrix being ``r_i · S_ij · c_j`` and ``colsum`` its column sums (its row sums are 1)."""
    u = summed.sum(-2)  # Sᵀ 1: the column sums before the first round
    for _ in range(rounds):
        c = 1.0 / u
        r = 1.0 / torch.matmul(summed, c.unsqueeze(-1)).squeeze(-1)
        u = torch.matmul(r.unsqueeze(-2), summed).squeeze(-2)  # Sᵀ r
        yield r, c, c * u


def fused_scaled(summed: Tensor, r: Tensor, c: Tensor, colsum: Tensor,
                 out: tuple[Tensor, Tensor] | None = None, transposed: Tensor | None = None) -> Tensor:
    """Steps 2–3 (times 2) on the balanced ``r_i · S_ij · c_j``, each column ``j`` divided by ``c_j > 0``:

        ``Y_ij = max(r_i S_ij + c_i Sᵀ_ij (r_j / c_j) − (colsum_j + 1) / (N c_j), 0)``,

    so that the fused matrix (rows not yet normalised) is ``Y · diag(c)``, and its product with values is
    ``Y · (c ⊙ v)``: four passes over ``[N, N]`` (two of them reading ``S`` and ``Sᵀ``) instead of six.
    ``out``: two buffers shaped like ``summed`` to write into (no allocation). ``transposed``: ``Sᵀ`` made
    contiguous, for callers that form many fused matrices from one ``S`` (read in memory order)."""
    n = summed.shape[-1]
    st = summed.transpose(-1, -2) if transposed is None else transposed
    threshold = ((colsum + 1.0) / (n * c)).unsqueeze(-2)
    y = torch.addcmul(threshold.neg(), summed, r.unsqueeze(-1), out=None if out is None else out[0])
    u = torch.mul(st, (r / c).unsqueeze(-2), out=None if out is None else out[1])
    return y.addcmul_(u, c.unsqueeze(-1)).clamp_(min=0)


def fused_unnormalised(summed: Tensor, r: Tensor, c: Tensor, colsum: Tensor) -> Tensor:
    """Steps 2–3 (times 2) on the balanced ``r_i · S_ij · c_j``: ``max(B + Bᵀ − (colsum + 1) / N, 0)``; rows not yet
    normalised (:func:`fused_scaled` times ``diag(c)``)."""
    return fused_scaled(summed, r, c, colsum).mul_(c.unsqueeze(-2))


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


@register_attention("pattern-sum")
class PatternSum(Vanilla):
    """The model's own attention, adding each pattern it forms into :attr:`summed` (see the module docs).

    One instance, set on several blocks of a plan, sums their patterns per image and head: after the forward,
    :attr:`summed` is ``Σ_blocks softmax(q kᵀ / √dh)`` ``[B, H, N, N]`` in float32 (float64 for float64
    inputs). Use a fresh instance (or :meth:`reset`) for each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.summed: Tensor | None = None

    def reset(self) -> PatternSum:
        self.summed = None
        return self

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        first = self.summed is None
        if first:
            self.summed = q.new_empty(*q.shape[:-1], k.shape[-2], dtype=work)
        summed = self.summed
        assert summed is not None
        if q.dtype != work or (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
            p = self.pattern(q, k, v, ctx)
            if first:
                summed.copy_(p)
            else:
                summed.add_(p)
            return torch.matmul(p, v)
        B, H, N, dh = q.shape
        qs = q * dh ** -0.5  # as the pattern's scores: the [N, dh] side scaled
        z = v.new_empty(B, H, N, dh)
        chunk = q.new_empty(min(H, HEADS_PER_CHUNK), N, k.shape[-2])
        for b in range(B):
            for h in range(0, H, HEADS_PER_CHUNK):
                hs = slice(h, h + HEADS_PER_CHUNK)
                p = summed[b, hs] if first else chunk[: summed[b, hs].shape[0]]
                torch.matmul(qs[b, hs], k[b, hs].transpose(-1, -2), out=p)
                torch.softmax(p, -1, out=p)
                torch.matmul(p, v[b, hs], out=z[b, hs])
                if not first:
                    summed[b, hs].add_(p)
        return z
