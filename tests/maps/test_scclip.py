"""SC-CLIP (maps/scclip.py) against the naive float64 reference in tests/maps/scclip_reference.py, its local outlier
factor against scikit-learn's, and its parameters' checks.

The model: a random 12-block open_clip CLIP (the repository's ViT-B/16 layer settings apply as they are) with a
14 × 14 patch grid at its native 112 px, as ViT-B/16 at 224; runs at the native grid, at 160 × 160 (20 × 20 from the
14 × 14 table, the method's own bicubic_dino rule) and at a non-square 112 × 144.
"""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from cliplens.errors import InvalidInputError
from cliplens.maps import TextEmbeddings, get_map
from cliplens.maps.scclip import default_settings, fill_outliers, local_outlier_factor, outlier_mask
from tests.maps.dense_reference import build_tiny_clip, random_directions, random_images
from tests.maps.scclip_reference import naive_fill, naive_lof, naive_outliers, reference_scclip

N_TEXTS = 3


@pytest.fixture(scope="module", params=[None, 0.5], ids=["plain", "layerscale"])
def models(request):
    """(open_clip model for the oracle, cliplens-wrapped float64 copy): 12 blocks, 14 × 14 patches at 112 px."""
    model = build_tiny_clip(layers=12, ls_init_value=request.param, image_size=112, patch_size=8, seed=41)
    return model, cliplens.wrap(copy.deepcopy(model).double().eval())


def _texts(dtype: torch.dtype = torch.float64) -> TextEmbeddings:
    return TextEmbeddings(random_directions(N_TEXTS, seed=5).to(dtype), tuple(f"text {i}" for i in range(N_TEXTS)))


def _ours(wrapped, x, **params) -> torch.Tensor:
    with torch.no_grad():
        return get_map("sc-clip", **params).raw(wrapped, x, _texts(x.dtype))


