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

from cliplens.core.plan import select_layers
from cliplens.decomposition.shares import site_share
from cliplens.errors import InvalidInputError
from cliplens.store.reader import Store

__all__ = ["COLUMNS", "DEFAULT_LAST", "HeadSpan", "Span", "TextSpanResult", "head_inputs", "pool_inputs",
           "rebuilt_accuracy", "resolve_heads", "text_rows", "textspan", "textspan_heads", "textspan_outputs"]


class _Shares:
    """What a span's ``fractions`` (the share of the variance each text's direction removed, in the order chosen)
    say together."""

    fractions: list[float]

    @property
    def cumulative(self) -> list[float]:
        """The share of the variance removed by the texts up to each one."""
        return [float(x) for x in np.cumsum(self.fractions)]

    @property
    def explained(self) -> float:
        """The share of the variance the texts remove together (1 − residual variance / total variance)."""
        return float(sum(self.fractions))


@dataclass
class HeadSpan(_Shares):
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


def text_rows(text_embeddings: Tensor) -> Tensor:
    """The pool's texts as TEXTSPAN reads them: each embedding L2-normalised, in float64 (the one rule, used by
    the store route and by the route on given outputs: a text's score depends on its length)."""
    return torch.nn.functional.normalize(text_embeddings.detach().cpu().double(), dim=-1)


def textspan_heads(Z: Tensor, Q: Tensor, R: Tensor, *, rank: int, m: int) -> list[dict[str, Any]]:
    """TEXTSPAN for every head at once: ``C_h = Z_h Q_h`` (``Z`` ``[heads, K, k]``, ``Q`` ``[heads, k, E]``),
    texts ``R`` ``[M, E]`` (text embeddings, normalised here by :func:`text_rows`). Returns per head ``indices``,
    ``scores`` (each chosen text's score), ``removed`` (the variance removing its direction removed), ``total``
    (the centred ``C``'s total variance), ``directions`` ``[m, E]`` (the unit text directions removed,
    orthonormal) and ``mean`` ``[E]`` (of ``C``)."""
    Z, Q, R = Z.double(), Q.double(), text_rows(R)
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


def resolve_heads(store: Store, layers: Sequence[int] | int | None, heads: Sequence[tuple[int, int]] | None,
                  *, last: int | None = None) -> list[tuple[int, int]]:
    """The heads TEXTSPAN analyses: ``heads`` if given, else every head of ``layers`` (layer indices, negatives
    from the end) or of the ``last`` k layers (default: the last 4); a clear error for heads or layers the store's
    model does not have (and for the old int ``layers=k``, which meant the last k: see
    :func:`cliplens.core.plan.select_layers`)."""
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
        if layers is not None or last is not None:
            raise InvalidInputError("give heads, layers (indices) or last (the last k layers), not two of them")
        out = []
        for layer, h in heads:
            if not (-L <= layer < L and 0 <= h < H):
                raise InvalidInputError(f"head L{layer}.H{h} does not exist: {L} layers, {H} heads")
            out.append((layer % L, h))
        return sorted(set(out))
    lay = select_layers(L, layers, last)
    if lay is None:
        lay = select_layers(L, last=min(DEFAULT_LAST, L))
    return [(layer, h) for layer in lay for h in range(H)]  # type: ignore[union-attr]


#: the heads TEXTSPAN analyses when none are named: those of the last 4 layers (the paper's)
DEFAULT_LAST = 4


