"""GEM, "Grounding Everything" (Bousselham et al., CVPR 2024): a self-self side path over the last blocks.

Like CLIP Surgery's architecture, a side path over the last ``blocks`` blocks (6 in the original) starts from
the main stream's residual at the first of them and adds, at each, ``O(SS)``: GEM's self-self attention
(:mod:`cliplens.core.attention.grounding`: iterated q-q, k-k and v-v attention on L2-normalised projections
with an adaptive temperature, averaged, applied to v), computed from the main stream's ``ln_1`` output; no
MLP on the side path; the main stream runs untouched. The side path's patch tokens, through ``ln_post`` and
the projection, are scored against the texts by cosine. Defaults as the original: 6 blocks, 1 iteration,
adaptive temperature. The original prompts with the single template "a photo of a {}." and feeds
448×448 inputs (``size=448, fit="squash"``).

Only the side path's tokens are read, so :meth:`GEM.tokens` runs the main stream's last block only as far as
its q, k and v (which the side path reads there): that block's own attention (replaced by the identity) and MLP,
which reach nothing but the main stream's unused output, are skipped. The side path's tokens are unchanged.

Speed (``benchmarks/bench_maps.py``: ViT-B-16, 448 px, batch 4, 2 CPU threads; docs/guides/benchmarks.md): 1.51×
one plain forward in a run over every method (where open_clip's plain forward is at its fastest), 1.26–1.35× in
runs of two to four methods; above the 1.3× asked of gradient-free methods. Its arithmetic is 1.41× the plain
forward's (the benchmark's "flops x" column, counted by torch's ``FlopCounterMode``): each of the 6 side blocks
runs two attention passes (one iteration, then the output) over q, k and v, 36 beyond the plain forward's 12, and
every query row of every pass is read by the next, so nothing exact removes them. The passes use the fused kernel
(β as the kernel's scale, image by image; q, k and v normalised straight into one stacked buffer; no scaled or
repeated copies).
"""

from __future__ import annotations

from torch import Tensor

from cliplens.core.attention import get_attention
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan, SidePath
from cliplens.errors import InvalidInputError
from cliplens.maps.base import register_map
from cliplens.maps.dense import PlanMap

__all__ = ["GEM"]


@register_map("gem")
class GEM(PlanMap):
    """GEM's self-self side path (see the module docs)."""

    paper = 'Bousselham et al., "Grounding Everything: Emerging Localization Properties in Vision-Language Transformers" (CVPR 2024)'
    code = 'github.com/WalBouss/GEM@5fa677c'

    own_positional = "bicubic_antialias"

    stream = "gem"

    def __init__(self, blocks: int = 6, iterations: int = 1, temperature: float | None = None,
                 positional: str | None = "bicubic_antialias") -> None:
        if iterations < 0:
            raise InvalidInputError(f"GEM's iterations must be 0 or more, got {iterations}")
        super().__init__(blocks=int(blocks), iterations=int(iterations),
                         temperature=None if temperature is None else float(temperature), positional=positional)

    def plan(self, model: ImageTextModel) -> Plan:
        L = model.vision.num_layers
        n = self.params["blocks"]
        if not 1 <= n <= L:
            raise InvalidInputError(f"GEM's blocks must be between 1 and the model's depth ({L}), got {n}")
        att = get_attention("grounding", iterations=self.params["iterations"], temperature=self.params["temperature"])
        return Plan().side(range(L - n, L), SidePath(self.stream, attention=att))

    def tokens(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, N, E]`` the side path's tokens through ``ln_post`` and the projection (CLS first), and the grid."""
        name = f"side.{self.stream}.dense"
        plan = self.plan(model).at(-1, attention="identity", mlp=False)  # the main stream's output is not read
        out = model.run(pixels, plan=self.plan_for(plan), names=[name])
        return out[name], out.grid
