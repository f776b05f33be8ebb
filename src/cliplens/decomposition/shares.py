"""The sharing rule, in one place: which share of the pooling head's constant each component carries.

The pooling head with frozen statistics is affine, so the image embedding is the sum of its components
mapped one by one (:mod:`cliplens.decomposition.algebra`), provided the head's constant — for CLS pooling
LN_post's mean μ and bias β — is shared out among them:

    c  ↦  (γ ⊙ (c − s·μ) / σ + s·β) · proj          (CLS pooling; Σ s = 1 over all components)

Shares follow the original paper's code: the 2L+1 *sites* (embedding term, L attention layers,
L MLPs) each get 1/(2L+1); within an attention layer a head gets 1/H of its layer's share and,
per source token, 1/(H·N); the out-projection bias (with its layer-scale) is split the same way.
So summing the per-token terms of a head gives its per-head term, summing heads gives the layer
term, and summing everything gives z.
"""

from __future__ import annotations

__all__ = ["head_share", "num_sites", "site_share"]


def num_sites(num_layers: int) -> int:
    """2L+1: the embedding term, L attention layers and L MLPs."""
    return 2 * num_layers + 1


def site_share(num_layers: int) -> float:
    """The share of μ and β of one site (a whole attention layer, an MLP, the embedding term)."""
    return 1.0 / num_sites(num_layers)


def head_share(num_layers: int, num_heads: int, num_tokens: int | None = None) -> float:
    """The share of one head (``num_tokens=None``) or of one (head, source token) term."""
    return site_share(num_layers) / (num_heads * (num_tokens or 1))