def textspan(source: Store | Tensor, texts: Sequence[str] | Tensor, text_embeddings: Tensor | None = None, *,
             model: Any = None, layers: Sequence[int] | int | None = None, last: int | None = None,
             heads: Sequence[tuple[int, int]] | None = None, m: int = 20, rank: int | None = None,
             images: Sequence[int] | None = None, with_accuracy: bool = True) -> TextSpanResult | Span | list[Span]:
    """TEXTSPAN, from a store or on any head outputs you have.

    * ``textspan(store, texts, text_embeddings)``: the heads of ``layers`` (indices) or of the ``last`` k layers
      (default 4), or the ``heads`` given, over the store's images (or ``images``) -> :class:`TextSpanResult`,
      with the rebuilt representation's zero-shot accuracy unless ``with_accuracy=False``.
    * ``textspan(outputs, texts)``: ``outputs`` ``[N, D]`` (one component's outputs over N images, in the space
      of the text embeddings) or ``[N, heads, D]`` -> a :class:`Span` (a list of them, one per head): the
      texts, each one's share of the variance, and the reconstruction with its quality
      (:func:`textspan_outputs`).

    ``texts``: strings with their ``text_embeddings`` ``[M, D]``, or strings and a ``model`` that embeds them
    (``model.encode_text``), or the embeddings themselves as a ``[M, D]`` tensor (labelled ``"text 0"``, …).
    Either way each embedding is L2-normalised by the one rule :func:`text_rows`."""
    names, emb = pool_inputs(texts, text_embeddings, model)
    if not isinstance(source, Store):
        ignored = [k for k, v in (("layers", layers), ("last", last), ("heads", heads), ("images", images)) if v is not None]
        if ignored:
            raise InvalidInputError(f"textspan on given outputs takes no {', '.join(ignored)}=: those choose heads and "
                                    "images of a store; select the rows and heads of your tensor instead")
        return textspan_outputs(source, names, emb, rank=rank, m=m)
    store = source
    chosen = resolve_heads(store, layers, heads, last=last)
    if m < 1:
        raise InvalidInputError(f"texts per head must be at least 1, got {m}")
    rank = int(rank or store.shape["head_dim"])
    E = store.shape["embed_dim"]
    if not 1 <= rank <= E:
        raise InvalidInputError(f"rank must be between 1 and the embedding dimension {E}, got {rank}")
    rows = np.arange(len(store)) if images is None else np.asarray(images, dtype=np.int64)
    Z, Q = head_inputs(store, chosen, rows)
    per = textspan_heads(Z, Q, emb, rank=rank, m=m)
    spans = [HeadSpan(layer, h, [names[j] for j in o["indices"]], o["scores"],
                      [v / o["total"] if o["total"] > 0 else 0.0 for v in o["removed"]], o["total"], o["indices"])
             for (layer, h), o in zip(chosen, per, strict=True)]
    result = TextSpanResult(spans, rank, m, len(rows), len(names),
                            settings={"heads": [s.name for s in spans], "rank": rank, "texts_per_head": m})
    if with_accuracy:
        result.accuracy, result.baseline_accuracy = rebuilt_accuracy(store, chosen, per, Z, Q, rows)
    return result


def pool_inputs(texts: Sequence[str] | Tensor, text_embeddings: Tensor | None, model: Any) -> tuple[list[str], Tensor]:
    """The pool as ``(labels, embeddings [M, D])`` from texts with their embeddings, texts and a model, or
    embeddings alone (see :func:`textspan`)."""
    if isinstance(texts, Tensor):
        if text_embeddings is not None:
            raise InvalidInputError("texts are already embeddings: give text_embeddings= only with strings")
        if texts.ndim != 2 or texts.shape[0] < 1:
            raise InvalidInputError(f"text embeddings must be [texts, dim], got shape {tuple(texts.shape)}")
        return [f"text {i}" for i in range(texts.shape[0])], texts
    if isinstance(texts, str):
        texts = [texts]
    names = list(texts)
    if not names or not all(isinstance(t, str) for t in names):
        raise InvalidInputError("texts must be a non-empty list of strings, or a [texts, dim] tensor of embeddings")
    if text_embeddings is None:
        if model is None:
            raise InvalidInputError("texts given as strings need their embeddings: pass text_embeddings= or model= "
                                    "(whose encode_text embeds them)")
        text_embeddings = model.encode_text(names)
    elif model is not None:
        raise InvalidInputError("give text_embeddings= or model=, not both")
    if text_embeddings.ndim != 2 or len(names) != text_embeddings.shape[0]:
        raise InvalidInputError(f"{len(names)} texts but text embeddings of shape {tuple(text_embeddings.shape)}")
    return names, text_embeddings


