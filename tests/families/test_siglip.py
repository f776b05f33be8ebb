"""The SigLIP / SigLIP 2 family (cliplens.models.siglip) against the sources and the float64 references.

At B/16 width (768, 12 heads; 2 blocks), every bias and LayerNorm moved (tests/families/models.py):

* parity: cliplens's ``encode_image`` equals the source's own image embedding in float32 (≤ 1e-5 × the norm),
  for open_clip ``ViT-B-16-SigLIP`` / ``ViT-B-16-SigLIP2`` and transformers ``SiglipModel``,
  ``SiglipVisionModel``, ``Siglip2Model``, ``Siglip2VisionModel`` (at the native grid);
* exactness: in float64 the decomposition sums to the embedding, and its pooled attention per pool head ×
  source token, lumped MAP MLP, per-layer split and per layer × head split equal
  ``reference_siglip_open_clip`` / ``reference_siglip_hf``'s terms, converted by the rule stated in
  :func:`_converted` (cliplens gives each term its share of the head's constant; the reference keeps the biases
  apart);
* dense output: the sources have no token output for a MAP head; cliplens's rule (the probe's attention
  restricted to one token) is checked against the source's own pool run on each token alone;
* text: a SentencePiece model trained here is the tokenizer (open_clip ``HFTokenizer`` and transformers), and
  ``encode_text`` equals the source's own text features with max-length padding; the text towers are not
  cut short (not causal);
* scores: ``logit_bias`` and ``score_kind`` come from the source, and probabilities are the source's
  ``sigmoid(logit_scale · cos + logit_bias)``.
"""

from __future__ import annotations

import copy
import io
import os
import warnings

import pytest
import torch

from tests.families import models, reference

pytest.importorskip("open_clip")
pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

PARITY_TOL = 1e-5  # float32, relative to the embedding's norm
EXACT_TOL = 1e-10  # float64
OPEN_CLIP_NAMES = ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"]
HF_KINDS = ["SiglipModel", "SiglipVisionModel", "Siglip2Model", "Siglip2VisionModel"]




def _wrap(model, name=""):
    import cliplens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cliplens.wrap(model, name=name)


def _hf_model(kind: str):
    siglip2 = kind.startswith("Siglip2")
    with_text = not kind.endswith("VisionModel")
    return models.hf_siglip2(layers=2, with_text=with_text) if siglip2 else models.hf_siglip(layers=2,
                                                                                               with_text=with_text)


@pytest.fixture(scope="module", params=OPEN_CLIP_NAMES)
def oc_case(request):
    model = models.open_clip_timm(request.param, layers=2)
    return request.param, model, _wrap(model, request.param)


@pytest.fixture(scope="module", params=HF_KINDS)
def hf_case(request):
    model = _hf_model(request.param)
    assert type(model).__name__ == request.param
    return request.param, model, _wrap(model)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return reference.rel_err(a, b)


# ------------------------------------------------------------------------------------------------------ parity


def _parity(adapter, size) -> float:
    with torch.no_grad():
        f32 = copy.deepcopy(adapter.model).float()
        a = _wrap(f32, adapter.name)
        x = models.pixels(2, size).float()
        return _rel(a.encode_image(x), a.source_encode_image(x))


def test_open_clip_encode_image_equals_the_source_fp32(oc_case):
    name, _, adapter = oc_case
    assert adapter.vision.head.kind == "map" and adapter.vision.class_embedding is None
    assert adapter.vision.head.activation == "gelu"  # timm's SigLIP MAP MLP: the exact GELU
    assert {b.activation for b in adapter.vision.blocks} == {"gelu"}
    assert _parity(adapter, 224) <= PARITY_TOL


def test_hf_encode_image_equals_the_source_fp32(hf_case):
    kind, _, adapter = hf_case
    assert adapter.vision.head.kind == "map" and adapter.vision.head.activation == "gelu_tanh"
    size = adapter.vision.image_size
    assert size == ((256, 256) if kind.startswith("Siglip2") else (224, 224))
    assert _parity(adapter, size) <= PARITY_TOL


