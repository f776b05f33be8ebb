"""Sparse text explanations of any vector: SpLiCE's sparse non-negative combination of pool texts.

SpLiCE (Bhalla et al., *Interpreting CLIP with Sparse Linear Concept Embeddings*, NeurIPS 2024, §3, eq. 2-3;
code: github.com/AI4LIFE-GROUP/SpLiCE, ``splice/splice.py`` and ``splice/model.py`` at commit 9a49810)
writes a CLIP embedding as a sparse, non-negative weighted sum of concept texts. Any vector of the joint space
works the same way: an image embedding, one head's direct effect, a neuron's direction, a part of a
decomposition. The formulation, as in the official code:

* **concepts** ``C`` ``[M, E]``: the pool's text embeddings, each normalised to unit length, their mean over the
  pool subtracted, each renormalised (:func:`splice_concepts`);
* **the vector** ``x``: normalised, a mean ``μ`` subtracted, renormalised: ``ẑ = n(n(x) − μ)``
  (:func:`splice_center`). SpLiCE uses the mean of the image embeddings of a data set (it ships one per
  model); here the mean you give, or by default the pool's mean text embedding (the mean of the unit text
  embeddings, before centring), or none (``mean=None``: ``ẑ = n(x)``, e.g. for a part of a decomposition, whose
  offset is not an image's);
* **the problem**, for each vector: ``min_w ‖ẑ − Cᵀw‖² + λ‖w‖₁`` subject to ``w ≥ 0`` — the objective of the
  official ADMM solver; its scikit-learn route is the same problem scaled by ``1/(2E)``
  (``Lasso(alpha=λ/(2E), positive=True, fit_intercept=False)``). ``λ`` = ``l1`` (0.25 by default, the value of
  the official README's examples; larger is sparser);
* **the reconstruction**: ``n(n(Cᵀw) + μ)`` (``n(Cᵀw)`` without a mean), and its cosine with ``n(x)``.

**The solver** (not the official one, which is ADMM with a Cholesky factor of the dense ``M × M`` Gram or
scikit-learn's coordinate descent one vector at a time, both far too slow for 10,000 × 10,000): an exact
*working-set* method. The correlations ``C ẑ`` of every vector with every text are one matrix product. Each
vector starts from its ``start`` best-correlated texts; the problem restricted to a working set is solved by
accelerated projected gradient (FISTA with gradient restart, step ``1/(2λ_max(G))`` from the exact largest
eigenvalue of the working set's Gram ``G``) in blocks of 20 steps; after each block an active-set refinement
solves the KKT system ``G_SS w_S = c_S − λ/2`` on the support ``S`` found (dropping texts whose weight comes out
non-positive, adding the most violating one), and a vector is done once that solution meets the optimality
conditions. The KKT conditions are then checked against every text of the pool with one more matrix product
(``2(C(Cᵀw) − Cẑ) + λ ≥ −tol`` for the texts outside the working set); the texts that violate them join the
working set (``grow`` at a time, most violated first) and the round repeats. The answer is the exact
non-negative lasso solution to the tolerance ``tol`` on the KKT conditions (tested against scikit-learn's
``Lasso(positive=True)`` to 1e-8). Vectors are processed in chunks (``chunk`` rows), so memory stays at a few
``chunk × M`` matrices. The large products use torch's threads; the working-set problems (many small
operations) run on one thread, as does a small problem throughout.

**A target number of texts** (``texts_used=k``): SpLiCE's experiments choose λ for a target sparsity (the
l0 norm of the weights); here λ is searched per vector by bisection on a log scale between ``2·max_j c_j``
(at and above which no text is used) and a thousandth of it, keeping the smallest λ tried whose solution uses
at most ``k`` texts (the bisection solves loosely; the λ found is solved exactly).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import normalize

from cliplens.errors import InvalidInputError

__all__ = ["ImageTexts", "SparseTexts", "describe_images", "nonneg_lasso", "sparse_texts", "splice_center", "splice_concepts"]


def splice_concepts(text_embeddings: Tensor) -> Tensor:
    """SpLiCE's dictionary: unit text embeddings, their mean over the pool subtracted, renormalised."""
    c = normalize(text_embeddings, dim=-1)
    return normalize(c - c.mean(0, keepdim=True), dim=-1)


