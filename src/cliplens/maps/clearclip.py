"""ClearCLIP (Lan et al., ECCV 2024): the last block without its residual and MLP, with q-q attention.

The last block outputs ``O(softmax(s·q qᵀ) v)`` only (no residual connection, no MLP; ``s = d_head^-½``); patch
tokens through ``ln_post`` and the projection, cosine with the texts. (Beware: the official repository's
base config ships ``model_type='vanilla'``; the method of the paper is the q-q one implemented here.) The
original evaluates at a short side of 448 with a 448 window, stride 224 and logit scale 50.
"""

from __future__ import annotations

from cliplens.core.attention import get_attention
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.maps.base import register_map
from cliplens.maps.dense import PlanMap

__all__ = ["ClearCLIP"]


@register_map("clearclip")
class ClearCLIP(PlanMap):
    """ClearCLIP's last block: q-q attention, no residual, no MLP (see the module docs)."""

    paper = 'Lan et al., "ClearCLIP: Decomposing CLIP Representations for Dense Vision-Language Inference" (ECCV 2024)'
    code = 'github.com/mc-lan/ClearCLIP@ad68a40'

    own_positional = "bicubic_dino"

    def __init__(self, positional: str | None = "bicubic_dino") -> None:
        super().__init__(positional=positional)

    def plan(self, model: ImageTextModel) -> Plan:
        return Plan().at(-1, attention=get_attention("self-self", source="q"), residual=False, mlp=False)
