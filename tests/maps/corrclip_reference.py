"""A naive float64 CorrCLIP, written from the paper (arXiv 2411.10086, §3) and the structure of the official
``CorrCLIPv1/open_clip/transformer.py`` (zdk258/CorrCLIP@103bc18), independently of cliplens.

One image at a time (as the original), on open_clip's own modules and a transformers DINO: the mask class
tokens are prepended to the sequence and every block runs on the whole sequence with a boolean attention mask
(explicit per-head softmax); mask merging uses scikit-learn's DBSCAN; the scope is built pair by pair from the
region masks; map correction uses ``torch.mode`` region by region.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _dino_blocks(model):
    if hasattr(model, "layers"):
        return model.layers
    return model.encoder.layer if hasattr(model.encoder, "layer") else model.encoder.layers


def _dino_qk(model, x):
    """DINO's last block ``q + k`` (biases included) of the patch tokens, L2-normalised ``[N, C]``, and the grid."""
    last = _dino_blocks(model)[-1]
    seen = {}
    norm = last.norm1 if hasattr(last, "norm1") else last.layernorm_before
    h = norm.register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    try:
        kwargs = {"interpolate_pos_encoding": True} if type(model).__name__ == "ViTModel" else {}
        model(pixel_values=x, **kwargs)
    finally:
        h.remove()
    attn = last.attention
    attn = getattr(attn, "attention", attn)
    qp, kp = (attn.q_proj, attn.k_proj) if hasattr(attn, "q_proj") else (attn.query, attn.key)
    ln = seen["h"][0]
    feats = (qp(ln) + kp(ln))[1:]
    p = model.config.patch_size
    return F.normalize(feats, dim=-1), (x.shape[-2] // p, x.shape[-1] // p)


def _positions(visual, grid):
    """The positional table for ``grid``: bicubic with scale factor (n + 0.1) / g0 (the original's rule)."""
    pos = visual.positional_embedding
    g0 = int(math.isqrt(pos.shape[0] - 1))
    if tuple(grid) == (g0, g0):
        return pos
    table = pos[1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, scale_factor=((grid[0] + 0.1) / g0, (grid[1] + 0.1) / g0), mode="bicubic",
                          align_corners=False, recompute_scale_factor=False)
    assert tuple(table.shape[-2:]) == tuple(grid)
    return torch.cat([pos[:1], table.permute(0, 2, 3, 1).reshape(-1, pos.shape[-1])])


def _attention(blk, x, blocked):
    """``blk``'s multi-head attention of the sequence ``x`` ``[L, D]`` with ``blocked`` ``[L, L]`` pairs removed."""
    attn = blk.attn
    D = x.shape[-1]
    H = attn.num_heads
    dh = D // H
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).split(D, dim=-1)
    out = torch.zeros_like(x)
    for h in range(H):
        s = slice(h * dh, (h + 1) * dh)
        scores = (q[:, s] @ k[:, s].T) / math.sqrt(dh)
        scores = scores.masked_fill(blocked, float("-inf"))
        out[:, s] = scores.softmax(-1) @ v[:, s]
    return attn.out_proj(out)


def _block(blk, x, blocked):
    x = x + blk.ls_1(_attention(blk, blk.ln_1(x), blocked))
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _num_spatial(L):
    return {12: 5, 24: 12, 32: 28}.get(L, L - 4)


