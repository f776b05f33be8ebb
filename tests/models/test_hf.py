"""The Hugging Face transformers adapter: view, storage sharing, text side, parity."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cliplens import images  # noqa: E402
from cliplens.core import forward  # noqa: E402
from cliplens.errors import ModelLoadError, UnsupportedArchitectureError  # noqa: E402
from cliplens.images import OPENAI_CLIP_MEAN as CLIP_MEAN  # noqa: E402
from cliplens.images import OPENAI_CLIP_STD as CLIP_STD  # noqa: E402
from cliplens.models.hf import (  # noqa: E402
    HFCLIPAdapter,
    _features,
    vision_view_from_hf,
)

WORDS = ["a", "photo", "of", "cat", "dog", "the", "red", "square"]


def tiny_tokenizer():
    """A real CLIPTokenizer (byte-level BPE) over a tiny vocabulary, built offline."""
    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = []
    for w in WORDS:  # merge each word left to right: "p h", "ph o", ...
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            a, b = pieces[0], pieces[1]
            merges.append((a, b))
            vocab.setdefault(a + b, len(vocab))
            pieces = [a + b] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)))


def tiny_config(act: str = "quick_gelu", tok=None, **vision) -> transformers.CLIPConfig:
    tok = tok or tiny_tokenizer()
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        vocab_size=len(tok), max_position_embeddings=16, projection_dim=32,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    vis = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32, hidden_act=act,
    )
    vis.update(vision)
    return transformers.CLIPConfig(text_config=text, vision_config=vis, projection_dim=32)


def tiny_clip(act: str = "quick_gelu", seed: int = 0, **vision):
    torch.manual_seed(seed)
    model = transformers.CLIPModel(tiny_config(act, **vision)).eval()
    with torch.no_grad():  # make biases and LayerNorm affine non-trivial (HF inits them to 0/1)
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_clip()


@pytest.fixture(scope="module")
def adapter(model, tok):
    return HFCLIPAdapter(model, "tiny", tokenizer=tok)


# ---- the view ----------------------------------------------------------------------------------


def test_view_shapes(adapter):
    v = adapter.vision
    assert v.image_size == (32, 32) and v.patch_size == (8, 8) and v.grid_size == (4, 4)
    assert v.width == 64 and v.num_layers == 2 and v.num_heads == 4 and v.head_dim == 16
    assert v.embed_dim == 32 and tuple(v.proj.shape) == (64, 32)
    assert tuple(v.patch_weight.shape) == (64, 3, 8, 8) and v.patch_bias is None
    assert tuple(v.positional_embedding.shape) == (17, 64) and v.num_tokens() == 17
    assert v.ln_pre is not None and v.ln_post is not None
    b = v.blocks[0]
    assert b.qkv_weight is None and b.qkv_bias is None
    assert tuple(b.q_weight.shape) == (64, 64) and tuple(b.fc1_weight.shape) == (128, 64)
    assert b.activation == "quick_gelu" and b.ls_1 is None and b.ls_2 is None
    assert b.ln_1.eps == pytest.approx(1e-5)
    assert v.source == "transformers:tiny"
    assert adapter.family == "transformers" and adapter.context_length == 16


def test_view_shares_storage(model):
    view = vision_view_from_hf(model)
    ptrs = {p.data_ptr() for p in model.parameters()}
    for t in view.parameters():
        assert t.data_ptr() in ptrs
    vm = model.vision_model
    layer = vm.encoder.layers[1]
    assert view.proj.data_ptr() == model.visual_projection.weight.data_ptr()
    assert view.proj._base is model.visual_projection.weight  # a transpose view, not a copy
    assert view.blocks[1].k_weight is layer.self_attn.k_proj.weight
    assert view.blocks[1].fc2_bias is layer.mlp.fc2.bias
    assert view.positional_embedding is vm.embeddings.position_embedding.weight
    assert view.class_embedding is vm.embeddings.class_embedding
    assert view.ln_pre.weight is vm.pre_layrnorm.weight and view.ln_post.bias is vm.post_layernorm.bias


def test_view_sees_in_place_edits():
    model = tiny_clip()
    view = vision_view_from_hf(model)
    with torch.no_grad():
        model.vision_model.encoder.layers[0].self_attn.q_proj.weight[0, 0] = 123.0
        model.visual_projection.weight[3, 5] = -7.0
    assert view.blocks[0].q_weight[0, 0].item() == 123.0
    assert view.proj[5, 3].item() == -7.0


@pytest.mark.parametrize(
    "act, expected",
    [("quick_gelu", "quick_gelu"), ("gelu", "gelu"), ("gelu_new", "gelu_tanh"),
     ("gelu_pytorch_tanh", "gelu_tanh")],
)
def test_activation_mapping(act, expected):
    view = vision_view_from_hf(tiny_clip(act))
    assert {b.activation for b in view.blocks} == {expected}


@pytest.mark.parametrize("act", ["relu", "gelu_fast", "silu"])
def test_unsupported_activation(act):
    model = tiny_clip(act)
    with pytest.raises(UnsupportedArchitectureError, match=act):
        HFCLIPAdapter(model)


def test_siglip_now_loads_and_decomposes():
    """SigLIP was refused before the MAP head existed; it now wraps, runs as the source does, and decomposes."""
    cfg = transformers.SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    a = HFCLIPAdapter(transformers.SiglipModel(cfg))
    assert a.vision.head.kind == "map" and a.vision.class_embedding is None
    x = torch.randn(2, 3, 32, 32)
    ref = a.source_encode_image(x)
    assert (a.encode_image(x) - ref).abs().max() <= 1e-5 * ref.norm(dim=-1).max()
    a.decompose(x).check()


def test_non_clip_models_are_unsupported():
    vit = transformers.ViTModel(transformers.ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8))
    with pytest.raises(UnsupportedArchitectureError, match="model_type 'vit'"):
        HFCLIPAdapter(vit)
    text_only = transformers.CLIPTextModelWithProjection(tiny_config().text_config)
    with pytest.raises(UnsupportedArchitectureError, match="text model only"):
        HFCLIPAdapter(text_only)


# ---- the source's own forward ----------------------------------------------------------------------


def test_features_handles_tensor_and_model_output(model):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=x)
    emb = _features(out, "image_embeds")
    assert emb.shape == (2, 32)
    assert _features(emb, "image_embeds") is emb  # transformers 4.x returned the tensor itself


def test_source_encode_image_native_and_other_sizes(adapter, model):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(pixel_values=x, input_ids=torch.zeros(2, 4, dtype=torch.long)).image_embeds
    emb = adapter.source_encode_image(x)  # un-normalised; CLIPModel.forward normalises
    torch.testing.assert_close(torch.nn.functional.normalize(emb, dim=-1), ref)
    y = adapter.source_encode_image(torch.randn(1, 3, 48, 40))  # interpolate_pos_encoding switched on
    assert y.shape == (1, 32) and torch.isfinite(y).all()


def test_vision_with_projection_and_separate_text_model(tok):
    full = tiny_clip()
    vision = transformers.CLIPVisionModelWithProjection(full.config.vision_config).eval()
    text = transformers.CLIPTextModelWithProjection(full.config.text_config).eval()
    a = HFCLIPAdapter(vision, "v", tokenizer=tok, text_model=text)
    assert a.vision.embed_dim == 32 and a.vision.proj._base is vision.visual_projection.weight
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.source_encode_image(x), vision(pixel_values=x).image_embeds)
    tokens = a._tokenize(["a red square"])
    with torch.no_grad():
        torch.testing.assert_close(a._encode_tokens(tokens), text(**tokens).text_embeds)
    assert a.context_length == 16
    a.to(dtype=torch.float64)
    assert a.dtype == torch.float64 and text.text_projection.weight.dtype == torch.float64


def test_vision_model_without_projection():
    vision = transformers.CLIPVisionModel(tiny_config().vision_config).eval()
    a = HFCLIPAdapter(vision, "bare")
    assert a.vision.proj is None and a.vision.embed_dim == 64
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.source_encode_image(x), vision(pixel_values=x).pooler_output)
    with pytest.raises(ModelLoadError, match="text"):
        a._tokenize(["a cat"])


def test_metaclip2_is_supported():
    a = HFCLIPAdapter(_tiny_metaclip2())
    assert a.vision.blocks[0].activation == "gelu"
    assert a.vision.embed_dim == 16 and a.source_encode_image(torch.randn(1, 3, 32, 32)).shape == (1, 16)


# ---- text side -----------------------------------------------------------------------------------


def test_text_side(adapter, model, tok):
    texts = ["a photo of a cat", "the red square"]
    tokens = adapter._tokenize(texts)
    assert tokens["input_ids"].shape == (2, 16) and tokens["attention_mask"].shape == (2, 16)
    assert tokens["input_ids"][0, 0].item() == tok.bos_token_id
    assert adapter._count_tokens(texts) == [7, 5]  # start + words + end
    long = " ".join(["dog"] * 30)
    assert adapter._count_tokens([long]) == [32]
    trunc = adapter._tokenize([long])["input_ids"][0]
    assert trunc.shape == (16,) and trunc[-1].item() == tok.eos_token_id  # truncated, end token kept
    emb = adapter._encode_tokens(tokens)
    with torch.no_grad():
        ref = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    pixel_values=torch.zeros(1, 3, 32, 32)).text_embeds
    torch.testing.assert_close(torch.nn.functional.normalize(emb, dim=-1), ref)


def test_missing_tokenizer_fails_only_when_text_is_used():
    a = HFCLIPAdapter(tiny_clip())  # built from a config: no name, no tokenizer
    assert a.vision.num_layers == 2  # images work
    with pytest.raises(ModelLoadError, match="tokenizer=") as e:
        a._tokenize(["a cat"])
    assert "no tokenizer" in str(e.value)


def test_encode_text_end_to_end(adapter):
    out = adapter.encode_text(["a photo of a cat", "a dog"])
    assert out.shape == (2, 32)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


# ---- preprocessing ------------------------------------------------------------------------------------


def test_default_processor_and_preprocess_config(adapter):
    p = adapter.processor
    assert isinstance(p, transformers.CLIPImageProcessor)
    assert dict(p.crop_size) == {"height": 32, "width": 32} and p.size["shortest_edge"] == 32
    assert tuple(p.image_mean) == pytest.approx(CLIP_MEAN) and tuple(p.image_std) == pytest.approx(CLIP_STD)
    cfg = adapter.preprocess_config
    assert isinstance(cfg, images.PreprocessConfig) and cfg.image_size == (32, 32)
    assert cfg.mean == pytest.approx(CLIP_MEAN) and cfg.std == pytest.approx(CLIP_STD)


def test_given_processor_is_kept(model):
    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
    assert HFCLIPAdapter(model, processor=proc).processor is proc


def test_logit_scale(adapter, model):
    assert adapter.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))


# ---- parity: cliplens's functional forward vs transformers' get_image_features ------------------------


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_forward_parity(act, batch, size):
    a = HFCLIPAdapter(tiny_clip(act, seed=batch))
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))
    ref = a.source_encode_image(x)
    with torch.no_grad():
        out = forward.run_vision(a.vision, x).embedding
    assert out.shape == ref.shape == (batch, 32)
    err = (out - ref).abs().max().item()
    assert err <= 1e-5 * ref.norm(dim=-1).max().item(), err


def _tiny_metaclip2():
    torch.manual_seed(0)
    cfg = transformers.MetaClip2Config(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, hidden_act="gelu"),
        projection_dim=16,
    )
    return transformers.MetaClip2Model(cfg).eval()


@pytest.mark.parametrize("build", ["gelu_tanh_deeper", "metaclip2"])
def test_forward_parity_other_models(build):
    if build == "metaclip2":
        a = HFCLIPAdapter(_tiny_metaclip2())
    else:
        a = HFCLIPAdapter(tiny_clip("gelu_pytorch_tanh", num_hidden_layers=4, patch_size=4))
    x = torch.randn(2, 3, 32, 32)
    ref = a.source_encode_image(x)
    with torch.no_grad():
        out = forward.run_vision(a.vision, x).embedding
    assert (out - ref).abs().max().item() <= 1e-5 * ref.norm(dim=-1).max().item()
