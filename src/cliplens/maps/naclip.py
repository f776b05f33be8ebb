"""NACLIP (Hajimiri et al., WACV 2025): neighbourhood attention in a reduced last block.

The last block outputs ``O(softmax(s·k kᵀ + Ω) v)`` only (no residual connection, no MLP): k-k attention with
an unnormalised 2-D Gaussian ``Ω`` (σ = 5 patches) added to the logits (0 where CLS is involved; see
:mod:`cliplens.core.attention.neighbourhood`). ``gaussian=False`` is its k-k ablation. Patch tokens through
``ln_post`` and the projection, cosine with the texts. The original's reported numbers also apply PAMR
post-processing (10 iterations: ``--pamr 10``, on in ``segment-eval --preset naclip``); it evaluates VOC
whole-image, the rest with a 224 window and stride 112 at a short side of 336, logit scale 40. At another grid
than the model's, the positional table is resized as its code does (DINO's scale-factor rule, ``bicubic_dino``).
"""

from __future__ import annotations

from cliplens.core.attention import get_attention
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.maps.base import register_map
from cliplens.maps.dense import PlanMap

__all__ = ["NACLIP"]


@register_map("naclip")
class NACLIP(PlanMap):
    """NACLIP's reduced last block (see the module docs)."""

    paper = 'Hajimiri et al., "Pay Attention to Your Neighbours: Training-Free Open-Vocabulary Semantic Segmentation" (WACV 2025)'
    code = 'github.com/sinahmr/NACLIP@0cac3a6'

    own_positional = "bicubic_dino"

    def __init__(self, gaussian: bool = True, sigma: float = 5.0, positional: str | None = "bicubic_dino") -> None:
        super().__init__(gaussian=bool(gaussian), sigma=float(sigma), positional=positional)

    def plan(self, model: ImageTextModel) -> Plan:
        att = get_attention("neighbourhood", sigma=self.params["sigma"], gaussian=self.params["gaussian"])
        return Plan().at(-1, attention=att, residual=False, mlp=False)
