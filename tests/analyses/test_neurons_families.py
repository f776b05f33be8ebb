"""Neurons' second-order effects on the families of issue 16: EVA02 (sub-LayerNorm over the heads, SwiGLU, layer
scale) sums with the rest of the residual to the decomposition's head terms, as a CLIP ViT does; attention-pooled
towers and ResNets are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cliplens
from cliplens.analyses.neurons import SecondOrder, second_order
from cliplens.core.forward import run_vision
from cliplens.errors import InvalidInputError
from tests.families import models


def _t(x):
    return None if x is None else x.detach().double()


def rest_through_heads(view, x, k: int) -> np.ndarray:
    """``[B, E]``: everything in the residual before each later layer except MLP ``k``'s output (share ``2l/(2l+1)``
    of ``ln_1``'s constants and of the biases after), through every later head, with loops over images, layers and
    heads: ``ln_1`` frozen per token, the value map, the CLS row, the sub-LN frozen at CLS (``γ_s/σ_s``; its shift is
    the layer's own term), the out-projection (its bias shared only without a sub-LN) and layer-scale, the pooling
    head frozen at CLS with share ``s/((2L+1)·H)`` of its constant."""
    L = view.num_layers
    names = ["final", f"blocks.{k}.mlp_out"] + [f"blocks.{i}.{t}" for i in range(k + 1, L)
                                                  for t in ("resid_pre", "attn.cls_pattern", "attn.z")]
    with torch.no_grad():
        c = run_vision(view, x.to(view.dtype), names=names).cache
    head = view.head
    gp, bp, proj, pb = _t(head.norm.weight), _t(head.norm.bias), _t(head.proj), _t(head.proj_bias)
    B = x.shape[0]
    out = np.zeros((B, proj.shape[1]))
    for b in range(B):
        fin = c["final"][b, 0].double()
        mu_p, sd_p = fin.mean(), torch.sqrt(fin.var(unbiased=False) + head.norm.eps)
        for lat in range(k + 1, L):
            blk = view.blocks[lat]
            H, dh = blk.num_heads, blk.head_dim
            s = 2 * lat / (2 * lat + 1)
            s_post = s / ((2 * L + 1) * H)
            u = c[f"blocks.{lat}.resid_pre"][b].double() - c[f"blocks.{k}.mlp_out"][b].double()
            xr = c[f"blocks.{lat}.resid_pre"][b].double()
            mu, sd = xr.mean(-1), torch.sqrt(xr.var(-1, unbiased=False) + blk.ln_1.eps)
            ln = _t(blk.ln_1.weight) * (u - s * mu[:, None]) / sd[:, None] + s * _t(blk.ln_1.bias)
            zc = c[f"blocks.{lat}.attn.z"][b, 0].double().reshape(-1)
            sd_s = torch.sqrt(zc.var(unbiased=False) + blk.attn_norm.eps) if blk.attn_norm is not None else None
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                v = ln @ _t(blk.v_weight)[sl].t() + (0 if blk.v_bias is None else s * _t(blk.v_bias)[sl])
                z = (c[f"blocks.{lat}.attn.cls_pattern"][b, h].double()[:, None] * v).sum(0)
                if sd_s is not None:
                    z = _t(blk.attn_norm.weight)[sl] * z / sd_s
                o = _t(blk.out_weight)[:, sl] @ z
                if blk.attn_norm is None and blk.out_bias is not None:
                    o = o + s * _t(blk.out_bias) / H
                if blk.ls_1 is not None:
                    o = o * _t(blk.ls_1)
                j = (gp * (o - s_post * mu_p) / sd_p + s_post * bp) @ proj
                out[b] += (j + (0 if pb is None else s_post * pb)).numpy()
    return out


@pytest.fixture(scope="module")
def eva():
    pytest.importorskip("timm")
    return cliplens.wrap(models.open_clip_timm("EVA02-B-16", layers=3, layer_scale=True, seed=81),
                         name="EVA02-B-16").to(dtype=torch.float64)


def test_eva02_neurons_plus_the_rest_sum_to_the_decompositions_head_terms(eva):
    view = eva.vision
    assert view.blocks[1].attn_norm is not None and view.blocks[0].gate_weight is not None
    x = models.pixels(2, 224, seed=82)
    k = 0
    eff = second_order(eva, x, [k], dtype=torch.float64, chunk=700)[k].effects.sum(1).numpy()
    rest = rest_through_heads(view, x.double(), k)
    dec = eva.decompose(x.double(), spatial=False, dtype=torch.float64).head_terms()  # [B, L, H, E]
    target = dec[:, k + 1:].sum((1, 2)).numpy()
    assert np.abs(eff + rest - target).max() <= 1e-9 * np.abs(target).max()
    assert np.abs(eff).max() > 1e-4 * np.abs(target).max()


def test_eva02_per_token_effects_sum_to_the_totals(eva):
    x = models.pixels(1, 224, seed=83)
    res = second_order(eva, x, [1], neurons=[0, 5, 900], per_token=True, dtype=torch.float64)[1]
    assert torch.allclose(res.tokens.sum(2), res.effects, rtol=1e-10, atol=1e-12)


def test_siglip_and_resnet_are_refused_with_the_reason():
    pytest.importorskip("timm")
    siglip = cliplens.wrap(models.open_clip_timm("ViT-B-16-SigLIP", layers=2), name="ViT-B-16-SigLIP")
    with pytest.raises(InvalidInputError, match="CLS-pooled"):
        SecondOrder(siglip, [0])
    resnet = cliplens.wrap(models.open_clip_resnet("RN50"), name="RN50")
    with pytest.raises(InvalidInputError, match="convolutional trunk"):
        SecondOrder(resnet, [0])