@torch.no_grad()
def reference_features(clip, dino, pixels, regions, mean, std, *, tau=4.0, alpha=1.0, beta=0.5, eps=0.2):
    """CorrCLIP's features ``[N_d, E]`` (float64) for one image: ``pixels`` ``[3, H, W]`` (CLIP-normalised),
    ``regions`` ``[H, W]`` integer labels."""
    from sklearn.cluster import DBSCAN

    visual = clip.visual
    x_in = pixels[None].double()
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    dino_in = ((x_in * s + m) - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    f, feat_shape = _dino_qk(dino, dino_in)
    # value reconstruction
    S = f @ f.T
    # mask merging
    masks = F.interpolate(regions[None, None].double(), size=feat_shape, mode="nearest")[0, 0].long()
    values = torch.unique(masks)
    if len(values) > 2:
        regs = [masks == v for v in values]
        fd = f.reshape(*feat_shape, -1)
        inst = F.normalize(torch.stack([fd[r].mean(0) for r in regs]), dim=1)[1:]
        sim = inst @ inst.T
        cluster = DBSCAN(metric="precomputed", eps=eps, min_samples=1).fit_predict((sim.max() - sim).numpy())
        for idx, c in enumerate(cluster, start=1):
            if c != -1:
                masks[regs[idx]] = int(c) + 10_000_000
    # scope reconstruction
    flat = masks.flatten()
    values = torch.unique(flat)
    allowed = torch.zeros_like(S, dtype=torch.bool)
    for v in values[1:]:
        r = flat == v
        allowed |= torch.outer(r, r)
    rest = flat == values[0]
    allowed |= (rest[None, :] | rest[:, None]) & (S > S.mean())
    A = (S.masked_fill(~allowed, float("-inf")) * tau).softmax(-1)
    # the CLIP forward with mask class tokens
    p = visual.conv1.stride[0]
    token = (x_in.shape[-2] // p, x_in.shape[-1] // p)
    x = visual.conv1(x_in).flatten(2)[0].T  # [N_c, D]
    x = torch.cat([visual.class_embedding[None], x]) + _positions(visual, token)
    x = visual.ln_pre(x)
    small = F.interpolate(masks[None, None].double(), size=token, mode="nearest")[0, 0].long()
    regs_c = [small.flatten() == v for v in torch.unique(small)]
    n_mct = len(regs_c)
    seq = torch.cat([x[:1].repeat(n_mct, 1), x])
    allow = torch.zeros(len(seq), len(seq), dtype=torch.bool)
    allow[n_mct:, n_mct:] = True
    allow[:n_mct, n_mct] = True
    allow[:n_mct, n_mct + 1:] = torch.stack(regs_c)
    blocks = list(visual.transformer.resblocks)
    L = len(blocks)
    lo, hi = L - 2 - _num_spatial(L), L - 3
    spatial = []
    for idx, blk in enumerate(blocks[:-1]):
        seq = _block(blk, seq, ~allow)
        if lo <= idx <= hi:
            spatial.append(seq[n_mct:])
    last = blocks[-1]
    outs = []
    for stream in (seq[n_mct:], torch.stack(spatial).mean(0)):
        D = stream.shape[-1]
        v = F.linear(last.ln_1(stream), last.attn.in_proj_weight[2 * D:], last.attn.in_proj_bias[2 * D:])[1:]
        v = v.T.reshape(1, D, *token)
        v = F.interpolate(v, size=feat_shape, mode="bilinear", align_corners=False)[0].flatten(1).T
        outs.append(last.attn.out_proj(A @ v))
    mct = _block(last, seq, ~allow)[:n_mct]
    up = F.interpolate(torch.stack(regs_c).double().view(n_mct, 1, *token), size=feat_shape, mode="nearest")
    semantic = up.flatten(1).T @ mct
    total = visual.ln_post(outs[0]) + alpha * visual.ln_post(outs[1]) + beta * visual.ln_post(semantic)
    return total @ visual.proj, feat_shape


def reference_raw(clip, dino, pixels, regions, texts, mean, std, **kw):
    """``[B, T, gh_d, gw_d]`` cosine maps, one image at a time."""
    out = []
    for b in range(pixels.shape[0]):
        feats, shape = reference_features(clip, dino, pixels[b], regions[b], mean, std, **kw)
        cos = F.normalize(feats, dim=-1) @ F.normalize(texts.double(), dim=-1).T
        out.append(cos.T.reshape(-1, *shape))
    return torch.stack(out)


def reference_vote(labels, regions):
    """The original's map correction with ``torch.mode``, region by region."""
    out = labels.clone()
    values = torch.unique(regions)[1:]
    for v in values:
        r = regions == v
        out[r] = torch.mode(out[r])[0]
    return out


def reference_regions(masks, size):
    """The original's label map from mask annotations (ascending area, later ones overwrite)."""
    out = np.zeros(size, dtype=int)
    for i, ann in enumerate(sorted(masks, key=lambda a: a["area"]), start=1):
        out[ann["segmentation"]] = i
    return torch.from_numpy(out)
