"""Data-free head descriptions: each attention head's output-value (OV) map into the joint space, its top
singular directions, and the pool texts that describe them — no image needed.

For head ``h`` of layer ``l`` an image token's state ``x`` enters through ``ln_1`` and leaves through the value and
out-projections; the pooling head (its LayerNorm's linear part and the projection, as the decomposition maps
every component, :mod:`cliplens.decomposition.algebra`) carries it to the joint space. Written as a map of the
*normalised* token ``x̂ = (x − mean(x)) / σ(x)`` (``ln_1``'s own γ₁ and β₁ folded in)::

    x̂ ↦ x̂ · M + b,     M = diag(γ₁) W_Vʰᵀ · P_h   [D, E],     b = (β₁ W_Vʰᵀ + b_Vʰ) · P_h   [E],
    P_h = W_Oʰ-columns · diag(ls ⊙ γ_post) · proj    (:meth:`JointMap.head_first`, ``dh × E``)

A token ``m``'s direct effect through the head on the image embedding is exactly ``α_m / σ_post · (x̂_m M + b)``
plus its share of the constants (the out-projection bias, ``ln_post``'s mean and bias), with ``α_m`` the CLS
query's attention to ``m`` and ``σ_post`` ``ln_post``'s frozen scale (tested in
``tests/analyses/test_head_descriptions.py``). So whatever the image, the head writes into the joint space
along the row space of ``M`` (plus the fixed ``b``): the right singular vectors of ``M``, by singular value, are
the directions it can write most strongly, and each is described by the pool texts nearest to it, on both
signs (a singular vector's sign is arbitrary and a head writes ``±v`` depending on its input) — optionally also as
a sparse non-negative combination of texts (:mod:`cliplens.analyses.sparse`). The nearest texts are ranked by
cosine with SpLiCE's centred pool (unit texts, the pool's mean removed, renormalised): the raw text embeddings
share one large common direction that would rank every text alike.

This is the weight-based reading of OV circuits (Elhage et al., *A Mathematical Framework for Transformer
Circuits*, 2021, "OV circuit"; Millidge & Black, *The Singular Value Decompositions of Transformer Weight
Matrices are Highly Interpretable*, 2022, who read the singular vectors of OV maps through the unembedding),
carried into CLIP's joint space, where texts live. ``M`` is exactly the map the decomposition applies to each
token, so nothing here is approximate for CLS- or mean-pooled towers (CLIP ViTs, MetaCLIP, DFN). Families:

* **EVA02**: the sub-LayerNorm over the concatenated heads before the out-projection scales every token by a
  data-dependent ``1/σ_n``; its γ is folded into ``M`` (the directions are exact; the singular values are up to
  that per-token scale, and the sub-LN's shift is a term of the layer, not of a head);
* **SigLIP / SigLIP 2 and other attention-pooled towers**: the map to the joint space goes through each of the
  MAP head's pooling heads ``r`` with weights ``s_r ω[r, n]`` that depend on the image; ``M`` here is the sum over
  ``r`` with equal weights (``readout=r`` picks one), so its directions are those of the equal-weight readout,
  not exact for a given image. The MAP head's own pooling heads (``pool_heads=True``, :func:`pool_ov`) are exact;
  SigLIP's MLP after the pooling is not linear and is not described;
* **OpenAI ResNets**: the trunk has no attention heads; the attention pool's heads are described
  (``pool_heads=True``): ``diag(γ) W_Vʳ W_Oʳ`` per pool head, exact for a token's value path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import normalize

from cliplens.analyses.sparse import sparse_texts, splice_concepts
from cliplens.decomposition.algebra import HeadWeights, JointMap
from cliplens.errors import InvalidInputError

__all__ = ["Direction", "HeadDescription", "describe_heads", "head_ov", "pool_ov"]


def _joint_map(view: Any) -> JointMap:
    return JointMap(HeadWeights.from_view(view, torch.float64))


@torch.no_grad()
def head_ov(view: Any, layer: int, head: int, *, readout: int | None = None,
            joint: JointMap | None = None, factors: bool = False) -> Any:
    """``(M [D, E], b [E])`` of head ``head`` of layer ``layer`` (see the module docs), float64. ``readout``: one
    readout of an attention-pooled tower (default: their equal-weight sum). ``factors``: ``(X [D, dh], P [dh, E],
    b)`` with ``M = X · P`` instead (the map's rank is at most the head's width ``dh``)."""
    L, H = view.num_layers, view.num_heads
    if L == 0:
        raise InvalidInputError("this model's image tower has no attention layers (a ResNet trunk read out by an "
                                "attention pool): describe its pool heads instead (pool_heads=True, or 'cliplens "
                                "heads --pool-heads')")
    if not (-L <= layer < L and 0 <= head < H):
        raise InvalidInputError(f"head L{layer}.H{head} does not exist: the tower has {L} layers of {H} heads")
    layer %= L
    jm = joint or _joint_map(view)
    blk = view.blocks[layer]
    dh = blk.head_dim
    rows = slice(head * dh, (head + 1) * dh)
    wv = blk.v_weight[rows].detach().double()  # [dh, D]
    bv = torch.zeros(dh, dtype=torch.float64) if blk.v_bias is None else blk.v_bias[rows].detach().double()
    g1 = torch.ones(wv.shape[1], dtype=torch.float64) if blk.ln_1.weight is None else blk.ln_1.weight.double()
    b1 = torch.zeros(wv.shape[1], dtype=torch.float64) if blk.ln_1.bias is None else blk.ln_1.bias.double()
    if blk.attn_norm is not None and blk.attn_norm.weight is not None:  # EVA02's sub-LN: its γ, per head
        gs = blk.attn_norm.weight.detach().double()[rows]
        wv, bv = wv * gs[:, None], bv * gs
    A, _ = jm.head_factors(layer, head)  # [R, dh, E]
    R = A.shape[0]
    if readout is not None and not 0 <= readout < R:
        raise InvalidInputError(f"readout {readout} does not exist: the pooling head has {R}")
    P = A.sum(0) if readout is None else A[readout]  # [dh, E]
    X = g1[:, None] * wv.T  # [D, dh]: M = X · P, of rank at most dh
    b = (b1 @ wv.T + bv) @ P
    if factors:
        return X.to(view.device), P.to(view.device), b.to(view.device)
    return (X @ P).to(view.device), b.to(view.device)


@torch.no_grad()
def pool_ov(view: Any, readout: int, *, joint: JointMap | None = None, factors: bool = False) -> Any:
    """``[D, E]``: pooling head ``readout``'s value-to-output map (attention pooling: SigLIP's MAP head, a
    ResNet's attention pool), ``diag(γ) · in_r · out_r``, float64 (``factors``: the two factors
    ``(diag(γ) · in_r, out_r)``)."""
    jm = joint or _joint_map(view)
    if jm.w.readout_in is None:
        raise InvalidInputError("this tower's pooling head has no heads of its own (CLS or mean pooling): describe "
                                "the attention layers' heads instead")
    R = jm.w.num_readouts
    if not 0 <= readout < R:
        raise InvalidInputError(f"pool head {readout} does not exist: the pooling head has {R}")
    X, Y = jm.w.gamma[:, None] * jm.w.readout_in[readout], jm.w.readout_out[readout]
    return (X, Y) if factors else X @ Y


@dataclass
class Direction:
    """One singular direction of a head's OV map and the texts that describe it."""

    rank: int  # 0 for the top singular direction
    singular_value: float
    share: float  # σ² over the sum of all σ² (the share of the map's squared Frobenius norm)
    vector: Tensor  # [E], unit
    positive: list[tuple[str, float]]  # the texts nearest to +v, with their cosines (centred pool)
    negative: list[tuple[str, float]]  # … to −v
    sparse_positive: str | None = None  # +v as a sparse combination of texts (with ``sparse=True``)
    sparse_negative: str | None = None

    @property
    def best(self) -> tuple[str, float, str]:
        """The text nearest to either sign, its cosine and the sign (``"+"`` or ``"-"``)."""
        p, n = self.positive[0], self.negative[0]
        return (*p, "+") if p[1] >= n[1] else (*n, "-")

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "singular_value": self.singular_value, "share": self.share,
                "positive": [{"text": t, "cosine": c} for t, c in self.positive],
                "negative": [{"text": t, "cosine": c} for t, c in self.negative],
                "sparse_positive": self.sparse_positive, "sparse_negative": self.sparse_negative}