def test_siglip2_source_forward_sees_the_same_patches():
    """The view reads Siglip2's patch Linear as a convolution: a pixel moved in one patch and channel changes only
    that patch's token, in both (the patch feature order is (row, column, channel))."""
    from cliplens.models.hf import naflex_inputs as patchify

    x = torch.zeros(1, 3, 32, 32, dtype=torch.float64)
    x[0, 2, 17, 5] = 1.0  # channel 2, patch row 1 col 0 (16 px patches), at (1, 5) inside it
    values, mask, shapes = patchify(x, 16)
    assert shapes.tolist() == [[2, 2]] and mask.tolist() == [[1, 1, 1, 1]]
    hot = values[0].nonzero().tolist()
    assert hot == [[2, (1 * 16 + 5) * 3 + 2]]


# ---------------------------------------------------------------------------------------------- exactness


def _converted(r: dict[str, torch.Tensor], layers: int, pool_heads: int, heads: int) -> dict[str, torch.Tensor]:
    """The reference's terms in cliplens's convention. The reference keeps the MAP head's constant
    ``C = Σ_hp W_O^hp b_V^hp + b_O`` (``constants``) and each block's out-projection bias (``attn_bias_terms``)
    apart; cliplens spreads them: a pool term (pool head r, token n) carries ``α[r, n]·C/R``; each residual
    site (the embedding, each attention layer, each MLP) carries ``s·C``, ``s = 1/(2L+1)``; a layer × head term
    carries ``(bias_l + s·C)/H``."""
    c = r["constants"]
    s = 1.0 / (2 * layers + 1)
    w = torch.tensor([s] + [2 * s] * layers, dtype=c.dtype)
    return dict(
        pool_terms=r["pool_terms"] + r["pool_attn"][..., None] * c[:, None, None] / pool_heads,
        layer_terms=r["layer_terms"] + w[None, :, None] * c[:, None],
        attn_layer_terms=r["attn_layer_terms"] + s * c[:, None],
        mlp_layer_terms=r["mlp_layer_terms"] + s * c[:, None],
        head_terms=r["head_terms"] + (r["attn_bias_terms"][:, :, None] + s * c[:, None, None]) / heads,
    )


def _check_against_reference(adapter, r: dict[str, torch.Tensor], x: torch.Tensor) -> None:
    v = adapter.vision
    dec = adapter.decompose(x, dtype=torch.float64)
    assert dec.check() <= EXACT_TOL
    assert _rel(dec.embedding, r["embedding"]) <= EXACT_TOL
    want = _converted(r, v.num_layers, v.head.num_readouts, v.num_heads)
    # the README's three calls, and their shapes
    B, Hp, N, E, L = x.shape[0], v.head.num_readouts, v.num_tokens(), v.embed_dim, v.num_layers
    pool, lumped, layers = dec.pool_terms(), dec.nonlinear_term(), dec.source_layer_terms()
    assert pool.shape == (B, Hp, N, E) and lumped.shape == (B, E) and layers.shape == (B, L + 1, E)
    assert _rel(pool, want["pool_terms"]) <= EXACT_TOL
    assert _rel(lumped, r["mlp_term"]) <= EXACT_TOL
    assert _rel(layers, want["layer_terms"]) <= EXACT_TOL
    assert _rel(dec.attention_layer_terms(), want["attn_layer_terms"]) <= EXACT_TOL
    assert _rel(dec.mlp_terms()[:, 1:], want["mlp_layer_terms"]) <= EXACT_TOL
    assert _rel(dec.per_head(), want["head_terms"]) <= EXACT_TOL
    # each of the three sums, with the lumped MLP, to the embedding
    for parts in (pool.sum((1, 2)), layers.sum(1), dec.head_terms().sum((1, 2, 3)) + dec.mlp_terms().sum(1)):
        assert _rel(parts + lumped, dec.embedding) <= EXACT_TOL


