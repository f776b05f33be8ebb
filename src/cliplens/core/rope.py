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
    return _rotate(x, cos, sin * _signs(x.shape[-1], half, x), half)


def _signs(dh: int, half: bool, like: Tensor) -> Tensor:
    """``[dh]``: the signs of ``rot(x)`` relative to the swapped ``x`` (−1 where ``rot`` negates)."""
    s = torch.ones(dh, dtype=like.dtype, device=like.device)
    if half:
        s[: dh // 2] = -1
    else:
        s[0::2] = -1
    return s


def _rotate(x: Tensor, cos: Tensor, signed_sin: Tensor, half: bool) -> Tensor:
    """``x·cos + rot(x)·sin`` with ``rot(x) = swap(x) ⊙ signs`` (``swap``: the halves, or each pair, exchanged)."""
    if half:
        front, back = x.chunk(2, dim=-1)
        swapped = torch.cat([back, front], dim=-1)
    else:
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos, swapped, signed_sin)


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

    def _factors(self, grid: tuple[int, int], like: Tensor) -> tuple[Tensor, Tensor]:
        """``(cos, sin ⊙ signs)`` ``[N - prefix, 1, dh]`` for ``grid`` in ``like``'s dtype (cached)."""
        key = ("factors", tuple(grid), str(like.device), like.dtype)
        f = self._tables.get(key)
        if f is None:
            sin, cos = self.table_for(grid, like.device).to(like.dtype).chunk(2, dim=-1)
            f = (cos[:, None].contiguous(), (sin * _signs(sin.shape[-1], self.half, sin))[:, None].contiguous())
            self._tables[key] = f
        return f

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """``x`` ``[B, N, H, dh]`` with the patch tokens rotated (tokens ``prefix:``)."""
        p = self.prefix
        cos, signed_sin = self._factors(grid, x)  # [N - p, 1, dh]: broadcast over heads
        if torch.is_grad_enabled() and x.requires_grad:  # differentiable: out-of-place
            patches = _rotate(x[:, p:], cos, signed_sin, self.half)
            return torch.cat([x[:, :p], patches], dim=1) if p else patches
        # written into one new tensor: x·cos, then the rotated half (or pair member) added in place, no copies
        out = torch.empty_like(x)
        if p:
            out[:, :p] = x[:, :p]
        xp, op = x[:, p:], out[:, p:]
        torch.mul(xp, cos, out=op)
        if self.half:
            h = x.shape[-1] // 2
            op[..., :h].addcmul_(xp[..., h:], signed_sin[..., :h])
            op[..., h:].addcmul_(xp[..., :h], signed_sin[..., h:])
        else:
            o2, x2, s2 = op.unflatten(-1, (-1, 2)), xp.unflatten(-1, (-1, 2)), signed_sin.unflatten(-1, (-1, 2))
            o2[..., 0].addcmul_(x2[..., 1], s2[..., 0])
            o2[..., 1].addcmul_(x2[..., 0], s2[..., 1])
        return out
