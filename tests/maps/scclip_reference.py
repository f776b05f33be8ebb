"""Naive float64 reference of SC-CLIP (Bai et al. 2024, arXiv 2411.15869) on an open_clip model's own modules (test
oracle; it does not use or look at cliplens's implementation).

Written from the method as its paper and code describe it, one image at a time, with explicit loops where the
formula has them (distances, neighbours, grid neighbours, heads). Notation as in ``tests/maps/dense_reference.py``;
``x_l`` is block ``l``'s output (0-based), ``L`` the depth, patches row-major on the grid ``(gh, gw)``:

* LOF over the patch tokens of ``x_{L-2}``, ``k = min(n_neighbors, P - 1)`` nearest other tokens. ``"breunig"``:
  ``reach(p, o) = max(d(p, o), k-dist(o))``, ``lrd(p) = 1 / (mean_o reach(p, o) + 1e-10)``; ``"code"`` (the
  repository's ``lof_pytorch``): squared distances and the point's own k-distance, ``lrd(p) = k / mean_o
  max(d(p, o)², k-dist(p)²)``. Both: ``LOF(p) = mean_o lrd(o) / lrd(p)``. Anomalous: ``LOF > q``, ``q`` the
  ``1 - contamination`` quantile of the image's scores (linear interpolation between the sorted scores).
* Fill: each anomalous token becomes the mean of its in-grid 8-neighbours that are not anomalous (kept if none).
* ``S`` = cosine between the filled patch tokens of ``x_pre``; ``W(S) = S`` where ``S ≥ beta`` else 0, each row over
  its sum + 1e-6; ``x = W(S) · filled patches of x_{L-2}``.
* Last block, reduced, per head: ``A = ½ [softmax(g) + softmax(s k kᵀ)]`` over patch keys only (k from ``ln_1``
  of the patch tokens), ``g = a (S − mean S)`` with ``-inf`` where ``g < 0``; output ``O(A v) + res_cls · cls``.
  Main stream: on ``x``, ``cls`` = CLS of ``x_{L-2}``. Fusion stream: on the patches of ``F = Σ_{l ∈ fusion} x_l``,
  ``cls`` = CLS of ``F``.
* Both through ``W(S')`` (``S'`` = cosine of the raw patch tokens of ``x_post``), summed, then
  ``normalize(ln_post(·) @ proj)`` and the cosine with each text.
"""

from __future__ import annotations

import math

import torch

from tests.maps.dense_reference import (
    POSITIONAL,
    features,
    head_geometry,
    out_branch,
    prepare_visual,
    qkv,
    vanilla_trace,
)

#: the repository's ViT-B/16 settings (configs/base_config.py, clip/model.py): for a 12-block tower
DEFAULTS = dict(pre_adjust_layer=8, post_adjust_layer=3, fusion_layers=(3, 4, 5, 6, 7, 8, 9), res_cls=0.3, beta=0.4,
                attention_scale=3.0, n_neighbors=30, contamination=0.05, lof="code")


def naive_lof(points: torch.Tensor, n_neighbors: int, variant: str) -> torch.Tensor:
    """LOF [P] of the points [P, D] (see the module docs), with explicit loops."""
    P = points.shape[0]
    k = max(1, min(n_neighbors, P - 1))
    dist = [((points - points[i]) ** 2).sum(-1).sqrt().tolist() for i in range(P)]  # direct differences, row i
    neighbours = []
    for i in range(P):
        others = sorted((dist[i][j], j) for j in range(P) if j != i)
        neighbours.append([j for _, j in others[:k]])
    kdist = [dist[i][neighbours[i][-1]] for i in range(P)]
    lrd = []
    for i in range(P):
        if variant == "breunig":
            reach = [max(dist[i][o], kdist[o]) for o in neighbours[i]]
            lrd.append(1.0 / (sum(reach) / k + 1e-10))
        elif variant == "code":
            reach = [max(dist[i][o] ** 2, kdist[i] ** 2) for o in neighbours[i]]
            lrd.append(k / (sum(reach) / k))
        else:
            raise ValueError(variant)
    return torch.tensor([sum(lrd[o] / lrd[i] for o in neighbours[i]) / k for i in range(P)], dtype=torch.float64)