@dataclass
class Span(_Shares):
    """TEXTSPAN of one set of outputs ``C`` ``[N, D]`` (:func:`textspan_outputs`): the texts in the order chosen,
    the share of ``C``'s variance each one's direction removed, and ``C`` rebuilt from them."""

    texts: list[str]
    indices: list[int]  # into the pool
    fractions: list[float]  # the share of C's total variance (centred) that removing each text's direction removed
    scores: list[float]  # each text's score when picked: |t|²·Var(C·t̂), t the projected text (not a share)
    total_variance: float  # the trace of the centred C's covariance (denominator N−1)
    rank: int  # the span's rank r (top-r right singular vectors of the uncentred C)
    directions: Tensor  # [m, D]: the unit text directions removed (orthonormal)
    mean: Tensor  # [D]: C's mean over the images
    reconstruction: Tensor  # [N, D]: mean + the centred C projected on the directions


    def quality(self, outputs: Tensor) -> dict[str, float]:
        """How well :attr:`reconstruction` rebuilds ``outputs`` (the ``C`` it came from): the share of variance
        explained, the mean cosine between each row and its reconstruction, and ``‖C − Ĉ‖ / ‖C‖``."""
        c = outputs.detach().cpu().double()
        r = self.reconstruction
        cos = torch.nn.functional.cosine_similarity(c, r, dim=-1)
        return {"explained": self.explained, "cosine": float(cos.mean()),
                "relative_error": float((c - r).norm() / c.norm().clamp_min(1e-300))}


def textspan_outputs(outputs: Tensor, texts: Sequence[str], text_embeddings: Tensor, *, rank: int | None = None,
                     m: int = 20) -> Span | list[Span]:
    """TEXTSPAN on given outputs: ``[N, D]`` -> one :class:`Span`; ``[N, heads, D]`` -> one per head. The same
    engine as the store route (:func:`textspan_heads`, texts normalised by :func:`text_rows`) with ``C`` as given
    (``Z = C``, ``Q = I``). ``rank`` (default: the numerical rank of each ``C``, at most ``min(N, D)``; the paper
    uses the head dimension, which is the rank of one head's outputs over enough images)."""
    if not isinstance(outputs, Tensor) or outputs.ndim not in (2, 3):
        raise InvalidInputError("outputs must be a tensor [images, dim] or [images, heads, dim], got "
                                + (f"shape {tuple(outputs.shape)}" if isinstance(outputs, Tensor) else type(outputs).__name__))
    C = outputs.detach().cpu().double()
    single = C.ndim == 2
    C = C[:, None] if single else C  # [N, h, D]
    N, nh, D = C.shape
    if text_embeddings.shape[-1] != D:
        raise InvalidInputError(f"the outputs have dimension {D} but the text embeddings {text_embeddings.shape[-1]}: "
                                "give outputs in the joint (text) space, e.g. Decomposition.per_head() or "
                                "Store.head_terms()")
    if m < 1:
        raise InvalidInputError(f"texts per head must be at least 1, got {m}")
    if not bool(torch.isfinite(C).all()):
        raise InvalidInputError("the outputs have NaN or infinite values")
    Z = C.transpose(0, 1)  # [h, N, D]
    if rank is None:
        sv = torch.linalg.svdvals(Z)  # [h, min(N, D)]
        ranks = (sv > sv[:, :1] * 1e-10).sum(-1).clamp_min(1).tolist()
    else:
        if not 1 <= int(rank) <= D:
            raise InvalidInputError(f"rank must be between 1 and the dimension {D}, got {rank}")
        ranks = [int(rank)] * nh
    eye = torch.eye(D, dtype=torch.float64)
    spans = []
    for i in range(nh):
        o = textspan_heads(Z[i:i + 1], eye[None], text_embeddings, rank=ranks[i], m=m)[0]
        d = o["directions"].double()
        recon = o["mean"] + ((Z[i] - o["mean"]) @ d.T) @ d
        spans.append(Span([texts[j] for j in o["indices"]], o["indices"],
                          [v / o["total"] if o["total"] > 0 else 0.0 for v in o["removed"]], o["scores"], o["total"],
                          min(ranks[i], N), d, o["mean"], recon))
    return spans[0] if single else spans


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
