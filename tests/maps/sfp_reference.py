"""Naive, independent reference of SFP (Jin et al., ICCV 2025) as its code runs it (test oracle).

Written from the formula (Kimsure/SFP@2804f5b, ``SFP_ICCV/clip/model.py``, as restated in the docstring of
``cliplens.maps.sfp``) on an open_clip model's own modules, one image at a time, float64, with plain loops where
the formula is a rule over cells (outlier choice, neighbour means). It reuses only the explicit vanilla forward and
the small building blocks of ``tests/maps/dense_reference.py`` (which do not use cliplens), never cliplens itself.

With ``x_l`` the output of block ``l`` (CLS first), ``L`` blocks, ``A`` block ``L−2``'s attention averaged over
heads, per image:

* outliers ("som"): the patches n with ``5·res_cls·A[CLS, n] > A[n, n]``, sorted by ``A[CLS, n]`` (descending),
  the first ``outliers``; ("l2"): the patches of ``x_{L−2}`` sorted by norm (descending), the first ``outliers``.
  Patch n sits at row ``n // gw``, column ``n % gw``.
* purify(f): every outlier cell gets the mean of its 8 neighbours on the grid that are not outliers (zeros
  without any); the other cells are unchanged.
* S_pre = cos(purify(x_sim patches)), S_post = cos(x_refine patches), each 0 where below ``threshold``;
  agg(f, S) = (S / (rowsum(S) + 1e-6)) f.
* guide(S) = softmax over keys of τ·(S − mean(S)), −∞ where that is negative.
* F = agg(O((softmax(s q qᵀ) + softmax(s k kᵀ) + guide(S_pre)) / 3 · v) + res_cls · x_{L−2}[CLS], S_post), with
  q, k, v from the last block's ln_1 of agg(purify(x_{L−2} patches), S_pre); O = out-projection (+ bias) and ls_1.
* Σ = Σ_{l = fuse_start .. fuse_end−1} x_l; G = agg(O(guide(S_pre) · v_Σ) + res_cls · Σ[CLS], S_post), v_Σ from
  the last block's ln_1 of Σ's patches.
* map for a unit text t: normalize(ln_post(F + G) @ proj) · t per patch, row-major ``[gh, gw]``.

Positions at another grid: DINO's scale-factor rule (``bicubic_dino``) unless told otherwise.
"""

from __future__ import annotations

import torch

from tests.maps import dense_reference as dr

DEFAULTS = dict(outlier_rule="som", outliers=10, res_cls=0.3, threshold=0.4, temperature=3.0, similarity_layer=8,
                refine_layer=3, fuse_start=3, fuse_end=10)


def _trace(model: torch.nn.Module, x: torch.Tensor, positional: str) -> tuple[torch.nn.Module, dr.Trace]:
    visual = dr.prepare_visual(model)
    before = dr.POSITIONAL["mode"]
    dr.POSITIONAL["mode"] = positional
    try:
        with torch.no_grad():
            return visual, dr.vanilla_trace(visual, x.detach().to(torch.float64))
    finally:
        dr.POSITIONAL["mode"] = before


