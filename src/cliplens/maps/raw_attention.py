"""Raw attention: the last block's attention from the CLS query to every patch, averaged over heads.

Text-independent (the same map for every target): a baseline of the explainability literature.
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

    @torch.no_grad()
    def raw(self, model: Any, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        L = model.vision.num_layers
        name = f"blocks.{L - 1}.attn.cls_pattern"
        out = model.run(pixels, names=[name])
        row = out[name].float().mean(1)[:, 1:]  # [B, N-1]
        B, T = row.shape[0], texts.directions.shape[0]
        return row.reshape(B, 1, *out.grid).expand(B, T, *out.grid).contiguous()
