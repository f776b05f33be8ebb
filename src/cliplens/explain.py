"""Readable summaries of a decomposition against texts: which layers, heads and regions push
the image embedding toward each text.

Scores are contributions to the cosine similarity between the unit-norm image
embedding and the unit-norm text embedding: every component's score, summed,
gives that similarity exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from cliplens.decomposition import ComponentScores, Decomposition


@dataclass
class Contribution:
    name: str
    score: float
    layer: int | None = None
    head: int | None = None
    row: int | None = None
    col: int | None = None
    #: region in model-input pixels (after preprocessing): x0, y0, x1, y1
    box: tuple[int, int, int, int] | None = None


@dataclass
class TextExplanation:
    text: str
    similarity: float
    layers: list[Contribution] = field(default_factory=list)
    heads: list[Contribution] = field(default_factory=list)
    regions: list[Contribution] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def explain(
    decomposition: Decomposition,
    directions: Tensor,
    texts: Sequence[str],
    *,
    top: int = 5,
    relative: bool = False,
) -> list[list[TextExplanation]]:
    """For each image of the batch and each text: its top layers, heads and image regions.

    Args:
        decomposition: a decomposition (spatial for regions).
        directions: ``[T, E]`` unit-norm text embeddings, in the order of ``texts``.
        top: how many of each kind of component to keep (by score, highest first).
        relative: subtract, per component, the mean score over the given texts, so that the
            ranking shows what favours *this* text over the others.
    """
    scores = decomposition.normalized().project(directions, labels=list(texts))
    if relative and len(texts) > 1:
        scores = _relative(scores)
    return [[_one(scores, b, t, text, top, decomposition) for t, text in enumerate(texts)]
            for b in range(decomposition.batch_size)]


def _relative(s: ComponentScores) -> ComponentScores:
    def c(x: Tensor) -> Tensor:
        return x - x.mean(-1, keepdim=True)

    return ComponentScores(heads=c(s.heads), attention=c(s.attention), mlp=c(s.mlp), embed=c(s.embed),
                           head_layers=s.head_layers, spatial=s.spatial, grid=s.grid, labels=s.labels)


def _one(s: ComponentScores, b: int, t: int, text: str, top: int, d: Decomposition) -> TextExplanation:
    L = s.mlp.shape[1]
    layer_items = [Contribution("embed", float(s.embed[b, t]))]
    for layer in range(L):
        layer_items.append(Contribution(f"L{layer}.attn", float(s.attention[b, layer, t]), layer=layer))
        layer_items.append(Contribution(f"L{layer}.mlp", float(s.mlp[b, layer, t]), layer=layer))
    layer_items.sort(key=lambda c: c.score, reverse=True)

    per_head = s.per_head()[b, :, :, t]  # [Lh, H]
    flat = per_head.flatten()
    k = min(top, flat.numel())
    heads = []
    for idx in torch.topk(flat, k).indices.tolist():
        li, h = divmod(idx, per_head.shape[1])
        layer = s.head_layers[li]
        heads.append(Contribution(f"L{layer}.H{h}", float(flat[idx]), layer=layer, head=h))

    regions: list[Contribution] = []
    if s.spatial:
        grid = s.token_map()[b, t]  # [gh, gw]
        gh, gw = grid.shape
        ph, pw = d.view.patch_size
        k = min(top, grid.numel())
        for idx in torch.topk(grid.flatten(), k).indices.tolist():
            r, c = divmod(idx, gw)
            regions.append(Contribution(f"r{r}c{c}", float(grid[r, c]), row=r, col=c,
                                        box=(c * pw, r * ph, (c + 1) * pw, (r + 1) * ph)))
    return TextExplanation(text=text, similarity=float(s.total[b, t]), layers=layer_items[:top], heads=heads,
                           regions=regions)