def test_open_clip_decomposition_equals_the_reference(oc_case):
    _, model, adapter = oc_case
    x = models.pixels(2, 224)
    _check_against_reference(adapter, reference.reference_siglip_open_clip(model, x), x)


@pytest.mark.parametrize("kind", ["SiglipModel", "SiglipVisionModel"])
def test_hf_decomposition_equals_the_reference(kind):
    model = _hf_model(kind)
    x = models.pixels(2, 224)
    _check_against_reference(_wrap(model), reference.reference_siglip_hf(model, x), x)


def test_siglip2_decomposition_equals_the_naflex_reference_at_the_native_grid():
    """Siglip2 read at its native 16×16 grid equals the NaFlex reference run on the whole image's patches (the
    source resizes its positional table in float32, so the float64 comparison is to 1e-7)."""
    from cliplens.models.hf import naflex_inputs as patchify

    model = _hf_model("Siglip2Model")
    adapter = _wrap(model)
    x = models.pixels(2, 256)
    r = reference.reference_siglip2_hf(model, *patchify(x, 16))
    dec = adapter.decompose(x, dtype=torch.float64)
    assert dec.check() <= EXACT_TOL
    want = _converted(r, 2, 12, 12)
    assert _rel(dec.pool_terms(), want["pool_terms"]) <= 1e-7
    assert _rel(dec.source_layer_terms(), want["layer_terms"]) <= 1e-7
    assert _rel(dec.nonlinear_term(), r["mlp_term"]) <= 1e-7


# -------------------------------------------------------------------------------------------------- dense


def test_dense_output_is_the_probe_restricted_to_each_token(oc_case):
    """There is no source token output for a MAP head; the rule (the probe attends to one token only, so α = 1
    on it) is checked against the source's own ``attn_pool`` run on each final token alone."""
    _, model, adapter = oc_case
    trunk = model.visual.trunk
    x = models.pixels(1, 224)
    with torch.no_grad():
        feats = trunk.forward_features(x)  # the source's own final tokens after trunk.norm
        b, n, d = feats.shape
        alone = trunk.attn_pool(feats.reshape(b * n, 1, d)).reshape(b, n, -1)
    dense = adapter.encode_dense(x)
    assert dense.shape == alone.shape
    assert _rel(dense, alone) <= EXACT_TOL


# ---------------------------------------------------------------------------------------------------- text


CORPUS = ["a photo of a dog", "a photo of a cat", "a red car on the road", "two birds in the sky",
          "the quick brown fox jumps over the lazy dog", "a bowl of fruit on a table", "a child with a kite"]
