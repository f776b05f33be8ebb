"""ResCLIP (Yang et al., CVPR 2025), its residual cross-correlation self-attention (RCS) without SFR.

The last block outputs ``O(A v)`` only (no residual connection, no MLP) with
``A = τ · [(1 − λ) · softmax(s·k kᵀ + Ω) + λ · R]``: NACLIP's neighbourhood attention mixed with ``R``, the mean
of the model's own attention patterns over intermediate layers of the same forward (per head). See
:mod:`cliplens.core.attention.residual_correlation`.

Defaults: ``τ = 2``, ``σ = 5``, ``λ = 0.3`` (the original's value for VOC21, Context60 and ADE20K; it tunes λ per
data set between 0.2 and 0.6), reference layers 6–9 of 12 (1-based), i.e. ``range(round(5L/12), round(9L/12))``
0-based for an L-layer tower. ResCLIP's second stage (SFR) needs a preliminary segmentation with PAMR,
data-set thresholds and hard-coded CUDA/fp16 steps, so this is "ResCLIP without SFR", as the paper's own
ablation names it. (SC-CLIP, once left out here for its many implicit choices, is now its own method with each
choice stated and tested: :mod:`cliplens.maps.scclip`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from cliplens.core.attention import ResidualCorrelation
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan, resolve_layer_indices
from cliplens.errors import InvalidInputError
from cliplens.maps.base import register_map
from cliplens.maps.dense import PlanMap

__all__ = ["ResCLIP", "reference_layers"]


def reference_layers(num_layers: int) -> list[int]:
    """The default reference layers: 0-based ``round(5L/12) .. round(9L/12) − 1`` (5–8 for 12 layers)."""
    lo, hi = round(5 * num_layers / 12), round(9 * num_layers / 12)
    return list(range(lo, max(hi, lo + 1)))


@register_map("resclip")
class ResCLIP(PlanMap):
    """ResCLIP's RCS attention in a reduced last block (see the module docs)."""

    paper = 'Yang et al., "ResCLIP: Residual Attention for Training-free Dense Vision-language Inference" (CVPR 2025)'
    code = 'github.com/yvhangyang/ResCLIP@0e085f7'

    own_positional = "bicubic_dino"

    def __init__(self, tau: float = 2.0, lam: float = 0.3, sigma: float = 5.0,
                 reference_layers: Iterable[int] | None = None, positional: str | None = "bicubic_dino") -> None:
        if not 0.0 <= lam <= 1.0:
            raise InvalidInputError(f"ResCLIP's lam must be between 0 and 1, got {lam}")
        super().__init__(tau=float(tau), lam=float(lam), sigma=float(sigma),
                         reference_layers=None if reference_layers is None else [int(i) for i in reference_layers],
                         positional=positional)

    def layers(self, model: ImageTextModel) -> list[int]:
        L = model.vision.num_layers
        given = self.params["reference_layers"]
        layers = reference_layers(L) if given is None else resolve_layer_indices(given, L, "reference layer")
        if L - 1 in layers:
            raise InvalidInputError(f"ResCLIP's reference layers must come before the last block ({L - 1}); got "
                                    f"{layers}")
        return layers

    def _strategy(self) -> ResidualCorrelation:
        return ResidualCorrelation(tau=self.params["tau"], lam=self.params["lam"], sigma=self.params["sigma"])

    def plan(self, model: ImageTextModel) -> Plan:
        return Plan().at(-1, attention=self._strategy(), residual=False, mlp=False)

    def tokens(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        layers = self.layers(model)
        strategy = self._strategy()
        acc: dict[str, Any] = {"sum": None, "seen": 0}

        def collect(pattern: Tensor, name: str) -> None:  # the reference layers run before the last block
            acc["sum"] = pattern.float() if acc["sum"] is None else acc["sum"] + pattern.float()
            acc["seen"] += 1
            if acc["seen"] == len(layers):
                strategy.use(acc["sum"] / len(layers))

        plan = Plan().at(-1, attention=strategy, residual=False, mlp=False)
        try:
            out = model.run(pixels, plan=self.plan_for(plan), names=["dense"], hooks={f"blocks.{i}.attn.pattern": collect
                                                                         for i in layers})
        finally:
            strategy.use(None)
        return out["dense"], out.grid