def splice_center(vectors: Tensor, mean: Tensor | None) -> Tensor:
    """SpLiCE's vector side: ``n(n(x) − μ)`` (``n(x)`` with no mean)."""
    z = normalize(vectors, dim=-1)
    return z if mean is None else normalize(z - mean, dim=-1)


@dataclass
class SparseTexts:
    """Sparse non-negative text explanations of ``N`` vectors over a pool of ``M`` texts.

    ``indices`` ``[N, K]`` and ``values`` ``[N, K]``: each vector's texts (into the pool) and weights, largest
    weight first, padded with index ``-1`` and weight 0; ``cosine`` ``[N]``: the reconstruction's cosine with
    the vector; ``count`` ``[N]``: the number of texts used; ``l1`` ``[N]``: the penalty each was solved with
    (one value unless a number of texts was asked for)."""

    indices: Tensor
    values: Tensor
    cosine: Tensor
    count: Tensor
    l1: Tensor
    pool_size: int
    texts: list[str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def dense(self) -> Tensor:
        """The weights as a dense ``[N, M]`` matrix."""
        out = self.values.new_zeros(len(self), self.pool_size)
        keep = self.indices >= 0
        rows = torch.arange(len(self))[:, None].expand_as(self.indices)
        out[rows[keep], self.indices[keep]] = self.values[keep]
        return out

    def terms(self, i: int, top: int | None = None) -> list[tuple[str, float]]:
        """The ``i``-th vector's texts and weights, largest first (the first ``top``)."""
        k = int(self.count[i]) if top is None else min(int(self.count[i]), top)
        names = self.texts or [f"text {j}" for j in range(self.pool_size)]
        return [(names[int(j)], float(v)) for j, v in zip(self.indices[i, :k], self.values[i, :k], strict=True)]

    def format(self, i: int, top: int | None = 8) -> str:
        """``"0.31 'a dog' + 0.12 'grass' + …"`` for the ``i``-th vector (``…`` when texts are left out)."""
        terms = self.terms(i, top)
        if not terms:
            return "(no text: every weight is zero; lower l1)"
        s = " + ".join(f"{w:.2f} {t!r}" if w >= 0.005 else f"{w:.1g} {t!r}" for t, w in terms)
        return s + (" + …" if len(terms) < int(self.count[i]) else "")

    def to_dicts(self, top: int | None = None) -> list[dict[str, Any]]:
        return [{"terms": [{"text": t, "weight": w} for t, w in self.terms(i, top)], "count": int(self.count[i]),
                 "cosine": float(self.cosine[i]), "l1": float(self.l1[i])} for i in range(len(self))]


def _polish(G: Tensor, c: Tensor, l1: Tensor, w: Tensor, tol: float, steps: int = 8) -> Tensor:
    """Active-set refinement from the support of ``w``: solve the KKT system ``G_SS w_S = c_S − l1/2`` on the
    support ``S`` (zero elsewhere); drop the texts whose weight comes out non-positive, or add the text that
    violates the optimality conditions most; repeat (``steps`` times at most). Returns the last solution, clamped
    to ``≥ 0`` (the caller keeps it only where it is optimal)."""
    s = w > 0
    exact = w
    for _ in range(steps):
        Gs = torch.where(s[:, :, None] & s[:, None, :], G, torch.zeros_like(G)) + torch.diag_embed((~s).to(G.dtype))
        exact, info = torch.linalg.solve_ex(Gs, torch.where(s, c - l1 / 2, torch.zeros_like(c)))
        singular = info != 0  # a support with dependent texts: keep the iterate there
        if bool(singular.any()):
            exact = torch.where(singular[:, None], w, exact)
            s = torch.where(singular[:, None], w > 0, s)
        bad = s & (exact <= 0)
        g = 2 * (_matvec(G, exact * s) - c) + l1
        g = torch.where(s, torch.zeros_like(g), g)
        worst, j = g.min(-1)
        add = ~bad.any(-1) & (worst < -tol)
        if not bool(bad.any() | add.any()):
            break
        s = s & ~bad
        s[add, j[add]] = True
    return exact.clamp_min(0) * s


def _matvec(G: Tensor, v: Tensor) -> Tensor:
    """``G v`` batched (``[n, K, K]``, ``[n, K]``); small batches elementwise, which torch runs on one thread
    (a batched matrix product forks its threads for every call, slow for tiny problems on a busy machine)."""
    return (G * v[:, None, :]).sum(-1) if G.numel() <= 1 << 16 else torch.bmm(G, v[..., None])[..., 0]


def _violation(G: Tensor, c: Tensor, l1: Tensor, w: Tensor) -> Tensor:
    """``[n]``: the largest violation of the KKT conditions of the small problem at ``w ≥ 0``."""
    g = 2 * (_matvec(G, w) - c) + l1
    return torch.where(w > 0, g.abs(), (-g).clamp_min(0)).amax(-1)


def _small_solve(G: Tensor, c: Tensor, l1: Tensor, w: Tensor, tol: float, max_iter: int,
                 block: int = 20) -> tuple[Tensor, bool]:
    """``min_w wᵀGw − 2cᵀw + l1·Σw``, ``w ≥ 0``, batched (``G`` ``[n, K, K]``, ``c``/``w`` ``[n, K]``, ``l1``
    ``[n, 1]``): FISTA with gradient restart in blocks of ``block`` steps; after each block the KKT system on the
    support found is solved, and the rows where that is optimal (violation ≤ ``tol``) are done. Also returns
    whether every row was done within ``max_iter`` steps."""
    out = w.clone()
    rows = torch.arange(G.shape[0])
    step = 1.0 / (2 * torch.linalg.eigvalsh(G)[:, -1:].clamp_min(1e-12))  # [n, 1]
    v, t = w.clone(), torch.ones_like(step)
    for _ in range(0, max_iter, block):
        for _ in range(block):
            g = 2 * (_matvec(G, v) - c) + l1
            w_new = (v - step * g).clamp_min(0)
            restart = ((v - w_new) * (w_new - w)).sum(-1, keepdim=True) > 0
            t_new = (1 + (1 + 4 * t * t).sqrt()) / 2
            v = torch.where(restart, w_new, w_new + ((t - 1) / t_new) * (w_new - w))
            t = torch.where(restart, torch.ones_like(t), t_new)
            w = w_new
        exact = _polish(G, c, l1, w, tol)
        good = _violation(G, c, l1, exact) <= tol
        done = good | (_violation(G, c, l1, w) <= tol)
        out[rows[done]] = torch.where(good[done, None], exact[done], w[done])
        if bool(done.all()):
            return out, True
        keep = ~done
        rows, G, c, l1, w, v, t, step = (x[keep] for x in (rows, G, c, l1, w, v, t, step))
    out[rows] = w
    return out, False


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _solve_chunk(D: Tensor, Y: Tensor, l1: Tensor, *, tol: float, max_iter: int, start: int, grow: int,
                 max_rounds: int) -> tuple[Tensor, Tensor, bool]:
    """Working-set solve of one chunk of vectors ``Y`` ``[n, E]`` over the dictionary ``D`` ``[M, E]``."""
    M = D.shape[0]
    corr = Y @ D.T  # [n, M]
    S = corr.topk(min(start, M), dim=-1).indices  # [n, K]
    w = Y.new_zeros(S.shape)
    converged, exact = False, True
    for _ in range(max_rounds):
        valid = S >= 0
        A = D[S.clamp_min(0)] * valid[..., None]  # [n, K, E]
        G = torch.bmm(A, A.transpose(1, 2)) + torch.diag_embed((~valid).to(Y.dtype))
        c = torch.where(valid, corr.gather(1, S.clamp_min(0)), torch.zeros_like(w))
        with _one_thread():  # many small operations: forking threads for each costs more than it saves
            w, done = _small_solve(G, c, l1, w, tol, max_iter)
        exact &= done
        recon = torch.bmm(w[:, None], A)[:, 0]  # [n, E]
        g = 2 * (recon @ D.T - corr) + l1  # [n, M]: the gradient at every text
        g.scatter_(1, S.clamp_min(0), torch.where(valid, torch.zeros_like(w), g.gather(1, S.clamp_min(0))))
        worst, where = (-g).topk(min(grow, M), dim=-1)
        add = worst > tol
        if not bool(add.any()):
            converged = True
            break
        S = torch.cat([S, torch.where(add, where, torch.full_like(where, -1))], 1)
        w = torch.cat([w, torch.zeros_like(worst)], 1)
        keep = (S >= 0).any(0)  # drop columns that no row uses
        S, w = S[:, keep], w[:, keep]
    return S, w, converged and exact


def nonneg_lasso(D: Tensor, Y: Tensor, l1: float | Tensor = 0.25, *, tol: float = 1e-6, max_iter: int = 2000,
                 start: int = 32, grow: int = 32, max_rounds: int = 50, chunk: int = 2048,
                 warn: bool = True) -> tuple[Tensor, Tensor]:
    """``argmin_{w ≥ 0} ‖y − Dᵀw‖² + l1·‖w‖₁`` for every row ``y`` of ``Y`` ``[N, E]``, dictionary ``D``
    ``[M, E]`` (the working-set solver of the module docs). ``l1``: one value or one per row. Returns
    ``(indices [N, K], values [N, K])``, each row's non-zero weights, largest first, padded with -1 / 0."""
    if D.dim() != 2 or Y.dim() != 2 or D.shape[1] != Y.shape[1]:
        raise InvalidInputError(f"the vectors [N, E] and the texts [M, E] must share their dimension E; got vectors "
                                f"{tuple(Y.shape)} and texts {tuple(D.shape)}")
    if not (torch.isfinite(D).all() and torch.isfinite(Y).all()):
        raise InvalidInputError("the vectors or the text embeddings hold NaN or infinite values")
    lam = torch.as_tensor(l1, dtype=Y.dtype, device=Y.device).reshape(-1, 1).expand(Y.shape[0], 1)
    if bool((lam < 0).any()):
        raise InvalidInputError(f"the l1 penalty must be >= 0; got {float(lam.min())}")
    parts: list[tuple[Tensor, Tensor]] = []
    unconverged = 0
    small = Y.shape[0] * D.shape[0] <= 1 << 20  # a small problem: one thread throughout
    with _one_thread() if small else nullcontext():
        for i in range(0, Y.shape[0], chunk):
            S, w, ok = _solve_chunk(D, Y[i:i + chunk], lam[i:i + chunk], tol=tol, max_iter=max_iter, start=start,
                                    grow=grow, max_rounds=max_rounds)
            unconverged += not ok
            w = torch.where(S >= 0, w, torch.zeros_like(w))
            order = w.argsort(dim=-1, descending=True)
            w, S = w.gather(1, order), S.gather(1, order)
            S = torch.where(w > 0, S, torch.full_like(S, -1))
            parts.append((S, w))
    if unconverged and warn:
        import warnings

        warnings.warn(f"the sparse solver stopped (after {max_rounds} rounds or {max_iter} steps) before every text "
                      f"met the optimality conditions (tolerance {tol:g}) in {unconverged} chunk(s); the weights are "
                      "close, not exact",
                      stacklevel=2)
    width = max(1, max(int((p[0] >= 0).sum(1).max()) for p in parts))

    def fit(t: Tensor, fill: float) -> Tensor:
        t = t[:, :width]
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill)

    S = torch.cat([fit(p[0], -1) for p in parts])
    w = torch.cat([fit(p[1], 0.0) for p in parts])
    return S, w


