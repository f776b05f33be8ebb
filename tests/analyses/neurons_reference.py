"""A naive float64 re-derivation of neurons' second-order effects (Gandelsman et al., ICLR 2025, §3), written from
the paper's formula on an open_clip ViT's own modules, with explicit Python loops over images, neurons, later layers
and heads: nothing from cliplens's forward, views or joint map.

The forward is re-run by hand in float64 (conv, CLS, positions, ln_pre, blocks with nn.MultiheadAttention's packed
weights, ln_post, proj) and checked against open_clip's own ``encode_image``. A neuron ``n`` of layer ``k`` writes
``u_m = ls_2 ⊙ (a_{m,n} · W_fc2[:, n] + b_fc2 / N_n)``; at a later layer ``l`` it is LayerNormed with that layer's
per-token statistics frozen and a share ``s = 1/((2l+1)·N_n)`` of its mean and bias, goes through head ``h``'s
value map (bias share ``s``), the CLS row of the real attention pattern, the out-projection (bias share ``s/H``)
and layer-scale, then ``ln_post`` frozen at CLS with share ``s/((2L+1)·H)`` and the projection.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _np(t) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _ls(mod, D: int) -> np.ndarray:
    g = getattr(mod, "gamma", None)
    return np.ones(D) if g is None else _np(g)


def forward64(model, pixels: torch.Tensor) -> dict:
    """The image tower by hand in float64: per layer the residual input, the MLP hidden values and output, the
    full attention patterns; the final CLS state and the embedding."""
    v = model.visual
    x = torch.as_tensor(pixels, dtype=torch.float64)
    w = v.conv1.weight.double()
    x = F.conv2d(x, w, None if v.conv1.bias is None else v.conv1.bias.double(), stride=w.shape[-1])
    B, D = x.shape[:2]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.double().expand(B, 1, D), x], 1) + v.positional_embedding.double()
    x = F.layer_norm(x, (D,), v.ln_pre.weight.double(), v.ln_pre.bias.double(), v.ln_pre.eps)
    rec = {"resid_pre": [], "hidden": [], "mlp_out": [], "pattern": []}
    for blk in v.transformer.resblocks:
        rec["resid_pre"].append(x.clone())
        attn = blk.attn
        H = attn.num_heads
        dh = D // H
        h = F.layer_norm(x, (D,), blk.ln_1.weight.double(), blk.ln_1.bias.double(), blk.ln_1.eps)
        qkv = h @ attn.in_proj_weight.double().t() + attn.in_proj_bias.double()
        q, k, val = qkv.split(D, dim=-1)
        N = x.shape[1]
        q, k, val = (t.reshape(B, N, H, dh).transpose(1, 2) for t in (q, k, val))
        pat = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5, -1)
        rec["pattern"].append(pat)
        z = (pat @ val).transpose(1, 2).reshape(B, N, D)
        a = z @ attn.out_proj.weight.double().t() + attn.out_proj.bias.double()
        x = x + a * torch.as_tensor(_ls(blk.ls_1, D))
        h2 = F.layer_norm(x, (D,), blk.ln_2.weight.double(), blk.ln_2.bias.double(), blk.ln_2.eps)
        hid = blk.mlp.gelu(h2 @ blk.mlp.c_fc.weight.double().t() + blk.mlp.c_fc.bias.double())
        m = (hid @ blk.mlp.c_proj.weight.double().t() + blk.mlp.c_proj.bias.double()) * torch.as_tensor(_ls(blk.ls_2, D))
        rec["hidden"].append(hid)
        rec["mlp_out"].append(m)
        x = x + m
    cls = x[:, 0]
    emb = F.layer_norm(cls, (D,), v.ln_post.weight.double(), v.ln_post.bias.double(), v.ln_post.eps) @ v.proj.double()
    out = {key: [_np(t) for t in val] for key, val in rec.items()}
    out.update(final=_np(cls), embedding=_np(emb), eps_post=v.ln_post.eps)
    return out


def through_head(model, fw: dict, b: int, layer: int, head: int, u: np.ndarray, s: float) -> np.ndarray:
    """``[N, E]``: each source token's part of the residual vectors ``u`` ``[N, D]`` (a component with share
    ``s`` of ``ln_1``'s mean and bias and of the biases after) reaching the output through one head; the biases'
    shares are split equally over the source tokens."""
    v = model.visual
    blk = v.transformer.resblocks[layer]
    D = u.shape[1]
    H = blk.attn.num_heads
    dh = D // H
    L = len(v.transformer.resblocks)
    N = u.shape[0]
    x = fw["resid_pre"][layer][b]
    mu, sd = x.mean(-1), np.sqrt(x.var(-1) + blk.ln_1.eps)
    g1, b1 = _np(blk.ln_1.weight), _np(blk.ln_1.bias)
    Wv = _np(blk.attn.in_proj_weight)[2 * D:][head * dh:(head + 1) * dh]
    bv = _np(blk.attn.in_proj_bias)[2 * D:][head * dh:(head + 1) * dh]
    Wo = _np(blk.attn.out_proj.weight)[:, head * dh:(head + 1) * dh]
    bo = _np(blk.attn.out_proj.bias)
    ls1 = _ls(blk.ls_1, D)
    alpha = fw["pattern"][layer][b, head, 0]  # the CLS query's row
    fin = fw["final"][b]
    mu_p, sd_p = fin.mean(), np.sqrt(fin.var() + fw["eps_post"])
    gp, bp, proj = _np(v.ln_post.weight), _np(v.ln_post.bias), _np(v.proj)
    s_post = s / ((2 * L + 1) * H)
    out = np.zeros((N, proj.shape[1]))
    for m in range(N):
        ln = g1 * (u[m] - s * mu[m]) / sd[m] + s * b1
        val = Wv @ ln + s * bv
        o = (Wo @ (alpha[m] * val) + s * bo / (H * N)) * ls1
        out[m] = (gp * (o - s_post * mu_p / N) / sd_p + s_post * bp / N) @ proj
    return out


def neuron_effects_naive(model, pixels: torch.Tensor, layer: int, neurons) -> tuple[np.ndarray, np.ndarray]:
    """``(effects [B, n, E], per_token [B, n, N, E])`` for the given neurons of MLP ``layer``: loops over images,
    neurons, later layers and heads."""
    fw = forward64(model, pixels)
    v = model.visual
    blk = v.transformer.resblocks[layer]
    W2, b2 = _np(blk.mlp.c_proj.weight), _np(blk.mlp.c_proj.bias)
    D, Nn = W2.shape
    ls2 = _ls(blk.ls_2, D)
    L = len(v.transformer.resblocks)
    H = blk.attn.num_heads
    hid = fw["hidden"][layer]
    B, N = hid.shape[:2]
    E = v.proj.shape[1]
    tok = np.zeros((B, len(neurons), N, E))
    for b in range(B):
        for i, n in enumerate(neurons):
            u = (hid[b, :, n][:, None] * W2[:, n][None] + b2[None] / Nn) * ls2
            for lat in range(layer + 1, L):
                s = 1.0 / ((2 * lat + 1) * Nn)
                for h in range(H):
                    tok[b, i] += through_head(model, fw, b, lat, h, u, s)
    return tok.sum(2), tok
