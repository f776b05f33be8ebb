"""TEXTSPAN (Gandelsman et al.): a basis of texts for each head's output, read from a store.

For one head: ``C`` ``[K, E]``, the head's direct effects on the K images' unit-norm embeddings (joint
space, :meth:`cliplens.store.Store.head_terms`), and ``R`` ``[M, E]``, unit-norm text embeddings of a pool.

1. ``V_r``: the top-``r`` right singular vectors of the *uncentred* ``C`` (``r`` = d_head by default; the
   original scripts use 80, ViT-H's d_head, for every model); the texts are projected onto their span,
   ``R ← R V_rᵀ V_r``, and not renormalised.
2. ``C`` is centred. ``m`` times: every text's score is the sample variance (denominator K−1) over the images
   of ``C · R_j`` (so ``|R_j|²·Var(C·R̂_j)``); the best text is chosen; its unit direction ``t`` is removed from
   ``C`` (the removed part accumulates into the reconstruction) and from every text.

What is reported per text is the **share of the head's variance its direction removed**: ``Var(C·t)`` of the
``C`` left when the text was chosen, over the trace of the centred ``C``'s covariance (the head's total
variance, all directions). The directions are orthonormal, so these shares add up: their running sum is the
cumulative share the texts explain. The score a text was picked by is kept (``scores``) but is not a share:
the projected texts are not renormalised, so it is ``|t|²`` times the variance along the text, smaller than
what removing the direction removes (a head whose 3 texts scored 29 % of its variance can lose 87 % of it).

This implementation is exact and fast: ``C`` is an affine function of the head's ``d_head``-dimensional
output (scaled per image by ``ln_post``'s frozen ``1/σ``), so the Gram matrix ``CᵀC`` comes from a
``(d_head+3)``-square one; every variance along a direction in ``span(V_r)`` is a quadratic form of the
``r × r`` covariance of ``C`` in that span; removing a direction is a rank-one update. It chooses the same
texts as a direct implementation (``tests/analyses/textspan_naive.py``) — the original's reconstruction is
the mathematically correct (CUDA) one, not the CPU one its code returns.

The rebuilt representation (:func:`rebuilt_accuracy`): the analysed heads' terms replaced by their
reconstructions (the mean plus the centred part's projection on the chosen texts), every other component
mean-ablated; its zero-shot accuracy says how much of the representation the texts explain.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.core.plan import resolve_layer_indices
from cliplens.decomposition.shares import site_share
from cliplens.errors import InvalidInputError
from cliplens.store.reader import Store

__all__ = ["COLUMNS", "HeadSpan", "TextSpanResult", "head_inputs", "rebuilt_accuracy", "resolve_heads", "textspan",
           "textspan_heads"]


@dataclass
class HeadSpan:
    """One head's texts, in the order chosen."""

    layer: int
    head: int
    texts: list[str]
    scores: list[float]  # each text's score when picked: |t|²·Var(C·t̂), t the projected text (not a share)
    fractions: list[float]  # the share of the head's total variance that removing each text's direction removed
    total_variance: float  # of the centred C: the trace of its covariance over the images
    indices: list[int] = field(default_factory=list)  # into the pool

    @property
    def name(self) -> str:
        return f"L{self.layer}.H{self.head}"

    @property
    def removed(self) -> list[float]:
        """The variance each text's direction removed (``fractions`` × the total)."""
        return [f * self.total_variance for f in self.fractions]

    @property
    def cumulative(self) -> list[float]:
        """The share of the head's variance removed by the texts up to each one."""
        return [float(x) for x in np.cumsum(self.fractions)]

    @property
    def explained(self) -> float:
        """The share of the head's variance its texts remove together."""
        return float(sum(self.fractions))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "head": self.head, "texts": self.texts,
                "indices": self.indices, "share_removed": self.fractions, "cumulative_share": self.cumulative,
                "variance_removed": self.removed, "total_variance": self.total_variance,
                "pick_scores": self.scores, "explained": self.explained}


#: what each per-head number of ``textspan.json`` means (written into the file)
COLUMNS = {
    "share_removed": "per text: the share of the head's total variance over the images (the trace of the centred "
                     "outputs' covariance) that removing the text's direction removed, after the texts before it",
    "cumulative_share": "per text: the running sum of share_removed (the last one is 'explained')",
    "variance_removed": "per text: share_removed times total_variance",
    "pick_scores": "per text: the score TEXTSPAN picked it by, |t|^2 Var(C t/|t|) for the projected text t "
                   "(not renormalised); not a share of the variance",
    "explained": "the share of the head's variance its texts remove together",
}


