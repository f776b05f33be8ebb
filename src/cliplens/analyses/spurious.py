"""Removing a spurious cue by mean-ablating the heads that carry it (Gandelsman et al., §4.2, Waterbirds).

Groups are (class, value of the spurious attribute) pairs — Waterbirds' landbird/waterbird × land/water, the toy
waterbirds' circle/square × striped/dotted. Zero-shot accuracy is reported per group, as the mean over groups
(*average*), over all images (*overall*) and for the *worst group*, before and after mean-ablating the heads
(:mod:`cliplens.analyses.ablation`: from the store, no model re-run). The paper's control: the best (highest
worst-group accuracy) of 5 random sets of as many heads, drawn from the same candidate heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cliplens.analyses.ablation import Ablation, evaluate
from cliplens.analyses.properties import HeadChoice, attribute_name, head_name, random_head_sets
from cliplens.errors import InvalidInputError
from cliplens.store.reader import Store

__all__ = ["DebiasResult", "GroupAccuracy", "debias", "group_accuracy", "groups_of"]


@dataclass
class GroupAccuracy:
    groups: dict[str, float]  # group name -> accuracy
    sizes: dict[str, int]
    overall: float

    @property
    def average(self) -> float:
        """Mean of the group accuracies."""
        return float(np.mean(list(self.groups.values())))

    @property
    def worst_group(self) -> str:
        return min(self.groups, key=lambda g: (self.groups[g], g))

    @property
    def worst(self) -> float:
        return self.groups[self.worst_group]

    def to_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "sizes": self.sizes, "average": self.average, "worst": self.worst,
                "worst_group": self.worst_group, "overall": self.overall}


def groups_of(store: Store, attribute: str) -> tuple[np.ndarray, list[str]]:
    """Each image's group (class × attribute value) as an index into the returned names; -1 for unlabelled
    images. Only groups with images are named."""
    attr = attribute_name(store, attribute)
    if attr is None:
        have = ", ".join(store.header.get("attribute_names") or []) or "none"
        raise InvalidInputError(f"the store's images have no attribute {attribute!r} to form groups with (they "
                                f"have: {have}); name the attribute that labels the spurious cue")
    values = [str(v) for v in store.attributes(attr)]
    names_of = (store.header.get("dataset", {}).get("attribute_values") or {}).get(attr)
    labels = store.labels
    classes = store.class_names
    keys = sorted({(int(y), v) for y, v in zip(labels, values, strict=True) if y >= 0},
                  key=lambda t: (t[0], _sort_key(t[1])))

    def value_name(v: str) -> str:
        if names_of and v.isdigit() and int(v) < len(names_of):
            return str(names_of[int(v)])
        return v

    names = [f"{classes[y]} on {value_name(v)}" for y, v in keys]
    index = {key: i for i, key in enumerate(keys)}
    group = np.array([index.get((int(y), v), -1) if y >= 0 else -1 for y, v in zip(labels, values, strict=True)])
    return group, names


def _sort_key(v: str) -> tuple[int, Any]:
    return (0, int(v)) if v.lstrip("-").isdigit() else (1, v)


def group_accuracy(store: Store, predictions: np.ndarray, group: np.ndarray, names: Sequence[str]) -> GroupAccuracy:
    labels = store.labels
    right = predictions == labels
    keep = group >= 0
    return GroupAccuracy({n: float(right[group == g].mean()) for g, n in enumerate(names)},
                         {n: int((group == g).sum()) for g, n in enumerate(names)},
                         float(right[keep].mean()))


@dataclass
class DebiasResult:
    choice: HeadChoice
    attribute: str
    before: GroupAccuracy
    after: GroupAccuracy
    random: list[tuple[list[tuple[int, int]], GroupAccuracy]] = field(default_factory=list)
    #: whether the pooling head's lumped MLP was mean-ablated with the heads (and with each random set)
    pool_mlp: bool = False

    @property
    def best_random(self) -> tuple[list[tuple[int, int]], GroupAccuracy] | None:
        if not self.random:
            return None
        return max(self.random, key=lambda r: (r[1].worst, r[1].average))

    def to_dict(self) -> dict[str, Any]:
        best = self.best_random
        return {"heads": self.choice.to_dict(), "groups_by": self.attribute, "pool_mlp": self.pool_mlp,
                "before": self.before.to_dict(), "after": self.after.to_dict(),
                "random": [{"heads": [head_name(*h) for h in hs], **acc.to_dict()} for hs, acc in self.random],
                "best_random": None if best is None else {"heads": [head_name(*h) for h in best[0]],
                                                          **best[1].to_dict()}}


def debias(store: Store, choice: HeadChoice, groups: str, *, random_sets: int = 5, seed: int = 0,
           candidates: Sequence[tuple[int, int]] | None = None, pool_mlp: bool = False) -> DebiasResult:
    """Mean-ablate ``choice.heads`` (and with ``pool_mlp`` the pooling head's lumped MLP, for attention-pooled
    models) and report group accuracies before and after, next to ``random_sets`` random sets of as many heads from
    ``candidates`` (default: the heads ``choice`` scored, else all heads; the same ``pool_mlp``)."""
    if not choice.heads:
        raise InvalidInputError(f"no heads were chosen for {choice.property!r} (no head scored above 0): name "
                                "heads by hand, or choose them another way")
    group, names = groups_of(store, groups)
    before = group_accuracy(store, evaluate(store).predictions, group, names)
    after = group_accuracy(store, evaluate(store, Ablation(heads=tuple(choice.heads), pool_mlp=pool_mlp)).predictions,
                           group, names)
    L, H = store.shape["layers"], store.shape["heads"]
    pool = list(candidates or choice.candidates or [(layer, h) for layer in range(L) for h in range(H)])
    rand = []
    for hs in random_head_sets(pool, len(choice.heads), random_sets, seed) if random_sets else []:
        acc = group_accuracy(store, evaluate(store, Ablation(heads=tuple(hs), pool_mlp=pool_mlp)).predictions, group,
                             names)
        rand.append((hs, acc))
    return DebiasResult(choice, attribute_name(store, groups) or groups, before, after, rand, pool_mlp)