@dataclass
class HeadDescription:
    layer: int | None  # None for a pooling head
    head: int
    directions: list[Direction]
    singular_values: list[float]  # every singular value, largest first
    bias_norm: float  # |b|: the fixed part the head adds for every token (0 for a pooling head)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"pool.H{self.head}" if self.layer is None else f"L{self.layer}.H{self.head}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "head": self.head, "bias_norm": self.bias_norm,
                "singular_values": self.singular_values, "directions": [d.to_dict() for d in self.directions]}


def _chosen(view: Any, heads: Sequence[tuple[int, int]] | None, layers: Sequence[int] | None,
            last: int | None) -> list[tuple[int, int]]:
    L, H = view.num_layers, view.num_heads
    if L == 0:
        raise InvalidInputError("this model's image tower has no attention layers (a ResNet trunk read out by an "
                                "attention pool): describe its pool heads instead (pool_heads=True, or 'cliplens "
                                "heads --pool-heads')")
    if heads:
        out = []
        for layer, h in heads:
            if not (-L <= layer < L and 0 <= h < H):
                raise InvalidInputError(f"head L{layer}.H{h} does not exist: the tower has {L} layers of {H} heads")
            out.append((layer % L, h))
        return sorted(set(out))
    if layers is not None:
        bad = [x for x in layers if not -L <= x < L]
        if bad:
            raise InvalidInputError(f"layer {bad[0]} does not exist: the tower has {L} layers (0..{L - 1})")
        lay = sorted({x % L for x in layers})
    else:
        k = L if last is None else last
        if not 1 <= k <= L:
            raise InvalidInputError(f"last: the last K layers, 1..{L}; got {k}")
        lay = list(range(L - k, L))
    return [(layer, h) for layer in lay for h in range(H)]


