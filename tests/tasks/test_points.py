"""Text -> points for SAM: exactly the independent reference (tests/maps/surgery_reference.py) on synthetic grids and
on a real map; edge cases; SAM's masks from the points with a random-weight SAM built offline."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cliplens.errors import InvalidInputError, MissingDependencyError, ModelLoadError
from cliplens.maps.surgery import Surgery
from cliplens.maps.targets import Targets
from cliplens.tasks.points import Points, load_sam, points_from_map, sam_masks, text_points
from tests.maps.surgery_reference import reference_points
from tests.tasks.conftest import COCO_IMAGES, needs_coco
from tests.tasks.sam_helpers import RecordPredict, random_sam

GRIDS = [
    # (grid shape, image (H, W), threshold, kind)
    ((14, 14), (427, 640), 0.8, "normal"),
    ((8, 8), (64, 64), 0.8, "normal"),
    ((7, 9), (33, 50), 0.5, "normal"),  # odd sides: gh // 2, gw // 2
    ((16, 12), (480, 360), 0.0, "normal"),  # every cell passes: k = cells // 2
    ((14, 14), (224, 224), 1.0, "normal"),  # only the best cell
    ((12, 12), (300, 300), 0.8, "ties"),  # many equal cells: the stable order decides
    ((4, 4), (10, 1000), 0.3, "ties"),
    ((2, 2), (5, 7), 0.8, "normal"),  # a 1x1 map: no room for points
]


def _grid(shape, kind, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        return torch.randint(0, 3, shape, generator=g).float()
    return torch.randn(shape, generator=g) * 0.05 + 0.2


@pytest.mark.parametrize("shape, hw, threshold, kind", GRIDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_points_match_the_reference(shape, hw, threshold, kind, seed):
    grid = _grid(shape, kind, seed)
    pts = points_from_map(grid, hw, threshold)
    ref_points, ref_labels = reference_points(grid, hw, threshold)
    assert pts.points == ref_points and pts.labels == ref_labels
    assert pts.map_size == (shape[0] // 2, shape[1] // 2) and pts.grid_size == shape and pts.image_size == hw
    for x, y in pts.points:
        assert 0 <= x < hw[1] and 0 <= y < hw[0] and isinstance(x, int) and isinstance(y, int)
    n = pts.map_size[0] * pts.map_size[1]
    assert len(pts.positives) == len(pts.negatives) <= n // 2
    if n >= 2:
        assert len(pts) > 0 and pts.message == ""
    else:
        assert len(pts) == 0 and "one cell" in pts.message


def test_points_by_hand():
    """A 4x4 grid -> a 2x2 map of cell means (bilinear ×2 down with align_corners=False averages 2x2 blocks)."""
    grid = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 3.0]])
    pts = points_from_map(grid, (100, 200), threshold=0.7)
    # cells 0, 4, 1, 3 -> normalised 0, 1, .25, .75; >= .7: two cells; k = min(2, 2) = 2
    # positives ascending: (row 1, col 1) = .75, then (0, 1) = 1; negatives: (0, 0) = 0, (1, 0) = .25
    assert pts.points == [[150, 75], [150, 25], [50, 25], [50, 75]]
    assert pts.labels == [1, 1, 0, 0]


def test_constant_map_has_no_points():
    pts = points_from_map(torch.full((8, 8), 0.3), (64, 64))
    assert pts.points == [] and pts.labels == [] and "constant" in pts.message
    assert reference_points(torch.full((8, 8), 0.3), (64, 64)) == ([], [])  # NaN after min-max: nothing passes


@pytest.mark.parametrize("grid, hw, threshold, match", [
    (torch.zeros(1, 8, 8), (8, 8), 0.8, r"\[gh, gw\]"),
    (torch.zeros(1, 8), (8, 8), 0.8, "too small"),
    (torch.zeros(8, 8), (8, 8), 1.5, "between 0 and 1"),
    (torch.zeros(8, 8), (8, 8), -0.1, "between 0 and 1"),
    (torch.full((8, 8), float("nan")), (8, 8), 0.8, "NaN"),
    (torch.zeros(8, 8), (0, 8), 0.8, "positive"),
])
def test_points_refuse(grid, hw, threshold, match):
    with pytest.raises(InvalidInputError, match=match):
        points_from_map(grid, hw, threshold)


def _photo(tmp_path):
    """A real photo when COCO-mini is there, else a synthetic one."""
    if COCO_IMAGES.is_dir():
        return str(sorted(COCO_IMAGES.glob("*.jpg"))[0])
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_text_points_on_a_real_map(oc_model, tmp_path):
    image = _photo(tmp_path)
    pts = text_points(oc_model, image, "a dog")
    H, W = Image.open(image).size[::-1]
    assert pts.image_size == (H, W) and pts.text == "a dog" and pts.source == image
    # the raw map is the Surgery map of the whole image (t - t_empty for one text), before normalisation
    method = Surgery(blocks=3, feature="empty")
    maps = method(oc_model, [image], Targets.classes(["a dog"], templates="surgery"), normalization="raw")
    torch.testing.assert_close(pts.raw, maps[0].raw[0])
    assert pts.grid_size == tuple(pts.raw.shape) and pts.settings["fit"] == "whole"
    for threshold in (0.8, 0.5, 0.95):
        p = text_points(oc_model, image, "a dog", threshold=threshold)
        assert (p.points, p.labels) == reference_points(p.raw, p.image_size, threshold)
        assert len(p) > 0
    squash = text_points(oc_model, image, "a dog", fit="squash")
    assert squash.grid_size == (8, 8) and (squash.points, squash.labels) == reference_points(squash.raw, (H, W))


def test_text_points_refuses_crop(oc_model):
    with pytest.raises(InvalidInputError, match="crop"):
        text_points(oc_model, np.zeros((32, 32, 3), np.uint8), "a dog", fit="crop")
    with pytest.raises(InvalidInputError, match="one image"):
        text_points(oc_model, [np.zeros((32, 32, 3), np.uint8)], "a dog")


# ---- SAM ------------------------------------------------------------------------------------------

def test_sam_masks_plumbing(monkeypatch, tmp_path):
    sa = pytest.importorskip("segment_anything")
    sam = random_sam()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    points, labels = [[80, 10], [5, 55], [45, 30]], [1, 1, 0]
    rec = RecordPredict(sa.SamPredictor.predict)
    monkeypatch.setattr(sa.SamPredictor, "predict", rec)
    masks, scores = sam_masks(rgb, points, labels, sam=sam)
    assert masks.dtype == torch.bool and masks.shape == (3, 60, 90)  # multimask: 3 masks at the image's size
    assert scores.shape == (3,) and bool((scores[:-1] >= scores[1:]).all())  # best first
    (call,) = rec.calls
    np.testing.assert_array_equal(call["kwargs"]["point_coords"], np.array(points, float))  # (x, y) image pixels
    np.testing.assert_array_equal(call["kwargs"]["point_labels"], np.array(labels))
    assert call["kwargs"]["multimask_output"] is True and call["original_size"] == (60, 90)

    # a Points object and an image file: its points and labels reach the predictor as they are
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    pts = Points([[10, 20], [70, 40]], [1, 0], (2, 2), (4, 4), (60, 90), 0.8)
    masks2, _ = sam_masks(str(path), pts, sam=sam)
    assert masks2.shape == (3, 60, 90)
    np.testing.assert_array_equal(rec.calls[-1]["kwargs"]["point_coords"], np.array(pts.points, float))
    np.testing.assert_array_equal(rec.calls[-1]["kwargs"]["point_labels"], np.array([1, 0]))


def test_sam_refuses(tmp_path, monkeypatch):
    rgb = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="no points"):
        sam_masks(rgb, [], [], sam=object())
    with pytest.raises(InvalidInputError, match="lie in the image"):
        sam_masks(rgb, [[30, 5]], [1], sam=object())  # x must be < W = 30
    with pytest.raises(InvalidInputError, match="2 points but 1 labels"):
        sam_masks(rgb, [[1, 1], [2, 2]], [1], sam=object())
    with pytest.raises(InvalidInputError, match="checkpoint"):
        sam_masks(rgb, [[1, 1]], [1])
    pytest.importorskip("segment_anything")
    with pytest.raises(InvalidInputError, match="does not exist"):
        sam_masks(rgb, [[1, 1]], [1], checkpoint=tmp_path / "sam_vit_b.pth")
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match="pip install segment-anything"):
        sam_masks(rgb, [[1, 1]], [1], checkpoint=tmp_path / "sam_vit_b.pth")


def test_text_points_to_sam_end_to_end(oc_model, tmp_path, monkeypatch):
    sa = pytest.importorskip("segment_anything")
    needs_coco()
    image = _photo(tmp_path)
    pts = text_points(oc_model, image, "a dog")
    rec = RecordPredict(sa.SamPredictor.predict)
    monkeypatch.setattr(sa.SamPredictor, "predict", rec)
    masks, scores = sam_masks(image, pts, sam=random_sam())
    H, W = pts.image_size
    assert masks.shape == (3, H, W) and rec.calls[0]["original_size"] == (H, W)
    np.testing.assert_array_equal(rec.calls[0]["kwargs"]["point_coords"], np.array(pts.points, float))


def test_load_sam_reports_a_bad_checkpoint(tmp_path):
    pytest.importorskip("segment_anything")
    bad = tmp_path / "sam_vit_b.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="Could not load the SAM checkpoint .* not a valid PyTorch checkpoint"):
        load_sam(bad, "vit_b")
    with pytest.raises(InvalidInputError, match="unknown SAM type"):
        load_sam(bad, "vit_s")
    with pytest.raises(InvalidInputError, match="is a folder"):
        load_sam(tmp_path, "vit_b")
