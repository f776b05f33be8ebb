"""MaskCLIP (Zhou et al., ECCV 2022): the last block's value path.

In the last block every token attends only to itself (its output is the out-projection of its own value),
and the patch tokens, through ``ln_post`` and the projection, are scored against the texts by cosine.

``residual_ffn=True`` (default) is the official code: the residual connection and the MLP of the last block
are kept (``x + O(v)``, then ``+ MLP(ln_2(·))``). ``residual_ffn=False`` is the variant the SCLIP/ClearCLIP line of
papers re-implements and reports as "MaskCLIP": ``O(v)`` alone. (The official code also runs with exact GELU
and LayerNorm eps 1e-6 on OpenAI weights; cliplens keeps the model's own.) No key smoothing or prompt
denoising (off in the official configs). Prompts: the 85 templates (``Targets.classes(..., templates="surgery")``).

On a ResNet CLIP (no blocks: :mod:`cliplens.models.resnet`) MaskCLIP's own ResNet rule: each token through the
attention pool's value projection and ``c_proj`` (``residual_ffn`` does not apply).
"""

from __future__ import annotations

from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.maps.base import register_map
from cliplens.maps.dense import PlanMap

__all__ = ["MaskCLIP"]


@register_map("maskclip")
class MaskCLIP(PlanMap):
    """MaskCLIP's value path in the last block (see the module docs)."""

    paper = 'Zhou et al., "Extract Free Dense Labels from CLIP" (ECCV 2022)'
    code = 'github.com/chongzhou96/MaskCLIP'

    own_positional = "bicubic"

    def __init__(self, residual_ffn: bool = True, positional: str | None = "bicubic") -> None:
        super().__init__(residual_ffn=bool(residual_ffn), positional=positional)

    runs_without_blocks = True

    def tokens(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        if model.vision.num_layers == 0:  # a ResNet: the attention pool's value path, per token (its dense output)
            out = model.run(pixels, plan=self.plan_for(), names=["dense"])
            return out.dense, out.grid
        return super().tokens(model, pixels)

    def plan(self, model: ImageTextModel) -> Plan:
        keep = self.params["residual_ffn"]
        return Plan().at(-1, attention="identity", residual=keep, mlp=keep)
