"""Causal text towers run only up to the longest prompt of a batch: equal to the source library's own full-length
``encode_text`` / ``get_text_features`` (≤ 1e-6 relative, fp32) on random weights, for every family; towers that
must keep the full length (bidirectional, 'last' pooling, a subclass) are never cut."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from cliplens.text import IMAGENET_TEMPLATES, encode_texts, zero_shot_classifier
from tests.conftest import rel_err

#: prompts of very different lengths (in tokens: 3 to the whole context), one truncated at the context
LONG = " ".join(["word"] * 200)
PROMPTS = ["a", "a photo of a cat.", "the red square", "two dogs playing in the snow at night under a full moon, "
           "seen from far away through the branches of an old tree", LONG, "x y", "a photo of many dog."]


def _recording(adapter):
    """Record the token length of every batch the adapter's text tower receives."""
    seen: list[int] = []
    inner = adapter._encode_tokens

    def encode(tokens):
        ids = tokens["input_ids"] if isinstance(tokens, dict) else tokens
        seen.append(int(ids.shape[1]))
        return inner(tokens)

    adapter._encode_tokens = encode
    return seen


def _encode(adapter, texts, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long prompt's truncation warning
        return encode_texts(adapter, texts, normalize=False, **kw)


# ---- open_clip ---------------------------------------------------------------------------------------

def _oc_model(kind: str):
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    vision = dict(image_size=32, patch_size=16, width=32, layers=1, head_width=16)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    if kind == "vit-b-16-text":  # ViT-B-16's own text tower shape (width 512, 8 heads), 2 of its 12 layers
        text = dict(copy.deepcopy(open_clip.get_model_config("ViT-B-16")["text_cfg"]), layers=2)
        return open_clip.CLIP(512, vision_cfg=vision, text_cfg=text).eval()
    if kind == "clip-argmax":
        return open_clip.CLIP(32, vision_cfg=vision, text_cfg=text).eval()
    if kind == "custom-eos":  # CustomTextCLIP with open_clip's TextTransformer, causal, pooled at the first eos
        return open_clip.CustomTextCLIP(32, vision_cfg=vision, text_cfg=dict(text, pool_type="eos",
                                                                              eos_id=49407)).eval()
    if kind == "siglip-like":  # bidirectional, pooled at the last position: must keep the full length
        return open_clip.CustomTextCLIP(32, vision_cfg=vision, text_cfg=dict(text, pool_type="last",
                                                                              no_causal_mask=True)).eval()
    if kind == "clip-last":  # causal but pooled at the last position: must keep the full length
        return open_clip.CLIP(32, vision_cfg=vision, text_cfg=dict(text, pool_type="last")).eval()
    if kind == "subclass":  # a subclass with its own encode_text: cliplens cannot know what it reads
        class Mine(open_clip.CLIP):
            def encode_text(self, text, normalize=False):
                return super().encode_text(text, normalize=normalize) * 2

        return Mine(32, vision_cfg=vision, text_cfg=text).eval()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, cut", [("clip-argmax", True), ("vit-b-16-text", True), ("custom-eos", True),
                                       ("siglip-like", False), ("clip-last", False), ("subclass", False)])
def test_open_clip_equals_encode_text(kind, cut):
    open_clip = pytest.importorskip("open_clip")
    from cliplens.models.openclip import OpenCLIPAdapter

    model = _oc_model(kind)
    tok = open_clip.get_tokenizer("ViT-B-32")
    adapter = OpenCLIPAdapter(model, "ViT-B-32", tokenizer=tok)
    with torch.no_grad():
        ref = model.encode_text(tok(PROMPTS))  # the source, full length (77), one batch
    seen = _recording(adapter)
    out = _encode(adapter, PROMPTS, batch_size=3)
    assert rel_err(out, ref) <= 1e-6
    assert (adapter._pooled_positions(tok(PROMPTS)) is not None) == cut
    if cut:  # sorted by length, each batch as long as its longest prompt; the truncated one is last, at 77
        assert seen == sorted(seen) and seen[0] <= 5 and seen[-1] == 77 and len(set(seen)) == 3
    else:
        assert seen == [77, 77, 77]


def test_open_clip_batch_order_is_the_callers():
    """Sorting by length must not reorder the result: each row is its own prompt's (against one at a time)."""
    pytest.importorskip("open_clip")
    from cliplens.models.openclip import OpenCLIPAdapter

    model = _oc_model("clip-argmax")
    adapter = OpenCLIPAdapter(model, "ViT-B-32")
    texts = PROMPTS[::-1] + [f"a photo of a {c}." for c in ("cat", "truck", "hot air balloon")]
    out = _encode(adapter, texts, batch_size=4)
    one = torch.cat([_encode(adapter, [t]) for t in texts])
    assert rel_err(out, one) <= 1e-6


