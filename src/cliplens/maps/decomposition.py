"""The decomposition map (Gandelsman et al.): each image token's direct effect on the image
embedding, through the heads of all (or chosen) layers, scored against each text."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from cliplens.maps.base import MapMethod, register_map

__all__ = ["DecompositionMap"]


@register_map("decomposition")
class DecompositionMap(MapMethod):
    """Per image token n: ``Σ_{l,h} c_{l,h,n} · t`` on the unit-norm embedding (``layers``: which
    layers' heads; default all). Raw scores, before any contrast."""

    def __init__(self, layers: Iterable[int] | int | None = None) -> None:
        super().__init__(layers=layers)

    @torch.no_grad()
    def raw(self, model: Any, pixels: Tensor, directions: Tensor) -> Tensor:
        layers = self.params["layers"]
        dec = model.decompose(pixels, spatial=True, layers=layers)
        return dec.normalized().project(directions).token_map()
