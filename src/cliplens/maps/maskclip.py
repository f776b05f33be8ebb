"""MaskCLIP (Zhou et al., ECCV 2022): the last block's value path.

In the last block every token attends only to itself (its output is the out-projection of its own value),
and the patch tokens, through ``ln_post`` and the projection, are scored against the texts by cosine.

``residual_ffn=True`` (default) is the official code: the residual connection and the MLP of the last block
are kept (``x + O(v)``, then ``+ MLP(ln_2(·))``). ``residual_ffn=False`` is the variant the SCLIP/ClearCLIP line of
papers re-implements and reports as "MaskCLIP": ``O(v)`` alone. (The official code also runs with exact GELU
and LayerNorm eps 1e-6 on OpenAI weights; cliplens keeps the model's own.) No key smoothing or prompt
denoising (off in the official configs). Prompts: the 85 templates (``Targets.classes(..., templates="surgery")``).
"""

from __future__ import annotations

from typing import Any

from cliplens.core.plan import Plan
from cliplens.maps.base import register_map
from cliplens.maps.dense import PlanMap

__all__ = ["MaskCLIP"]


@register_map("maskclip")
class MaskCLIP(PlanMap):
    """MaskCLIP's value path in the last block (see the module docs)."""

    def __init__(self, residual_ffn: bool = True) -> None:
        super().__init__(residual_ffn=bool(residual_ffn))

    def plan(self, model: Any) -> Plan:
        keep = self.params["residual_ffn"]
        return Plan().at(-1, attention="identity", residual=keep, mlp=keep)
