"""What a map explains: contrasts between the maps of several texts."""

from __future__ import annotations

from torch import Tensor

__all__ = ["contrast_others"]


def contrast_others(maps: Tensor, dim: int = 0) -> Tensor:
    """``maps[k] - mean_{j != k} maps[j]`` along ``dim`` (unchanged when there is one map)."""
    T = maps.shape[dim]
    if T < 2:
        return maps.clone()
    total = maps.sum(dim, keepdim=True)
    return maps - (total - maps) / (T - 1)
