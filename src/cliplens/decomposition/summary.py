"""Readable summaries of a decomposition against texts: which layers, heads and regions push the
image embedding toward each text.

Scores are contributions to the cosine similarity between the unit-norm image embedding and the
unit-norm text embedding: every component's score, summed, gives that similarity exactly. With
``relative=True`` the ranking uses each component's score minus its mean over the given texts
(what favours *this* text over the others); the similarity stays the cosine similarity, and the
relative score (the similarity minus its mean over the texts) is reported as its own field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from cliplens.decomposition.decomposition import Decomposition
from cliplens.decomposition.scores import ComponentScores
from cliplens.errors import InvalidInputError

__all__ = ["Contribution", "TextSummary", "summarize"]


@dataclass
class Contribution:
    """One component's score: a layer part (``L3.attn``), a head (``L5.H0``) or a region (``r2c3``)."""

    name: str
    score: float
    layer: int | None = None
    head: int | None = None
    row: int | None = None
    col: int | None = None
    #: region in model-input pixels (after preprocessing): x0, y0, x1, y1
    box: tuple[int, int, int, int] | None = None


@dataclass
class TextSummary:
    """Per image and text: the cosine similarity and its top layers, heads and regions."""

    text: str
    similarity: float
    layers: list[Contribution] = field(default_factory=list)
    heads: list[Contribution] = field(default_factory=list)
    regions: list[Contribution] = field(default_factory=list)
    #: with ``relative=True``: the similarity minus its mean over the given texts (what ranks the parts)
    relative_score: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.relative_score is None:
            d.pop("relative_score")
        return d


def summarize(
    decomposition: Decomposition,
    directions: Tensor,
    texts: Sequence[str],
    *,
    top: int = 5,
    relative: bool = False,
) -> list[list[TextSummary]]:
    """For each image of the batch and each text: its top layers, heads and image regions.

    Args:
        decomposition: a decomposition (spatial for regions).
        directions: ``[T, E]`` unit-norm text embeddings, in the order of ``texts``.
        top: how many of each kind of component to keep (by score, highest first).
        relative: rank by each score minus its mean over the given texts (needs two texts or more).
    """
    if top < 1:
        raise InvalidInputError(f"top must be at least 1, got {top}")
    scores = decomposition.normalized().project(directions, labels=list(texts))
    ranked = scores.centered() if relative and len(texts) > 1 else scores
    similarity = scores.total
    rel = (similarity - similarity.mean(-1, keepdim=True)) if ranked is not scores else None
    return [[_one(ranked, b, t, text, top, decomposition, float(similarity[b, t]),
                  None if rel is None else float(rel[b, t]))
             for t, text in enumerate(texts)]
            for b in range(decomposition.batch_size)]


def _one(s: ComponentScores, b: int, t: int, text: str, top: int, d: Decomposition, similarity: float,
         relative: float | None) -> TextSummary:
    L = s.mlp.shape[1]
    layer_items = [Contribution("embed", float(s.embed[b, t]))]
    for layer in range(L):
        layer_items.append(Contribution(f"L{layer}.attn", float(s.attention[b, layer, t]), layer=layer))
        layer_items.append(Contribution(f"L{layer}.mlp", float(s.mlp[b, layer, t]), layer=layer))
    layer_items.sort(key=lambda c: c.score, reverse=True)

    heads = []
    if s.pool is not None:  # no blocks (ResNet): the attention pool's heads, named pool.H{h}
        per_pool = s.pool[b, :, :, t].sum(1)  # [R]
        for h in torch.topk(per_pool, min(top, per_pool.numel())).indices.tolist():
            heads.append(Contribution(f"pool.H{h}", float(per_pool[h]), head=h))
    per_head = s.per_head()[b, :, :, t]  # [Lh, H]
    flat = per_head.flatten()
    for idx in torch.topk(flat, min(top, flat.numel())).indices.tolist():
        li, h = divmod(idx, per_head.shape[1])
        layer = s.head_layers[li]
        heads.append(Contribution(f"L{layer}.H{h}", float(flat[idx]), layer=layer, head=h))

    regions: list[Contribution] = []
    if s.spatial:
        grid = s.token_map()[b, t]  # [gh, gw]
        gw = grid.shape[1]
        ph, pw = d.view.patch_size
        for idx in torch.topk(grid.flatten(), min(top, grid.numel())).indices.tolist():
            r, c = divmod(idx, gw)
            regions.append(Contribution(f"r{r}c{c}", float(grid[r, c]), row=r, col=c,
                                        box=(c * pw, r * ph, (c + 1) * pw, (r + 1) * ph)))
    return TextSummary(text=text, similarity=similarity, layers=layer_items[:top], heads=heads, regions=regions,
                       relative_score=relative)
