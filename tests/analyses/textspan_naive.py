"""Naive TEXTSPAN: plain numpy, one head at a time, written straight from the algorithm.

This is the test oracle for the fast implementation and the benchmark's baseline; clarity over
speed. For one head, with

* ``C`` [K, d]: the head's outputs in the joint embedding space over K images,
* ``R`` [M, d]: unit-norm text embeddings of a pool,
* ``r``: a rank (default: the model's head width ``d_head``, 64 for ViT-B/L),
* ``m``: how many texts to choose,

the algorithm is

1. SVD of the **uncentred** ``C``; ``V_r`` = its top-``r`` right singular vectors [r, d];
2. project the texts onto their span, ``R <- R V_r^T V_r`` (NOT renormalised afterwards);
3. centre ``C`` (subtract the mean over images);
4. ``m`` times: score every text j by the sample variance (denominator K-1) over images of
   ``C R_j`` (with the unnormalised ``R_j``, so the score is ``|R_j|^2 Var(C R_j/|R_j|)``); take
   ``j* = argmax`` (the first on ties), record ``(j*, score)``; let ``t = R_j*/|R_j*|``; add
   ``(C t) t^T`` to the reconstruction and remove it from ``C``; remove ``t`` from every text:
   ``R <- R - (R t) t^T``;
5. return the chosen indices in order, their scores (also as fractions of the total variance of
   the centred ``C``, the trace of its covariance), the variance each removal removed (measured: the
   total variance of ``C`` before the removal minus after it) and its share of the total variance,
   and the reconstruction of the centred ``C``.

The directions ``t`` are orthonormal (each is orthogonal to the earlier ones, which were removed
from every text), so the reconstruction is the orthogonal projection of the centred ``C`` on
their span, and the scores sum to at most the total variance. A text chosen once has nothing left
(``R_j* = 0`` after the update). If every remaining text is exactly zero (more steps than the
texts' span allows), the step records the first index with score 0 and changes nothing (the
original would divide by zero). Several heads may pick the same text.

Compared with the original code, ``yossigandelsman/clip_text_span`` at commit 49f70f3 (HEAD,
"Added siglip"), file ``compute_complete_text_set.py``, function
``replace_with_iterative_removal`` (lines 18-56); text embeddings from
``compute_text_set_projection.py``:

* Step 1, confirmed: ``np.linalg.svd(data, full_matrices=False)`` of the *uncentred* data
  (line 21), ``vh[:rank]`` (line 22); centring comes later (lines 27-28).
* Step 2, confirmed: the texts are multiplied by ``vh.T (vh vh.T)^-1 vh`` (lines 23-25), which
  is ``V_r^T V_r`` because the rows of ``vh`` are orthonormal; they are not renormalised. The text
  embeddings themselves are unit-norm (``F.normalize``, ``compute_text_set_projection.py``
  line 68, computed under fp16 autocast).
* Step 3, confirmed, with one precision difference: the SVD and the text projection run in numpy
  in the input's dtype, then the data and the texts are cast to float32 (``.float()``, lines 26
  and 31) for the loop. This oracle computes in float64 by default (``dtype`` argument).
* Step 4, scoring: the original ranks by the *standard deviation* ``projection.std(axis=0)``
  (line 34; torch's default is unbiased, denominator K-1) of ``data @ text_features.T`` with the
  unnormalised texts, not by the variance; ``argmax`` is the same (std = sqrt(var), monotone), and
  std of ``C R_j`` is ``|R_j|`` times the std along the unit direction, so the ranking agrees
  with this spec. The original records only the chosen texts' strings (line 36, ``texts[top_n]``)
  and no score; the scores here are variances (the square of the original's std).
* Step 4, updates, confirmed in the same order: ``text_norm = R_j . R_j`` is the *squared* norm
  (line 37), and every update divides by it once and multiplies by ``R_j``, i.e.
  ``(C R_j / |R_j|^2) R_j^T = (C t) t^T``: reconstruction first (lines 38-46), then the data
  (lines 47-50), then the texts (lines 51-55), all with the pre-update ``R_j*``.
* Step 5, the reconstruction, differs: the original starts it from the *mean* repeated over the
  images (line 29, ``einops.repeat(mean_data, "A B -> (C A) B", ...)``) and returns
  ``mean + sum (C t) t^T``; here it is the reconstruction of the *centred* data (``mean`` is
  returned separately: ``reconstruction + mean`` is the original's intended output). On CPU the
  original's returned reconstruction is wrong: ``einops.repeat`` returns a stride-0 view of
  ``mean_data`` (einops' torch backend adds the new axis with ``expand`` and then ``reshape``s,
  which keeps the view); ``.cpu().numpy()`` on a CPU tensor shares that memory (line 30), so
  the in-place ``reconstruct += ...`` (line 38) writes every image's row into the same buffer
  and all rows come out equal. On CUDA ``.cpu()`` makes a real copy, and the result is the
  mathematically correct one computed here. The chosen texts are not affected (they never read
  the reconstruction).
* Defaults: the original's ``--w_ov_rank`` is 80 (line 100; the head width of its default model,
  ViT-H-14) and ``--texts_per_head`` 10 (lines 102-107; the README runs 20 for the last 4 layers).
  The original returns text strings, so two identical lines of a pool cannot be told apart;
  this oracle returns indices.
* Not handled by the original: a chosen text of norm zero (division by zero, NaN); see above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NaiveTextSpan", "textspan_naive", "textspan_naive_heads"]


@dataclass
class NaiveTextSpan:
    """TEXTSPAN's result for one head.

    Attributes:
        indices: [m] the chosen texts' rows of ``R``, in the order chosen.
        variances: [m] each text's score when chosen: the variance over images (denominator
            K-1) of the residual head output along the projected, unnormalised text.
        score_fractions: [m] ``variances / total_variance`` (not a share of anything: the texts are
            not renormalised, so a score is smaller than the variance its removal removes).
        removed: [m] the total variance of the residual ``C`` before the text's direction was removed
            minus after (measured on ``C`` itself, not from the score).
        shares: [m] ``removed / total_variance``: the share of the head's variance each text removed;
            they add up (the directions are orthonormal) to the share the texts explain together.
        total_variance: trace of the covariance of the centred ``C`` (denominator K-1).
        reconstruction: [K, d] ``sum_i (C t_i) t_i^T`` of the centred ``C``.
        directions: [m, d] the unit directions ``t_i`` that were removed (orthonormal).
        mean: [d] the mean of ``C`` over images (the original returns ``reconstruction + mean``).
    """

    indices: np.ndarray
    variances: np.ndarray
    score_fractions: np.ndarray
    removed: np.ndarray
    shares: np.ndarray
    total_variance: float
    reconstruction: np.ndarray
    directions: np.ndarray
    mean: np.ndarray


def textspan_naive(C, R, r: int = 64, m: int = 20, *, dtype=np.float64) -> NaiveTextSpan:
    """TEXTSPAN for one head: ``C`` [K, d] head outputs, ``R`` [M, d] unit-norm text embeddings,
    rank ``r``, ``m`` texts. See the module docstring for the algorithm."""
    C = np.array(C, dtype=dtype)  # copies: the caller's arrays are never changed
    R = np.array(R, dtype=dtype)
    if C.ndim != 2 or R.ndim != 2 or C.shape[1] != R.shape[1]:
        raise ValueError(f"C must be [K, d] and R [M, d] with the same d, got {C.shape} and {R.shape}")
    K, d = C.shape
    if K < 2:
        raise ValueError("the variance over images needs at least 2 images")
    if r < 1 or m < 1:
        raise ValueError("r and m must be positive")

    # 1. SVD of the uncentred head outputs; top-r right singular vectors
    _, _, Vt = np.linalg.svd(C, full_matrices=False)
    V_r = Vt[:r]  # [r, d] (fewer rows if min(K, d) < r)

    # 2. project the texts onto that span (no renormalisation)
    R = R @ V_r.T @ V_r

    # 3. centre over images
    mean = C.mean(axis=0)
    C = C - mean
    total_variance = float(np.sum(C * C) / (K - 1))  # trace of the covariance

    reconstruction = np.zeros_like(C)
    indices, variances, directions, removed = [], [], [], []
    for _ in range(m):
        # 4. score each text by the variance over images of the head output along it
        projections = C @ R.T  # [K, M]
        scores = projections.var(axis=0, ddof=1)
        j = int(np.argmax(scores))
        indices.append(j)
        variances.append(float(scores[j]))
        norm = np.linalg.norm(R[j])
        if norm == 0.0:  # nothing left to remove
            directions.append(np.zeros(d, dtype=dtype))
            removed.append(0.0)
            continue
        t = R[j] / norm
        directions.append(t)
        part = np.outer(C @ t, t)  # the part of C along t
        reconstruction = reconstruction + part
        before = np.sum(C * C) / (K - 1)
        C = C - part
        removed.append(float(before - np.sum(C * C) / (K - 1)))
        R = R - np.outer(R @ t, t)

    variances_arr = np.array(variances, dtype=np.float64)
    removed_arr = np.array(removed, dtype=np.float64)
    def share(x):
        return x / total_variance if total_variance > 0 else np.zeros_like(x)

    return NaiveTextSpan(
        indices=np.array(indices, dtype=np.int64),
        variances=variances_arr,
        score_fractions=share(variances_arr),
        removed=removed_arr,
        shares=share(removed_arr),
        total_variance=total_variance,
        reconstruction=reconstruction,
        directions=np.array(directions),
        mean=mean,
    )


def textspan_naive_heads(C, R, r: int = 64, m: int = 20, *, dtype=np.float64) -> list[NaiveTextSpan]:
    """:func:`textspan_naive` for every head of ``C`` [H, K, d] (a Python loop over heads)."""
    C = np.asarray(C)
    if C.ndim != 3:
        raise ValueError(f"C must be [H, K, d], got {C.shape}")
    return [textspan_naive(C[h], R, r, m, dtype=dtype) for h in range(C.shape[0])]