TEXTS = ["a dog", "two red cats", "fruit on a table"]  # each fits the tiny towers' 16 positions


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory):
    """A SentencePiece unigram model trained here, as a transformers fast tokenizer (SigLIP's layout: ``</s>``
    appended, ``</s>`` also the pad token, input ids only), saved to a folder; and the SentencePiece processor.

    (transformers' ``SiglipTokenizer`` reads the model through protobuf, which the environment lacks: the same
    pieces and scores go into a ``tokenizers`` Unigram model, checked below against SentencePiece itself.)"""
    spm = pytest.importorskip("sentencepiece")
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 10), model_writer=buf, vocab_size=100,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tk = Tokenizer(Unigram(vocab, unk_id=sp.unk_id(), byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", sp.eos_id())])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="</s>",
                                               unk_token="<unk>", model_input_names=["input_ids"])
    folder = tmp_path_factory.mktemp("spm") / "tokenizer"
    tok.save_pretrained(folder)
    return tok, sp, str(folder)


def test_the_tokenizer_is_the_sentencepiece_model(spm_tokenizer):
    tok, sp, _ = spm_tokenizer
    for t in TEXTS:
        assert tok(t)["input_ids"] == sp.encode(t) + [sp.eos_id()]


def test_open_clip_text_equals_the_source_with_a_sentencepiece_tokenizer(oc_case, spm_tokenizer):
    from open_clip.tokenizer import HFTokenizer

    import cliplens
    from cliplens.models.openclip import causal_text_tower

    name, model, _ = oc_case
    _, _, folder = spm_tokenizer
    ctx = model.text.context_length
    tok = HFTokenizer(folder, context_length=ctx, clean="canonicalize")  # open_clip's own SigLIP wrapper
    adapter = cliplens.wrap(model, name=name, tokenizer=tok)
    assert causal_text_tower(model) is None  # bidirectional, pooled at the last position: never cut short
    ids = tok(TEXTS)
    assert ids.shape == (len(TEXTS), ctx)
    with torch.no_grad():
        want = model.encode_text(ids)
    got = adapter.encode_text(TEXTS, normalize=False)
    assert _rel(got.to(want.dtype), want) <= PARITY_TOL


def test_hf_text_equals_the_source_with_max_length_padding(spm_tokenizer):
    from cliplens.models.hf import HFCLIPAdapter, causal_text_model

    tok, _, _ = spm_tokenizer
    model = _hf_model("SiglipModel")
    adapter = HFCLIPAdapter(model, tokenizer=tok)
    assert causal_text_model(model) is None
    ctx = model.config.text_config.max_position_embeddings
    tokens = adapter._tokenize(TEXTS)
    assert set(tokens) == {"input_ids"} and tokens["input_ids"].shape == (len(TEXTS), ctx)
    enc = tok(TEXTS, padding="max_length", max_length=ctx, truncation=True, return_tensors="pt")  # SigLIP's card
    with torch.no_grad():
        want = reference._pooled(model.get_text_features(input_ids=enc["input_ids"]))
    assert _rel(adapter.encode_text(TEXTS, normalize=False).to(want.dtype), want) <= PARITY_TOL


def test_load_by_name_offline_defers_the_tokenizer_error_to_text(spm_tokenizer):
    """``cliplens.load("ViT-B-16-SigLIP", pretrained="random")`` works offline: images at once; text raises one
    paragraph naming ``tokenizer=`` (never CLIP's BPE in its place); with ``tokenizer=`` text works."""
    from open_clip.tokenizer import HFTokenizer

    import cliplens
    from cliplens.errors import ModelLoadError

    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("needs HF_HUB_OFFLINE=1 (the Hub tokenizer must be out of reach)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = cliplens.load("ViT-B-16-SigLIP", pretrained="random")
    assert a.vision.head.kind == "map" and a.score_kind == "sigmoid"
    assert a.encode_image(torch.zeros(1, 3, 224, 224)).shape == (1, 768)
    with pytest.raises(ModelLoadError, match="tokenizer=") as e:
        a.encode_text("a dog")
    assert "timm/ViT-B-16-SigLIP" in str(e.value) and "\n" not in str(e.value)
    a.tokenizer = HFTokenizer(spm_tokenizer[2], context_length=64, clean="canonicalize")
    assert a.encode_text(["a dog", "a cat"]).shape == (2, 768)


# -------------------------------------------------------------------------------------------------- scores


def test_scores_are_the_sources_sigmoid_with_its_bias(oc_case, spm_tokenizer):
    from open_clip.tokenizer import HFTokenizer

    import cliplens
    from cliplens.text.zeroshot import probabilities

    name, model, _ = oc_case
    tok = HFTokenizer(spm_tokenizer[2], context_length=model.text.context_length, clean="canonicalize")
    adapter = cliplens.wrap(model, name=name, tokenizer=tok)
    assert adapter.score_kind == "sigmoid"
    assert adapter.logit_bias == float(model.logit_bias.detach()) and adapter.logit_bias != 0.0
    x = models.pixels(2, 224)
    with torch.no_grad():
        img, txt, scale, bias = model(x, tok(TEXTS))[:4]  # open_clip's own forward (normalised features)
        want = torch.sigmoid(scale * img @ txt.T + bias)
    got = probabilities(adapter, adapter.encode_image(x), adapter.encode_text(TEXTS))
    assert got.shape == (2, len(TEXTS))
    assert (got.double() - want).abs().max() <= 1e-5
    assert not torch.allclose(got.sum(1), torch.ones(2, dtype=got.dtype))  # not a softmax over the texts


def test_hf_scores_are_the_sources_logits_through_a_sigmoid(spm_tokenizer):
    from cliplens.models.hf import HFCLIPAdapter
    from cliplens.text.zeroshot import probabilities

    tok = spm_tokenizer[0]
    # the towers' widths must agree for the source to score (SigLIP has no projections): both 64 here
    vision = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=1, image_size=32,
                  patch_size=16)
    torch.manual_seed(0)
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=models.HF_TINY_TEXT, vision_config=vision))
    model = models.perturb(model.eval()).double()
    adapter = HFCLIPAdapter(model, tokenizer=tok)
    assert adapter.score_kind == "sigmoid" and adapter.logit_bias == float(model.logit_bias.detach())
    x = models.pixels(2, 32)
    ctx = model.config.text_config.max_position_embeddings
    enc = tok(TEXTS, padding="max_length", max_length=ctx, truncation=True, return_tensors="pt")
    with torch.no_grad():
        want = torch.sigmoid(model(input_ids=enc["input_ids"], pixel_values=x).logits_per_image)
    got = probabilities(adapter, adapter.encode_image(x), adapter.encode_text(TEXTS))
    assert (got.double() - want).abs().max() <= 1e-5


