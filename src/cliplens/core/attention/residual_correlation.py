"""ResCLIP's residual cross-correlation self-attention (RCS; Yang et al. 2025), without its SFR stage.

``τ · [(1 − λ) · softmax(s·k kᵀ + Ω) + λ · R]``: NACLIP's neighbourhood attention mixed with ``R``, the mean
of the model's own (q-k) attention patterns over some intermediate layers of the same forward, per head.
The rows sum to ``τ``. The original uses layers 6–9 of 12 (1-based), ``τ = 2``, ``σ = 5`` and a ``λ`` per data
set (0.2–0.6; 0.3 for VOC21, Context60 and ADE20K).

``R`` is not a parameter: the map method collects it during the forward (hooks on the reference layers'
patterns, which come before the last block) and hands it over with :meth:`ResidualCorrelation.use`.
"""

from __future__ import annotations

from torch import Tensor

from cliplens.core.attention.base import AttentionContext, AttentionStrategy, register_attention, softmax_rows
from cliplens.core.attention.neighbourhood import neighbourhood_logits
from cliplens.errors import InvalidInputError


@register_attention("residual-correlation")
class ResidualCorrelation(AttentionStrategy):
    """RCS attention (see the module docs)."""

    def __init__(self, tau: float = 2.0, lam: float = 0.3, sigma: float = 5.0) -> None:
        if not 0.0 <= lam <= 1.0:
            raise InvalidInputError(f"ResCLIP's lambda must be between 0 and 1, got {lam}")
        super().__init__(tau=float(tau), lam=float(lam), sigma=float(sigma))
        self.reference: Tensor | None = None

    def use(self, reference: Tensor | None) -> ResidualCorrelation:
        """Set ``R`` ``[B, H, N, N]`` (the mean reference pattern) for the next forward."""
        self.reference = reference
        return self

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        if self.reference is None:
            raise InvalidInputError("residual-correlation attention needs the reference layers' mean pattern: use "
                                    "the 'resclip' map method, or call .use(R) before the forward")
        tau, lam = self.params["tau"], self.params["lam"]
        own = softmax_rows(neighbourhood_logits(q, k, ctx, self.params["sigma"], True), q.dtype)
        ref = self.reference if ctx.rows is None else self.reference[:, :, ctx.rows]
        return tau * ((1.0 - lam) * own + lam * ref.to(own.dtype))
