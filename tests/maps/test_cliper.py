"""CLIPer's early-layer fusion (cliplens.maps.cliper) against the naive float64 oracle in
tests/maps/cliper_reference.py, on small random open_clip models (6 blocks, 4 heads; one with layer-scale), a
batch of 2 images and 3 texts, at the native 64x64 grid and at a non-square 64x96 size (the positional table
resized bilinearly, CLIPer's own rule); the fused attention strategy; parameter errors."""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from cliplens.core.attention import AttentionContext, get_attention
from cliplens.core.attention.early_fusion import PatternSum, fused_scaled, fused_unnormalised, sinkhorn_rounds
from cliplens.core.plan import Plan
from cliplens.errors import InvalidInputError, UnsupportedArchitectureError
from cliplens.maps import TextEmbeddings, get_map
from tests.maps.cliper_reference import fused_matrix, reference_cliper, sinkhorn_round
from tests.maps.dense_reference import build_tiny_clip, random_directions, random_images

DEPTH = 6
N_TEXTS = 3

CASES = [
    {},
    dict(logit_scale=3.0),
    dict(logit_scale=3.0, attention_thr=0.6),
    dict(logit_scale=3.0, fuse=False),
    dict(logit_scale=3.0, slide_crop=32, slide_stride=16),
    dict(logit_scale=3.0, slide_crop=48, slide_stride=32, fuse=False),
]


def _case_id(params: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in params.items()) or "defaults"


@pytest.fixture(scope="module", params=[None, 0.5], ids=["plain", "layerscale"])
def models(request):
    model = build_tiny_clip(layers=DEPTH, ls_init_value=request.param, seed=41)
    return model, cliplens.wrap(copy.deepcopy(model).double().eval())


def _texts(dtype: torch.dtype = torch.float64, seed: int = 5) -> TextEmbeddings:
    return TextEmbeddings(random_directions(N_TEXTS, seed=seed).to(dtype), tuple(f"t{i}" for i in range(N_TEXTS)))