def _relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("hw", [(112, 112), (160, 160), (112, 144)], ids=["native", "160x160", "112x144"])
def test_defaults_match_the_reference(models, hw):
    model, wrapped = models
    x = random_images(2, hw, seed=7)
    ref = reference_scclip(model, x, _texts().directions)
    ours = _ours(wrapped, x.double())
    assert ours.shape == ref.shape == (2, N_TEXTS, hw[0] // 8, hw[1] // 8) and ours.dtype == torch.float64
    assert _relative(ours, ref) <= 1e-9


@pytest.mark.parametrize("params", [
    dict(lof="breunig"),
    dict(contamination=0.2, n_neighbors=10),
    dict(n_neighbors=500),  # more than the patches: capped at P - 1, as sklearn
    dict(beta=0.1, attention_scale=1.5, res_cls=0.7),
    dict(pre_adjust_layer=5, post_adjust_layer=1, fusion_layers=[0, 6, 10]),
    dict(pre_adjust_layer=-3, fusion_layers=4),
], ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_parameters_match_the_reference(models, params):
    model, wrapped = models
    x = random_images(2, (112, 128), seed=8)
    ref_params = dict(params)
    if "pre_adjust_layer" in params:
        ref_params["pre_adjust_layer"] = params["pre_adjust_layer"] % 12
    if isinstance(params.get("fusion_layers"), int):
        ref_params["fusion_layers"] = [params["fusion_layers"]]
    ref = reference_scclip(model, x, _texts().directions, **ref_params)
    assert _relative(_ours(wrapped, x.double(), **params), ref) <= 1e-9


def test_every_step_changes_the_map(models):
    """The outlier step, the thresholds and the layers all matter on these weights (the comparisons above would not
    notice a step that does nothing)."""
    _, wrapped = models
    x = random_images(1, (112, 112), seed=9)
    base = _ours(wrapped, x.double())
    for params in (dict(contamination=0.2), dict(lof="breunig"), dict(beta=0.0), dict(res_cls=0.0),
                   dict(fusion_layers=[3])):
        assert (base - _ours(wrapped, x.double(), **params)).abs().max() > 1e-6, params


def test_float32_model_matches_the_reference():
    model = build_tiny_clip(layers=12, image_size=112, patch_size=8, seed=42)
    x = random_images(2, (112, 112), seed=10)
    ref = reference_scclip(model, x, _texts().directions)
    ours = _ours(cliplens.wrap(copy.deepcopy(model)), x)
    assert ours.dtype == torch.float32 and _relative(ours, ref) <= 1e-4


def test_the_repository_layer_settings():
    assert default_settings(12) == dict(pre_adjust_layer=8, post_adjust_layer=3, fusion_layers=list(range(3, 10)),
                                        res_cls=0.3)
    assert default_settings(24) == dict(pre_adjust_layer=16, post_adjust_layer=6, fusion_layers=list(range(8, 19)),
                                        res_cls=0.1)
    for L in (2, 3, 6, 8, 32):  # other depths: the 12-block layers scaled, all before the last block
        s = default_settings(L)
        assert max(s["pre_adjust_layer"], s["post_adjust_layer"], *s["fusion_layers"]) <= L - 2 and s["fusion_layers"]
    assert default_settings(6)["pre_adjust_layer"] == round(8 * 6 / 12)


# ---- the local outlier factor --------------------------------------------------------------------------------------
def _clouds(seed: int, P: int = 196, D: int = 24) -> torch.Tensor:
    """Two images' worth of points: a Gaussian cloud with a few far points and a small dense cluster."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, P, D, generator=g, dtype=torch.float64)
    x[:, :6] *= 4.0
    x[:, 6:20] = 0.1 * x[:, 6:20] + 2.0
    return x


@pytest.mark.parametrize("n_neighbors, contamination", [(30, 0.05), (10, 0.1), (300, 0.05)])
def test_breunig_lof_equals_sklearn(n_neighbors, contamination):
    """The official first commit's choice: sklearn's LocalOutlierFactor(n_neighbors=30, contamination=0.05)."""
    sklearn_neighbors = pytest.importorskip("sklearn.neighbors")
    x = _clouds(3)
    scores = local_outlier_factor(x, n_neighbors, "breunig")
    flagged = outlier_mask(scores, contamination)
    for b in range(2):
        lof = sklearn_neighbors.LocalOutlierFactor(n_neighbors=n_neighbors, contamination=contamination)
        with pytest.warns(UserWarning) if n_neighbors >= x.shape[1] else _nothing():
            labels = lof.fit_predict(x[b].numpy())
        torch.testing.assert_close(scores[b], torch.from_numpy(-lof.negative_outlier_factor_), rtol=1e-9, atol=0)
        assert flagged[b].tolist() == (labels == -1).tolist()
        assert 0 < flagged[b].sum() <= round(contamination * x.shape[1]) + 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("variant", ["code", "breunig"])
def test_lof_equals_the_naive_one(variant):
    x = _clouds(4, P=60, D=8)
    scores = local_outlier_factor(x, 30, variant)
    for b in range(2):
        naive = naive_lof(x[b], 30, variant)
        torch.testing.assert_close(scores[b], naive, rtol=1e-9, atol=0)
        assert outlier_mask(scores[b:b + 1], 0.05)[0].tolist() == naive_outliers(naive, 0.05)


def test_the_code_lof_differs_from_breunig():
    x = _clouds(5)
    assert (local_outlier_factor(x, 30, "code") - local_outlier_factor(x, 30, "breunig")).abs().max() > 1e-3


def test_fill_outliers_on_dense_and_sparse_masks():
    g = torch.Generator().manual_seed(6)
    grid = (5, 7)
    tokens = torch.randn(3, 35, 4, generator=g, dtype=torch.float64)
    masks = torch.zeros(3, 35, dtype=torch.bool)
    masks[0, [0, 6, 17, 34]] = True  # corners and the middle
    masks[1] = torch.rand(35, generator=g) < 0.7  # most: some outliers have no good neighbour
    masks[2, :] = True  # all: nothing to fill from, all kept
    ours = fill_outliers(tokens, masks, grid)
    for b in range(3):
        torch.testing.assert_close(ours[b], naive_fill(tokens[b], masks[b].tolist(), grid), rtol=1e-12, atol=0)
    assert torch.equal(ours[2], tokens[2]) and not torch.equal(ours[0], tokens[0])


# ---- the pipeline, parameters and errors ---------------------------------------------------------------------------
def test_runs_on_the_toy_model_through_the_pipeline():
    model = cliplens.load("toy")
    maps = get_map("sc-clip")(model, list(torch.rand(2, 3, 64, 80)), ["a red circle", "a blue square"])
    assert maps.raw.shape[:2] == (2, 2) and torch.isfinite(maps.raw).all()
    assert maps.settings["method"] == "sc-clip" and maps.settings["positional"] == "bicubic_dino"
    assert maps.settings["lof"] == "code" and maps.settings["n_neighbors"] == 30


def test_leaves_the_model_unchanged_and_repeats():
    model = build_tiny_clip(layers=12, image_size=112, patch_size=8, seed=43)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    wrapped = cliplens.wrap(model)
    x = random_images(1, (112, 144), seed=11)
    first = _ours(wrapped, x)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    torch.testing.assert_close(_ours(wrapped, x), first, rtol=0, atol=0)


@pytest.mark.parametrize("params, match", [
    (dict(lof="sklearn"), "lof must be one of code, breunig"),
    (dict(contamination=0.0), r"contamination .* must be in \(0, 0.5\]"),
    (dict(contamination=0.7), r"contamination .* must be in \(0, 0.5\]"),
    (dict(beta=1.0), r"beta .* must be in \[-1, 1\)"),
    (dict(n_neighbors=0), "n_neighbors must be an integer of at least 1"),
    (dict(n_neighbors=2.5), "n_neighbors must be an integer of at least 1"),
    (dict(attention_scale=0), "attention_scale must be a positive number"),
    (dict(res_cls="high"), "res_cls must be a number"),
    (dict(pre_adjust_layer="8"), "pre_adjust_layer must be a block index"),
    (dict(fusion_layers="3"), "layers must be block indices"),
    (dict(positional="nearest"), "positional must be one of"),
    (dict(sigma=3), "unexpected keyword argument 'sigma'"),
])
def test_bad_parameters_are_refused_with_one_paragraph(params, match):
    with pytest.raises(InvalidInputError, match=match):
        get_map("sc-clip", **params)


@pytest.mark.parametrize("params, match", [
    (dict(fusion_layers=[3, 11]), r"fusion_layers must come before the last block \(11"),
    (dict(pre_adjust_layer=-1), r"pre_adjust_layer must come before the last block"),
    (dict(post_adjust_layer=12), "out of range for a 12-layer tower"),
    (dict(fusion_layers=[]), "fusion_layers is empty"),
])
def test_layers_are_checked_against_the_model(params, match):
    model = build_tiny_clip(layers=12, image_size=112, patch_size=8, seed=44)
    with pytest.raises(InvalidInputError, match=match):
        _ours(cliplens.wrap(model), random_images(1, (112, 112)), **params)


def test_the_self_adjusting_strategy_pattern_and_output_agree():
    from cliplens.core.attention import AttentionContext, get_attention

    g = torch.Generator().manual_seed(12)
    B, H, grid, dh = 2, 3, (3, 4), 5
    q, k, v = (torch.randn(B, H, 13, dh, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.nn.functional.normalize(torch.randn(B, 12, 6, generator=g, dtype=torch.float64), dim=-1)
    S = t @ t.transpose(1, 2)
    strategy = get_attention("self-adjusting", scale=2.0)
    ctx = AttentionContext(layer=0, block=None, grid=grid)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="needs the patch tokens' similarity"):
        strategy.pattern(q, k, v, ctx)
    strategy.use(S)
    pattern = strategy.pattern(q, k, v, ctx)
    torch.testing.assert_close(pattern @ v, strategy.output(q, k, v, ctx), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(B, H, 13, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(pattern[:, :, 0, 0], torch.ones(B, H, dtype=torch.float64))  # CLS keeps to itself
    assert (pattern[:, :, 1:, 0] == 0).all()  # and no patch attends to it
    below = (S < S.mean(dim=(1, 2), keepdim=True))[:, None].expand(B, H, 12, 12)
    own = torch.softmax(k[:, :, 1:] @ k[:, :, 1:].transpose(-1, -2) * dh ** -0.5, dim=-1)
    torch.testing.assert_close(pattern[:, :, 1:, 1:][below], 0.5 * own[below], rtol=1e-12, atol=0)  # left out
    torch.testing.assert_close(strategy.pattern(q, k, v, ctx.with_rows(slice(0, 1))), pattern[:, :, :1])


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.15), (torch.float16, 0.02)])
def test_runs_in_half_precision(dtype, tolerance):
    """The repository runs in fp16 on a GPU; here a half model runs in its dtype (scores and similarities in float32
    or float64) and stays near the float32 maps."""
    model = build_tiny_clip(layers=12, image_size=112, patch_size=8, seed=45)
    x = random_images(1, (112, 112), seed=13)
    full = _ours(cliplens.wrap(copy.deepcopy(model)), x)
    with torch.no_grad():
        half = get_map("sc-clip").raw(cliplens.wrap(copy.deepcopy(model).to(dtype)), x.to(dtype),
                                      TextEmbeddings(_texts().directions.to(dtype), _texts().labels))
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert _relative(half, full.double()) < tolerance  # bfloat16: 8 bits of mantissa through 12 blocks
