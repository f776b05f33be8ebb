"""The toy model's SigLIP variant: attention pooling with a learned probe, no CLS token, the sigmoid loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cliplens.core.forward import run_vision
from cliplens.experiments.train import sigmoid_bank_loss, sigmoid_loss
from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, load_toy_clip, with_pooling

SMALL = dict(width=32, layers=2, heads=2, embed_dim=32, text_width=32, text_layers=1, text_heads=2, pool="map",
             loss="sigmoid", pool_heads=2)


def test_the_map_head_tower_has_no_cls_and_its_view_is_its_forward():
    torch.manual_seed(0)
    m = ToyCLIP(ToyCLIPConfig(**SMALL)).eval()
    assert m.class_embedding is None and m.proj is None and m.positional_embedding.shape[0] == 64
    with torch.no_grad():
        for p in m.attn_pool.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 3, 64, 64)
    v = m.vision_view()
    assert v.num_prefix_tokens == 0 and v.head.kind == "map" and v.head.num_readouts == 2
    with torch.no_grad():
        torch.testing.assert_close(run_vision(v, x).embedding, m.encode_image(x), rtol=1e-5, atol=1e-6)


def test_naive_attention_pool_formula():
    """probe attention over all tokens, then out-projection, then + MLP(LN(.)) (tanh GELU): a loop per head."""
    torch.manual_seed(1)
    m = ToyCLIP(ToyCLIPConfig(**SMALL)).eval()
    p = m.attn_pool
    y = torch.randn(2, 64, 32)
    d, h = 32, 2
    w, b = p.in_proj_weight, p.in_proj_bias
    q = w[:d] @ p.probe + b[:d]
    outs = []
    for i in range(2):
        heads = []
        for j in range(h):
            s = slice(j * d // h, (j + 1) * d // h)
            k = y[i] @ w[d:2 * d][s].T + b[d:2 * d][s]
            v = y[i] @ w[2 * d:][s].T + b[2 * d:][s]
            a = torch.softmax(k @ q[s] / math.sqrt(d // h), 0)
            heads.append(a @ v)
        o = p.out_proj(torch.cat(heads))
        outs.append(o + p.fc2(F.gelu(p.fc1(p.norm(o)), approximate="tanh")))
    with torch.no_grad():
        torch.testing.assert_close(p(y), torch.stack(outs), rtol=1e-5, atol=1e-6)


def test_sigmoid_loss_is_the_pairwise_binary_formula():
    g = torch.Generator().manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 8, generator=g), dim=-1), F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    targets = torch.rand(4, 6, generator=g) > 0.6
    s, b = torch.tensor(7.0), torch.tensor(-2.0)
    want = 0.0
    for i in range(4):
        for j in range(6):
            z = 1.0 if targets[i, j] else -1.0
            want += -math.log(1 / (1 + math.exp(-z * (s * (img[i] @ txt[j]) + b))))
    torch.testing.assert_close(sigmoid_loss(img, txt, s, b, targets), torch.tensor(want / 4), rtol=1e-5, atol=1e-6)
    bank = sum(-math.log(1 / (1 + math.exp(-(1 if targets[i, j] else -1) * (s * (img[i] @ txt[j]) + b))))
               for i in range(4) for j in range(6)) / 24
    torch.testing.assert_close(sigmoid_bank_loss(img, txt, s, b, targets), torch.tensor(bank), rtol=1e-5, atol=1e-6)


def test_with_pooling_carries_the_blocks_and_text_tower_over():
    m, _ = load_toy_clip()
    n = with_pooling(m, pool="map", loss="sigmoid", name="toy-siglip")
    assert n.config.pool == "map" and n.logit_bias is not None and n.config.name == "toy-siglip"
    torch.testing.assert_close(n.blocks[3].fc1.weight, m.blocks[3].fc1.weight)
    torch.testing.assert_close(n.positional_embedding, m.positional_embedding[1:])
    tokens = torch.randint(3, 50, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(n.encode_text(tokens), m.encode_text(tokens))