def _relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=["native-64x64", "64x96"])
@pytest.mark.parametrize("params", CASES, ids=_case_id)
def test_cliper_matches_reference(models, params, hw):
    model, wrapped = models
    x = random_images(2, hw, seed=7)
    texts = _texts()
    ref = reference_cliper(model, x, texts.directions, **params)
    grid = (hw[0] // 16, hw[1] // 16)
    assert ref.shape == (2, N_TEXTS, *grid) and ref.abs().max() > 0
    ours = get_map("cliper", **params).raw(wrapped, x.double(), texts)
    assert ours.shape == (2, N_TEXTS, *grid) and ours.dtype == torch.float64
    assert _relative(ours, ref) <= 1e-9


@pytest.mark.parametrize("params", [dict(logit_scale=3.0), dict(logit_scale=3.0, fuse=False)], ids=_case_id)
def test_cliper_with_an_odd_number_of_heads_matches_reference(params):
    """3 heads: the fused matrices are formed two heads at a time, so the last chunk has one head."""
    model = build_tiny_clip(layers=4, width=48, head_width=16, seed=45)
    assert model.visual.transformer.resblocks[0].attn.num_heads == 3
    x = random_images(2, (64, 96), seed=13)
    texts = _texts()
    ref = reference_cliper(model, x, texts.directions, **params)
    ours = get_map("cliper", **params).raw(cliplens.wrap(copy.deepcopy(model).double().eval()), x.double(), texts)
    assert _relative(ours, ref) <= 1e-9


def test_cliper_float32_matches_reference():
    model = build_tiny_clip(layers=DEPTH, ls_init_value=0.5, seed=42)
    x = random_images(2, (64, 96), seed=8)
    texts = _texts(torch.float32, seed=6)
    ref = reference_cliper(model, x, texts.directions, logit_scale=3.0, slide_crop=32, slide_stride=32)
    ours = get_map("cliper", logit_scale=3.0, slide_crop=32, slide_stride=32).raw(cliplens.wrap(model), x, texts)
    assert ours.shape == (2, N_TEXTS, 4, 6)
    assert _relative(ours, ref) <= 1e-4


def test_cliper_positional_rule_is_bilinear_and_matters(models):
    """At another grid the table is resized bilinearly (the code's ``upsample_pos_emb``); another rule gives other
    maps, and ``positional=`` overrides it."""
    model, wrapped = models
    assert get_map("cliper").params["positional"] == "bilinear"
    x = random_images(2, (64, 96), seed=9).double()
    texts = _texts()
    ref = reference_cliper(model, x, texts.directions, logit_scale=3.0)
    bicubic = get_map("cliper", logit_scale=3.0, positional="bicubic").raw(wrapped, x, texts)
    assert _relative(bicubic, ref) > 1e-6


def test_cliper_batch_equals_one_image_at_a_time(models):
    """The code runs one image at a time (its head average mixes a batch's images); each image here is its own."""
    _, wrapped = models
    x = random_images(3, (64, 96), seed=10).double()
    method = get_map("cliper", logit_scale=3.0, slide_crop=32, slide_stride=16)
    batch = method.raw(wrapped, x, _texts())
    single = torch.cat([method.raw(wrapped, x[i:i + 1], _texts()) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-12, atol=1e-12)


def test_cliper_slides_in_chunks_as_in_one_pass(models, monkeypatch):
    """Large images run their windows a few at a time (bounded memory): the same maps."""
    import cliplens.maps.cliper as cliper_module

    _, wrapped = models
    x = random_images(2, (64, 96), seed=12).double()
    method = get_map("cliper", logit_scale=3.0, slide_crop=32, slide_stride=16)  # 3 x 5 windows
    one_pass = method.raw(wrapped, x, _texts())
    monkeypatch.setattr(cliper_module, "CROPS_PER_PASS", 3)  # one window (of 2 images) per pass
    torch.testing.assert_close(method.raw(wrapped, x, _texts()), one_pass, rtol=1e-12, atol=1e-12)


def test_cliper_leaves_the_model_unchanged_and_repeats():
    model = build_tiny_clip(layers=DEPTH, seed=43)
    wrapped = cliplens.wrap(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = random_images(1, (64, 96), seed=11)
    first = get_map("cliper").raw(wrapped, x, _texts(torch.float32))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(get_map("cliper").raw(wrapped, x, _texts(torch.float32)), first, rtol=0, atol=0)


def test_cliper_through_the_map_pipeline():
    """The registered method through ``MapMethod.__call__``: one map per (image, target) with its settings."""
    wrapped = cliplens.wrap(build_tiny_clip(layers=DEPTH, seed=44))
    maps = get_map("cliper", slide_crop=32, slide_stride=16)(wrapped, [torch.rand(3, 70, 90)], ["a cat", "a dog"])
    assert maps.method == "cliper" and maps.labels == ["a cat", "a dog"]
    assert maps[0].raw.shape[0] == 2 and torch.isfinite(maps[0].raw).all()
    assert maps.settings["slide_crop"] == 32 and maps.settings["positional"] == "bilinear"


def _naive_fused(summed, rounds):
    """The naive reference: ``rounds`` Sinkhorn rounds, then the fused matrix, image and head one at a time."""
    ref = summed.clone()
    for _ in range(rounds):
        ref = torch.stack([sinkhorn_round(s) for s in ref])
    return torch.stack([fused_matrix(s) for s in ref])


@pytest.mark.parametrize("rounds", [1, 3])
def test_early_fusion_strategy_matches_the_formula(rounds):
    g = torch.Generator().manual_seed(0)
    summed = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64) * 4
    ref = _naive_fused(summed, rounds)
    strategy = get_attention("early-fusion", rounds=rounds).use(summed)
    v = torch.zeros(2, 3, 5, 4, dtype=torch.float64)
    ctx = AttentionContext(layer=0, block=None, grid=(2, 2))  # type: ignore[arg-type]
    pattern = strategy.pattern(v, v, v, ctx)
    torch.testing.assert_close(pattern, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))
    assert torch.equal(strategy.pattern(v, v, v, ctx.with_rows(slice(0, 1))), pattern[:, :, :1])


@pytest.mark.parametrize("rounds", [1, 3])
def test_fused_matrix_with_its_columns_scaled_is_the_formula(rounds):
    """CLIPer's map forms every fused matrix divided column-wise by ``c`` (from a contiguous ``Sᵀ``, into two
    buffers): times ``diag(c)``, the naive matrix; and :func:`fused_unnormalised` is that product."""
    g = torch.Generator().manual_seed(1)
    summed = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64) * 4
    ref = _naive_fused(summed, rounds)
    *_, (r, c, colsum) = sinkhorn_rounds(summed, rounds)
    buffers = (torch.empty_like(summed), torch.empty_like(summed))
    y = fused_scaled(summed, r, c, colsum, out=buffers, transposed=summed.transpose(-1, -2).contiguous())
    assert y.data_ptr() == buffers[0].data_ptr()
    m = y * c.unsqueeze(-2)
    torch.testing.assert_close(m / m.sum(-1, keepdim=True), ref, rtol=1e-12, atol=1e-12)
    assert (ref == 0).any()  # the clip is exercised
    unnormalised = fused_unnormalised(summed, r, c, colsum)
    torch.testing.assert_close(unnormalised, m, rtol=1e-12, atol=1e-14)


