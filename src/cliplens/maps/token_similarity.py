"""Raw token similarity: every patch token of the model's own last layer, through the pooling head on its own
(CLS pooling: ``ln_post`` and the projection; attention pooling: the probe restricted to that token; a ResNet's
attention pool: its value path; see :meth:`cliplens.core.heads.PoolHead.dense`), scored against each text by
cosine similarity. What CLIP Surgery improves on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings

__all__ = ["TokenSimilarity", "patch_grid"]


def patch_grid(scores: Tensor, grid: tuple[int, int]) -> Tensor:
    """Per-token scores ``[B, N, T]`` (the prefix tokens first: CLS, or none for a tower without one) -> patch maps
    ``[B, T, gh, gw]`` (the last ``gh·gw`` tokens are the patches)."""
    k = scores.shape[1] - grid[0] * grid[1]
    return scores[:, k:].transpose(1, 2).reshape(scores.shape[0], scores.shape[2], *grid)


@register_map("token-similarity")
class TokenSimilarity(MapMethod):
    """``cos(dense_n, t)`` for every patch token n of the unmodified forward."""

    def __init__(self, positional: str | None = None) -> None:
        super().__init__(positional=positional)

    default_contrast = "others"
    runs_without_blocks = True  # a ResNet's dense output: the pool's value path (AttnPoolHead.dense)

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        out = model.run(pixels, plan=self.plan_for(), names=["dense"])
        feats = F.normalize(out.dense.float(), dim=-1)
        return patch_grid(feats @ texts.directions.to(feats).T, out.grid)