def test_clip_scores_stay_a_softmax_without_bias():
    import cliplens
    from cliplens.text.zeroshot import probabilities, scores_to_probabilities

    toy = cliplens.load("toy")
    assert toy.score_kind == "softmax" and toy.logit_bias == 0.0
    img, txt = torch.randn(3, 8), torch.randn(4, 8)
    cos = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    assert torch.equal(probabilities(toy, img, txt), (toy.logit_scale * cos).softmax(-1))
    assert torch.equal(scores_to_probabilities(cos, scale=10.0, bias=-2.0, kind="sigmoid"),
                       torch.sigmoid(10.0 * cos - 2.0))


# ------------------------------------------------------------------------------------------ family, errors


def test_the_family_claims_siglip_and_not_pe_core():
    import open_clip

    from cliplens.models.families import family_for, supported_config
    from cliplens.models.siglip import open_clip_config

    for name in ("ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "ViT-SO400M-14-SigLIP", "ViT-L-16-SigLIP-384"):
        fam, note = supported_config(open_clip.get_model_config(name))
        assert fam.name == "siglip" and "MAP" in note
    assert open_clip_config(open_clip.get_model_config("PE-Core-B-16")) is None  # an Eva trunk: not this family
    assert open_clip_config(open_clip.get_model_config("ViT-B-16")) is None
    assert family_for(_hf_model("SiglipVisionModel")).name == "siglip"


def test_a_tower_variant_it_cannot_read_is_refused_in_one_paragraph(oc_case):
    from cliplens.errors import UnsupportedArchitectureError
    from cliplens.models.siglip import vision_view_from_open_clip

    name, model, _ = oc_case
    m = copy.deepcopy(model)
    m.visual.trunk.attn_pool.pos_embed = torch.nn.Parameter(torch.zeros(196, 768, dtype=torch.float64))
    with pytest.raises(UnsupportedArchitectureError, match="positional embedding") as e:
        vision_view_from_open_clip(m, name)
    assert name in str(e.value) and "\n" not in str(e.value)


def test_a_hub_tokenizer_counts_as_a_hub_fetch():
    """Building ViT-B-16-SigLIP fetches its tokenizer from the Hub: the load looks at the Hub once (offline_guard)
    instead of retrying for a minute when it is unreachable."""
    import open_clip

    from cliplens.models.openclip import _needs_hub

    assert _needs_hub(open_clip, "ViT-B-16-SigLIP", None)
    assert not _needs_hub(open_clip, "ViT-B-16", None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_decompositions_sum_within_their_tolerance(oc_case, dtype):
    """In fp16 / bf16 (the model and its decomposition) the MAP head's parts still sum to the embedding within
    CHECK_TOLERANCE (measured at full depth, 12 blocks, random B/16, batch 2: fp16 3.1e-4, bf16 2.4e-3)."""
    name, model, _ = oc_case
    adapter = _wrap(copy.deepcopy(model).to(dtype), name)
    dec = adapter.decompose(models.pixels(2, 224).to(dtype), dtype=dtype)
    assert dec.check() <= dec.tolerance


# ------------------------------------------------------------------------------ preprocessing, local folders


def _tiny_siglip(cls_name: str = "SiglipModel"):
    """A small SigLIP whose towers agree in width (64), for loading tests."""
    siglip2 = cls_name.startswith("Siglip2")
    vision = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=1, patch_size=16)
    vision.update(num_patches=64) if siglip2 else vision.update(image_size=32)
    cfg_cls = transformers.Siglip2Config if siglip2 else transformers.SiglipConfig
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(cfg_cls(text_config=models.HF_TINY_TEXT, vision_config=vision)).eval()


@pytest.mark.parametrize("resample", [2, 3])
def test_preprocessing_equals_siglips_own_processor(resample):
    from PIL import Image

    from tests.conftest import SHARED

    path = next((SHARED / "reference-data" / "images").rglob("*.jpg"), None)
    if path is None:
        pytest.skip(f"no reference photo in {SHARED / 'reference-data' / 'images'} (the shared reference images are "
                    "not on this machine)")
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32}, resample=resample)
    adapter = _wrap(_tiny_siglip())
    adapter._processor = processor
    want = processor(Image.open(path), return_tensors="pt")["pixel_values"]
    assert torch.equal(adapter.preprocess([path]), want)


