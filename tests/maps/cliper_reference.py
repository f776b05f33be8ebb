"""Naive float64 reference of CLIPer's early-layer fusion (test oracle), written from its formula on an open_clip
model's own modules, one image at a time as the official code runs it (github.com/linsun449/cliper.code@c05fa41,
``modified_clip/model.py``). It does not use cliplens's implementation.

For one image (N = 1 + n tokens, n = gh·gw patches, L blocks, the positional table resized bilinearly):

* blocks 0..L-2 run as the model does; X_k = ln_1 output of block k; S = Σ_k A_k per head (softmax(s q kᵀ));
  X_{L-1} = the last block's input;
* for k = 0..L-1 in order: S ← rows-normalised(columns-normalised(S)) (S keeps every round), then
  M = (S + Sᵀ)/2; M ← max(M − mean over the query axis of M, 0); M ← M / row sums; the feature
  f_k = ln_post(ls_1(out_proj(concat_h M_h v_h))) @ proj with v the last block's value projection of
  ln_1^{last}(X_k); logits_k = logit_scale · cos(f_k[patch], t) for the targets t and their normalised mean;
* P_k = softmax over the texts, the mean text dropped; sliding window (crop c, stride s; the code's loop over
  h_grids × w_grids windows): per window the same logits and its last M averaged over heads (patch part),
  stitched, averaged over overlaps (the attention's count + 1e-5), rows normalised, logits ← logits @ attention,
  softmax, P_k ← P_k^slide / 2 + P_k / 2;
* last = P_{L-1} with entries below attention_thr · max (per text) set to 0; result = last @ Ā + mean_k P_k
  (P_{L-1} thresholded), Ā = mean over heads of the last M (patch part). ``fuse=False``: last @ Ā alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.maps.dense_reference import (
    features,
    head_geometry,
    mlp_branch,
    out_branch,
    prepare_visual,
    qkv,
    self_attention,
    split_heads,
)
from tests.maps.surgery_reference import _embed


def fused_matrix(S: torch.Tensor) -> torch.Tensor:
    """[H, N, N] balanced S -> the fused attention M (symmetrised, column means removed, clipped, rows to 1)."""
    M = (S + S.transpose(-1, -2)) / 2
    M = M - M.mean(dim=-2, keepdim=True)
    M = torch.clamp(M, min=0)
    return M / M.sum(dim=-1, keepdim=True)


def sinkhorn_round(S: torch.Tensor) -> torch.Tensor:
    S = S / S.sum(dim=-2, keepdim=True)
    return S / S.sum(dim=-1, keepdim=True)


def _one_image(visual, img: torch.Tensor, texts: torch.Tensor, logit_scale: float, fuse: bool):
    """img [1, 3, h, w] -> logits [L, T + 1, n] (all L features; the early ones zero when not fused, as the code
    leaves them: never read then) and Ā [n, n]."""
    blocks = visual.transformer.resblocks
    L = len(blocks)
    x = _embed(visual, img, "bilinear")  # [1, N, D]
    S = 0
    feats = []
    for block in list(blocks)[:-1]:
        X = block.ln_1(x)
        feats.append(X)
        heads, _, s = head_geometry(block)
        q, k, v = qkv(block, X)
        A = self_attention(q, k, s)  # [1, H, N, N]
        S = S + A[0]
        x = x + out_branch(block, A @ v)
        x = x + mlp_branch(block, x)
    feats.append(x)
    last = blocks[-1]
    heads = last.attn.num_heads
    width = last.attn.embed_dim
    logits = []
    for k_index in range(L):
        S = sinkhorn_round(S)
        M = fused_matrix(S)
        if not fuse and k_index < L - 1:
            logits.append(torch.zeros(texts.shape[0], x.shape[1] - 1, dtype=torch.float64))
            continue
        X = last.ln_1(feats[k_index])
        v = X @ last.attn.in_proj_weight[2 * width:].T + last.attn.in_proj_bias[2 * width:]
        out = out_branch(last, M[None] @ split_heads(v, heads))  # [1, N, D]
        f = features(visual, out[0, 1:])  # [n, E]
        logits.append(logit_scale * (f @ texts.T).T)  # [T + 1, n]
    return torch.stack(logits), M.mean(dim=0)[1:, 1:]


def _slide(visual, img, texts, logit_scale, fuse, crop, stride, patch):
    _, _, h_img, w_img = img.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    gh, gw = h_img // patch, w_img // patch
    L = len(visual.transformer.resblocks)
    preds = torch.zeros(L, texts.shape[0], gh, gw, dtype=torch.float64)
    count = torch.zeros(1, gh, gw, dtype=torch.float64)
    attns = torch.zeros(gh, gw, gh, gw, dtype=torch.float64)
    count_attns = torch.zeros(gh, gw, gh, gw, dtype=torch.float64)
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride, w_idx * stride
            y2, x2 = min(y1 + crop, h_img), min(x1 + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            ch, cw = crop_img.shape[-2] // patch, crop_img.shape[-1] // patch
            ty1, ty2, tx1, tx2 = y1 // patch, y2 // patch, x1 // patch, x2 // patch
            logits, attn = _one_image(visual, crop_img, texts, logit_scale, fuse)
            preds[..., ty1:ty2, tx1:tx2] += logits.reshape(L, -1, ch, cw)
            count[..., ty1:ty2, tx1:tx2] += 1
            attns[ty1:ty2, tx1:tx2, ty1:ty2, tx1:tx2] += attn.reshape(ch, cw, ch, cw)
            count_attns[ty1:ty2, tx1:tx2, ty1:ty2, tx1:tx2] += 1
    preds = preds / count
    attns = attns / (count_attns + 1e-5)
    attns = attns.reshape(gh * gw, gh * gw)
    attns = attns / attns.sum(dim=-1, keepdim=True)
    return preds.reshape(L, -1, gh * gw) @ attns


def reference_cliper(model, x: torch.Tensor, directions: torch.Tensor, logit_scale: float = 100.0,
                     attention_thr: float = 0.2, fuse: bool = True, slide_crop: int = 0,
                     slide_stride: int = 112) -> torch.Tensor:
    """CLIPer's raw maps [B, T, gh, gw] (float64) for images x [B, 3, H, W] and unit texts [T, E]."""
    visual = prepare_visual(model)
    x = x.to(torch.float64)
    patch = visual.conv1.kernel_size[0]
    gh, gw = x.shape[-2] // patch, x.shape[-1] // patch
    T = directions.shape[0]
    directions = directions.to(torch.float64)
    texts = torch.cat([directions, F.normalize(directions.mean(dim=0, keepdim=True), dim=-1)])
    maps = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            img = x[b:b + 1]
            logits, attn = _one_image(visual, img, texts, logit_scale, fuse)
            seg = torch.softmax(logits, dim=1)[:, :T]  # [L, T, n]
            if slide_crop > 0:
                slid = _slide(visual, img, texts, logit_scale, fuse, slide_crop, slide_stride, patch)
                seg = torch.softmax(slid, dim=1)[:, :T] * 0.5 + seg * 0.5
            last = seg[-1]  # a view: the thresholding below changes seg[-1] too, as the code's does
            last[last < last.amax(dim=-1, keepdim=True) * attention_thr] = 0
            out = last @ attn
            if fuse:
                out = out + seg.mean(dim=0)
            maps.append(out.reshape(T, gh, gw))
    return torch.stack(maps)


__all__ = ["fused_matrix", "reference_cliper", "sinkhorn_round"]
