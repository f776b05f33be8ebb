"""Attention rollout (Abnar & Zuidema, 2020): attention composed through the layers, with the residual.

Per block ``l ≥ start_layer``: ``Â_l = ½·mean_h A_l + ½·I`` (the residual as an identity, rows sum to 1);
``J = Â_{L−1} ⋯ Â_{start_layer}``; the map is ``J[CLS, patches]``. Heads fused by the mean (the common
choice). ``start_layer=0`` is the original; Chefer et al.'s ImageNet-segmentation evaluation starts at 1.
Text-independent. A tower without a CLS token reads the joint attention through its pooling head's own
weights instead of the CLS row (``w · J``, ``w`` the pooling weights over the final tokens, as in
:mod:`cliplens.maps.raw_attention`): the pooling query is the last attention the embedding goes through.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.core.plan import resolve_layer_indices
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.raw_attention import pooling_row
from cliplens.maps.targets import TextEmbeddings

__all__ = ["Rollout"]


@register_map("rollout")
class Rollout(MapMethod):
    """Attention rollout from ``start_layer`` (see the module docs)."""

    paper = 'Abnar & Zuidema, "Quantifying Attention Flow in Transformers" (ACL 2020)'

    text_dependent = False

    def __init__(self, start_layer: int = 0, positional: str | None = None) -> None:
        super().__init__(start_layer=int(start_layer), positional=positional)

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        L = model.vision.num_layers
        start = resolve_layer_indices(self.params["start_layer"], L, "start layer")[0]
        joint: Tensor | None = None

        def fold(pattern: Tensor, name: str) -> None:
            nonlocal joint
            a = pattern.float().mean(1)  # [B, N, N]
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            joint = a if joint is None else a @ joint

        k = model.vision.num_prefix_tokens
        out = model.run(pixels, plan=self.plan_for(), hooks={f"blocks.{i}.attn.pattern": fold for i in range(start, L)},
                        names=[] if k else ["final"])
        assert joint is not None
        if k:
            row = joint[:, 0, k:]
        else:  # no CLS token: the pooling head's weights over the final tokens read the joint attention
            row = (pooling_row(model, out["final"])[:, None] @ joint)[:, 0]
        B, T = row.shape[0], texts.directions.shape[0]
        return row.reshape(B, 1, *out.grid).expand(B, T, *out.grid).contiguous()