@dataclass
class TextSpanResult:
    heads: list[HeadSpan]
    rank: int
    texts_per_head: int
    images: int
    pool_size: int
    accuracy: float | None = None  # the rebuilt representation's zero-shot accuracy
    baseline_accuracy: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "texts_per_head": self.texts_per_head, "images": self.images,
                "pool_size": self.pool_size, "accuracy_rebuilt": self.accuracy,
                "accuracy_baseline": self.baseline_accuracy, "settings": self.settings, "columns": COLUMNS,
                "heads": [h.to_dict() for h in self.heads]}

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TextSpanResult:
        """A result written by :meth:`write` (``textspan.json``, or the folder that holds it)."""
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / "textspan.json"
        try:
            d = json.loads(p.read_text())
            if any("share_removed" not in h for h in d["heads"]):
                raise InvalidInputError(
                    f"{p} was written by an earlier cliplens, whose per-text 'fractions' are the scores TEXTSPAN "
                    "picked the texts by, not the share of variance each text's direction removes: run 'cliplens "
                    "textspan STORE --out DIR' again to get the shares")
            heads = [HeadSpan(int(h["layer"]), int(h["head"]), list(h["texts"]), [float(v) for v in h["pick_scores"]],
                              [float(f) for f in h["share_removed"]], float(h["total_variance"]),
                              [int(i) for i in h.get("indices", [])]) for h in d["heads"]]
            return cls(heads, int(d["rank"]), int(d["texts_per_head"]), int(d["images"]), int(d["pool_size"]),
                       d.get("accuracy_rebuilt"), d.get("accuracy_baseline"), dict(d.get("settings", {})))
        except OSError as e:
            raise InvalidInputError(f"cannot read TEXTSPAN results from {p} ({e.strerror or e}); write them with "
                                    "'cliplens textspan STORE --out DIR'") from None
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, InvalidInputError):
                raise
            raise InvalidInputError(f"{p} is not a TEXTSPAN result written by cliplens ({type(e).__name__}: {e})") from None

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """``textspan.json`` and one tab-separated file per head (``L10.H3.txt``: text, share of the head's
        variance its direction removed, cumulative share, pick score; a ``#`` line names the columns)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = [out / "textspan.json"]
        files[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        for h in self.heads:
            p = out / f"{h.name}.txt"
            rows = zip(h.texts, h.fractions, h.cumulative, h.scores, strict=True)
            p.write_text("# text\tshare of the head's variance removed\tcumulative share\tpick score\n"
                         + "".join(f"{t}\t{f:.4f}\t{c:.4f}\t{v:.6g}\n" for t, f, c, v in rows))
            files.append(p)
        return files


def head_inputs(store: Store, heads: Sequence[tuple[int, int]], images: np.ndarray) -> tuple[Tensor, Tensor]:
    """Per head, ``Z̃`` ``[heads, K, k]`` and ``Q`` ``[heads, k, E]`` with ``C = Z̃ Q`` the head's normalised
    joint-space terms (:mod:`cliplens.decomposition.algebra`, readouts ``r``):
    ``Z̃ = [s_r z_r, s_r w_r, s_r m_r, 1] / ‖e‖`` and ``Q = [A_r; b_O^r / H; −share · g_r; share · (Σ_r c_r + b)]``
    (``k = R·dh + 2R + 1``; ``dh + 3`` for CLS pooling)."""
    shape = store.shape
    L, H = shape["layers"], shape["heads"]
    jm = store.joint_map(torch.float64)
    share = site_share(L) / H
    g, c = jm.constants()  # [R, E]
    scale, mean, wsum = (torch.from_numpy(store.field(f).take(images).astype(np.float64))
                         for f in ("scale", "mean", "wsum"))  # [K, R]
    norm = torch.from_numpy(store.field("embedding").take(images).astype(np.float64)).norm(dim=-1)
    z_all = store.field("heads").take(images)  # [K, R, L, H, dh]
    K = len(images)
    Zs, Qs = [], []
    for layer, h in heads:
        z = torch.from_numpy(z_all[:, :, layer, h].astype(np.float64))  # [K, R, dh]
        Zs.append(torch.cat([(z * scale[..., None]).reshape(K, -1), scale * wsum, scale * mean,
                             torch.ones(K, 1, dtype=torch.float64)], 1) / norm[:, None])
        A, bias = jm.head_factors(layer, h)  # [R, dh, E], [R, E]
        Qs.append(torch.cat([A.reshape(-1, A.shape[-1]), bias, -share * g, share * (c.sum(0) + jm.w.bias)[None]], 0))
    return torch.stack(Zs), torch.stack(Qs)


def textspan_heads(Z: Tensor, Q: Tensor, R: Tensor, *, rank: int, m: int) -> list[dict[str, Any]]:
    """TEXTSPAN for every head at once: ``C_h = Z_h Q_h`` (``Z`` ``[heads, K, k]``, ``Q`` ``[heads, k, E]``),
    texts ``R`` ``[M, E]`` (unit norm). Returns per head ``indices``, ``scores`` (each chosen text's score),
    ``removed`` (the variance removing its direction removed), ``total`` (the centred ``C``'s total variance),
    ``directions`` ``[m, E]`` (the unit text directions removed, orthonormal) and ``mean`` ``[E]`` (of ``C``)."""
    Z, Q, R = Z.double(), Q.double(), R.double()
    nh, K, _ = Z.shape
    if K < 2:
        raise InvalidInputError("TEXTSPAN needs at least 2 images")
    rank = min(rank, K)  # C has at most K right singular vectors (the SVD of a K × E matrix)
    zz = Z.transpose(1, 2) @ Z  # [nh, k, k], one pass over the images
    gram = Q.transpose(1, 2) @ zz @ Q  # CᵀC, uncentred, [nh, E, E]
    # numpy's eigh: torch's batched CPU eigh can be many times slower when its threads compete for cores
    vecs = torch.from_numpy(np.linalg.eigh(gram.numpy())[1])  # columns by ascending eigenvalue
    V = vecs[..., -rank:].flip(-1)  # [nh, E, r]: the top-r right singular vectors of C
    zbar = Z.mean(1)  # [nh, k]
    cov_small = (zz - K * zbar[:, :, None] * zbar[:, None, :]) / (K - 1)  # [nh, k, k], in float64
    QV = Q @ V  # [nh, k, r]
    sigma = QV.transpose(1, 2) @ cov_small @ QV  # covariance of the centred C in span(V): [nh, r, r]
    total = torch.einsum("hke,hkj,hje->h", Q, cov_small, Q)  # trace of the centred C's covariance
    A = R @ V  # [nh, M, r]: the projected texts' coordinates
    mean_c = (zbar[:, None] @ Q)[:, 0]  # [nh, E]
    out = [{"indices": [], "scores": [], "removed": [], "total": float(total[i]), "directions": [], "mean": mean_c[i]}
           for i in range(nh)]
    for _ in range(min(m, rank)):
        scores = ((A @ sigma) * A).sum(-1)  # [nh, M]
        j = scores.argmax(-1)  # [nh]
        a = A[torch.arange(nh), j]  # [nh, r]
        a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        sa = (sigma @ a[..., None])[..., 0]  # Σa
        asa = (a * sa).sum(-1)  # the variance along the unit direction: what removing it removes
        for i in range(nh):
            out[i]["indices"].append(int(j[i]))
            out[i]["scores"].append(float(scores[i, j[i]]))
            out[i]["removed"].append(float(asa[i]))
            out[i]["directions"].append(V[i] @ a[i])
        sigma = sigma - a[..., :, None] * sa[..., None, :] - sa[..., :, None] * a[..., None, :] \
            + asa[:, None, None] * a[..., :, None] * a[..., None, :]
        A = A - (A @ a[..., None]) * a[:, None, :]
    for o in out:
        o["directions"] = torch.stack(o["directions"]) if o["directions"] else torch.zeros(0, R.shape[1])
    return out


def resolve_heads(store: Store, layers: Sequence[int] | int | None, heads: Sequence[tuple[int, int]] | None
                  ) -> list[tuple[int, int]]:
    """The heads TEXTSPAN analyses: ``heads`` if given, else every head of the last ``layers`` layers (or of the
    layers listed); a clear error for heads or layers the store's model does not have."""
    if len(store) == 0:
        raise InvalidInputError(store.empty_message())
    L, H = store.shape["layers"], store.shape["heads"]
    if L == 0:
        raise InvalidInputError(
            f"TEXTSPAN finds a text basis for each attention head of the image tower's layers, and this store's model "
            f"({store.header.get('model', {}).get('name', '?')}) has none: its tower is an opaque trunk (a ResNet) "
            "read out by an attention pool. Its decomposition is per pool head × position (decompose, "
            "Decomposition.pool_terms); ablation runs on the store")
    if heads:
        out = []
        for layer, h in heads:
            if not (-L <= layer < L and 0 <= h < H):
                raise InvalidInputError(f"head L{layer}.H{h} does not exist: {L} layers, {H} heads")
            out.append((layer % L, h))
        return sorted(set(out))
    if layers is None:
        layers = 4
    lay = (list(range(L - layers, L)) if isinstance(layers, int) else resolve_layer_indices(layers, L))
    if isinstance(layers, int) and not 1 <= layers <= L:
        raise InvalidInputError(f"--layers K: the last K layers, 1..{L}; got {layers}")
    return [(layer, h) for layer in lay for h in range(H)]


def textspan(store: Store, texts: Sequence[str], text_embeddings: Tensor, *, layers: Sequence[int] | int | None = 4,
             heads: Sequence[tuple[int, int]] | None = None, m: int = 20, rank: int | None = None,
             images: Sequence[int] | None = None, with_accuracy: bool = True) -> TextSpanResult:
    """TEXTSPAN for the heads of the last ``layers`` layers (or the ``heads`` given) over the store's images."""
    chosen = resolve_heads(store, layers, heads)
    if len(texts) != text_embeddings.shape[0]:
        raise InvalidInputError(f"{len(texts)} texts but {text_embeddings.shape[0]} text embeddings")
    if m < 1:
        raise InvalidInputError(f"texts per head must be at least 1, got {m}")
    rank = int(rank or store.shape["head_dim"])
    E = store.shape["embed_dim"]
    if not 1 <= rank <= E:
        raise InvalidInputError(f"rank must be between 1 and the embedding dimension {E}, got {rank}")
    rows = np.arange(len(store)) if images is None else np.asarray(images, dtype=np.int64)
    R = torch.nn.functional.normalize(text_embeddings.double(), dim=-1)
    Z, Q = head_inputs(store, chosen, rows)
    per = textspan_heads(Z, Q, R, rank=rank, m=m)
    spans = [HeadSpan(layer, h, [texts[j] for j in o["indices"]], o["scores"],
                      [v / o["total"] if o["total"] > 0 else 0.0 for v in o["removed"]], o["total"], o["indices"])
             for (layer, h), o in zip(chosen, per, strict=True)]
    result = TextSpanResult(spans, rank, m, len(rows), len(texts),
                            settings={"heads": [s.name for s in spans], "rank": rank, "texts_per_head": m})
    if with_accuracy:
        result.accuracy, result.baseline_accuracy = rebuilt_accuracy(store, chosen, per, Z, Q, rows)
    return result


def rebuilt_accuracy(store: Store, heads: Sequence[tuple[int, int]], per: list[dict[str, Any]], Z: Tensor, Q: Tensor,
                     rows: np.ndarray) -> tuple[float, float]:
    """Zero-shot accuracy of the representation rebuilt from the texts (see the module docs), and of the
    unit-norm embedding itself, over ``rows``."""
    emb = torch.from_numpy(store.field("embedding").take(rows).astype(np.float64))
    unit = emb / emb.norm(dim=-1, keepdim=True)
    heads_sum = torch.zeros_like(unit)
    recon = torch.zeros_like(unit)
    for i, o in enumerate(per):  # one head at a time: [K, E] at most in memory
        C = Z[i].double() @ Q[i].double()
        heads_sum += C
        d = o["directions"].double()  # [m, E] orthonormal
        recon += o["mean"] + ((C - o["mean"]) @ d.T) @ d
    rebuilt = (unit - heads_sum).mean(0, keepdim=True) + recon  # every other component mean-ablated
    W = store.classifier.double()
    labels = store.labels[rows]
    keep = labels >= 0

    def acc(x: Tensor) -> float:
        return float(((x @ W.T).argmax(1).numpy()[keep] == labels[keep]).mean())

    return acc(rebuilt), acc(unit)