def _count(indices: Tensor) -> Tensor:
    return (indices >= 0).sum(-1)


def sparse_texts(vectors: Tensor, text_embeddings: Tensor, texts: Sequence[str] | None = None, *,
                 l1: float = 0.25, mean: Tensor | str | None = "pool", texts_used: int | None = None,
                 tol: float = 1e-6, steps: int = 12, chunk: int = 2048) -> SparseTexts:
    """Each of ``vectors`` ``[N, E]`` (or one ``[E]``) as a sparse non-negative combination of the pool's
    ``text_embeddings`` ``[M, E]`` (SpLiCE; see the module docs).

    ``mean``: what is subtracted from each unit vector before it is renormalised — a ``[E]`` tensor (e.g. the
    mean unit image embedding of a data set, as SpLiCE does), ``"pool"`` (the pool's mean unit text
    embedding) or ``None`` (no centring). ``texts_used=k``: search λ per vector for at most ``k`` texts (``l1``
    is then ignored). Computed in the vectors' dtype (float32 unless given float64)."""
    if vectors.dim() == 1:
        vectors = vectors[None]
    if texts is not None and len(texts) != text_embeddings.shape[0]:
        raise InvalidInputError(f"{len(texts)} texts but {text_embeddings.shape[0]} text embeddings")
    if text_embeddings.dim() != 2 or text_embeddings.shape[0] == 0:
        raise InvalidInputError(f"the pool's text embeddings must be [M, E] with M >= 1; got "
                                f"{tuple(text_embeddings.shape)}")
    dtype = vectors.dtype if vectors.dtype in (torch.float32, torch.float64) else torch.float32
    T = text_embeddings.to(vectors.device, dtype)
    if vectors.dim() != 2 or vectors.shape[1] != T.shape[1]:
        raise InvalidInputError(f"the vectors [N, E] and the texts [M, E] must share their dimension E; got vectors "
                                f"{tuple(vectors.shape)} and texts {tuple(T.shape)}")
    if isinstance(mean, str):
        if mean != "pool":
            raise InvalidInputError(f"mean: a tensor, 'pool' or None; got {mean!r}")
        mu: Tensor | None = normalize(T, dim=-1).mean(0)
    else:
        mu = None if mean is None else mean.to(vectors.device, dtype).reshape(-1)
    if mu is not None and mu.shape[0] != T.shape[1]:
        raise InvalidInputError(f"the mean has {mu.shape[0]} values; the vectors have {T.shape[1]}")
    D = splice_concepts(T)
    x = vectors.to(dtype)
    Y = splice_center(x, mu)
    if texts_used is None:
        if l1 < 0:
            raise InvalidInputError(f"l1 must be >= 0; got {l1}")
        lam = torch.full((Y.shape[0],), float(l1), dtype=dtype)
        S, w = nonneg_lasso(D, Y, lam, tol=tol, chunk=chunk)
    else:
        if texts_used < 1:
            raise InvalidInputError(f"the number of texts must be at least 1; got {texts_used}")
        S, w, lam = _search_l1(D, Y, texts_used, tol=tol, steps=steps, chunk=chunk)
    recon = torch.zeros_like(Y)
    valid = S >= 0
    for i in range(S.shape[1]):
        recon += w[:, i:i + 1] * D[S[:, i].clamp_min(0)] * valid[:, i:i + 1]
    recon = normalize(recon, dim=-1)
    if mu is not None:
        recon = normalize(recon + mu, dim=-1)
    cosine = (recon * normalize(x, dim=-1)).sum(-1)
    return SparseTexts(S, w, cosine, _count(S), lam, int(T.shape[0]), None if texts is None else list(texts),
                       settings={"l1": None if texts_used is not None else l1, "texts_used": texts_used,
                                 "mean": mean if isinstance(mean, str) or mean is None else "given", "tol": tol})


