"""Naive float64 reference of CASS (test oracle), written from the formula, not from cliplens's code.

On an open_clip model's own modules (tests/maps/dense_reference.py) and a transformers DINO / DINOv2 model: its
last block's keys are the key projection of its last block's pre-normed input (``hidden_states[-2]``), as
transformers computes it (square inputs; at another grid the backbone is rebuilt natively around the table of the
torch.hub rule, tests/maps/proxyclip_reference.py).

Per image, ``s = d_head^-½``:

1. ``k_h`` CLIP's last-block keys of the patches; ``k'_h`` the backbone's patch keys ``[dh, g', g']`` resized to CLIP's
   grid with the bilinear matrices of tests/maps/proxyclip_reference.py, then
   ``k' ← (k' − min k') / (max k' − min k') · (max k − min k) + min k`` (over every head and patch).
2. ``A_h = s k_h k_hᵀ``, ``D_h = s k'_h k'_hᵀ``; spectra: the 20 largest eigenvalues (``torch.linalg.eigh``), L2- then
   L1-normalised; ``cost_ij = 1 − Σ |sort(p(D_i)) − sort(p(A_j))|``; the matching: a permutation ``π`` of the heads
   with the least ``Σ_i cost_{i π(i)}``, found by trying every permutation. Ties are common (when one eigenvalue
   dominates every spectrum, ``cost_ij`` is a sum of a term in ``i`` and one in ``j`` and every permutation costs
   the same), and the formula does not say which to take: ``pick`` chooses among the optimal ones (within 1e-12),
   in lexicographic order, and :func:`reference_cass` also returns how many there are.
3. For each ``i``, ``j = π(i)``, ``w = 1 − cost_ij``: ``D_j``'s rank-10 approximation from its 10 largest eigenpairs
   (``D_j`` is a Gram matrix: its singular values are its eigenvalues), singular values mapped linearly from
   ``[min, max]`` to ``[½ min, 1½ max]`` (``rescale``), diagonal zeroed, min-max mapped onto ``A_i``'s range: ``D̃``;
   ``G_i = (10 w D̃ + A_i) / (10 w + 1)``.
4. ``z_i = softmax(G_i + Ω) v_i`` (Ω the Gaussian window of dense_reference, σ = 5), ``O(z)``, then
   ``normalize(ln_post(·) proj)``: ``f`` ``[N, E]``.
5. ``g = normalize(ln_post(CLS of the unmodified last block) proj)``; the queries are clustered (scipy's Ward
   linkage on cosine distances, cut at ``h_threshold``: the same library as cliplens, nothing simpler to compare
   with); per cluster, the query ``c`` with the largest ``g · t_c`` becomes ``normalize((1 − α) t_c + α m)``, ``m``
   the normalised mean of the 2 patch features with the largest ``f · t_c``; map: ``(1 − λ) f · t' + λ g · t``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from tests.maps.dense_reference import (
    features,
    gaussian_window,
    head_geometry,
    mlp_branch,
    out_branch,
    prepare_visual,
    qkv,
    self_attention,
)
from tests.maps.proxyclip_reference import bilinear_matrix, native_vfm, vfm_input
from tests.maps.surgery_reference import _embed


def vfm_keys(vfm: torch.nn.Module, x: torch.Tensor, positional: str = "hub") -> tuple[torch.Tensor, tuple[int, int]]:
    """The backbone's last-block patch keys [B, H, n, dh] and their grid."""
    model, patch, prefix = native_vfm(vfm, x, positional)
    extra = {"interpolate_pos_encoding": True} if type(model).__name__ == "ViTModel" else {}
    with torch.no_grad():
        hidden = model(pixel_values=vfm_input(x.double()), output_hidden_states=True, **extra).hidden_states
    layers = model.layers if hasattr(model, "layers") else model.encoder.layer
    last = layers[-1]
    norm = last.norm1 if hasattr(last, "norm1") else last.layernorm_before
    attn = getattr(last.attention, "attention", last.attention)
    key = attn.k_proj if hasattr(attn, "k_proj") else attn.key
    with torch.no_grad():
        k = key(norm(hidden[-2]))[:, prefix:]
    heads = model.config.num_attention_heads
    B, n, D = k.shape
    return k.reshape(B, n, heads, D // heads).transpose(1, 2), (x.shape[-2] // patch, x.shape[-1] // patch)


def top_eigen(m: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    vals, vecs = torch.linalg.eigh(m)
    order = torch.argsort(vals, descending=True)[:count]
    return vals[order], vecs[:, order]


def reference_cass(clip: torch.nn.Module, vfm: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor, *,
                   rescale: bool = True, h_threshold: float = 0.0, mean_vector_weight: float = 0.0,
                   global_semantics_weight: float = 0.0, sigma: float = 5.0, pick: int = 0
                   ) -> tuple[torch.Tensor, list[int]]:
    """CASS's raw maps [B, T, gh, gw] (float64) for CLIP-normalised square pixels ``x``, and per image the number
    of optimal matchings (``pick``: which one is used)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    visual = prepare_visual(clip)
    x = x.double()
    t = F.normalize(directions.double(), dim=-1)
    T = t.shape[0]
    dkeys, (g1, g2) = vfm_keys(vfm, x)
    out_maps, counts = [], []
    with torch.no_grad():
        gh, gw = visual.conv1(x[:1]).shape[-2:]
        n = gh * gw
        tokens = _embed(visual, x, "bicubic_dino")
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            _, _, scale = head_geometry(block)
            q, k, v = qkv(block, block.ln_1(tokens))
            hidden = tokens + out_branch(block, self_attention(q, k, scale) @ v)
            tokens = hidden + mlp_branch(block, hidden)
        last = blocks[-1]
        heads, dh, scale = head_geometry(last)
        q, k, v = qkv(last, last.ln_1(tokens))
        hidden = tokens + out_branch(last, self_attention(q, k, scale) @ v)
        g_all = features(visual, (hidden + mlp_branch(last, hidden))[:, 0])  # [B, E]
        Rh, Rw = bilinear_matrix(gh, g1), bilinear_matrix(gw, g2)
        omega = gaussian_window((gh, gw), sigma)[1:, 1:]
        if T > 1:
            dist = 1.0 - t @ t.T
            dist = ((dist + dist.T) / 2).clamp_min(0.0)
            dist.fill_diagonal_(0.0)
            labels = fcluster(linkage(squareform(dist.numpy(), checks=False), method="ward"), t=h_threshold,
                              criterion="distance") - 1
        else:
            labels = [0]
        for b in range(x.shape[0]):
            kb = k[b, :, 1:]  # [H, N, dh]
            grid_keys = dkeys[b].reshape(heads, g1, g2, dh)
            kd = torch.einsum("ia,jb,habd->hijd", Rh, Rw, grid_keys).reshape(heads, n, dh)
            kd = (kd - kd.min()) / (kd.max() - kd.min()) * (kb.max() - kb.min()) + kb.min()
            A = scale * kb @ kb.transpose(1, 2)
            D = scale * kd @ kd.transpose(1, 2)
            spec = []
            for m in list(D) + list(A):
                vals = top_eigen(m, 20)[0]
                vals = vals / vals.norm()
                spec.append(torch.sort(vals / vals.abs().sum()).values)
            cost = torch.tensor([[1.0 - (spec[i] - spec[heads + j]).abs().sum().item() for j in range(heads)]
                                 for i in range(heads)], dtype=torch.float64)
            totals = {p: sum(cost[i, p[i]].item() for i in range(heads)) for p in itertools.permutations(range(heads))}
            least = min(totals.values())
            optimal = sorted(p for p, c in totals.items() if c <= least + 1e-12)
            counts.append(len(optimal))
            best = optimal[min(pick, len(optimal) - 1)]
            z = []
            for i in range(heads):
                j = best[i]
                w = 1.0 - cost[i, j].item()
                vals, vecs = top_eigen(D[j], 10)
                if rescale:
                    lo, hi = vals.min(), vals.max()
                    vals = (vals - lo) / (hi - lo) * (1.5 * hi - 0.5 * lo) + 0.5 * lo
                approx = vecs @ torch.diag(vals) @ vecs.T
                approx = approx - torch.diag(torch.diag(approx))
                approx = (approx - approx.min()) / (approx.max() - approx.min()) * (A[i].max() - A[i].min()) + A[i].min()
                G = (10.0 * w * approx + A[i]) / (10.0 * w + 1.0)
                z.append(torch.softmax(G + omega, dim=-1) @ v[b, i, 1:])
            f = features(visual, out_branch(last, torch.stack(z)[None]))[0]  # [N, E]
            glob = g_all[b] @ t.T
            adjusted = t.clone()
            for c in set(int(c) for c in labels):
                members = [i for i in range(T) if int(labels[i]) == c]
                best_q = max(members, key=lambda i: glob[i].item())
                top = torch.topk(f @ t[best_q], 2).indices
                mean = F.normalize(f[top].mean(0), dim=0)
                adjusted[best_q] = F.normalize((1 - mean_vector_weight) * t[best_q] + mean_vector_weight * mean, dim=0)
            scores = (1 - global_semantics_weight) * (f @ adjusted.T) + global_semantics_weight * glob[None]
            out_maps.append(scores.T.reshape(T, gh, gw))
    return torch.stack(out_maps), counts