@torch.no_grad()
def describe_heads(model: Any, texts: Sequence[str], text_embeddings: Tensor | None = None, *,
                   heads: Sequence[tuple[int, int]] | None = None, layers: Sequence[int] | None = None,
                   last: int | None = 4, pool_heads: bool = False, readout: int | None = None,
                   directions: int = 3, top: int = 5, sparse: bool = False, l1: float = 0.25,
                   texts_used: int | None = 4) -> list[HeadDescription]:
    """The top ``directions`` singular directions of each head's OV map in the joint space, each described by
    its ``top`` nearest pool texts on both signs (and, with ``sparse``, as a sparse combination of texts:
    ``texts_used`` texts, or penalty ``l1`` when ``texts_used`` is None). Heads: ``heads`` (``[(layer, head)]``),
    else every head of ``layers`` (indices), else of the ``last`` layers (all layers with ``last=None``);
    ``pool_heads``: the pooling head's own heads instead (attention-pooled towers). No image is used.

    ``model``: a loaded model (:func:`cliplens.load`); ``text_embeddings`` ``[M, E]``: the pool's embeddings
    (default: ``model.encode_text(texts)``)."""
    if directions < 1 or top < 1:
        raise InvalidInputError(f"directions and top must be at least 1; got {directions} and {top}")
    view = model.vision
    T = model.encode_text(list(texts)) if text_embeddings is None else text_embeddings
    if T.shape[0] != len(texts):
        raise InvalidInputError(f"{len(texts)} texts but {T.shape[0]} text embeddings")
    jm = _joint_map(view)
    E = int(jm.w.readout_out.shape[-1])
    if T.shape[1] != E:
        raise InvalidInputError(f"the text embeddings have {T.shape[1]} values; the model's joint space has {E}")
    C = splice_concepts(T.detach().double().cpu())
    names = list(texts)
    if pool_heads:
        items: list[tuple[int | None, int, Tensor, Tensor, Tensor | None]] = [
            (None, r, *pool_ov(view, r, joint=jm, factors=True), None) for r in range(jm.w.num_readouts)]
    else:
        items = [(layer, h, *head_ov(view, layer, h, readout=readout, joint=jm, factors=True))
                 for layer, h in _chosen(view, heads, layers, last)]
    out = []
    for layer, h, X, Y, b in items:
        S, V = _top_directions(X.cpu(), Y.cpu())
        k = min(directions, S.shape[0])
        total = float((S ** 2).sum()) or 1.0
        dirs = []
        for i in range(k):
            v = V[i]
            cos = C @ v
            pos = cos.topk(min(top, len(names)))
            neg = (-cos).topk(min(top, len(names)))
            d = Direction(i, float(S[i]), float(S[i] ** 2) / total, v,
                          [(names[int(j)], float(c)) for c, j in zip(pos.values, pos.indices, strict=True)],
                          [(names[int(j)], float(c)) for c, j in zip(neg.values, neg.indices, strict=True)])
            dirs.append(d)
        if sparse and dirs:
            vecs = torch.stack([s * d.vector for d in dirs for s in (1.0, -1.0)])
            sp = sparse_texts(vecs, T.detach().double().cpu(), names, l1=l1, mean=None, texts_used=texts_used)
            for i, d in enumerate(dirs):
                d.sparse_positive, d.sparse_negative = sp.format(2 * i, top), sp.format(2 * i + 1, top)
        out.append(HeadDescription(layer, h, dirs, [float(s) for s in S], 0.0 if b is None else float(b.norm())))
    return out


def _top_directions(X: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    """Singular values (largest first, ``min(D, E)`` of them) and the leading right singular vectors ``[k, E]``
    (unit rows) of ``M = X · Y`` (``X [D, k]``, ``Y [k, E]``), without forming ``M``: with ``X = Qx Rx`` and
    ``Yᵀ = Qy Ry``, ``M = Qx (Rx Ryᵀ) Qyᵀ``, so the SVD of the small core ``Rx Ryᵀ = U S Vh`` gives ``M``'s singular
    values ``S`` (the rest are 0) and right singular vectors ``Vh Qyᵀ``."""
    X, Y = X.double(), Y.double()
    if X.shape[1] >= min(X.shape[0], Y.shape[1]):  # no low rank to use
        _, S, Vh = torch.linalg.svd(X @ Y, full_matrices=False)
        return S, normalize(Vh, dim=-1)
    Qx, Rx = torch.linalg.qr(X)
    Qy, Ry = torch.linalg.qr(Y.T)
    _, S, Vh = torch.linalg.svd(Rx @ Ry.T)
    S = torch.cat([S, S.new_zeros(min(X.shape[0], Y.shape[1]) - S.shape[0])])
    return S, normalize(Vh @ Qy.T, dim=-1)