def _naive_softmax_attention(q, k, v):
    """``softmax(q kᵀ / √dh)`` and its product with ``v``, image and head one at a time, in float64."""
    B, H = q.shape[:2]
    pats = torch.empty(B, H, q.shape[2], k.shape[2], dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            pats[b, h] = torch.softmax(q[b, h].double() @ k[b, h].double().T / q.shape[-1] ** 0.5, -1)
    return pats, pats @ v.double()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pattern_sum_adds_each_softmax_pattern(dtype):
    """The strategy returns the model's own attention and sums its patterns: on 3 heads (chunks of 2 and 1), the
    first call writing the sum and the next adding to it."""
    g = torch.Generator().manual_seed(2)
    strategy = PatternSum()
    ctx = AttentionContext(layer=0, block=None, grid=(3, 3))  # type: ignore[arg-type]
    total = 0
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for _ in range(3):
        q, k, v = (torch.randn(2, 3, 10, 8, generator=g, dtype=dtype) for _ in range(3))
        pats, ref = _naive_softmax_attention(q, k, v)
        total = total + pats
        z = strategy.output(q, k, v, ctx)
        assert z.dtype == dtype
        torch.testing.assert_close(z.double(), ref, rtol=tol, atol=tol)
    assert strategy.summed is not None and strategy.summed.dtype == dtype
    torch.testing.assert_close(strategy.summed.double(), total, rtol=tol, atol=tol)
    assert strategy.reset().summed is None


def test_pattern_sum_under_autograd_and_in_half_precision():
    """Under autograd (the gradient reaches q, k and v) and for half inputs (summed in float32) the pattern is
    formed whole: the same numbers."""
    g = torch.Generator().manual_seed(3)
    ctx = AttentionContext(layer=0, block=None, grid=(3, 3))  # type: ignore[arg-type]
    q, k, v = (torch.randn(1, 3, 10, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    pats, ref = _naive_softmax_attention(q.detach(), k.detach(), v.detach())
    strategy = PatternSum()
    z = strategy.output(q, k, v, ctx)
    torch.testing.assert_close(z.detach(), ref, rtol=1e-12, atol=1e-12)
    z.sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None
    torch.testing.assert_close(strategy.summed, pats, rtol=1e-12, atol=1e-12)
    half = PatternSum()
    zh = half.output(q.detach().half(), k.detach().half(), v.detach().half(), ctx)
    assert zh.dtype == torch.float16 and half.summed.dtype == torch.float32
    torch.testing.assert_close(half.summed.double(), pats, rtol=0, atol=2e-3)


def test_pattern_sum_over_a_plan_sums_the_recorded_patterns():
    """Set on blocks 0–2 of a model's plan: the sum of the patterns the model's own forward records there, and
    the same forward."""
    wrapped = cliplens.wrap(build_tiny_clip(layers=4, width=48, head_width=16, seed=46).double())
    x = random_images(2, (64, 96), seed=14).double()
    names = [f"blocks.{i}.attn.pattern" for i in range(3)]
    plain = wrapped.run(x, names=[*names, "blocks.3.resid_post"])
    strategy = PatternSum()
    summed = wrapped.run(x, plan=Plan().at(range(3), attention=strategy), names=["blocks.3.resid_post"])
    torch.testing.assert_close(strategy.summed, sum(plain[n] for n in names), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(summed["blocks.3.resid_post"], plain["blocks.3.resid_post"], rtol=1e-12, atol=1e-12)


def test_early_fusion_strategy_errors():
    with pytest.raises(InvalidInputError, match="rounds"):
        get_attention("early-fusion", rounds=0)
    v = torch.zeros(1, 1, 3, 2)
    with pytest.raises(InvalidInputError, match="summed pattern"):
        get_attention("early-fusion").pattern(v, v, v, AttentionContext(0, None, (1, 2)))  # type: ignore[arg-type]


@pytest.mark.parametrize("params, match", [
    (dict(logit_scale=0), "logit_scale"),
    (dict(attention_thr=1.5), "attention_thr"),
    (dict(slide_crop=-1), "slide_crop"),
    (dict(slide_stride=0), "slide_stride"),
    (dict(positional="nearest"), "positional"),
    (dict(window=3), "window"),
])
def test_cliper_parameter_errors(params, match):
    with pytest.raises(InvalidInputError, match=match):
        get_map("cliper", **params)


def test_cliper_slide_crop_must_fit_the_patches():
    wrapped = cliplens.wrap(build_tiny_clip(layers=2, seed=45))
    with pytest.raises(InvalidInputError, match="multiples of the patch size"):
        get_map("cliper", slide_crop=40, slide_stride=16).raw(wrapped, random_images(1, (64, 64)), _texts(torch.float32))


def test_cliper_refuses_a_one_block_tower():
    wrapped = cliplens.wrap(build_tiny_clip(layers=1, seed=46))
    with pytest.raises(UnsupportedArchitectureError, match="two or more blocks"):
        get_map("cliper")(wrapped, [torch.rand(3, 64, 64)], ["a", "b"])
