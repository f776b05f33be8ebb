"""EVA02-CLIP (open_clip ``EVA02-B-16`` with a timm ``Eva`` trunk) through cliplens, on random weights at the real
B/16 widths (768, 12 heads; 2 blocks) with every bias and LayerNorm moved (``tests/families/models.py``):
parity of the functional forward and of the dense tokens with the source, the decomposition against the
independent float64 reference (``reference_eva02``), exactness in float32, loading by name, and every map method.
"""

from __future__ import annotations

import pytest
import torch

from tests.families import models, reference

pytest.importorskip("open_clip")
pytest.importorskip("timm")

import cliplens  # noqa: E402
from cliplens.core.forward import run_vision  # noqa: E402
from cliplens.decomposition import Decomposition, decompose  # noqa: E402
from cliplens.errors import CliplensError  # noqa: E402

LAYERS = 2


def tiny_tokenizer(texts):
    """Token ids for the tiny text tower of ``models.TINY_CUSTOM_TEXT`` (vocabulary 1000, 16 positions): the
    standard CLIP tokens folded into its vocabulary (the text side is not what these tests check)."""
    import open_clip

    return open_clip.tokenize(list(texts), context_length=16) % 1000


@pytest.fixture(scope="module")
def eva64():
    """float64 source model and its wrapped adapter (the reference works in float64)."""
    model = models.open_clip_timm("EVA02-B-16", layers=LAYERS)
    return model, cliplens.wrap(model, name="EVA02-B-16")


@pytest.fixture(scope="module")
def eva32():
    model = models.open_clip_timm("EVA02-B-16", layers=LAYERS, seed=1).float()
    return model, cliplens.wrap(model, name="EVA02-B-16", tokenizer=tiny_tokenizer)


@pytest.fixture(scope="module")
def eva_ls():
    """With layer scale (``gamma_1``/``gamma_2``) added to every block: the source's forward then applies it."""
    model = models.open_clip_timm("EVA02-B-16", layers=LAYERS, seed=2, layer_scale=True)
    return model, cliplens.wrap(model, name="EVA02-B-16")


def test_family_and_view(eva64):
    model, adapter = eva64
    from cliplens.models.families import family_for

    assert family_for(model, "EVA02-B-16", "open_clip").name == "eva02"
    view = adapter.vision
    assert (view.width, view.num_heads, view.num_layers, view.embed_dim) == (768, 12, LAYERS, 512)
    blk = view.blocks[0]
    assert blk.rope is not None and blk.attn_norm is not None and blk.gate_weight is not None
    assert blk.mlp_norm is not None and blk.k_bias is None and blk.activation == "silu"
    assert view.head.bias() is model.visual.trunk.head.bias


@pytest.mark.parametrize("which", ["eva32", "eva_ls"])
def test_encode_image_parity(which, request):
    model, adapter = request.getfixturevalue(which)
    dtype = next(model.parameters()).dtype
    x = models.pixels(3, 224, seed=5).to(dtype)
    with torch.no_grad():
        ours = run_vision(adapter.vision, x).embedding
        src = model.encode_image(x)
    err = reference.rel_err(ours, src)
    assert err <= 1e-5, err


def test_dense_tokens_equal_trunk_tokens(eva32):
    """Every token through the head on its own == the trunk's own token outputs (``forward_features``: the final
    norm on every token) through its head Linear."""
    model, adapter = eva32
    x = models.pixels(2, 224, seed=6).float()
    trunk = model.visual.trunk
    with torch.no_grad():
        dense = run_vision(adapter.vision, x, names=["dense"]).dense
        src = trunk.head(trunk.forward_features(x))
    assert dense.shape == (2, 197, 512)
    assert reference.rel_err(dense, src) <= 1e-5


def test_rope_before_the_q_k_hooks(eva32):
    """The recorded q and k are the rotated ones: the attention recomputed from them is the pattern used."""
    _, adapter = eva32
    x = models.pixels(1, 224, seed=7).float()
    with torch.no_grad():
        out = run_vision(adapter.vision, x, names=["blocks.1.ln_1", "blocks.1.attn.q", "blocks.1.attn.k",
                                                   "blocks.1.attn.pattern"])
    q, k = out["blocks.1.attn.q"].transpose(1, 2), out["blocks.1.attn.k"].transpose(1, 2)
    pattern = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
    assert torch.allclose(pattern, out["blocks.1.attn.pattern"], atol=1e-6)
    # without the rotation the recomputed pattern is a different one
    blk = adapter.vision.blocks[1]
    q0 = torch.nn.functional.linear(out["blocks.1.ln_1"], blk.q_weight, blk.q_bias).view(1, 197, 12, 64).transpose(1, 2)
    assert not torch.allclose(q0, q, atol=1e-3)


