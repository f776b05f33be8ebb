"""Raw attention: the last block's attention from the CLS query to every patch, averaged over heads.

Text-independent (the same map for every target): a baseline of the explainability literature. On a ResNet CLIP
(no blocks) the attention pool's: the mean token's attention to every position, averaged over pool heads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings

__all__ = ["RawAttention"]


@register_map("raw-attention")
class RawAttention(MapMethod):
    """``mean_h A_{L−1}[h, CLS, n]`` for every patch n (see the module docs)."""

    text_dependent = False
    runs_without_blocks = True  # a ResNet: the attention pool's mean-token query

    @torch.no_grad()
    def raw(self, model: Any, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        L = model.vision.num_layers
        name = f"blocks.{L - 1}.attn.cls_pattern" if L else "head.pattern"
        out = model.run(pixels, names=[name])
        row = out[name].float().mean(1)[:, 1:]  # [B, N-1]
        B, T = row.shape[0], texts.directions.shape[0]
        return row.reshape(B, 1, *out.grid).expand(B, T, *out.grid).contiguous()
