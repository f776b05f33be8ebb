"""SCLIP (Wang et al., ECCV 2024): correlative self-attention in the last block.

The last block's attention is ``softmax(s·q qᵀ) + softmax(s·k kᵀ)`` (summed; ``s = d_head^-½``); its residual
connection and MLP are kept, as in the official code. Patch tokens through ``ln_post`` and the projection,
cosine with the texts. The original evaluates with the 80 ImageNet templates, a sliding 224 window with
stride 112 over the image resized to a short side of 336, and a logit scale of 40 (see
:mod:`cliplens.evaluation.protocol`).
"""

from __future__ import annotations

from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.maps.base import register_map
from cliplens.maps.dense import PlanMap

__all__ = ["SCLIP"]


@register_map("sclip")
class SCLIP(PlanMap):
    """SCLIP's correlative self-attention in the last block (see the module docs)."""

    paper = 'Wang et al., "SCLIP: Rethinking Self-Attention for Dense Vision-Language Inference" (ECCV 2024)'
    code = 'github.com/wangf3014/SCLIP@b56bd30'

    own_positional = "bicubic_dino"

    def __init__(self, positional: str | None = "bicubic_dino") -> None:
        super().__init__(positional=positional)

    def plan(self, model: ImageTextModel) -> Plan:
        return Plan().at(-1, attention="correlative")
