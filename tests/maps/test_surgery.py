"""CLIP Surgery against the independent naive implementation in tests/maps/surgery_reference.py (built
from the formulas on open_clip's own modules), and the exact split of its maps over heads."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.errors import InvalidInputError
from cliplens.maps import Surgery, Targets, TextEmbeddings, get_map, surgery_parts
from cliplens.maps.base import ImageMaps
from cliplens.maps.inputs import fit_images
from tests.conftest import pixels, tiny_open_clip
from tests.maps.surgery_reference import (
    reference_empty_surgery,
    reference_feature_surgery,
    reference_maps,
    reference_surgery_tokens,
)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "layer-scale"])
def model(request):
    return cliplens.wrap(tiny_open_clip(layers=8, layer_scale=request.param))


def _texts(model, n=4, seed=0, empty=True):
    g = torch.Generator().manual_seed(seed)
    d = F.normalize(torch.randn(n, model.vision.embed_dim, generator=g), dim=-1)
    e = F.normalize(torch.randn(model.vision.embed_dim, generator=g), dim=-1) if empty else None
    return TextEmbeddings(d, tuple(f"t{i}" for i in range(n)), e)


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("size", [(64, 64), (80, 96)])
@pytest.mark.parametrize("blocks", [6, 2, 8])
def test_architecture_surgery_tokens(model, blocks, size):
    x = pixels(2, size)
    table = model.model.visual.positional_embedding.detach().clone()
    with torch.no_grad():
        ours, _ = Surgery(blocks=blocks).tokens(model, x)
    ref = reference_surgery_tokens(model.model, x, k=blocks)
    assert _rel(ours, ref) <= 1e-5
    torch.testing.assert_close(model.model.visual.positional_embedding, table, rtol=0, atol=0)  # never written back


def test_positional_interpolation_is_the_originals_bilinear_or_bicubic_on_request(model):
    x = pixels(2, (80, 96))
    for mode in ("bilinear", "bicubic"):
        ours, _ = Surgery(blocks=2, positional=mode).tokens(model, x)
        assert _rel(ours, reference_surgery_tokens(model.model, x, k=2, positional=mode)) <= 1e-5
    assert _rel(Surgery(blocks=2).tokens(model, x)[0], Surgery(blocks=2, positional="bicubic").tokens(model, x)[0]) > 1e-3
    with pytest.raises(InvalidInputError, match="positional must be one of"):
        Surgery(positional="nearest")


@pytest.mark.parametrize("feature", ["redundancy", "empty", "none"])
def test_feature_surgery_and_maps(model, feature):
    x = pixels(3, 64, seed=1)
    texts = _texts(model)
    raw = Surgery(feature=feature).raw(model, x, texts)  # [B, T, gh, gw]
    tokens = F.normalize(reference_surgery_tokens(model.model, x, k=6), dim=-1)
    if feature == "redundancy":
        ref = reference_feature_surgery(tokens, texts.directions.double())
    elif feature == "empty":
        ref = reference_empty_surgery(tokens, texts.directions.double(), texts.empty.double())
    else:
        ref = tokens @ texts.directions.double().T
    want = ref[:, 1:].transpose(1, 2).reshape(3, 4, 4, 4)
    assert _rel(raw, want) <= 1e-5
    # the maps the pipeline draws (ImageMaps.on_input / on_image: min-max per map, bilinear to the input, the
    # original's normalisation) against the reference's
    want_maps = reference_maps(ref, (4, 4), (64, 64)).float()
    for b in range(3):
        m = ImageMaps(raw[b], (64, 64), (64, 64), (0.0, 0.0, 64.0, 64.0), f"img{b}")
        torch.testing.assert_close(m.on_input(), want_maps[b], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.on_image(), want_maps[b], rtol=1e-4, atol=1e-5)


def test_a_batch_equals_its_images_one_by_one(model):
    x = pixels(3, 64, seed=2)
    texts = _texts(model)
    together = Surgery().raw(model, x, texts)
    alone = torch.cat([Surgery().raw(model, x[i:i + 1], texts) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_one_text_falls_back_to_the_empty_prompt_and_says_so(model):
    x = pixels(1, 64)
    one = _texts(model, n=1)
    with pytest.warns(UserWarning, match="empty-prompt variant"):
        got = Surgery().raw(model, x, one)
    torch.testing.assert_close(got, Surgery(feature="empty").raw(model, x, one))
    with pytest.raises(InvalidInputError, match="empty prompt"):
        Surgery(feature="empty").raw(model, x, _texts(model, empty=False))


@pytest.mark.parametrize("feature", ["redundancy", "empty", "none"])
def test_surgery_splits_exactly_over_heads(model, feature):
    x = pixels(2, 64, seed=3)
    texts = _texts(model, n=3)
    parts = surgery_parts(model, x, texts, blocks=6, feature=feature)
    raw = Surgery(feature=feature).raw(model, x, texts)
    H = model.vision.num_heads
    assert parts.parts.shape == (2, 3, 1 + 6 * H, 4, 4)
    assert parts.labels[0] == "start" and parts.labels[1] == "L2.H0" and parts.labels[-1] == f"L7.H{H - 1}"
    assert _rel(parts.parts.sum(2), raw) <= 1e-5
    assert parts.per_head().shape == (2, 3, 1 + 6 * H)


def test_surgery_needs_a_possible_depth(model):
    with pytest.raises(InvalidInputError, match="between 1 and the model's depth"):
        Surgery(blocks=9).raw(model, pixels(1, 64), _texts(model))
    with pytest.raises(InvalidInputError, match="feature must be one of"):
        Surgery(feature="magic")


def test_the_pipeline_maps_back_to_the_original_image(random_toy):
    model = random_toy
    img = torch.rand(3, 40, 100, generator=torch.Generator().manual_seed(0))  # wide, smaller than the input
    maps = Surgery()(model, [img], Targets.texts(["a red circle", "a blue star"]), fit="whole")
    m = maps[0]
    assert m.input_size == (64, 160) and m.raw.shape == (2, 8, 20) and m.image_size == (40, 100)
    assert m.on_input().shape == (2, 64, 160) and m.on_image().shape == (2, 40, 100)
    norm = m.normalized()  # min-max on the token grid, then upsampled (as the original does)
    assert torch.equal(norm.amin((-2, -1)), torch.zeros(2)) and torch.allclose(norm.amax((-2, -1)), torch.ones(2))
    assert 0.0 <= float(m.on_input().min()) and float(m.on_input().max()) <= 1.0
    assert maps.settings["fit"] == "whole" and maps.settings["normalization"] == "minmax"
    crop = Surgery()(model, [img], ["a red circle", "a blue star"], fit="crop")[0]
    image = crop.on_image()
    assert image.shape == (2, 40, 100) and torch.isnan(image[:, :, :10]).all() and not torch.isnan(image[:, :, 50]).any()
    assert Surgery()(model, [img], ["a red circle", "a blue star"], fit="squash")[0].input_size == (64, 64)


def test_sliding_windows_stitch_without_seams(random_toy):
    """A map linear in the pixel position is reproduced exactly by overlapping windows."""

    class Ramp(cliplens.maps.MapMethod):
        def raw(self, model, pixels, texts):
            B, _, H, W = pixels.shape
            return torch.arange(W, dtype=torch.float32).expand(B, texts.directions.shape[0], H, W).clone()

    img = torch.rand(3, 64, 200)
    whole = Ramp()(random_toy, [img], ["a red circle"], normalization="raw")[0].raw  # one window: [1, 64, 200]
    tiled = Ramp()(random_toy, [img], ["a red circle"], window=64, stride=40, normalization="raw")[0].raw
    assert tiled.shape == (1, 64, 200)
    # each window's ramp restarts at 0: stitching averages them, so compare against the same average by hand
    starts = [0, 40, 80, 120, 136]
    total = torch.zeros(200)
    count = torch.zeros(200)
    for s in starts:
        total[s:s + 64] += torch.arange(64.0)
        count[s:s + 64] += 1
    torch.testing.assert_close(tiled[0, 0], total / count)
    assert whole.shape == (1, 64, 200)
    # a window map that is constant stitches to that constant everywhere (no seams at window borders)
    class Flat(cliplens.maps.MapMethod):
        def raw(self, model, pixels, texts):
            return torch.full((pixels.shape[0], texts.directions.shape[0], 4, 4), 0.7)

    flat = Flat()(random_toy, [img], ["a circle"], window=64, stride=24, normalization="raw")[0].raw
    torch.testing.assert_close(flat, torch.full_like(flat, 0.7))


def test_targets_contrasts_and_bad_input(random_toy):
    model = random_toy
    img = torch.rand(3, 64, 64)
    with pytest.raises(InvalidInputError, match="duplicate targets"):
        Targets.classes(["circle", "Circle"])
    with pytest.raises(cliplens.EmptyTextError):
        get_map("decomposition")(model, [img], [])
    with pytest.raises(InvalidInputError, match="needs two or more"):
        Targets.texts(["a red circle"], contrast="others")
    names = ["a red circle", "a blue star", "a green square"]
    raw = get_map("decomposition")(model, [img], Targets.texts(names, contrast="none"), normalization="raw")[0].raw
    others = get_map("decomposition")(model, [img], names, normalization="raw")[0].raw  # the method's default
    for k in range(3):
        torch.testing.assert_close(others[k], raw[k] - torch.stack([raw[j] for j in range(3) if j != k]).mean(0))
    empty = get_map("decomposition")(model, [img], Targets.texts(names, contrast="empty"), normalization="raw")[0].raw
    t = Targets.texts(names)
    e = t.empty_direction(model)
    empty_map = get_map("decomposition").raw(model, fit_images(model, [img])[0][0].pixels[None],
                                            TextEmbeddings(e[None], ("",)))[0]
    torch.testing.assert_close(empty, raw - empty_map, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="multiple of the patch"):
        get_map("surgery")(model, [img], names, window=30)
    with pytest.raises(InvalidInputError, match="sliding window"):
        get_map("surgery")(model, [torch.rand(3, 8, 8000)], names)  # far too many tokens for one forward


def test_many_classes_are_embedded_in_chunks(random_toy, monkeypatch):
    from cliplens.maps import targets as targets_mod

    sizes = []
    real = targets_mod.encode_validated

    def spy(model, texts, batch_size, *args):
        sizes.append(batch_size)
        return real(model, texts, batch_size, *args)

    monkeypatch.setattr(targets_mod, "encode_validated", spy)
    names = [f"a {c} {s}" for c in ("red", "blue", "green", "pink") for s in ("circle", "star", "square")] * 1
    maps = Surgery()(random_toy, [torch.rand(3, 64, 64)], Targets.texts(names))
    assert maps[0].raw.shape[0] == len(names) and sizes == [targets_mod.TEXT_CHUNK]


def test_tiny_image_is_upscaled_honestly(random_toy):
    maps = Surgery()(random_toy, [torch.rand(3, 5, 3)], ["a red circle", "a blue star"])  # smaller than one patch
    assert maps[0].image_size == (5, 3) and maps[0].on_image().shape == (2, 5, 3)
    assert maps[0].input_size[0] % 8 == 0 and min(maps[0].input_size) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy.deepcopy(maps)


def test_surgery_with_the_empty_contrast_runs_quietly(random_toy):
    names = ["a red circle", "a blue star"]
    img = torch.rand(3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no misleading one-text warning from the empty prompt's own map
        empty = Surgery()(random_toy, [img], Targets.texts(names, contrast="empty"), normalization="raw")[0].raw
    plain = Surgery()(random_toy, [img], Targets.texts(names, contrast="none"), normalization="raw")[0].raw
    torch.testing.assert_close(empty, plain)  # the empty prompt's own Surgery map is zero (t_empty − t_empty)
