"""Raw token similarity: every patch token of the model's own last layer, through ``ln_post`` and the
projection, scored against each text by cosine similarity. What CLIP Surgery improves on. On a ResNet CLIP
each token goes through the attention pool's value path (:class:`cliplens.core.heads.AttnPoolHead`'s dense rule)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings

__all__ = ["TokenSimilarity", "patch_grid"]


def patch_grid(scores: Tensor, grid: tuple[int, int]) -> Tensor:
    """Per-token scores ``[B, N, T]`` (CLS first) -> patch maps ``[B, T, gh, gw]``."""
    return scores[:, 1:].transpose(1, 2).reshape(scores.shape[0], scores.shape[2], *grid)


@register_map("token-similarity")
class TokenSimilarity(MapMethod):
    """``cos(dense_n, t)`` for every patch token n of the unmodified forward."""

    default_contrast = "others"
    runs_without_blocks = True  # a ResNet's dense output: the pool's value path (AttnPoolHead.dense)

    @torch.no_grad()
    def raw(self, model: Any, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        out = model.run(pixels, names=["dense"])
        feats = F.normalize(out.dense.float(), dim=-1)
        return patch_grid(feats @ texts.directions.to(feats).T, out.grid)