def test_open_clip_zero_shot_equals_the_recipe_on_encode_text():
    open_clip = pytest.importorskip("open_clip")
    from cliplens.models.openclip import OpenCLIPAdapter

    model = _oc_model("clip-argmax")
    tok = open_clip.get_tokenizer("ViT-B-32")
    adapter = OpenCLIPAdapter(model, "ViT-B-32", tokenizer=tok)
    names, templates = ["cat", "traffic light", "a very long class name with many words in it"], IMAGENET_TEMPLATES
    z = zero_shot_classifier(adapter, names, templates, batch_size=64)
    with torch.no_grad():  # the notebook's recipe on the source's full-length encode_text
        want = torch.stack([torch.nn.functional.normalize(torch.nn.functional.normalize(
            model.encode_text(tok([t.format(n) for t in templates])), dim=-1).mean(0), dim=-1) for n in names])
    assert rel_err(z, want) <= 1e-6


# ---- transformers ------------------------------------------------------------------------------------

def _hf_tokenizer(transformers):
    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    merges = []
    for w in ["a", "photo", "of", "cat", "dog", "the", "red", "square", "word", "snow", "two"]:
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the highest id, as in CLIP (padding is the end token too)
    return transformers.CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)))


def _hf_model(transformers, tok, kind: str):
    torch.manual_seed(0)
    eos = 2 if kind == "legacy-eos" else tok.eos_token_id  # 2: CLIP's argmax rule (configs before PR #24773)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=len(tok),
                max_position_embeddings=40, projection_dim=32, bos_token_id=tok.bos_token_id, eos_token_id=eos,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16, projection_dim=32)
    if kind == "metaclip2":
        cfg = transformers.MetaClip2Config(text_config=text, vision_config=vision, projection_dim=32)
        return transformers.MetaClip2Model(cfg).eval(), None
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    if kind == "separate":
        vis = transformers.CLIPVisionModelWithProjection(cfg.vision_config).eval()
        return vis, transformers.CLIPTextModelWithProjection(cfg.text_config).eval()
    return model, None


@pytest.mark.parametrize("kind", ["first-eos", "legacy-eos", "separate", "metaclip2"])
def test_transformers_equals_get_text_features(kind):
    transformers = pytest.importorskip("transformers")
    from cliplens.models.hf import HFCLIPAdapter, _features

    tok = _hf_tokenizer(transformers)
    model, text_model = _hf_model(transformers, tok, kind)
    adapter = HFCLIPAdapter(model, "tiny", tokenizer=tok, text_model=text_model)
    src = text_model if text_model is not None else model
    enc = tok(PROMPTS, padding="max_length", max_length=40, truncation=True, return_tensors="pt")
    with torch.no_grad():  # the source at full length (the context, 40), one batch
        ref = _features(src.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
                        if hasattr(src, "get_text_features") else src(**enc), "text_embeds")
    seen = _recording(adapter)
    out = _encode(adapter, PROMPTS, batch_size=3)
    assert rel_err(out, ref) <= 1e-6
    assert seen == sorted(seen) and seen[0] < 10 and seen[-1] == 40


def test_transformers_subclass_keeps_the_full_length():
    transformers = pytest.importorskip("transformers")
    from cliplens.models.hf import HFCLIPAdapter

    tok = _hf_tokenizer(transformers)
    model, _ = _hf_model(transformers, tok, "first-eos")

    class Mine(transformers.CLIPModel):
        pass

    mine = Mine(model.config).eval()
    mine.load_state_dict(model.state_dict())
    adapter = HFCLIPAdapter(mine, "tiny", tokenizer=tok)
    assert adapter._pooled_positions(adapter._tokenize(PROMPTS)) is None
    seen = _recording(adapter)
    _encode(adapter, PROMPTS, batch_size=4)
    assert seen == [40, 40]


# ---- the toy CLIP ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["mean", "eot"])
def test_toy_equals_its_encode_text(pool):
    from cliplens.models.toy import ToyCLIPAdapter
    from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig
    from cliplens.toyworld.tokenizer import ToyTokenizer, build_vocab

    torch.manual_seed(0)
    vocab = build_vocab()
    cfg = ToyCLIPConfig(width=32, layers=1, heads=2, embed_dim=16, text_width=32, text_layers=2, text_heads=2,
                        vocab_size=len(vocab), context_length=24, text_pool=pool)
    model = ToyCLIP(cfg).eval()
    tok = ToyTokenizer(vocab, context_length=24)
    adapter = ToyCLIPAdapter(model, tok)
    texts = ["red", "a photo of a red circle", "a small blue star on the left and a large green square at the top "
             "on a noisy white background", " ".join(["circle"] * 40), "two shapes"]
    with torch.no_grad():
        ref = model.encode_text(tok.encode(texts))
    seen = _recording(adapter)
    out = _encode(adapter, texts, batch_size=2)
    assert rel_err(out, ref) <= 1e-6
    assert seen == sorted(seen) and seen[0] <= 5 and seen[-1] == 24
