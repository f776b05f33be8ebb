"""Which known factor each head's output follows: the ground truth TEXTSPAN is checked against.

For a head with direct effects ``C`` ``[K, E]`` over K images and a factor with a value per image (the toy
world's scene factors; any attribute of a data set), the share of the head's variance the factor explains
is the between-value variance over the total variance (η²):

    Σ_v (n_v / K) ‖mean_v(C) − mean(C)‖²  /  (1/K) Σ_i ‖C_i − mean(C)‖².

A head's *measured* factor is the one with the largest share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cliplens.errors import InvalidInputError
from cliplens.store.reader import Store

__all__ = ["FactorShares", "explained_by_factors", "factor_shares"]


@dataclass
class FactorShares:
    layer: int
    head: int
    shares: dict[str, float]  # factor -> share of the head's variance it explains

    @property
    def name(self) -> str:
        return f"L{self.layer}.H{self.head}"

    @property
    def factor(self) -> str:
        return max(self.shares, key=self.shares.get)


def factor_shares(C: Tensor, values: Sequence[object]) -> float:
    """η² of one head's outputs ``C`` ``[K, E]`` for one factor's per-image ``values``."""
    if C.shape[0] != len(values):
        raise InvalidInputError(f"{C.shape[0]} images but {len(values)} factor values")
    C = C.double()
    mean = C.mean(0)
    total = ((C - mean) ** 2).sum(1).mean()
    if float(total) == 0.0:
        return 0.0
    v = np.asarray([str(x) for x in values])
    between = C.new_zeros(())
    for value in np.unique(v):
        sel = torch.from_numpy(v == value)
        between = between + sel.double().mean() * ((C[sel].mean(0) - mean) ** 2).sum()
    return float(between / total)


def explained_by_factors(store: Store, factors: Sequence[str], heads: Sequence[tuple[int, int]],
                         images: Sequence[int] | None = None) -> list[FactorShares]:
    """For each head, the share of its variance each factor (a store attribute) explains."""
    rows = np.arange(len(store)) if images is None else np.asarray(images, dtype=np.int64)
    values = {f: [store.attributes(f)[i] for i in rows] for f in factors}
    layers = sorted({layer for layer, _ in heads})
    terms = store.head_terms(rows, layers=layers)  # [K, l, H, E]
    return [FactorShares(layer, h, {f: factor_shares(terms[:, layers.index(layer), h], values[f]) for f in factors})
            for layer, h in heads]