def _search_l1(D: Tensor, Y: Tensor, k: int, *, tol: float, steps: int, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per vector, the smallest λ of a log-scale bisection whose solution uses at most ``k`` texts. The bisection
    solves loosely (its dense, low-λ solutions are only counted); the λ found is then solved to ``tol`` (and
    raised by 5 % where that exact solution uses more than ``k`` texts)."""
    hi = (2 * (Y @ D.T).amax(-1)).clamp_min(1e-6)  # at or above this no text is used
    lo = hi * 1e-3
    loose = {"tol": max(tol, 1e-4), "max_iter": 200, "chunk": chunk, "warn": False}
    for _ in range(steps):
        mid = (lo * hi).sqrt()
        fits = _count(nonneg_lasso(D, Y, mid, **loose)[0]) <= k  # type: ignore[arg-type]
        hi = torch.where(fits, mid, hi)
        lo = torch.where(fits, lo, mid)
    lam = hi
    S, w = nonneg_lasso(D, Y, lam, tol=tol, chunk=chunk)
    for _ in range(20):
        over = _count(S) > k
        if not bool(over.any()):
            break
        lam = torch.where(over, lam * 1.05, lam)
        S2, w2 = nonneg_lasso(D, Y, lam, tol=tol, chunk=chunk)
        width = max(S.shape[1], S2.shape[1])
        S, S2 = (torch.nn.functional.pad(t, (0, width - t.shape[1]), value=-1) for t in (S, S2))
        w, w2 = (torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (w, w2))
        S, w = torch.where(over[:, None], S2, S), torch.where(over[:, None], w2, w)
    return S, w, lam


@dataclass
class ImageTexts:
    """What :func:`describe_images` returns: per image, its embedding as texts (``images``, one row per image) and,
    with heads, its top heads by the norm of their direct effect (``heads``/``head_norms``, per image) and each
    one's direct effect as texts (``head_texts``, one row per image and head, image by image)."""

    images: SparseTexts
    heads: list[list[str]]
    head_norms: list[list[float]]
    head_texts: SparseTexts | None = None

    def to_dicts(self, top: int | None = None) -> list[dict[str, Any]]:
        rows = self.images.to_dicts(top)
        per = self.head_texts.to_dicts(top) if self.head_texts is not None else []
        k = 0
        for i, row in enumerate(rows):
            row["heads"] = []
            for name, norm in zip(self.heads[i], self.head_norms[i], strict=True):
                row["heads"].append({"head": name, "effect_norm": norm, **per[k]})
                k += 1
        return rows


@torch.no_grad()
def describe_images(model: Any, pixels: Tensor, texts: Sequence[str], text_embeddings: Tensor | None = None, *,
                    heads: int = 0, l1: float = 0.25, texts_used: int | None = None,
                    mean: Tensor | str | None = "pool") -> ImageTexts:
    """Each image's embedding, and the direct effects of its ``heads`` largest heads (by norm; from the exact
    decomposition), as sparse non-negative combinations of the pool ``texts`` (:func:`sparse_texts`).

    ``pixels``: preprocessed ``[B, 3, H, W]`` (``model.preprocess``); ``text_embeddings``: the pool's (default:
    ``model.encode_text(texts)``). The image embeddings are centred with ``mean`` as SpLiCE does (default: the
    pool's mean text embedding; pass the mean unit image embedding of a data set where you have one); a head's
    direct effect is a part of the embedding, not an image's embedding, so it is not centred. A tower without
    attention layers (an OpenAI ResNet) has its attention pool's heads instead (``pool.H3``)."""
    if heads < 0:
        raise InvalidInputError(f"heads must be >= 0; got {heads}")
    T = model.encode_text(list(texts)) if text_embeddings is None else text_embeddings
    T = T.detach().float().cpu()
    dec = model.decompose(pixels, spatial=False)
    emb = dec.reconstruct().float().cpu()
    images = sparse_texts(emb, T, texts, l1=l1, mean=mean, texts_used=texts_used)
    if heads == 0:
        return ImageTexts(images, [[] for _ in range(len(images))], [[] for _ in range(len(images))])
    if dec.head_layers:
        per = dec.per_head().float().cpu()  # [B, Lh, H, E]
        names = [f"L{layer}.H{h}" for layer in dec.head_layers for h in range(per.shape[2])]
        per = per.reshape(per.shape[0], -1, per.shape[-1])
    else:  # an opaque trunk read out by an attention pool: the pool's heads
        per = dec.pool_terms().sum(2).float().cpu()  # [B, R, E]
        names = [f"pool.H{r}" for r in range(per.shape[1])]
    norms = per.norm(dim=-1)
    k = min(heads, per.shape[1])
    top = norms.topk(k, dim=-1).indices  # [B, k]
    vecs = torch.stack([per[b, top[b]] for b in range(per.shape[0])]).reshape(-1, per.shape[-1])
    head_texts = sparse_texts(vecs, T, texts, l1=l1, mean=None, texts_used=texts_used)
    return ImageTexts(images, [[names[int(j)] for j in row] for row in top],
                      [[float(norms[b, j]) for j in row] for b, row in enumerate(top)], head_texts)
