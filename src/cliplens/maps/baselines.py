"""Baselines every real map method must beat (they ignore the text)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings

__all__ = ["GaussianMap", "NothingMap", "UniformMap"]


@register_map("uniform")
class UniformMap(MapMethod):
    """The same constant map for every text (``[B, T, 1, 1]``; predicts every pixel)."""

    text_dependent = False
    baseline = True
    runs_without_blocks = True

    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        return torch.ones(pixels.shape[0], texts.directions.shape[0], 1, 1)


@register_map("nothing")
class NothingMap(MapMethod):
    """A map with nothing above zero for every text (predicts no pixel: all background)."""

    text_dependent = False
    baseline = True
    runs_without_blocks = True

    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        return torch.full((pixels.shape[0], texts.directions.shape[0], 1, 1), -1.0)


@functools.lru_cache(maxsize=8)
def _gaussian(H: int, W: int, sigma: float) -> Tensor:
    y = torch.arange(H, dtype=torch.float64) - (H - 1) / 2
    x = torch.arange(W, dtype=torch.float64) - (W - 1) / 2
    sy, sx = sigma * H, sigma * W
    return torch.exp(-0.5 * ((y[:, None] / sy) ** 2 + (x[None, :] / sx) ** 2))


@register_map("gaussian")
class GaussianMap(MapMethod):
    """A centred isotropic Gaussian at pixels, ``sigma`` a fraction of each side (default 1/4)."""

    text_dependent = False
    baseline = True
    runs_without_blocks = True

    def __init__(self, sigma: float = 0.25) -> None:
        super().__init__(sigma=sigma)

    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        H, W = (int(s) for s in pixels.shape[-2:])
        g = _gaussian(H, W, float(self.params["sigma"]))
        return g.expand(pixels.shape[0], texts.directions.shape[0], H, W).clone()
