"""TEXTSPAN time at the size of the paper's setting: naive (numpy, a loop over heads) next to the fast one.

    python benchmarks/bench_textspan.py          # add --heads / --images / --texts / --naive-heads / --dtype

Inputs are synthetic, random but with structure, at the benchmark size: 64 heads (e.g. the last 4
layers of a ViT-L/14, 16 heads each), 5,000 images, a pool of 3,498 texts, joint dimension
d = 768, rank r = 64 (d_head), m = 20 texts per head. Each head's outputs lie in a 64-dimensional
subspace built partly from "concept" directions that the texts also use, with decaying variances
and a mean offset; the texts share a common direction (CLIP's text embeddings are anisotropic)
and are unit-norm.

Methods:
    naive   tests/analyses/textspan_naive.py (the test oracle): numpy, one head at a time, the
            algorithm step by step. It runs on ``--naive-heads`` heads (2 by default) and its time
            is EXTRAPOLATED linearly to all heads (every head costs the same: one SVD and m scorings
            of the whole pool), which the output says.
    fast    cliplens.analyses.textspan.textspan_heads, all heads in groups, timed twice: on the factorised
            inputs a store gives it (C = Z Q with Z the head-space outputs, here [K, r+1]: the headline
            number) and on the full-width C (Z = C, Q = I; ``FAST`` below). Its chosen texts and variances
            are compared with the naive ones on the naive heads.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------------
# FAST: plug the fast implementation in here. It is called as
#     indices, variances = FAST(C, R, r, m)
# with C: float32 [H, K, d] head outputs, R: float32 [M, d] unit-norm texts, and must return
# indices: int [H, m] (the chosen rows of R, in order) and variances: float [H, m] (each text's
# variance when chosen, denominator K-1), as the naive version below does.
def _fast(C: np.ndarray, R: np.ndarray, r: int, m: int, group: int = 8):
    """``cliplens.analyses.textspan.textspan_heads`` on generic inputs: ``C = Z Q`` with ``Z = C``, ``Q = I``
    (the store gives it ``Z`` of width d_head+3 instead, which is cheaper still), heads in groups of
    ``group`` to bound memory."""
    import torch

    from cliplens.analyses.textspan import textspan_heads

    Rt = torch.from_numpy(R)
    eye = torch.eye(C.shape[-1], dtype=torch.float64)
    indices, variances = [], []
    for start in range(0, C.shape[0], group):
        Z = torch.from_numpy(C[start:start + group])
        out = textspan_heads(Z, eye.expand(Z.shape[0], -1, -1), Rt, rank=r, m=m)
        indices += [o["indices"] for o in out]
        variances += [o["scores"] for o in out]
    return np.array(indices), np.array(variances)


FAST = _fast


def fast_factors(factors, R: np.ndarray, r: int, m: int, group: int = 16):
    """``textspan_heads`` on the factorised inputs the store gives it (``C = Z Q``, ``Z`` [K, k] with k small)."""
    import torch

    from cliplens.analyses.textspan import textspan_heads

    Rt = torch.from_numpy(R)
    indices, variances = [], []
    for start in range(0, len(factors), group):
        Z = torch.from_numpy(np.stack([f[0] for f in factors[start:start + group]]))
        Q = torch.from_numpy(np.stack([f[1] for f in factors[start:start + group]]))
        out = textspan_heads(Z, Q, Rt, rank=r, m=m)
        indices += [o["indices"] for o in out]
        variances += [o["scores"] for o in out]
    return np.array(indices), np.array(variances)
# --------------------------------------------------------------------------------------------------


def naive_textspan_heads(C: np.ndarray, R: np.ndarray, r: int, m: int, dtype=np.float32):
    """Naive TEXTSPAN for every head of ``C`` [H, K, d] with texts ``R`` [M, d]: a Python loop over
    heads calling the test oracle. Returns ``(indices [H, m], variances [H, m])``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.analyses.textspan_naive import textspan_naive

    indices, variances = [], []
    for h in range(C.shape[0]):
        res = textspan_naive(C[h], R, r, m, dtype=dtype)
        indices.append(res.indices)
        variances.append(res.variances)
    return np.stack(indices), np.stack(variances)


# --------------------------------------------------------------------------------------------------
# synthetic inputs
def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _concepts(d: int, n: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng([seed, 1]).standard_normal((n, d))).astype(np.float32)


def make_texts(M: int, d: int, seed: int = 0, n_concepts: int = 512) -> np.ndarray:
    """``M`` unit-norm texts: a shared direction + a few concepts each + noise."""
    rng = np.random.default_rng([seed, 2])
    concepts = _concepts(d, n_concepts, seed)
    common = _unit(rng.standard_normal(d))
    mix = np.zeros((M, n_concepts), dtype=np.float32)
    for i in range(M):
        picks = rng.choice(n_concepts, size=3, replace=False)
        mix[i, picks] = rng.uniform(0.3, 1.0, size=3)
    R = 0.6 * common + mix @ concepts + 0.5 * rng.standard_normal((M, d)) / np.sqrt(d)
    return _unit(R).astype(np.float32)


