"""Scores of every component of a decomposition against text directions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from cliplens.core.plan import resolve_layer_indices
from cliplens.errors import InvalidInputError

__all__ = ["ComponentScores", "head_positions"]


def head_positions(head_layers: Sequence[int], layers: Iterable[int] | int | None, num_layers: int) -> list[int]:
    """Positions in ``head_layers`` of ``layers`` (``None``: all; negatives count from the end of the tower)."""
    if layers is None:
        return list(range(len(head_layers)))
    pos = {layer: i for i, layer in enumerate(head_layers)}
    wanted = resolve_layer_indices(layers, num_layers)
    missing = [layer for layer in wanted if layer not in pos]
    if missing:
        raise InvalidInputError(f"layers {missing} have no per-head terms; head layers are {list(head_layers)}")
    return [pos[layer] for layer in wanted]


@dataclass
class ComponentScores:
    """Scores ``component · text`` for every component of a :class:`~cliplens.decomposition.Decomposition`.

    Axes: ``heads`` ``[B, Lh, N, H, T]`` (spatial) or ``[B, Lh, H, T]``, for the layers in
    ``head_layers``; ``attention`` ``[B, L, T]`` (every layer's total); ``mlp`` ``[B, L, T]``;
    ``embed`` ``[B, T]``; ``nonlinear`` ``[B, T]`` the pooling head's lumped nonlinear part (SigLIP's MLP after
    its attention pooling; ``None`` for affine heads). ``total`` = ``embed + Σ mlp + Σ attention + nonlinear`` =
    ``embedding · text``. ``prefix``: tokens before the patches (1 with a CLS token, 0 without). Layer
    arguments accept negative indices (counted from the end of the tower). ``pool`` ``[B, R, N, T]``: for a tower
    without blocks (an opaque trunk: OpenAI's ResNets), the pool terms per pool head and token
    (:meth:`~cliplens.decomposition.Decomposition.pool_terms`; they sum to ``embed``); token maps read them.
    """

    heads: Tensor
    attention: Tensor
    mlp: Tensor
    embed: Tensor
    head_layers: tuple[int, ...]
    spatial: bool
    grid: tuple[int, int]
    labels: list[str] = field(default_factory=list)
    nonlinear: Tensor | None = None
    prefix: int = 1
    pool: Tensor | None = None

    @property
    def num_layers(self) -> int:
        return int(self.mlp.shape[1])

    @property
    def total(self) -> Tensor:
        """``[B, T]``: the sum of every part (the image–text score itself)."""
        total = self.embed + self.mlp.sum(1) + self.attention.sum(1)
        return total if self.nonlinear is None else total + self.nonlinear

    def per_head(self) -> Tensor:
        """``[B, Lh, H, T]`` (tokens summed)."""
        return self.heads.sum(2) if self.spatial else self.heads

    def token_map(self, layers: Iterable[int] | int | None = None) -> Tensor:
        """``[B, T, gh, gw]``: per image token, summed over heads of ``layers`` (default: all head layers)."""
        if not self.spatial:
            raise InvalidInputError("token maps need a spatial decomposition (decompose(..., spatial=True))")
        if self.pool is not None and not self.head_layers and layers is None:  # no blocks: through the pool
            t = self.pool.sum(1)[:, self.prefix:]
        else:
            idx = self.layer_index(layers)
            t = self.heads[:, idx].sum(dim=(1, 3))[:, self.prefix:]  # [B, gh·gw, T]
        B, _, T = t.shape
        return t.transpose(1, 2).reshape(B, T, *self.grid)

    def centered(self) -> ComponentScores:
        """Every score minus its mean over the texts (what favours *this* text over the others)."""

        def c(x: Tensor) -> Tensor:
            return x - x.mean(-1, keepdim=True)

        return ComponentScores(heads=c(self.heads), attention=c(self.attention), mlp=c(self.mlp), embed=c(self.embed),
                               head_layers=self.head_layers, spatial=self.spatial, grid=self.grid,
                               labels=list(self.labels), prefix=self.prefix,
                               nonlinear=None if self.nonlinear is None else c(self.nonlinear),
                               pool=None if self.pool is None else c(self.pool))

    def layer_index(self, layers: Iterable[int] | int | None) -> list[int]:
        """Positions in ``head_layers`` of ``layers`` (negatives count from the end of the tower)."""
        return head_positions(self.head_layers, layers, self.num_layers)