def naive_outliers(scores: torch.Tensor, contamination: float) -> list[bool]:
    """Scores above the 1 - contamination quantile (linear interpolation between order statistics)."""
    ordered = sorted(float(s) for s in scores)
    pos = (1.0 - contamination) * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    q = ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])
    return [float(s) > q for s in scores]


def naive_fill(tokens: torch.Tensor, outliers: list[bool], grid: tuple[int, int]) -> torch.Tensor:
    """tokens [P, D]: each outlier -> mean of its in-grid 8-neighbours that are not outliers (kept when none)."""
    gh, gw = grid
    out = tokens.clone()
    for n, bad in enumerate(outliers):
        if not bad:
            continue
        r, c = divmod(n, gw)
        good = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr, dc) != (0, 0) and 0 <= rr < gh and 0 <= cc < gw and not outliers[rr * gw + cc]:
                    good.append(tokens[rr * gw + cc])
        if good:
            out[n] = sum(good) / len(good)
    return out


def cosine(tokens: torch.Tensor) -> torch.Tensor:
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    return unit @ unit.T


def weights(S: torch.Tensor, beta: float) -> torch.Tensor:
    kept = torch.where(S >= beta, S, torch.zeros_like(S))
    return kept / (kept.sum(-1, keepdim=True) + 1e-6)


def reduced_last_block(block: torch.nn.Module, patches: torch.Tensor, cls: torch.Tensor, S: torch.Tensor,
                       scale: float, res_cls: float) -> torch.Tensor:
    """patches [P, D] -> O(A v) + res_cls · cls over the patch tokens only (see the module docs)."""
    X = block.ln_1(patches)[None]  # [1, P, D]
    q, k, v = qkv(block, X)
    heads, _, s = head_geometry(block)
    g = scale * (S - S.mean())
    g = torch.where(g < 0, torch.full_like(g, -math.inf), g)
    guided = torch.softmax(g, dim=-1)
    z = torch.empty_like(v)
    for h in range(heads):
        own = torch.softmax(s * (k[0, h] @ k[0, h].T), dim=-1)
        z[0, h] = (0.5 * (guided + own)) @ v[0, h]
    return out_branch(block, z)[0] + res_cls * cls


def reference_scclip(model: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor, **params) -> torch.Tensor:
    """Raw maps [B, T, gh, gw] (float64); ``params`` override :data:`DEFAULTS` (layers as 0-based block indices)."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown parameters {sorted(unknown)}")
    p = {**DEFAULTS, **params}
    visual = prepare_visual(model).requires_grad_(False)
    POSITIONAL["mode"] = "bicubic_dino"  # the repository's interpolate_pos_encoding (DINO's scale-factor rule)
    try:
        trace = vanilla_trace(visual, x.detach().to(torch.float64))
    finally:
        POSITIONAL["mode"] = "bicubic"
    L = len(visual.transformer.resblocks)
    block = visual.transformer.resblocks[L - 1]
    outs, grid = trace.outputs, trace.grid
    directions = directions.detach().to(torch.float64)
    maps = []
    for b in range(x.shape[0]):
        last = outs[L - 2][b]
        scores = naive_lof(last[1:], p["n_neighbors"], p["lof"])
        bad = naive_outliers(scores, p["contamination"])
        S = cosine(naive_fill(outs[p["pre_adjust_layer"]][b, 1:], bad, grid))
        main_in = weights(S, p["beta"]) @ naive_fill(last[1:], bad, grid)
        main = reduced_last_block(block, main_in, last[0], S, p["attention_scale"], p["res_cls"])
        fused = sum(outs[i][b] for i in p["fusion_layers"])
        fusion = reduced_last_block(block, fused[1:], fused[0], S, p["attention_scale"], p["res_cls"])
        W = weights(cosine(outs[p["post_adjust_layer"]][b, 1:]), p["beta"])
        final = W @ main + W @ fusion
        cos = features(visual, final) @ directions.T  # [P, T]
        maps.append(cos.T.reshape(-1, *grid))
    return torch.stack(maps)
