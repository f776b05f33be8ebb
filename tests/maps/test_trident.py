"""Trident against the naive float64 reference (tests/maps/trident_reference.py) on random weights: a tiny
open_clip CLIP, tiny transformers DINO / DINOv2 backbones and a tiny segment_anything SAM; end to end, the
random-weight ``vit_b`` SAM of ``sam_model_registry``."""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from cliplens.errors import InvalidInputError, UnsupportedArchitectureError
from cliplens.maps import TextEmbeddings, get_map
from tests.maps.dense_reference import build_tiny_clip, random_directions, random_images
from tests.maps.trident_reference import reference_raw, tiny_sam
from tests.models.vfm_models import tiny_vfm

pytest.importorskip("segment_anything")


@pytest.fixture(scope="module")
def models():
    clip = build_tiny_clip(layers=4, seed=41).double()
    dino = copy.deepcopy(tiny_vfm("dino", width=32, heads=4, layers=2, patch=16, image_size=64, seed=3)).double()
    return clip, cliplens.wrap(copy.deepcopy(clip)), dino, tiny_sam()


def _rgb(wrapped, x):
    """The uint8 images SAM sees, computed here from the CLIP-normalised pixels."""
    cfg = wrapped.preprocess_config
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    return ((x.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _compare(clip, wrapped, dino, sam, hw, params, seed=7):
    x = random_images(2, hw, seed=seed).double()
    texts = random_directions(3, seed=5)
    ours = get_map("trident", vfm=dino, sam=sam, **params).raw(wrapped, x, TextEmbeddings(texts, ("a", "b", "c")))
    cfg = wrapped.preprocess_config
    ref = reference_raw(clip, dino, sam, x, _rgb(wrapped, x), texts, cfg.mean, cfg.std, **params)
    return ours, ref


@pytest.mark.parametrize(("hw", "params"), [
    ((64, 64), {"slide_crop": 64, "slide_stride": 32}),  # one window at CLIP's native 4x4 grid
    ((64, 96), {"slide_crop": 48, "slide_stride": 32}),  # 2x4 windows of 3x3 cells: bicubic_dino from the 4x4 table
    ((80, 96), {}),  # the defaults: one 5x6 window (smaller than slide_crop)
], ids=["native", "windows-48", "defaults-80x96"])
def test_matches_the_naive_reference(models, hw, params):
    clip, wrapped, dino, sam = models
    ours, ref = _compare(clip, wrapped, dino, sam, hw, params)
    grid = (hw[0] * 128 // max(hw) // 16, hw[1] * 128 // max(hw) // 16)  # SAM's valid cells of its 128-px input
    assert ours.shape == ref.shape == (2, 3, *grid)
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    # 1e-6, not 1e-12: vfm's normalize_from rounds the re-normalised pixels through float32
    assert rel <= 1e-6, rel


@pytest.mark.parametrize("sam_params", [
    {"cos_fac": 0.0},  # VOC20's setting: every positive cosine passes
    {"cos_fac": -1.0, "refine_neg_cos": False},  # negative thresholds become 0.6 (as with Cityscapes' setting)
], ids=["cos_fac-0", "negative-threshold"])
def test_matches_the_reference_with_another_dino_grid_and_settings(models, sam_params):
    """DINOv2 with 12-pixel patches: a 4x4 DINO grid on 3x3 CLIP windows is resized before the stitch (ratio
    round(4/3) = 1); other beta and gamma; SAM's threshold rules."""
    clip, wrapped, _, sam = models
    dino = copy.deepcopy(tiny_vfm("dinov2", width=32, heads=4, layers=2, patch=12, image_size=48, seed=5)).double()
    params = {"slide_crop": 48, "slide_stride": 16, "beta": 0.5, "gamma": 2.0, **sam_params}
    ours, ref = _compare(clip, wrapped, dino, sam, (64, 64), params, seed=9)
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-6


def test_sam_on_the_two_halves_matches_the_reference(models):
    """The original's Cityscapes case: SAM's guidance of each half on its half of the stitched map, side by side."""
    clip, wrapped, dino, sam = models
    params = {"slide_crop": 48, "slide_stride": 32, "sam_halves": True}
    ours, ref = _compare(clip, wrapped, dino, sam, (64, 128), params, seed=4)
    # each 64x64 half is 128x128 in SAM: 8x8 valid cells; side by side 8x16
    assert ours.shape == ref.shape == (2, 3, 8, 16)
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-6
    whole, _ = _compare(clip, wrapped, dino, sam, (64, 128), {**params, "sam_halves": False}, seed=4)
    assert whole.shape == (2, 3, 4, 8)  # the whole input is 64x128 in SAM: 4x8 valid cells


def test_a_dino_grid_coarser_than_clips(models):
    """DINO with 32-pixel patches on 4x4 CLIP windows (a 2x2 grid): the original's ratio round(2/4) is 0, which
    fails; cliplens stitches at CLIP's grid (ratio 1), as the reference does."""
    clip, wrapped, _, sam = models
    dino = copy.deepcopy(tiny_vfm("dino", width=32, heads=4, layers=2, patch=32, image_size=64, seed=6)).double()
    ours, ref = _compare(clip, wrapped, dino, sam, (64, 96), {"slide_crop": 64, "slide_stride": 32}, seed=3)
    assert torch.isfinite(ours).all() and ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-6


def test_every_setting_changes_the_map(models):
    _, wrapped, dino, sam = models
    x = random_images(1, (64, 96), seed=7).double()
    t = TextEmbeddings(random_directions(3, seed=5), ("a", "b", "c"))
    base = get_map("trident", vfm=dino, sam=sam, slide_crop=48, slide_stride=32).raw(wrapped, x, t)
    for other in ({"beta": 0.5}, {"gamma": 1.0}, {"cos_fac": 0.5}, {"slide_stride": 16}, {"slide_crop": 64},
                  {"positional": "bicubic"}, {"cos_fac": -1.0, "refine_neg_cos": False}):
        kw = {"slide_crop": 48, "slide_stride": 32, **other}
        got = get_map("trident", vfm=dino, sam=sam, **kw).raw(wrapped, x, t)
        assert got.shape != base.shape or not torch.allclose(got, base), other


def test_random_vit_b_sam_end_to_end(models):
    """The random-weight ``vit_b`` SAM: a 64x96 input is 683x1024 in SAM, 42x64 valid cells of its 64x64 grid."""
    segment_anything = pytest.importorskip("segment_anything")
    _, wrapped, dino, _ = models
    torch.manual_seed(0)
    sam = segment_anything.sam_model_registry["vit_b"](checkpoint=None).eval()
    # one block, the first global-attention one (index 2): the full encoder takes ~20 s on two CPU cores
    sam.image_encoder.blocks = sam.image_encoder.blocks[2:3]
    method = get_map("trident", vfm=dino, sam=sam)
    image = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(1))
    maps = method(wrapped, [image], ["a", "b"], normalization="raw")
    assert maps.raw.shape == (1, 2, 42, 64) and torch.isfinite(maps.raw).all()


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=["square", "padded"])
def test_guidance_reads_sams_own_attention_and_equals_recomputing_it(models, monkeypatch, hw):
    """The guidance takes the pattern SAM's forward computed (no second attention pass), and equals the guidance
    that computes it from q and k; a SAM whose attention shows no single softmax falls back to computing it."""
    import cliplens.maps.trident as trident

    _, wrapped, dino, sam = models
    seen = []
    original = trident.sam_guidance

    def recording(q, k, v, attn, grid, valid, *args, pattern=None):
        seen.append(pattern)
        recomputed = original(q, k, v, attn, grid, valid, *args)
        kept = original(q, k, v, attn, grid, valid, *args, pattern=pattern)
        torch.testing.assert_close(kept, recomputed, rtol=1e-12, atol=1e-12)
        return kept

    monkeypatch.setattr(trident, "sam_guidance", recording)
    method = get_map("trident", vfm=dino, sam=sam)
    x = random_images(2, hw, seed=3).double()
    g, valid = method.guidance(wrapped, x)
    heads, cells = sam.image_encoder.blocks[-1].attn.num_heads, 8 * 8
    assert len(seen) == 2 and all(p is not None and p.shape == (heads, cells, cells) for p in seen)
    assert g.shape == (2, valid[0] * valid[1], valid[0] * valid[1])

    monkeypatch.setattr(trident, "_SOFTMAXES", ())  # as if SAM's forward took no softmax the taps recognise
    seen.clear()
    torch.testing.assert_close(method.guidance(wrapped, x)[0], g, rtol=1e-12, atol=1e-12)
    assert seen == [None, None]


def test_errors_are_one_paragraph(models):
    _, wrapped, dino, sam = models
    x = random_images(1, (64, 64)).double()
    t = TextEmbeddings(random_directions(1), ("a",))
    with pytest.raises(UnsupportedArchitectureError, match="sam_checkpoint=PATH"):
        get_map("trident", vfm=dino)(wrapped, [torch.rand(3, 64, 64)], ["a"])
    with pytest.raises(UnsupportedArchitectureError, match="sam must be one of vit_b"):
        get_map("trident", vfm=dino, sam="vit_q", sam_checkpoint="x.pth").raw(wrapped, x, t)
    with pytest.raises(UnsupportedArchitectureError, match="does not exist"):
        get_map("trident", vfm=dino, sam="vit_b", sam_checkpoint="/nonexistent/sam.pth").raw(wrapped, x, t)
    with pytest.raises(UnsupportedArchitectureError, match="segment_anything SAM model"):
        get_map("trident", vfm=dino, sam=object()).raw(wrapped, x, t)
    with pytest.raises(InvalidInputError, match="slide_stride .* must not exceed slide_crop"):
        get_map("trident", slide_crop=224, slide_stride=336)
    with pytest.raises(InvalidInputError, match="slide_crop must be a positive"):
        get_map("trident", slide_crop=0)
    with pytest.raises(InvalidInputError, match="gamma"):
        get_map("trident", gamma=0)
    with pytest.raises(InvalidInputError, match="multiples of the patch size"):
        get_map("trident", vfm=dino, sam=sam, slide_crop=40, slide_stride=40).raw(wrapped, x, t)


def test_listed_with_its_parameters():
    from cliplens.maps import map_names
    from cliplens.maps.params import method_parameters

    assert "trident" in map_names(second_backbone=True) and "trident" not in map_names(second_backbone=False)
    params = {p.name: p.default for p in method_parameters("trident")}
    assert params["vfm"] == "dino_vitb16" and params["sam"] == "vit_b" and params["positional"] == "bicubic_dino"
    assert (params["slide_crop"], params["slide_stride"], params["beta"], params["gamma"]) == (336, 224, 1.2, 3.0)
    assert params["cos_fac"] == 1.2 and params["refine_neg_cos"] is True
