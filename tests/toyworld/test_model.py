import math

import pytest
import torch
import torch.nn.functional as F

from cliplens.core.view import VisionView, apply_activation
from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, load_toy_clip, save_toy_clip
from cliplens.toyworld.tokenizer import ToyTokenizer

TINY = dict(image_size=32, patch_size=8, width=32, layers=2, heads=4, embed_dim=24, text_width=32,
            text_layers=1, text_heads=2, context_length=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    tok = ToyTokenizer(context_length=16)
    m = ToyCLIP(ToyCLIPConfig(vocab_size=len(tok), **TINY)).eval()
    # non-trivial biases / LN params so the functional check is meaningful
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _view_forward(v: VisionView, x: torch.Tensor) -> torch.Tensor:
    """Independent functional forward over the view (standard pre-LN CLIP ViT)."""
    t = F.conv2d(x, v.patch_weight, v.patch_bias, stride=v.patch_size).flatten(2).transpose(1, 2)
    t = torch.cat([v.class_embedding.expand(t.shape[0], 1, -1), t], 1) + v.positional_embedding
    t = v.ln_pre(t)
    for b in v.blocks:
        h = b.ln_1(t)
        q = F.linear(h, b.q_weight, b.q_bias)
        k = F.linear(h, b.k_weight, b.k_bias)
        val = F.linear(h, b.v_weight, b.v_bias)
        B, N, D = q.shape
        q, k, val = (z.view(B, N, b.num_heads, b.head_dim).transpose(1, 2) for z in (q, k, val))
        a = (q @ k.transpose(-1, -2) * b.head_dim**-0.5).softmax(-1)
        o = (a @ val).transpose(1, 2).reshape(B, N, D)
        t = t + F.linear(o, b.out_weight, b.out_bias)
        t = t + F.linear(apply_activation(F.linear(b.ln_2(t), b.fc1_weight, b.fc1_bias), b.activation),
                         b.fc2_weight, b.fc2_bias)
    return v.ln_post(t[:, 0]) @ v.proj


def test_shapes(model):
    x = torch.randn(3, 3, 32, 32)
    assert model.encode_image(x).shape == (3, 24)
    tok = ToyTokenizer(context_length=16)
    t = tok.encode(["a red circle", "two shapes on a striped background"])
    z = model.encode_text(t)
    assert z.shape == (2, 24)
    a, b, s = model(x, t)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3)) and torch.allclose(b.norm(dim=-1), torch.ones(2))
    assert math.isclose(float(s.detach()), math.exp(float(model.logit_scale.detach())), rel_tol=1e-6)


def test_text_pooling_ignores_padding(model):
    tok = ToyTokenizer(context_length=16)
    t = tok.encode(["a red circle"])
    z_full = model.encode_text(t)
    z_crop = model.encode_text(t[:, :5])  # <sot> a red circle <eot>
    assert torch.allclose(z_full, z_crop, atol=1e-5)
    t2 = t.clone()
    t2[0, 6:] = 7  # garbage after <eot> must not matter (causal)
    assert torch.allclose(model.encode_text(t2), z_full, atol=1e-5)


def test_view_references_storage(model):
    v = model.vision_view()
    d = model.config.width
    assert v.num_layers == 2 and v.num_heads == 4 and v.width == d and v.embed_dim == 24
    assert v.image_size == (32, 32) and v.patch_size == (8, 8) and v.source == "toy:toy-clip"
    assert v.patch_weight.data_ptr() == model.conv1.weight.data_ptr()
    assert v.proj.data_ptr() == model.proj.data_ptr()
    for b, blk in zip(v.blocks, model.blocks, strict=True):
        w = blk.in_proj_weight
        assert b.qkv_weight.data_ptr() == w.data_ptr()
        assert b.q_weight.data_ptr() == w.data_ptr()
        assert b.k_weight.data_ptr() == w[d].data_ptr()
        assert b.v_weight.data_ptr() == w[2 * d].data_ptr()
        assert b.v_bias.data_ptr() == blk.in_proj_bias[2 * d :].data_ptr()
        assert b.fc1_weight.data_ptr() == blk.fc1.weight.data_ptr()
        assert b.activation == "gelu"
    ptrs = {p.data_ptr() for p in model.parameters()}
    extra = {t.data_ptr() for t in v.parameters()} - ptrs
    # every tensor of the view lives inside one of the model's parameters (slices share storage)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert all(t.untyped_storage().data_ptr() in storages for t in v.parameters()), extra
    # changes to the model show through the view
    with torch.no_grad():
        model.blocks[0].in_proj_weight[d, 0] += 1.0
        assert float(v.blocks[0].k_weight[0, 0]) == float(model.blocks[0].in_proj_weight[d, 0])
        model.blocks[0].in_proj_weight[d, 0] -= 1.0


def test_view_functional_forward_matches(model):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model.encode_image(x)
        got = _view_forward(model.vision_view(), x)
    assert torch.allclose(ref, got, atol=1e-5, rtol=1e-4)


def test_config_json_round_trip():
    c = ToyCLIPConfig(width=48, mean=(0.1, 0.2, 0.3))
    back = ToyCLIPConfig.from_json(c.to_json())
    assert back == c and isinstance(back.mean, tuple)


def test_save_load(tmp_path, model):
    tok = ToyTokenizer(context_length=16)
    p = tmp_path / "m.safetensors"
    save_toy_clip(model, str(p), tok.vocab, info={"note": "x"})
    assert p.with_suffix(".json").exists()
    m2, tok2 = load_toy_clip(p)
    assert tok2.vocab == tok.vocab and tok2.context_length == 16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m2.encode_image(x), model.encode_image(x))
    assert m2.config == model.config


def test_normalize_pixels(model):
    img = torch.full((1, 32, 32, 3), 255, dtype=torch.uint8)
    x = model.normalize_pixels(img)
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x, torch.full_like(x, (1 - 0.5) / 0.25))