def make_head_factors(h: int, K: int, d: int, rank: int, seed: int = 0, n_concepts: int = 512
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Head ``h``'s outputs as factors ``Z`` [K, rank+1], ``Q`` [rank+1, d] with ``C = Z Q``: ``rank`` directions
    (half of them concepts the texts use), decaying variances, and a mean offset (the last row of ``Q``, a
    column of ones in ``Z``) — the form a store gives (head-space outputs and the map to the joint space).
    Deterministic per (seed, h), independent of other heads."""
    rng = np.random.default_rng([seed, 3, h])
    concepts = _concepts(d, n_concepts, seed)
    n_c = rank // 2
    basis = np.concatenate([concepts[rng.choice(n_concepts, size=n_c, replace=False)],
                            rng.standard_normal((rank - n_c, d)).astype(np.float32) / np.sqrt(d)])
    Qb, _ = np.linalg.qr(basis.T)  # [d, rank], orthonormal, spans the basis
    scales = (1.0 / (1.0 + np.arange(rank)) ** 0.8).astype(np.float32)
    rng.shuffle(scales)  # concepts and random directions get mixed strengths
    Z = rng.standard_normal((K, rank)).astype(np.float32) * scales
    mean = 0.5 * (Qb @ rng.standard_normal(rank)).astype(np.float32)
    return (np.concatenate([Z, np.ones((K, 1), np.float32)], 1),
            np.concatenate([Qb.T.astype(np.float32), mean[None]], 0))


def make_head(h: int, K: int, d: int, rank: int, seed: int = 0, n_concepts: int = 512) -> np.ndarray:
    """Head ``h``'s outputs [K, d] (:func:`make_head_factors` multiplied out)."""
    Z, Q = make_head_factors(h, K, d, rank, seed, n_concepts)
    return (Z @ Q).astype(np.float32)


def make_heads(heads, K: int, d: int, rank: int, seed: int = 0) -> np.ndarray:
    return np.stack([make_head(h, K, d, rank, seed) for h in heads])


# --------------------------------------------------------------------------------------------------
def _threads() -> str:
    try:
        from threadpoolctl import threadpool_info

        info = [f"{i.get('internal_api')}:{i.get('num_threads')}" for i in threadpool_info()]
        return ", ".join(info) or "unknown"
    except ImportError:
        return f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", type=int, default=64)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--texts", type=int, default=3498)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--m", type=int, default=20)
    ap.add_argument("--naive-heads", type=int, default=2, help="heads the naive version runs on (then extrapolated)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="the naive version's precision (float32: as the original's loop)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    H, K, M, d, r, m = args.heads, args.images, args.texts, args.dim, args.rank, args.m
    n_naive = min(args.naive_heads, H)

    print(f"TEXTSPAN benchmark: {H} heads, {K} images, {M} texts, d={d}, r={r}, m={m}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores visible; numpy {np.__version__}, BLAS threads: {_threads()}")
    t0 = time.perf_counter()
    R = make_texts(M, d, args.seed)
    C_naive = make_heads(range(n_naive), K, d, r, args.seed)
    print(f"synthetic inputs for {n_naive} heads built in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    idx_naive, var_naive = naive_textspan_heads(C_naive, R, r, m, dtype=np.dtype(args.dtype))
    t_naive = time.perf_counter() - t0
    per_head = t_naive / n_naive
    print(f"naive ({args.dtype}): {t_naive:.1f} s for {n_naive} heads = {per_head:.2f} s per head; "
          f"EXTRAPOLATED to {H} heads: {per_head * H:.0f} s ({per_head * H / 60:.1f} min)")
    for h in range(n_naive):
        print(f"  head {h}: texts {idx_naive[h].tolist()}")
        print("          variances: " + ", ".join(f"{v:.4g}" for v in var_naive[h]))

    if FAST is None:
        print("fast: not plugged in (set FAST in benchmarks/bench_textspan.py)")
        return

    C = np.concatenate([C_naive, make_heads(range(n_naive, H), K, d, r, args.seed)]) if H > n_naive else C_naive
    factors = [make_head_factors(h, K, d, r, args.seed) for h in range(H)]
    FAST(C[:1], R, r, m)  # warm-up (allocations)
    fast_factors(factors[:1], R, r, m)
    t0 = time.perf_counter()
    idx_full, var_full = FAST(C, R, r, m)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx_fast, var_fast = fast_factors(factors, R, r, m)
    t_fast = time.perf_counter() - t0
    print(f"fast, factorised inputs as a store gives them (C = Z Q, Z [K, {r + 1}]): {t_fast:.2f} s for {H} heads "
          f"(measured) = {t_fast / H:.3f} s per head; speed-up {per_head * H / t_fast:.0f}x over the extrapolated "
          f"naive time")
    print(f"fast, full-width inputs (Z = C [K, {d}], Q = I): {t_full:.2f} s for {H} heads (measured) = "
          f"{t_full / H:.3f} s per head; speed-up {per_head * H / t_full:.0f}x")
    same_full = all(np.array_equal(np.asarray(idx_full)[h], np.asarray(idx_fast)[h]) for h in range(H))
    print(f"both fast inputs choose the same texts on all {H} heads: {same_full}")
    idx_fast, var_fast = np.asarray(idx_fast), np.asarray(var_fast, dtype=np.float64)
    print(f"{'head':>4}  {'same texts, same order':>22}  {'same set':>8}  {'max rel. variance diff':>22}")
    for h in range(n_naive):
        same_order = int(np.sum(idx_fast[h] == idx_naive[h]))
        same_set = len(set(idx_fast[h].tolist()) & set(idx_naive[h].tolist()))
        rel = np.max(np.abs(var_fast[h] - var_naive[h]) / np.maximum(np.abs(var_naive[h]), 1e-12))
        print(f"{h:>4}  {same_order:>19}/{m}  {same_set:>5}/{m}  {rel:>22.2e}")
        if same_order < m:
            first = int(np.argmax(idx_fast[h] != idx_naive[h]))
            print(f"        first difference at step {first}: naive {idx_naive[h, first]} "
                  f"({var_naive[h, first]:.6g}), fast {idx_fast[h, first]} ({var_fast[h, first]:.6g})")


if __name__ == "__main__":
    main()
