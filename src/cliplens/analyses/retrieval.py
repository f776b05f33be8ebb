"""Retrieval by one property: nearest neighbours through chosen heads (Gandelsman et al., §5).

An image's representation *through a set of heads* is the sum of those heads' direct effects on its unit-norm
embedding (joint space, ``ln_post``'s statistics frozen: :meth:`cliplens.store.Store.head_terms`). Two images
are compared by the cosine similarity of these sums: with colour heads, images of the same colour come
first whatever their shape; the full embedding mixes every property. Everything is read from the store; only a
query image that is not in the store goes through the model (one non-spatial decomposition).

:func:`precision_at_k` measures it: every image of the store queries the others, and a neighbour counts as
right when it has the query's value of an attribute (the toy world's factors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError
from cliplens.store.reader import Store

__all__ = ["Neighbours", "describe_row", "embedding_features", "head_features", "nearest", "precision_at_k",
           "query_features", "zero_shot_label"]

_CHUNK = 2048


def head_features(store: Store, heads: Sequence[tuple[int, int]] | None, rows: np.ndarray | None = None) -> Tensor:
    """``[n, E]``: each image's representation through ``heads`` (the sum of their normalised direct effects);
    ``heads=None``: the unit-norm embedding itself. Read in chunks (memory stays one chunk of terms deep)."""
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    if heads is None:
        return embedding_features(store, rows)
    if not heads:
        raise InvalidInputError("no heads to retrieve through")
    layers = sorted({layer for layer, _ in heads})
    pick = [(layers.index(layer), h) for layer, h in heads]
    out = torch.empty(len(rows), store.shape["embed_dim"])
    for start in range(0, len(rows), _CHUNK):
        terms = store.head_terms(rows[start:start + _CHUNK], layers=layers)  # [n, l, H, E]
        out[start:start + _CHUNK] = sum(terms[:, a, b] for a, b in pick)
    return out


def embedding_features(store: Store, rows: np.ndarray | None = None) -> Tensor:
    """``[n, E]`` the unit-norm image embeddings."""
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    emb = torch.from_numpy(store.field("embedding").take(rows).astype(np.float32))
    return torch.nn.functional.normalize(emb, dim=-1)


def query_features(model: ImageTextModel, pixels: Tensor, heads: Sequence[tuple[int, int]] | None) -> Tensor:
    """``[B, E]`` the representation of preprocessed images through ``heads`` (``None``: the unit-norm
    embedding), from the model: the same quantity :func:`head_features` reads from a store."""
    dec = model.decompose(pixels, spatial=False).normalized()
    if heads is None:
        return torch.nn.functional.normalize(dec.embedding.float(), dim=-1)
    per = dec.per_head()  # [B, L, H, E] (all layers)
    return sum(per[:, layer, h] for layer, h in heads).float()


@dataclass
class Neighbours:
    rows: np.ndarray  # store rows, best first
    similarity: np.ndarray  # cosine similarity to the query
    ids: list[str]

    def to_list(self, store: Store, attribute: str | None = None) -> list[dict[str, Any]]:
        """One dict per neighbour: rank, row, id, similarity, class label (and ``attribute``'s value)."""
        return [{"rank": i + 1, "similarity": float(s), **describe_row(store, int(r), attribute)}
                for i, (r, s) in enumerate(zip(self.rows, self.similarity, strict=True))]


def describe_row(store: Store, row: int, attribute: str | None = None) -> dict[str, Any]:
    """What the store knows of one image: its row, id, class label (``None`` when unlabelled) and, when asked,
    the value of ``attribute``."""
    label = int(store.field("label")[row])
    names = store.class_names
    out: dict[str, Any] = {"row": row, "id": store.ids[row],
                           "label": names[label] if 0 <= label < len(names) else None}
    if attribute:
        out[attribute] = store.attributes(attribute)[row]
    return out


def zero_shot_label(store: Store, embedding: Tensor) -> str:
    """The class the store's zero-shot classifier gives an embedding ``[E]`` (for a query from outside the store,
    whose true label is unknown)."""
    scores = store.classifier.double() @ torch.nn.functional.normalize(embedding.double().reshape(-1), dim=0)
    return store.class_names[int(scores.argmax())]


def nearest(store: Store, features: Tensor, query: Tensor, k: int = 10, exclude: int | None = None) -> Neighbours:
    """The ``k`` store images most similar (cosine) to ``query`` ``[E]`` among ``features`` ``[n, E]`` (all the
    store's rows, :func:`head_features`); ``exclude``: a row to leave out (the query itself)."""
    if k < 1:
        raise InvalidInputError(f"k must be at least 1, got {k}")
    f = torch.nn.functional.normalize(features.double(), dim=-1)
    q = torch.nn.functional.normalize(query.double().reshape(-1), dim=0)
    sims = f @ q
    if exclude is not None:
        sims[exclude] = -torch.inf
    k = min(k, len(sims) - (exclude is not None))
    top = sims.topk(k)
    rows = top.indices.numpy()
    return Neighbours(rows, top.values.numpy(), [store.ids[r] for r in rows])


def precision_at_k(features: Tensor, values: Sequence[Any], k: int = 10) -> float:
    """Mean over queries of the share of the ``k`` nearest other images (cosine of ``features``) whose value
    equals the query's; every image queries once."""
    n = features.shape[0]
    if n <= k:
        raise InvalidInputError(f"precision@{k} needs more than {k} images, the store has {n}")
    v = np.asarray([str(x) for x in values])
    f = torch.nn.functional.normalize(features.double(), dim=-1)
    hits = 0.0
    for start in range(0, n, _CHUNK):
        sims = f[start:start + _CHUNK] @ f.T  # [c, n]
        idx = torch.arange(start, min(start + _CHUNK, n))
        sims[torch.arange(len(idx)), idx] = -torch.inf
        top = sims.topk(k, dim=1).indices.numpy()
        hits += float((v[top] == v[idx.numpy(), None]).sum())
    return hits / (n * k)
