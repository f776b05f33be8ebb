"""Naive float64 reference of ProxyCLIP (test oracle), written from the formula, not from cliplens's code.

On an open_clip model's own modules (through the helpers of tests/maps/dense_reference.py) and a transformers
DINO / DINOv2 model called as transformers calls it (its ``last_hidden_state``, not cliplens's wrapper):

1. The backbone's input: ``x_vfm = (x · σ_clip + μ_clip − μ_imagenet) / σ_imagenet`` per channel.
2. ``F`` ``[M, C]``: its last hidden state's patch tokens (at another grid than its own, with its positional table
   resized by the torch.hub rule, ``vfm_positional="hub"``: DINO's scale factor, or antialiased bicubic for DINOv2
   with registers, from tests/maps/surgery_reference.py, and the model rebuilt natively at that size around it;
   square inputs only; or by transformers' own rule, ``"transformers"``) (after the prefix of CLS and registers), ``M = I · J``
   row-major; ``S_ij = f̂_i · f̂_j`` with ``f̂`` unit rows; ``L = γ (S − β · mean_ij S_ij)`` per image.
3. ``A_ij = exp(L_ij) / Σ_{l : L_il ≥ 0} exp(L_il)`` where ``L_ij ≥ 0``, else 0 (the same for every head).
4. CLIP runs its blocks but the last as usual (positional table by DINO's scale-factor rule at other grids). In
   the last block, ``v = ln_1(x) W_v + b_v`` per head, patch tokens only, on CLIP's grid ``gh x gw``, resized to
   ``I x J`` by bilinear interpolation with half-pixel centres, written out here as two matrices ``R_h`` ``[I, gh]``
   and ``R_w`` ``[J, gw]``: output row ``o`` reads source ``s = max((o + ½) · gh / I − ½, 0)`` from rows
   ``⌊s⌋`` and ``min(⌊s⌋ + 1, gh − 1)`` with weights ``1 − (s − ⌊s⌋)`` and ``s − ⌊s⌋``.
5. Output token ``m``: ``O(Σ_j A_mj v'_j)``; then ``normalize(ln_post(·) proj)``; the map is its cosine with each
   text, ``[B, T, I, J]``.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import torch

from tests.maps.dense_reference import (
    features,
    head_geometry,
    mlp_branch,
    out_branch,
    prepare_visual,
    qkv,
    self_attention,
)
from tests.maps.surgery_reference import _embed, _local_positional_table

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vfm_input(x: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised pixels -> ImageNet-normalised pixels, channel by channel."""
    out = torch.empty_like(x)
    for c in range(3):
        out[:, c] = (x[:, c] * CLIP_STD[c] + CLIP_MEAN[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return out


def native_vfm(vfm: torch.nn.Module, x: torch.Tensor, positional: str = "hub") -> tuple[torch.nn.Module, int, int]:
    """(a float64 copy of the backbone that runs ``x`` with the positional table of ``positional``, its patch size,
    its prefix of CLS and register tokens). For ``"hub"`` at another grid than its own the copy is rebuilt natively
    at ``x``'s size around the table resized by the torch.hub rule (square inputs only)."""
    model = copy.deepcopy(vfm).double().eval()
    cfg = model.config
    patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
    table = model.embeddings.position_embeddings  # [1, 1 + M0², D]
    m0 = round((table.shape[1] - 1) ** 0.5)
    grid = (x.shape[-2] // patch, x.shape[-1] // patch)
    if positional == "hub" and grid != (m0, m0):
        if grid[0] != grid[1]:
            raise ValueError("the reference rebuilds the backbone natively: square inputs only")
        mode = "bicubic_antialias" if cfg.model_type == "dinov2_with_registers" else "bicubic_dino"
        resized = _local_positional_table(SimpleNamespace(positional_embedding=table[0], grid_size=(m0, m0)), grid,
                                          mode)
        cfg.image_size = x.shape[-1]
        model.embeddings.position_embeddings = torch.nn.Parameter(resized[None].double())
        if hasattr(model.embeddings.patch_embeddings, "image_size"):
            model.embeddings.patch_embeddings.image_size = (x.shape[-2], x.shape[-1])
    return model, patch, 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)


def vfm_patch_features(vfm: torch.nn.Module, x: torch.Tensor, positional: str = "hub"
                       ) -> tuple[torch.Tensor, tuple[int, int]]:
    """([B, M, C] last-layer patch tokens, (I, J)) of a transformers DINO / DINOv2 model, in float64."""
    model, patch, prefix = native_vfm(vfm, x, positional)
    extra = {"interpolate_pos_encoding": True} if type(model).__name__ == "ViTModel" else {}
    with torch.no_grad():
        hidden = model(pixel_values=vfm_input(x.double()), **extra).last_hidden_state
    return hidden[:, prefix:], (x.shape[-2] // patch, x.shape[-1] // patch)


def proxy_weights(feats: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """A [B, M, M] of steps 2-3."""
    unit = feats / feats.norm(dim=-1, keepdim=True)
    S = unit @ unit.transpose(1, 2)
    out = torch.zeros_like(S)
    for b in range(S.shape[0]):
        L = gamma * (S[b] - beta * S[b].mean())
        kept = L >= 0
        e = torch.where(kept, torch.exp(L), torch.zeros_like(L))
        out[b] = e / e.sum(dim=-1, keepdim=True)
    return out


def bilinear_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """R [n_out, n_in] of step 4 (half-pixel centres, clamped at the borders)."""
    R = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        s = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = math.floor(s)
        i1 = min(i0 + 1, n_in - 1)
        w = s - i0
        R[o, i0] += 1.0 - w
        R[o, i1] += w
    return R


def reference_proxyclip(clip: torch.nn.Module, vfm: torch.nn.Module, x: torch.Tensor, directions: torch.Tensor,
                        beta: float = 1.2, gamma: float = 3.0, vfm_positional: str = "hub",
                        clip_positional: str = "bicubic_dino") -> torch.Tensor:
    """ProxyCLIP's raw maps [B, T, I, J] (float64) for CLIP-normalised pixels ``x``."""
    visual = prepare_visual(clip)
    x = x.double()
    feats, (gi, gj) = vfm_patch_features(vfm, x, vfm_positional)
    A = proxy_weights(feats, beta, gamma)  # [B, M, M]
    with torch.no_grad():
        gh, gw = visual.conv1(x[:1]).shape[-2:]
        tokens = _embed(visual, x, clip_positional)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            _, _, scale = head_geometry(block)
            q, k, v = qkv(block, block.ln_1(tokens))
            hidden = tokens + out_branch(block, self_attention(q, k, scale) @ v)
            tokens = hidden + mlp_branch(block, hidden)
        last = blocks[-1]
        _, _, v = qkv(last, last.ln_1(tokens))  # [B, H, N, dh]
        B, H, _, dh = v.shape
        grid_v = v[:, :, 1:].reshape(B, H, gh, gw, dh)
        Rh, Rw = bilinear_matrix(gi, gh), bilinear_matrix(gj, gw)
        resized = torch.einsum("ia,jb,zhabd->zhijd", Rh, Rw, grid_v).reshape(B, H, gi * gj, dh)
        z = A[:, None] @ resized  # the same weights for every head
        f = features(visual, out_branch(last, z))  # [B, M, E]
        cos = f @ directions.double().T
    return cos.permute(0, 2, 1).reshape(B, directions.shape[0], gi, gj)