def test_a_saved_siglip_folder_loads_with_its_tokenizer_and_processor(tmp_path, spm_tokenizer):
    import cliplens

    model = _tiny_siglip()
    model.save_pretrained(tmp_path)
    spm_tokenizer[0].save_pretrained(tmp_path)
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4] * 3).save_pretrained(tmp_path)
    for name in (str(tmp_path), f"hf:{tmp_path}"):
        a = cliplens.load(name)
        cfg = a.preprocess_config
        assert a.vision.head.kind == "map" and cfg.image_size == (32, 32) and tuple(cfg.mean) == (0.4,) * 3
        assert cfg.crop == "none"
        enc = spm_tokenizer[0](TEXTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        with torch.no_grad():
            want = reference._pooled(model.get_text_features(input_ids=enc["input_ids"]))
        assert _rel(a.encode_text(TEXTS, normalize=False), want) <= PARITY_TOL


def test_a_naflex_folder_is_read_at_its_fixed_native_size(tmp_path):
    import cliplens

    model = _tiny_siglip("Siglip2Model")
    model.save_pretrained(tmp_path)
    transformers.Siglip2ImageProcessor(patch_size=16, max_num_patches=64).save_pretrained(tmp_path)
    a = cliplens.load(tmp_path)
    assert a.vision.image_size == (128, 128)  # √64 = 8 patches of 16 px per side
    assert a.preprocess_config.image_size == (128, 128) and a.preprocess_config.resize_mode == "squash"
    x = torch.randn(2, 3, 128, 128)
    ref = a.source_encode_image(x)
    assert _rel(a.encode_image(x), ref) <= PARITY_TOL


def test_a_local_siglip_folder_without_its_tokenizer_never_gets_clips_bpe(tmp_path_factory):
    """A ``local-dir:`` open_clip folder whose config names a Hub tokenizer that is not cached: text raises (at
    text time) instead of silently tokenizing with CLIP's BPE."""
    import json

    import open_clip

    from cliplens.models.openclip_text import default_tokenizer

    tmp_path = tmp_path_factory.mktemp("oc")  # a folder whose name does not say "siglip"
    assert "siglip" not in str(tmp_path).lower()
    cfg = {"model_cfg": open_clip.get_model_config("ViT-B-16-SigLIP"), "preprocess_cfg": {}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    tok, why = default_tokenizer(open_clip, f"local-dir:{tmp_path}")
    assert tok is None and "timm/ViT-B-16-SigLIP" in why and "tokenizer=" in why
    tok, why = default_tokenizer(open_clip, "ViT-B-16")  # CLIP names keep open_clip's BPE tokenizer
    assert why is None and type(tok).__name__ == "SimpleTokenizer"


def test_a_siglip_tokenizer_is_looked_for_once_when_the_hub_does_not_answer(monkeypatch):
    """wrap(model, name=...) of a SigLIP name asks for its Hugging Face tokenizer: with the Hub unreachable (and no
    offline flag set) that request runs offline, from the cache, instead of retrying for minutes."""
    import huggingface_hub
    import open_clip

    from cliplens.models import hub, openclip_text

    seen = []

    def spy(name, *a, **k):
        seen.append(huggingface_hub.constants.HF_HUB_OFFLINE)
        raise OSError("not in the cache")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(open_clip, "get_tokenizer", spy)
    tok, why = openclip_text.default_tokenizer(open_clip, "ViT-B-16-SigLIP")
    assert tok is None and seen == [True] and "tokenizer=" in why
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored


def test_a_tokenizer_folder_replaces_the_missing_hub_tokenizer(oc_case, spm_tokenizer):
    """``adapter.load_tokenizer(folder)`` (the CLI's ``--tokenizer``) on an open_clip SigLIP: open_clip's own
    ``HFTokenizer`` over the folder, with the config's context length and cleaning; text then equals the source's
    text features on the same ids."""
    import open_clip

    from cliplens.errors import InvalidInputError

    name, model, _ = oc_case
    adapter = _wrap(model, name)
    tok = adapter.load_tokenizer(spm_tokenizer[2])
    cfg = open_clip.get_model_config(name)["text_cfg"]
    assert type(tok).__name__ == "HFTokenizer" and tok.context_length == model.context_length
    assert tok.clean_fn is not None and cfg["tokenizer_kwargs"]["clean"] == "canonicalize"
    ids = tok(TEXTS)
    with torch.no_grad():
        want = model.encode_text(ids)
    assert _rel(adapter.encode_text(TEXTS, normalize=False), want) <= PARITY_TOL
    with pytest.raises(InvalidInputError, match="does not exist"):
        adapter.load_tokenizer("/no/such/tokenizer")


def test_the_cli_reads_a_tokenizer_folder(tmp_path, spm_tokenizer):
    """``--tokenizer`` on a saved transformers SigLIP folder that lacks its tokenizer: a text command runs."""
    import json

    from tests.cli.conftest import run

    model = _tiny_siglip()
    model.save_pretrained(tmp_path / "model")
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "model")
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    res = run("tags", str(image), "-m", str(tmp_path / "model"), "--tokenizer", spm_tokenizer[2],
              "-c", "red,blue", "--method", "global", "--json")
    assert res.exit_code == 0, res.output
    assert "red" in json.dumps(json.loads(res.stdout))
    res = run("tags", str(image), "-m", str(tmp_path / "model"), "-c", "red,blue", "--method", "global")
    assert res.exit_code != 0 and "tokenizer" in res.output  # without it: the one-paragraph refusal
    res = run("tags", str(image), "-m", str(tmp_path / "model"), "--tokenizer", str(tmp_path / "nowhere"),
              "-c", "red,blue")
    assert res.exit_code != 0 and "does not exist" in res.output
