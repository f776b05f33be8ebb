"""Raw attention: the last block's attention from the CLS query to every patch, averaged over heads.

A tower without a CLS token (SigLIP's attention pooling, mean pooling) has no CLS query: there the map is the
pooling head's own weights over the patches (:func:`pooling_row`: the probe's attention, averaged over the
pooling heads; uniform for a mean), the query that makes the embedding.

Text-independent (the same map for every target): a baseline of the explainability literature.
On a ResNet CLIP (no blocks) it is the attention pool's: the mean token's attention to every position,
averaged over pool heads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings

__all__ = ["RawAttention", "pooling_row"]


def pooling_row(model: ImageTextModel, final: Tensor) -> Tensor:
    """``[B, N]`` the pooling head's weights over the final tokens ``final`` ``[B, N, D]`` (its readouts'
    pooling weights averaged: a learned probe's attention, a mean's 1/N, 1 at CLS)."""
    return model.vision.head.readout(final).pooling.float().mean(1)


@register_map("raw-attention")
class RawAttention(MapMethod):
    """``mean_h A_{L−1}[h, CLS, n]`` for every patch n (see the module docs)."""

    def __init__(self, positional: str | None = None) -> None:
        super().__init__(positional=positional)

    text_dependent = False
    runs_without_blocks = True  # a ResNet: the attention pool's mean-token query

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        view = model.vision
        if view.num_layers == 0:  # a ResNet: the attention pool's mean-token query
            out = model.run(pixels, plan=self.plan_for(), names=["head.pattern"])
            row = out["head.pattern"].float().mean(1)[:, view.num_prefix_tokens:]
        elif view.num_prefix_tokens == 0:  # no CLS query: the pooling head's own weights
            out = model.run(pixels, plan=self.plan_for(), names=["final"])
            row = pooling_row(model, out["final"])
        else:
            name = f"blocks.{view.num_layers - 1}.attn.cls_pattern"
            out = model.run(pixels, plan=self.plan_for(), names=[name])
            row = out[name].float().mean(1)[:, view.num_prefix_tokens:]  # [B, patches]
        B, T = row.shape[0], texts.directions.shape[0]
        return row.reshape(B, 1, *out.grid).expand(B, T, *out.grid).contiguous()