def _ours_in_reference_rule(dec: Decomposition, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """cliplens shares the head Linear's bias among the 2L+1 sites (and heads × tokens); the reference keeps it
    as its own term: subtract each term's share to compare (exact, all linear)."""
    s = 1 / (2 * dec.num_layers + 1)
    n, h = dec.num_tokens, dec.num_heads
    b = bias.to(dec.dtype)
    mlp = dec.mlp_terms()
    return dict(head_terms=dec.head_terms() - s * b / (n * h), shift_terms=dec.shift_terms(),
                attn_layer_terms=dec.attention_layer_terms() - s * b, mlp_terms=mlp[:, 1:] - s * b,
                embed_term=mlp[:, 0] - s * b)


@pytest.mark.parametrize("which", ["eva64", "eva_ls"])
def test_decomposition_equals_reference(which, request):
    model, adapter = request.getfixturevalue(which)
    x = models.pixels(2, 224, seed=8)
    ref = reference.reference_eva02(model, x)
    dec = decompose(adapter.vision, x, dtype=torch.float64)
    assert dec.check(1e-12) <= 1e-12
    ours = _ours_in_reference_rule(dec, model.visual.trunk.head.bias)
    for key, value in ours.items():
        assert reference.rel_err(value, ref[key]) <= 1e-10, key
    # the shift is a term of its own: heads + shift = the layer's attention term
    heads = dec.head_terms().sum((2, 3))
    assert reference.rel_err(heads + dec.shift_terms(), dec.attention_layer_terms()) <= 1e-12
    assert ref["shift_terms"].abs().max() > 1e-6  # the reference's shift does not vanish by accident
    # per head without tokens: the same heads
    flat = decompose(adapter.vision, x, dtype=torch.float64, spatial=False)
    assert reference.rel_err(flat.per_head(), dec.per_head()) <= 1e-12
    assert reference.rel_err(flat.shift_terms(), dec.shift_terms()) <= 1e-12


def test_readme_eva_head_terms_shape(eva32):
    """README: for a wrapped EVA02 model, the per-layer CLS-row head terms ``[batch, layers, tokens, heads, E]``."""
    _, model = eva32
    x = models.pixels(2, 224, seed=9).float()
    dec = model.decompose(x)
    terms = dec.head_terms()
    assert terms.shape == (2, LAYERS, 197, 12, 512)
    assert dec.shift_terms().shape == (2, LAYERS, 512)


@pytest.mark.parametrize("spatial", [True, False])
def test_float32_check(eva32, spatial):
    _, model = eva32
    x = models.pixels(4, 224, seed=10).float()
    dec = model.decompose(x, spatial=spatial)
    assert dec.check() <= 1e-5
    part = model.decompose(x, spatial=spatial, last=1)  # one head layer: the other keeps its whole term
    assert part.check() <= 1e-5 and part.shift_terms().shape == (4, 1, 512)
    # scores of every part sum to the image-text score
    t = torch.nn.functional.normalize(torch.randn(3, 512), dim=-1)
    scores = dec.project(t)
    assert torch.allclose(scores.total, dec.embedding @ t.T, atol=1e-4 * dec.embedding.norm())


def test_save_load_and_slices(eva32, tmp_path):
    _, model = eva32
    x = models.pixels(3, 224, seed=11).float()
    dec = model.decompose(x)
    path = dec.save(tmp_path / "eva")
    back = Decomposition.load(path, model)
    assert torch.equal(back.shift, dec.shift) and back.check() <= 1e-5
    both = Decomposition.cat([dec[:1], dec[1:]])
    assert torch.equal(both.shift_terms(), dec.shift_terms())


def test_clip_vit_has_no_shift():
    """Towers without a sub-LN keep the old rule: no shift terms (the out-projection bias is in the heads)."""
    model = cliplens.load("toy")
    dec = model.decompose(torch.randn(1, 3, *model.vision.image_size))
    assert not dec.has_shift and dec.shift_terms().abs().max() == 0


def test_load_by_name_offline_and_list_models():
    info = {m.name: m for m in cliplens.list_models()}
    for name in ("EVA02-B-16", "EVA02-L-14"):
        assert info[name].decomposable, info[name].note
    with pytest.warns(Warning):
        model = cliplens.load("EVA02-B-16", pretrained="random")
    assert model.vision.num_layers == 12 and model.vision.embed_dim == 512
    x = torch.randn(1, 3, 224, 224)
    assert reference.rel_err(model.encode_image(x), model.source_encode_image(x)) <= 1e-5
    assert model.decompose(x, last=2).check() <= 1e-5


@pytest.fixture(scope="module")
def eva_deep():
    """7 blocks: enough for the methods' default depths (CLIP Surgery and GEM: the last 6 blocks)."""
    model = models.open_clip_timm("EVA02-B-16", layers=7, seed=3).float()
    return model, cliplens.wrap(model, name="EVA02-B-16")


def test_every_map_method_runs(eva_deep):
    from cliplens.maps import TextEmbeddings, get_map, map_names
    from cliplens.maps.base import map_class

    _, model = eva_deep
    x = models.pixels(2, 224, seed=12).float()
    texts = TextEmbeddings(torch.nn.functional.normalize(torch.randn(2, 512), dim=-1), ("a", "b"))
    ran, refused = [], {}
    builtin = [n for n in map_names(second_backbone=False) if map_class(n).__module__.startswith("cliplens.")]
    for name in builtin:
        try:
            out = get_map(name).raw(model, x, texts)
        except CliplensError as e:
            refused[name] = str(e)
            continue
        assert out.shape[:2] == (2, 2) and torch.isfinite(out).all(), name
        ran.append(name)
    assert not refused and set(ran) == set(builtin), refused


def test_surgery_split_over_heads_sums_to_its_map(eva_deep):
    """CLIP Surgery's by-head split goes through the frozen sub-LN: its parts sum to Surgery's own map."""
    from cliplens.maps import TextEmbeddings, get_map, surgery_parts

    _, model = eva_deep
    x = models.pixels(2, 224, seed=13).float()
    texts = TextEmbeddings(torch.nn.functional.normalize(torch.randn(3, 512), dim=-1), ("a", "b", "c"))
    raw = get_map("surgery").raw(model, x, texts)
    parts = surgery_parts(model, x, texts)
    total = parts.parts.sum(2)
    assert torch.allclose(total, raw, atol=1e-4 * raw.abs().max()), (total - raw).abs().max()


def test_store_holds_the_eva_decomposition(eva32, tmp_path):
    """The store keeps each layer's shift (a field of its own) and the heads through the frozen sub-LN: its head and
    shift terms equal the decomposition's, its CLS→CLS part the spatial decomposition's source token 0, and
    mean-ablating a whole layer or only its heads differ by the shift."""
    from cliplens.analyses.ablation import _delta, _Stats, parse_components
    from cliplens.store import Store, StoreSettings, build_store
    from tests.store.scenes import Scenes

    _, model = eva32
    data = Scenes(6)
    build_store(model, data, tmp_path / "s", settings=StoreSettings(chunk_size=4, batch_size=3, templates="none"))
    st = Store(tmp_path / "s")
    px = model.preprocess([data[i].image for i in range(6)])
    dec = model.decompose(px, spatial=False)
    assert "shift" in st.fields
    torch.testing.assert_close(torch.from_numpy(st.field("shift")[:]), dec.shift, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(st.field("heads")[:]), dec.heads, rtol=1e-5, atol=1e-6)
    norm = dec.normalized()
    torch.testing.assert_close(st.head_terms(), norm.head_terms(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st.shift_terms(), norm.shift_terms(), rtol=1e-4, atol=1e-6)
    sp = model.decompose(px, spatial=True)
    torch.testing.assert_close(torch.from_numpy(st.field("cls_heads")[:]), sp.heads[:, :, :, 0], rtol=1e-5, atol=1e-6)
    # mean-ablation: the whole layer = its 12 heads + its shift (each mean-ablated)
    stats = _Stats.of(st)
    blk = next(st.blocks(["heads", "attn_out", "scale", "mean", "wsum"], dtype=None))
    whole = _delta(blk, parse_components("L1").resolved(2, 12), stats, 197)
    heads = _delta(blk, parse_components(",".join(f"L1.H{h}" for h in range(12))).resolved(2, 12), stats, 197)
    r = st.field("scale")[:][:, :, None]
    shift = torch.from_numpy(st.field("shift")[:][:, :, 1] * r)
    n = len(blk["scale"])
    torch.testing.assert_close(whole - heads, shift[:n] - shift.mean(0), rtol=1e-4, atol=1e-5)


def test_pe_core_equals_the_source_and_its_reference():
    """PE-Core (timm ``vit_pe_core_base_patch16_224``: rope with a grid offset and 'xy' indexing, fused q/k/v with
    bias, a GELU MLP, ``norm_pre``; attention pooling with a learned probe over every token, CLS included, then the
    head Linear as a projection of the MAP head): the forward equals open_clip's ``encode_image``; in float64 the
    decomposition sums exactly and its pool terms and lumped MLP equal ``reference_pe_core`` (the reference keeps
    the head's constant apart; cliplens spreads it over the pool terms by the pooling weights, α·C/R)."""
    model = models.open_clip_timm("PE-Core-B-16", layers=LAYERS)
    adapter = cliplens.wrap(model.float(), name="PE-Core-B-16")
    v = adapter.vision
    assert v.head.kind == "map" and v.head.proj_weight is not None and v.blocks[0].rope is not None
    x = models.pixels(2, 224, seed=14)
    with torch.no_grad():
        assert reference.rel_err(adapter.encode_image(x.float()), model.encode_image(x.float())) <= 1e-5
    model.double()
    adapter = cliplens.wrap(model, name="PE-Core-B-16")
    r = reference.reference_pe_core(model, x)
    dec = adapter.decompose(x.double(), dtype=torch.float64)
    assert dec.check() <= 1e-10
    R = adapter.vision.head.num_readouts
    want = r["pool_terms"] + r["pool_attn"][..., None] * r["constants"][:, None, None] / R
    assert reference.rel_err(dec.pool_terms(), want) <= 1e-10
    assert reference.rel_err(dec.nonlinear_term(), r["mlp_term"]) <= 1e-10
    info = {m.name: m for m in cliplens.list_models()}
    assert info["PE-Core-B-16"].decomposable and "PE-Core" in info["PE-Core-B-16"].note


@pytest.mark.parametrize("variant", [dict(scale_mlp=False), dict(qkv_fused=True)], ids=["GluMlp", "fused-qkv"])
def test_other_eva_block_variants(variant):
    """timm's other Eva options: the packed SwiGLU (``GluMlp``, without the MLP norm) and fused q/k/v (with
    ``q_bias``/``v_bias`` and a zero ``k_bias`` buffer) read exactly (every token after the final norm)."""
    import timm

    from cliplens.core.heads import ClsHead
    from cliplens.models.eva import _ln, trunk_view

    torch.manual_seed(0)
    trunk = models.perturb(timm.create_model("eva02_base_patch16_clip_224", depth=1, num_classes=0, **variant).eval())
    kind = type(trunk.blocks[0].mlp).__name__
    assert kind == ("GluMlp" if "scale_mlp" in variant else "SwiGLU")
    view = trunk_view(trunk, "eva", ClsHead(_ln(trunk.norm, "norm", "eva"), None))
    x = models.pixels(1, 224, seed=15).float()
    with torch.no_grad():
        dense = run_vision(view, x, names=["dense"]).dense
        src = trunk.forward_features(x)
    assert reference.rel_err(dense, src) <= 1e-5


def test_a_decomposition_file_without_shift_still_loads(tmp_path):
    """Files written before the shift field existed (format 2 without ``shift``) load, with no shift terms."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = cliplens.load("toy")
    dec = model.decompose(torch.randn(2, 3, *model.vision.image_size))
    path = dec.save(tmp_path / "new")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert "shift" in tensors
    del tensors["shift"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    back = Decomposition.load(tmp_path / "old.safetensors", model)
    assert not back.has_shift and back.check() <= 1e-5
    torch.testing.assert_close(back.reconstruct(), dec.reconstruct())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_check(dtype):
    """In float16 / bfloat16 the parts still sum to the embedding within the stated tolerance (measured here:
    2.1e-4 and 1.6e-3, the tolerances 5e-3 and 3e-2)."""
    model = models.open_clip_timm("EVA02-B-16", layers=LAYERS, seed=1).to(dtype)
    dec = cliplens.wrap(model, name="EVA02-B-16").decompose(models.pixels(2, 224, seed=3).to(dtype))
    assert dec.has_shift and dec.check() <= dec.tolerance


def test_rotary_table_at_another_grid(eva32):
    """At another input size the rotary table is the source's own for that grid (what timm caches after
    ``set_input_size``), and the forward runs there (a 16×16 grid at 256 px)."""
    import copy

    model, adapter = eva32
    rope = adapter.vision.blocks[0].rope
    other = copy.deepcopy(model.visual.trunk)
    other.set_input_size(img_size=(256, 256))
    torch.testing.assert_close(rope.table((16, 16)).float(), other.rope.get_embed().float(), rtol=0, atol=1e-6)
    assert not torch.allclose(rope.table((16, 16))[:196], rope.table((14, 14)))
    x = models.pixels(1, 256, seed=16).float()
    dec = adapter.decompose(x)
    assert dec.grid == (16, 16) and dec.check() <= 1e-5