def outlier_cells(trace: dr.Trace, b: int, rule: str, count: int, res_cls: float) -> list[tuple[int, int]]:
    """The outlier cells ``(row, col)`` of image ``b``."""
    gh, gw = trace.grid
    probe = len(trace.outputs) - 2
    if rule == "som":
        A = trace.A[probe][b].mean(dim=0)  # [N, N], heads averaged
        candidates = []
        for n in range(gh * gw):
            to_patch = 5.0 * res_cls * A[0, 1 + n].item()
            if to_patch > A[1 + n, 1 + n].item():
                candidates.append((to_patch, n))
        candidates.sort(key=lambda item: -item[0])
        chosen = [n for _, n in candidates[:count]]
    elif rule == "l2":
        tokens = trace.outputs[probe][b]
        norms = [(tokens[1 + n].norm().item(), n) for n in range(gh * gw)]
        norms.sort(key=lambda item: -item[0])
        chosen = [n for _, n in norms[:count]]
    else:
        raise ValueError(rule)
    return [(n // gw, n % gw) for n in chosen]


def purify(feats: torch.Tensor, cells: list[tuple[int, int]], grid: tuple[int, int]) -> torch.Tensor:
    """``feats`` [P, D] with each outlier cell replaced by the mean of its non-outlier 8-neighbours."""
    gh, gw = grid
    out = feats.clone()
    outlying = set(cells)
    for r, c in cells:
        neighbours = [feats[rr * gw + cc] for rr in range(r - 1, r + 2) for cc in range(c - 1, c + 2)
                      if (rr, cc) != (r, c) and 0 <= rr < gh and 0 <= cc < gw and (rr, cc) not in outlying]
        out[r * gw + c] = torch.stack(neighbours).mean(0) if neighbours else torch.zeros_like(feats[0])
    return out


def similarity(feats: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cosine between patches [P, P], 0 where below ``threshold``. A zero vector (an outlier whose neighbours are all
    outliers) is similar to itself (1) and to nothing else (0); the original's 0/0 makes its whole map NaN."""
    P = feats.shape[0]
    S = torch.zeros(P, P, dtype=feats.dtype)
    norms = [feats[i].norm() for i in range(P)]
    for i in range(P):
        for j in range(P):
            if norms[i] == 0 or norms[j] == 0:
                S[i, j] = 1.0 if i == j else 0.0
            else:
                S[i, j] = feats[i] @ feats[j] / (norms[i] * norms[j])
    S[S < threshold] = 0.0
    return S


def aggregate(feats: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    return (S / (S.sum(dim=1, keepdim=True) + 1e-6)) @ feats


def guide(S: torch.Tensor, temperature: float) -> torch.Tensor:
    G = temperature * (S - S.mean())
    G[G < 0] = float("-inf")
    return torch.softmax(G, dim=-1)


def last_block_attention(block: torch.nn.Module, tokens: torch.Tensor, S: torch.Tensor, temperature: float,
                         correlative: bool) -> torch.Tensor:
    """O(P v) for the patch tokens [P, D] of one image -> [P, D]."""
    X = block.ln_1(tokens[None])
    q, k, v = dr.qkv(block, X)
    _, _, scale = dr.head_geometry(block)
    P = guide(S, temperature)[None, None]
    if correlative:
        P = (dr.self_attention(q, q, scale) + dr.self_attention(k, k, scale) + P) / 3.0
    return dr.out_branch(block, P @ v)[0]


def reference_sfp(model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor, positional: str = "bicubic_dino",
                  **params) -> torch.Tensor:
    """Raw SFP maps [B, T, gh, gw] (float64) for unit texts ``directions`` [T, E]."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown SFP parameters {sorted(unknown)}")
    p = {**DEFAULTS, **params}
    visual, trace = _trace(model, x, positional)
    directions = directions.detach().to(torch.float64)
    grid = trace.grid
    probe = len(trace.outputs) - 2
    last = visual.transformer.resblocks[-1]
    maps = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            xs = [out[b] for out in trace.outputs]
            cells = outlier_cells(trace, b, p["outlier_rule"], p["outliers"], p["res_cls"])
            S_pre = similarity(purify(xs[p["similarity_layer"]][1:], cells, grid), p["threshold"])
            S_post = similarity(xs[p["refine_layer"]][1:], p["threshold"])
            tokens = aggregate(purify(xs[probe][1:], cells, grid), S_pre)
            F_ = last_block_attention(last, tokens, S_pre, p["temperature"], True) + p["res_cls"] * xs[probe][0]
            F_ = aggregate(F_, S_post)
            fused = sum(xs[i] for i in range(p["fuse_start"], p["fuse_end"]))
            G = last_block_attention(last, fused[1:], S_pre, p["temperature"], False) + p["res_cls"] * fused[0]
            G = aggregate(G, S_post)
            f = dr.features(visual, F_ + G)  # [P, E]
            maps.append((f @ directions.T).T.reshape(-1, *grid))
    return torch.stack(maps)


def reference_outliers(model: torch.nn.Module, x: torch.Tensor, positional: str = "bicubic_dino",
                       **params) -> list[list[tuple[int, int]]]:
    """The outlier cells per image (to check that a test case exercises the mitigator)."""
    p = {**DEFAULTS, **params}
    _, trace = _trace(model, x, positional)
    return [outlier_cells(trace, b, p["outlier_rule"], p["outliers"], p["res_cls"]) for b in range(x.shape[0])]
