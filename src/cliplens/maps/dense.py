"""What the training-free dense methods share: a plan for the forward, and cosine maps from its tokens.

A :class:`PlanMap` says how the forward runs (:meth:`PlanMap.plan`, a per-block plan: attention strategy,
residual, MLP, side paths) and which stream's tokens it reads (the main stream, or a side path). Its raw map
for text ``t`` is ``cos(f_n, t)`` for every patch token ``n``, ``f_n`` the token through ``ln_post`` (its own
statistics) and the projection. MaskCLIP, SCLIP, ClearCLIP, NACLIP, ResCLIP and GEM are one plan each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.maps.base import MapMethod
from cliplens.maps.targets import TextEmbeddings
from cliplens.maps.token_similarity import patch_grid

__all__ = ["PlanMap"]


class PlanMap(MapMethod):
    """Base of the plan-based dense methods (see the module docs)."""

    #: the side path whose tokens are read (``None``: the main stream)
    stream: str | None = None

    def plan(self, model: ImageTextModel) -> Plan:
        raise NotImplementedError

    def tokens(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, N, E]`` every token of the stream through ``ln_post`` and the projection (CLS first), and the grid."""
        name = "dense" if self.stream is None else f"side.{self.stream}.dense"
        out = model.run(pixels, plan=self.plan_for(self.plan(model)), names=[name])
        return out[name], out.grid

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        tokens, grid = self.tokens(model, pixels)
        feats = F.normalize(tokens.float(), dim=-1)
        return patch_grid(feats @ texts.directions.to(feats).T, grid)
