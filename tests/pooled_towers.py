"""Towers without a CLS token for downstream tests: the random toy CLIP with its CLS token removed and its
pooling head replaced (attention pooling with a learned probe, SigLIP's MAP head, with random weights; or mean
pooling over the patches). The blocks and the text side are the toy's own, so what a test exercises is the
code's handling of the pooling head and of the token prefix, apart from any source library's family."""

from __future__ import annotations

from dataclasses import replace

import torch

import cliplens
from cliplens.core.heads import MapHead, MeanHead
from cliplens.core.layers import LayerNormView


def pooled_toy(weights, kind: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    m = cliplens.load("toy", pretrained=str(weights)).to(dtype=dtype)
    v = m.vision
    D, E, Hp = v.width, v.embed_dim, 4
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=None):
        return (torch.randn(*shape, generator=g) * (s if s is not None else shape[-1] ** -0.5)).to(dtype)

    if kind == "map":
        head = MapHead(norm=v.head.norm, probe=r(D, s=1.0), q_weight=r(D, D), q_bias=r(D, s=0.1), k_weight=r(D, D),
                       k_bias=r(D, s=0.1), v_weight=r(D, D), v_bias=r(D, s=0.1), out_weight=r(E, D),
                       out_bias=r(E, s=0.1), num_heads=Hp,
                       mlp_norm=LayerNormView(1 + r(E, s=0.1), r(E, s=0.1), 1e-6),
                       fc1_weight=r(4 * E, E), fc1_bias=r(4 * E, s=0.1), fc2_weight=r(E, 4 * E),
                       fc2_bias=r(E, s=0.1))
    else:
        head = MeanHead(v.head.norm, v.proj, skip=0)
    m._view = replace(v, class_embedding=None, positional_embedding=v.positional_embedding[1:], head=head)
    return m
