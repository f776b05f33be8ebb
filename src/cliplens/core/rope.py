"""Rotary position embeddings on q and k (EVA02, PE-Core), as a read-only view of the source's tables.

A :class:`Rotary` rotates the query and key vectors of the *patch* tokens (the ``prefix`` tokens before them,
the CLS token, are left alone) by angles that depend on each patch's grid position:
``x·cos + rot(x)·sin`` with ``rot(x) = (−x₁, x₀, −x₃, x₂, …)`` (interleaved pairs) or ``(−x_back, x_front)``
(``half``). The table ``[sin | cos]`` (``[gh·gw, 2·dh]``) comes from the source for each grid
(``table(grid)``), so a forward at another input size uses the source's own rule for that grid.

Rotary embeddings act on the attention weights only, never on the values: the decomposition is unchanged
(what a head writes is still ``Σ_m α_{n,m} v_m``), and every method that recomputes attention from the
recorded ``attn.q``/``attn.k`` sees the rotated vectors (the forward rotates them before those hooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Rotary", "rotate"]


def rotate(x: Tensor, table: Tensor, half: bool) -> Tensor:
    """``x`` ``[..., N, dh]`` rotated by ``table`` ``[N, 2·dh]`` (``[sin | cos]``)."""
    sin, cos = table.to(x.dtype).chunk(2, dim=-1)
    if half:
        front, back = x.chunk(2, dim=-1)
        r = torch.cat([-back, front], dim=-1)
    else:
        r = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).reshape(x.shape)
    return x * cos + r * sin


@dataclass(frozen=True)
class Rotary:
    """The rotary embedding of a tower: ``table(grid) -> [gh·gw, 2·dh]`` (``[sin | cos]``), the prefix tokens it
    skips, and the pairing (``half``: rotate halves, else interleaved pairs)."""

    table: Callable[[tuple[int, int]], Tensor]
    prefix: int = 1
    half: bool = False
    #: what the fingerprint records about it (the source's settings)
    describe: str = ""
    _tables: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    def table_for(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        key = (tuple(grid), str(device))
        t = self._tables.get(key)
        if t is None:
            t = self.table(tuple(grid)).detach().to(device)
            self._tables[key] = t
        return t

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """``x`` ``[B, N, H, dh]`` with the patch tokens rotated (tokens ``prefix:``)."""
        p = self.prefix
        t = self.table_for(grid, x.device)  # [N - p, 2·dh]
        patches = rotate(x[:, p:].transpose(1, 2), t, self.half).transpose(1, 2)
        return torch.cat([x[:, :p], patches], dim=1) if p else patches
