"""The LN-sharing rule, in one place.

LN_post with frozen statistics is affine, so the image embedding is the sum of its components
mapped one by one, provided LN_post's mean μ and bias β are shared out among them:

    c  ↦  (γ ⊙ (c − s·μ) / σ + s·β) · proj          (Σ s = 1 over all components)

Shares follow the original paper's code: the 2L+1 *sites* (embedding term, L attention layers,
L MLPs) each get 1/(2L+1); within an attention layer a head gets 1/H of its layer's share and,
per source token, 1/(H·N); the out-projection bias (with its layer-scale) is split the same way.
So summing the per-token terms of a head gives its per-head term, summing heads gives the layer
term, and summing everything gives z.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["frozen_ln_project", "head_share", "num_sites", "site_share"]


def num_sites(num_layers: int) -> int:
    """2L+1: the embedding term, L attention layers and L MLPs."""
    return 2 * num_layers + 1


def site_share(num_layers: int) -> float:
    """The share of μ and β of one site (a whole attention layer, an MLP, the embedding term)."""
    return 1.0 / num_sites(num_layers)


def head_share(num_layers: int, num_heads: int, num_tokens: int | None = None) -> float:
    """The share of one head (``num_tokens=None``) or of one (head, source token) term."""
    return site_share(num_layers) / (num_heads * (num_tokens or 1))


def frozen_ln_project(c: Tensor, share: float, mean: Tensor, std: Tensor, gamma: Tensor, beta: Tensor,
                      proj: Tensor) -> Tensor:
    """``(γ ⊙ (c − share·μ) / σ + share·β) · proj`` for ``c`` ``[B, ..., D]``.

    ``mean``/``std`` hold the frozen statistics of each position of ``c``'s leading axes: ``[B]`` (the CLS
    token, one per image) or ``[B, N]`` (one per token, for dense outputs).
    """
    extra = (1,) * (c.dim() - mean.dim())
    mu = mean.reshape(*mean.shape, *extra)
    sd = std.reshape(*std.shape, *extra)
    return ((c - share * mu) * gamma / sd + share * beta) @ proj
