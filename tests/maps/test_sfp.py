"""SFP (cliplens.maps.sfp) against the naive float64 oracle in tests/maps/sfp_reference.py, on small random open_clip
models (12 blocks: the original's layer indices apply as they are), at the native 96x96 grid and at a non-square
96x128 input (the positional table resized by SFP's own rule, DINO's scale factor); its parameters, its refusals,
and the command line."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import cliplens
from cliplens.core.attention import get_attention
from cliplens.errors import CliplensError, InvalidInputError, UnsupportedArchitectureError
from cliplens.maps import TextEmbeddings, get_map
from cliplens.maps.sfp import default_layers
from tests.cli.conftest import one_line, run, save_image
from tests.maps.dense_reference import build_tiny_clip, random_directions, random_images
from tests.maps.sfp_reference import DEFAULTS, purify, reference_outliers, reference_sfp, similarity

N_TEXTS = 3
NATIVE, OTHER = (96, 96), (96, 128)
CASES = [
    {},
    dict(outlier_rule="l2"),
    dict(outliers=3, res_cls=0.6),
    dict(threshold=0.1, temperature=1.5),
    dict(threshold=-1.0),
    dict(outliers=0),
    dict(similarity_layer=5, refine_layer=1, fuse_start=2, fuse_end=6),
]


@pytest.fixture(scope="module", params=[None, 0.5], ids=["plain", "layerscale"])
def models(request):
    """(open_clip model for the oracle, cliplens-wrapped float64 copy): 12 blocks, a 6x6 native grid."""
    model = build_tiny_clip(layers=12, ls_init_value=request.param, image_size=96, seed=31)
    return model, cliplens.wrap(copy.deepcopy(model).double().eval())


def _texts(dtype: torch.dtype = torch.float64, seed: int = 5) -> TextEmbeddings:
    return TextEmbeddings(random_directions(N_TEXTS, seed=seed).to(dtype), tuple(f"t{i}" for i in range(N_TEXTS)))


def _ours(wrapped, x: torch.Tensor, texts: TextEmbeddings, **params) -> torch.Tensor:
    with torch.no_grad():
        return get_map("sfp", **params).raw(wrapped, x, texts)


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("hw", [NATIVE, OTHER], ids=["native", "96x128"])
@pytest.mark.parametrize("params", CASES, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_sfp_matches_its_reference(models, params, hw):
    model, wrapped = models
    x = random_images(2, hw, seed=7)
    texts = _texts()
    ref = reference_sfp(model, x, texts.directions, **params)
    ours = _ours(wrapped, x.double(), texts, **params)
    assert ours.shape == ref.shape == (2, N_TEXTS, hw[0] // 16, hw[1] // 16)
    assert ours.dtype == torch.float64 and torch.isfinite(ours).all()
    assert _rel(ours, ref) <= 1e-9


def test_the_cases_exercise_the_mitigator_the_thresholds_and_the_positional_rule(models):
    """Not vacuous: outliers are found and change the map, similarities are cut at the threshold, and at another
    grid the method's own rule (DINO's scale factor) is not plain bicubic."""
    model, wrapped = models
    x = random_images(2, OTHER, seed=7)
    texts = _texts()
    assert all(len(cells) == DEFAULTS["outliers"] for cells in reference_outliers(model, x))
    assert _rel(reference_sfp(model, x, texts.directions, outliers=0), reference_sfp(model, x, texts.directions)) > 1e-3
    from tests.maps.sfp_reference import _trace

    _, trace = _trace(model, x, "bicubic_dino")
    cells = reference_outliers(model, x)[0]
    S = similarity(purify(trace.outputs[8][0][1:], cells, trace.grid), DEFAULTS["threshold"])
    assert 0 < (S == 0).float().mean().item() < 1
    dino = reference_sfp(model, x, texts.directions)
    plain = reference_sfp(model, x, texts.directions, positional="bicubic")
    assert _rel(dino, plain) > 1e-4
    ours = _ours(wrapped, x.double(), texts, positional="bicubic")
    assert _rel(ours, plain) <= 1e-9
    assert get_map("sfp").params["positional"] == "bicubic_dino"


@pytest.mark.parametrize("threshold", [0.4, -1.0])
def test_each_image_is_its_own_in_a_batch(models, threshold):
    """The original runs one image at a time (the mean similarity and the outliers are per image). With no
    similarity cut (-1), the guidance's mean decides which entries are masked (with the 0.4 cut, every mean between
    0 and 0.4 masks the same ones, and softmax ignores the shift)."""
    _, wrapped = models
    x = random_images(3, NATIVE, seed=11).double()
    texts = _texts()
    together = _ours(wrapped, x, texts, threshold=threshold)
    for i in range(3):
        alone = _ours(wrapped, x[i:i + 1], texts, threshold=threshold)[0]
        torch.testing.assert_close(alone, together[i], rtol=1e-12, atol=1e-12)


def test_float32_model_matches_the_reference():
    model = build_tiny_clip(layers=12, image_size=96, seed=32)
    x = random_images(2, OTHER, seed=8)
    texts = _texts(torch.float32, seed=6)
    ours = _ours(cliplens.wrap(copy.deepcopy(model)), x, texts)
    assert ours.dtype == torch.float32
    assert _rel(ours, reference_sfp(model, x, texts.directions)) <= 1e-4


def test_a_shallow_tower_takes_the_same_fractions_of_its_depth():
    assert default_layers(12) == default_layers(24) == (8, 3, 3, 10)
    assert default_layers(8) == (5, 2, 2, 7) and default_layers(2) == (0, 0, 0, 1)
    model = build_tiny_clip(layers=8, seed=33)
    x = random_images(2, (64, 64), seed=9)
    texts = _texts()
    ours = _ours(cliplens.wrap(copy.deepcopy(model).double().eval()), x.double(), texts)
    ref = reference_sfp(model, x, texts.directions, similarity_layer=5, refine_layer=2, fuse_start=2, fuse_end=7)
    assert _rel(ours, ref) <= 1e-9


@pytest.mark.parametrize("params, match", [
    (dict(outlier_rule="lof"), "outlier_rule must be one of som, l2"),
    (dict(outliers=-1), "outliers must be a whole number"),
    (dict(similarity_layer=2.5), "similarity_layer must be a whole number"),
    (dict(fuse_start=5, fuse_end=5), "fuse_end must be above fuse_start"),
    (dict(temperature=0.0), "temperature must be positive"),
    (dict(positional="nearest"), "positional must be one of"),
])
def test_bad_parameters_are_one_clear_error(params, match):
    with pytest.raises(InvalidInputError, match=match):
        get_map("sfp", **params)


def test_layers_past_the_last_block_and_towers_without_cls_are_refused(models, random_toy_weights):
    from tests.pooled_towers import pooled_toy

    _, wrapped = models
    image = torch.rand(3, 96, 96)
    with pytest.raises(UnsupportedArchitectureError, match=r"before the last one \(0\.\.10.*similarity_layer = 11"):
        get_map("sfp", similarity_layer=11)(wrapped, [image], ["a", "b"])
    with pytest.raises(UnsupportedArchitectureError, match="no CLS token") as e:
        get_map("sfp")(pooled_toy(random_toy_weights, "map"), [torch.rand(3, 64, 64)], ["red circle", "blue square"])
    assert "\n" not in str(e.value)
    with pytest.raises(CliplensError, match="needs a token similarity"):
        att = get_attention("semantic-enhancer")
        q = torch.randn(1, 2, 4, 8)
        att.output(q, q, q, None)


def test_the_model_is_left_unchanged():
    model = build_tiny_clip(layers=12, image_size=96, seed=34)
    wrapped = cliplens.wrap(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = random_images(1, OTHER, seed=9)
    first = _ours(wrapped, x, _texts(torch.float32))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(_ours(wrapped, x, _texts(torch.float32)), first, rtol=0, atol=0)


def test_the_command_line_lists_and_runs_sfp(random_toy_weights, tmp_path):
    toy_args = ["-m", "toy", "-p", str(random_toy_weights)]
    r = run("methods", "sfp", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["positional"] == "bicubic_dino" and "Kimsure/SFP" in d["code"] and "ICCV 2025" in d["paper"]
    assert {p["name"]: p["default"] for p in d["parameters"]}["outliers"] == 10
    image = save_image(tmp_path / "img.png")
    out = tmp_path / "out"
    r = run("explain", image, "-t", "a red circle", "-t", "a blue square", *toy_args, "--method", "sfp",
            "--param", "outlier_rule=l2", "--out", out)
    assert r.exit_code == 0, r.output
    settings = json.loads((out / "settings.json").read_text())["methods"]["sfp"]
    assert settings["outlier_rule"] == "l2" and settings["positional"] == "bicubic_dino"
    r = run("explain", image, "-t", "a red circle", *toy_args, "--method", "sfp", "--param", "outlier_rule=lof",
            "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "outlier_rule must be one of som, l2" in one_line(r.output)
    assert "Traceback" not in r.output


@pytest.mark.parametrize("correlative", [True, False])
def test_the_enhancers_output_is_its_pattern_times_the_values(correlative):
    """The fused output (softmax attention, one matmul for the head-shared guidance) equals ``pattern · v``, and the
    pattern's rows sum to 1 (every row keeps at least its own token: the similarity's diagonal is its maximum)."""
    from cliplens.core.attention import AttentionContext

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64) for _ in range(3))
    feats = torch.nn.functional.normalize(torch.randn(2, 12, 16, generator=g, dtype=torch.float64), dim=-1)
    sim = feats @ feats.transpose(1, 2)
    att = get_attention("semantic-enhancer", temperature=2.0, correlative=correlative).use(sim)
    ctx = AttentionContext(layer=0, block=None, grid=(3, 4))
    pattern = att.pattern(q, k, v, ctx)
    torch.testing.assert_close(att.output(q, k, v, ctx), pattern @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 3, 12, dtype=torch.float64))
    rows = att.pattern(q, k, v, ctx.with_rows(slice(2, 5)))
    torch.testing.assert_close(rows, pattern[:, :, 2:5])
    if correlative:  # q-q and k-k softmax are positive everywhere
        assert (pattern > 0).all()
    else:  # the guidance alone: masked where less similar than the mean
        assert (pattern == 0).any()


def test_an_outlier_among_outliers_gives_a_finite_map(models):
    """On a 4x4 grid, 10 outliers of 16 patches: some outlier has no kept neighbour, its purified features are 0
    (the original's cosine is then 0/0 and its whole map NaN); here it is similar to itself only."""
    model, wrapped = models
    x = random_images(2, (64, 64), seed=0)
    cells = reference_outliers(model, x)[0]
    lonely = [(r, c) for r, c in cells if all((r + dr, c + dc) in cells or not (0 <= r + dr < 4 and 0 <= c + dc < 4)
                                              for dr in (-1, 0, 1) for dc in (-1, 0, 1))]
    assert lonely, cells
    texts = _texts()
    ours = _ours(wrapped, x.double(), texts)
    assert torch.isfinite(ours).all()
    assert _rel(ours, reference_sfp(model, x, texts.directions)) <= 1e-9
