"""Maps from text embeddings (``Targets.from_embeddings``) and from raw grids (``Maps.from_grids``, its box
convention), points for SAM from maps (``points_from_maps``) and SAM's masks for a text (``text_masks``)."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.errors import InvalidInputError
from cliplens.maps import Maps, Targets, get_map
from cliplens.tasks.points import points_from_map, points_from_maps, text_masks, text_points
from tests.conftest import tiny_open_clip

TEXTS = ["a red circle", "a blue star", "grass"]


@pytest.fixture(scope="module")
def model():
    return cliplens.wrap(tiny_open_clip(patch=8), tokenizer=open_clip.get_tokenizer("ViT-B-32", context_length=16))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)  # not square: fits matter


@pytest.mark.parametrize("method", ["decomposition", "surgery", "naclip"])
def test_targets_from_embeddings_equal_the_same_texts(model, image, method):
    emb = model.encode_text(TEXTS) * torch.tensor([[0.5], [2.0], [7.0]])  # any length: normalised as every target
    m = get_map(method, **({"blocks": 2} if method == "surgery" else {}))  # the model has 3 blocks
    ours = m(model, [image], Targets.from_embeddings(emb, labels=TEXTS), normalization="raw")
    ref = m(model, [image], Targets.texts(TEXTS), normalization="raw")
    assert ours.labels == TEXTS
    torch.testing.assert_close(ours.raw, ref.raw, rtol=1e-5, atol=1e-6)
    # a bare tensor is targets too (labelled by row)
    assert m(model, [image], emb).labels == ["text 0", "text 1", "text 2"]


def test_targets_from_embeddings_empty_prompt(model, image):
    """One text through CLIP Surgery subtracts the empty prompt: the model's own empty text by default, or the
    ``empty=`` given."""
    emb = model.encode_text(TEXTS[:1])
    surgery = get_map("surgery", blocks=2)
    default = surgery(model, [image], Targets.from_embeddings(emb, ["x"]), normalization="raw").raw
    torch.testing.assert_close(default, surgery(model, [image], Targets.texts(TEXTS[:1]), normalization="raw").raw)
    other = F.normalize(torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(3)), dim=0)
    given = surgery(model, [image], Targets.from_embeddings(emb, ["x"], empty=other), normalization="raw").raw
    assert not torch.allclose(given, default)
    with pytest.raises(InvalidInputError, match="3 embeddings but 2 labels"):
        Targets.from_embeddings(emb.repeat(3, 1), ["a", "b"])
    with pytest.raises(InvalidInputError, match="duplicate"):
        Targets.from_embeddings(emb.repeat(2, 1), ["a", "a"])
    with pytest.raises(InvalidInputError, match="non-zero"):
        Targets.from_embeddings(torch.zeros(1, 4))


@pytest.mark.parametrize("fit", ["whole", "crop"])
def test_from_grids_rebuilds_a_methods_maps(model, image, fit):
    """The box convention, checked against the maps a method makes: its raw grids, image size and box given back
    to ``Maps.from_grids`` give the same maps over the model input and over the original image."""
    made = get_map("decomposition")(model, [image, image[:40, :40]], TEXTS, fit=fit)
    for i, m in enumerate(made):
        again = Maps.from_grids(m.raw[None], image_size=m.image_size, box=m.box, input_size=m.input_size,
                                labels=made.labels)
        assert again.labels == TEXTS and again[0].box == m.box
        torch.testing.assert_close(again[0].on_image(), m.on_image(), equal_nan=True)
        torch.testing.assert_close(again[0].on_input(), m.on_input())
        if fit == "crop" and i == 0:  # the centre crop of a wide image: the sides were not seen
            assert bool(torch.isnan(again[0].on_image()[:, :, 0]).all())


def test_from_grids_defaults_and_refusals():
    g = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    maps = Maps.from_grids(g, image_size=(40, 50))
    assert len(maps) == 2 and maps.labels == ["text 0", "text 1", "text 2"] and maps[1].box == (0.0, 0.0, 40.0, 50.0)
    up = F.interpolate(maps[1].normalized()[:, None], size=(40, 50), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps[1].on_image(), up)
    torch.testing.assert_close(maps.raw, g)
    one = Maps.from_grids(g[0], image_size=(40, 50), box=(10, 0, 30, 50))  # the grid covers rows 10..30
    on = one[0].on_image()
    assert bool(torch.isnan(on[:, :10]).all() and torch.isnan(on[:, 30:]).all()) and not torch.isnan(on[:, 10:30]).any()
    with pytest.raises(InvalidInputError, match="labels"):
        Maps.from_grids(g, image_size=(40, 50), labels=["a"])
    with pytest.raises(InvalidInputError, match="bottom > top"):
        Maps.from_grids(g, image_size=(40, 50), box=(10, 0, 5, 50))
    with pytest.raises(InvalidInputError, match=r"for each of the 2 images"):
        Maps.from_grids(g, image_size=[(40, 50)] * 3)
    with pytest.raises(InvalidInputError, match=r"\[images, targets, h, w\]"):
        Maps.from_grids(g[0, 0], image_size=(40, 50))


def test_points_from_maps_follow_the_points_rule():
    g = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(1))
    maps = Maps.from_grids(g, image_size=(60, 90), labels=["a", "b", "c"])
    pts = points_from_maps(maps, "b", image=1, threshold=0.6)
    ref = points_from_map(g[1, 1], (60, 90), 0.6)
    assert pts.points == ref.points and pts.labels == ref.labels and len(pts) > 0
    assert pts.text == "b" and pts.source == "image 1"
    assert points_from_maps(maps[1], 1, threshold=0.6).points == ref.points  # one image's maps: by index
    crop = Maps.from_grids(g, image_size=(60, 90), box=(0, 15, 60, 75))
    with pytest.raises(InvalidInputError, match="not all of it"):
        points_from_maps(crop)
    with pytest.raises(InvalidInputError, match="no target 'd'"):
        points_from_maps(maps, "d")
    with pytest.raises(InvalidInputError, match="out of range"):
        points_from_maps(maps, 3)


def test_points_from_a_methods_maps_equal_text_points(model, image):
    """Points from a method and a text (``text_points``) are the points of that method's raw maps."""
    pts = text_points(model, image, "a red circle", templates=None)
    maps = pts_method_maps = get_map("surgery", blocks=min(6, model.vision.num_layers), feature="empty")(
        model, [image], Targets.texts(["a red circle"]), normalization="raw")
    assert points_from_maps(pts_method_maps).points == pts.points and len(maps) == 1


def test_text_masks(model, image, tmp_path):
    pytest.importorskip("segment_anything")
    from tests.tasks.sam_helpers import random_sam

    with pytest.raises(InvalidInputError, match="checkpoint"):
        text_masks(model, image, "a red circle")
    masks, scores, pts = text_masks(model, image, "a red circle", sam=random_sam(), templates=None)
    assert masks.shape == (3, 48, 80) and masks.dtype == torch.bool and scores.shape == (3,)
    assert bool((scores[:-1] >= scores[1:]).all()) and pts.points == text_points(model, image, "a red circle",
                                                                                 templates=None).points
    assert all(0 <= x < 80 and 0 <= y < 48 for x, y in pts.points) and not math.isnan(float(scores[0]))
