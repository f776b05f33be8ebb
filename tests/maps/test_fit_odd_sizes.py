"""Images whose fitted sides are not multiples of the patch size (a 336x501 photo under ``fit="short"``): fitted
to a size the model accepts, and their maps back on the original pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import cliplens
from cliplens.maps import get_map
from cliplens.maps.inputs import fit_images, fitted_shape


@pytest.fixture(scope="module", params=[16, 32], ids=["patch16", "patch32"])
def model(request):
    """A tiny random-weight open_clip ViT with the patch size asked (and a text tower that takes 77 tokens)."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    clip = open_clip.CLIP(32, vision_cfg=dict(image_size=64, patch_size=request.param, width=64, layers=2,
                                              head_width=16),
                          text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    return cliplens.wrap(clip)


def _photo(h: int = 336, w: int = 501) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_short_fit_seen_whole_rounds_each_side_to_the_patch(model):
    p = model.vision.patch_size[0]
    H, W = fitted_shape(model, (336, 501), fit="short", size=336)
    assert H % p == 0 and W % p == 0 and abs(H - 336) <= p // 2 and abs(W - 501) <= p // 2  # the nearest multiples
    assert (H, W) == {16: (336, 496), 32: (320, 512)}[p]
    fitted, _ = fit_images(model, [_photo()], fit="short", size=336)
    assert tuple(fitted[0].pixels.shape[-2:]) == (H, W)
    assert fitted[0].box == (0.0, 0.0, 336.0, 501.0)  # the whole original, mapped back by resizing


def test_short_fit_with_a_window_keeps_mmcv_sides_it_covers(model):
    p = model.vision.patch_size[0]
    # both sides at least the window: mmcv's exact size (the benchmarks' windows slide over it)
    assert fitted_shape(model, (336, 501), fit="short", size=336, window=64) == (336, 501)
    # a side shorter than the window is seen whole: rounded; the other stays as mmcv makes it
    H, W = fitted_shape(model, (30, 100), fit="short", size=40, window=64)
    assert H == 32 and W == int(100 * 40 / 30 + 0.5) == 133 and W % p


@pytest.mark.parametrize("method", ["maskclip", "sclip"])
def test_maps_of_an_odd_sized_image_come_back_at_its_size(model, method):
    texts = ["a dog", "a cat"]
    # seen whole (no window): refused before as "not a multiple of the patch size"
    maps = get_map(method)(model, [_photo()], texts, fit="short", size=336, normalization="raw")
    on_image = maps[0].on_image()
    assert tuple(on_image.shape) == (2, 336, 501) and torch.isfinite(on_image).all()
    # a window larger than the fitted short side: that side is seen whole, and rounded
    maps = get_map(method)(model, [_photo(40, 100)], texts, fit="short", size=40, window=64, stride=32,
                           normalization="raw")
    assert tuple(maps[0].on_image().shape) == (2, 40, 100) and torch.isfinite(maps[0].on_image()).all()
