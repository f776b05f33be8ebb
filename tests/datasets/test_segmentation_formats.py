"""Segmentation loaders on small synthetic files: Cityscapes, COCO-Stuff, PASCAL Context, ImageNet-seg,
the generic folder, and masks of EXIF-rotated images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens.datasets import detect_segmentation_layout, load_segmentation_folder, open_segmentation
from cliplens.errors import InvalidInputError, MissingDependencyError
from tests.datasets.mat_files import imagenet_seg_cells

RNG = np.random.default_rng(0)


def _img(path: Path, h: int, w: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, values: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode=mode).save(path)
    return path


# ---------------------------------------------------------------------------------------------- Cityscapes
# label id -> train id, from cityscapesScripts' labels.py (written out here as known values)
CITY_KNOWN = {0: 255, 1: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255,
              17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255,
              30: 255, 31: 16, 32: 17, 33: 18, 34: 255, 200: 255}


def test_cityscapes(tmp_path: Path):
    ids = np.array(list(CITY_KNOWN), dtype=np.uint8).reshape(4, 8)
    for city, base in [("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000001_000019")]:
        _img(tmp_path / "leftImg8bit" / "val" / city / f"{base}_leftImg8bit.png", 4, 8)
        _mask(tmp_path / "gtFine" / "val" / city / f"{base}_gtFine_labelIds.png", ids)
        _mask(tmp_path / "gtFine" / "val" / city / f"{base}_gtFine_color.png", ids)  # other gtFine files are ignored
    # one image also has the official trainIds file: it is preferred
    train = np.full((4, 8), 255, np.uint8)
    train[0, :3] = (13, 0, 18)
    _mask(tmp_path / "gtFine" / "val" / "lindau" / "lindau_000001_000019_gtFine_labelTrainIds.png", train)
    ds = open_segmentation(tmp_path)
    assert ds.layout == "cityscapes" and ds.ids == ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000001_000019"]
    assert len(ds.class_names) == 19 and ds.class_names[13] == "car" and ds.class_names[18] == "bicycle"
    assert ds.class_names[:3] == ["road", "sidewalk", "building"] and ds.background is None
    m = ds.mask(0)
    expect = np.array(list(CITY_KNOWN.values())).reshape(4, 8)
    assert m.dtype == np.int64 and np.array_equal(m, expect)
    assert np.array_equal(ds.mask(1), train.astype(np.int64))
    assert ds.describe()["split"] == "val"
    with pytest.raises(InvalidInputError, match=r"no leftImg8bit/train folder \(the splits there are \['val'\]\)"):
        open_segmentation("cityscapes", tmp_path, split="train")
    (tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png").unlink()
    with pytest.raises(InvalidInputError, match=r"1 annotation\(s\) are missing .*'frankfurt/frankfurt_000000_000294'"):
        open_segmentation("cityscapes", tmp_path)


# ---------------------------------------------------------------------------------------------- COCO-Stuff
# stuffthingmaps value (COCO id - 1) -> (train id, name): known entries of the 182 -> 171 table
STUFF_KNOWN = {0: (0, "person"), 10: (10, "fire hydrant"), 11: (255, None), 12: (11, "stop sign"),
               25: (255, None), 66: (60, "dining table"), 70: (255, None), 89: (79, "toothbrush"), 90: (255, None),
               91: (80, "banner"), 181: (170, "wood"), 255: (255, None)}


def test_coco_stuff(tmp_path: Path):
    from cliplens.datasets.coco import COCO_STUFF_CLASSES, STUFFTHINGMAP_TO_TRAIN_ID

    raw = np.array(list(STUFF_KNOWN), dtype=np.uint8).reshape(3, 4)
    expect = np.array([v[0] for v in STUFF_KNOWN.values()]).reshape(3, 4)
    _img(tmp_path / "val2017" / "000000000139.jpg", 3, 4)
    _img(tmp_path / "val2017" / "000000000285.jpg", 3, 4)
    _mask(tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "000000000139.png", raw)
    _mask(tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "000000000285.png", raw)
    ds = open_segmentation("coco-stuff", tmp_path, split="val")
    assert detect_segmentation_layout(tmp_path) == "coco-stuff"
    assert ds.split == "val2017" and ds.ids == ["000000000139", "000000000285"] and len(ds.class_names) == 171
    assert np.array_equal(ds.mask(0), expect)
    for (train_id, name) in STUFF_KNOWN.values():
        if name is not None:
            assert COCO_STUFF_CLASSES[train_id] == name
    kept = [v for v in range(182) if STUFFTHINGMAP_TO_TRAIN_ID[v] != 255]
    assert len(kept) == 171 and [int(STUFFTHINGMAP_TO_TRAIN_ID[v]) for v in kept] == list(range(171))
    # mmsegmentation's layout, whose converted *_labelTrainIds.png is preferred over the raw map
    mm = tmp_path / "mm"
    _img(mm / "images" / "val2017" / "000000000139.jpg", 3, 4)
    _mask(mm / "annotations" / "val2017" / "000000000139.png", raw)
    _mask(mm / "annotations" / "val2017" / "000000000139_labelTrainIds.png", np.full((3, 4), 7))
    mds = open_segmentation("coco-stuff", mm)
    assert mds.mask(0).tolist() == [[7] * 4] * 3 and mds.ids == ["000000000139"]
    # a value that no stuffthingmaps PNG holds
    _mask(tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "000000000285.png", np.full((3, 4), 200))
    with pytest.raises(InvalidInputError, match=r"holds the value\(s\) 200: stuffthingmaps_trainval2017 PNGs hold"):
        ds.mask(1)
    with pytest.raises(InvalidInputError, match="no COCO-Stuff train2017 data"):
        open_segmentation("coco-stuff", tmp_path, split="train")


# ---------------------------------------------------------------------------------------------- PASCAL Context
def test_context(tmp_path: Path):
    voc = tmp_path / "VOCdevkit" / "VOC2010"
    vals = np.arange(60, dtype=np.uint8).reshape(6, 10)
    for i in ("2008_000002", "2008_000007"):
        _img(voc / "JPEGImages" / f"{i}.jpg", 6, 10)
        _mask(voc / "SegmentationClassContext" / f"{i}.png", vals)
    (voc / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n2008_000007\n")
    c60 = open_segmentation("context60", tmp_path)
    c59 = open_segmentation("context59", voc)
    assert c60.class_names[0] == "background" and c60.class_names[1] == "aeroplane" and len(c60.class_names) == 60
    assert c59.class_names == c60.class_names[1:] and c59.class_names[-1] == "wood" and c59.reduce_zero_label
    assert c60.background == 0 and c59.background is None
    assert np.array_equal(c60.mask(1), vals.astype(np.int64))
    m59 = c59.mask(1)
    assert m59[0, 0] == 255 and np.array_equal(m59.ravel()[1:], np.arange(59))
    with pytest.raises(InvalidInputError, match=r"holds data for several segmentation sets: \['context60', 'context59'\]"):
        detect_segmentation_layout(tmp_path)
    _mask(voc / "SegmentationClassContext" / "2008_000007.png", np.full((6, 10), 60))
    with pytest.raises(InvalidInputError, match=r"holds the value\(s\) 60: PASCAL Context masks"):
        c59.mask(1)
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").unlink()
    with pytest.raises(InvalidInputError, match=r"no split file .*val.txt; give another split \(--split NAME\), or none \(--split none"):
        open_segmentation("context59", tmp_path)


# ---------------------------------------------------------------------------------------------- ImageNet-seg
def _seg_rows() -> list[tuple[np.ndarray, np.ndarray]]:
    rows = []
    for h, w in [(5, 7), (6, 4), (3, 3)]:
        img = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
        gt = (RNG.random((h, w)) > 0.5).astype(np.uint8)
        rows.append((img, gt))
    return rows


def test_imagenet_seg_v5(tmp_path: Path):
    savemat = pytest.importorskip("scipy.io").savemat

    rows = _seg_rows()
    imgs, gts = imagenet_seg_cells(rows)
    path = tmp_path / "gtsegs_ijcv.mat"
    savemat(path, {"value": {"img": imgs, "gt": gts}})
    ds = open_segmentation(tmp_path)  # the folder holding gtsegs_ijcv.mat
    assert ds.layout == "imagenet-seg" and ds.class_names == ["background", "object"] and ds.background == 0
    assert len(ds) == 3 and ds.ids == ["0", "1", "2"] and ds.describe()["options"]["format"] == "v5"
    for k, (img, gt) in enumerate(rows):
        s = ds[k]
        assert np.array_equal(s.image, img) and s.load().size == (img.shape[1], img.shape[0])
        assert np.array_equal(s.load_mask(), gt.astype(np.int64))
    bad = gts.copy()
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = np.full((3, 3), 2, np.uint8)
    bad[2, 0] = cell
    savemat(path, {"value": {"img": imgs, "gt": bad}})
    with pytest.raises(InvalidInputError, match=r"gt 2 holds the value\(s\) 2; .* 0 \(background\) and 1"):
        open_segmentation("imagenet-seg", path).mask(2)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = np.ones((3, 4), np.uint8)
    bad[2, 0] = cell
    savemat(path, {"value": {"img": imgs, "gt": bad}})
    with pytest.raises(InvalidInputError, match=r"the mask .*gt 2 is 3x4 \(height x width\) but its image .*img 2 is 3x3"):
        open_segmentation("imagenet-seg", path)[2].load_mask()
    savemat(path, {"value": {"img": imgs, "gt": gts[:2]}})
    with pytest.raises(InvalidInputError, match="3 images but 2 masks"):
        open_segmentation("imagenet-seg", path)
    savemat(path, {"other": np.zeros(3)})
    with pytest.raises(InvalidInputError, match="no variable 'value'"):
        open_segmentation("imagenet-seg", path)


def _write_v73(path: Path, rows: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The original's structure: /value/img and /value/gt hold references; arrays stored column-major."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        img_refs = np.empty((len(rows), 1), dtype=h5py.ref_dtype)
        gt_refs = np.empty((len(rows), 1), dtype=h5py.ref_dtype)
        for k, (img, gt) in enumerate(rows):
            d_img = refs.create_dataset(f"img{k}", data=img.transpose(2, 1, 0))  # 3 x W x H
            d_gt = refs.create_dataset(f"gt{k}", data=gt.T)  # W x H
            cell = refs.create_dataset(f"cell{k}", data=np.array([[d_gt.ref]], dtype=h5py.ref_dtype))
            img_refs[k, 0] = d_img.ref
            gt_refs[k, 0] = cell.ref
        f.create_dataset("value/img", data=img_refs)
        f.create_dataset("value/gt", data=gt_refs)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def test_imagenet_seg_v73(tmp_path: Path, monkeypatch):
    rows = _seg_rows()
    path = tmp_path / "gtsegs_ijcv.mat"
    _write_v73(path, rows)
    ds = open_segmentation("imagenet-seg", path)
    assert ds.describe()["options"]["format"] == "hdf5" and len(ds) == 3
    for k, (img, gt) in enumerate(rows):
        assert ds[k].image.shape == img.shape and np.array_equal(ds[k].image, img)
        assert np.array_equal(ds.mask(k), gt)
    import pickle

    again = pickle.loads(pickle.dumps(ds))  # the HDF5 handle is reopened, not pickled
    assert np.array_equal(again.mask(1), rows[1][1])
    ds.close()
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingDependencyError, match="MATLAB v7.3 .* pip install h5py"):
        open_segmentation("imagenet-seg", path)
    (tmp_path / "x.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(InvalidInputError, match="is not a MATLAB .mat file"):
        open_segmentation("imagenet-seg", tmp_path / "x.mat")


# ---------------------------------------------------------------------------------------------- generic folder
def test_folder(tmp_path: Path):
    root = tmp_path / "mine"
    a = np.array([[0, 1, 2], [2, 255, 0]], dtype=np.uint8)
    _img(root / "images" / "a.jpg", 2, 3)
    _mask(root / "masks" / "a.png", a)
    _img(root / "images" / "sub" / "b.png", 2, 3)
    pal = Image.fromarray(a[::-1].copy(), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    (root / "masks" / "sub").mkdir()
    pal.save(root / "masks" / "sub" / "b.png")  # palette masks: the indices are the classes
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    ds = open_segmentation(root)
    assert ds.layout == "folder" and ds.name == "mine" and ds.ids == ["a", "sub/b"]
    assert ds.class_names == ["background", "cat", "dog"] and ds.background == 0
    assert np.array_equal(ds.mask(0), a) and np.array_equal(ds.mask(1), a[::-1])
    red = load_segmentation_folder(root, classes=["bg", "cat", "dog"], reduce_zero_label=True, background=None)
    assert red.mask(0).tolist() == [[255, 0, 1], [1, 255, 255]] and red.background is None
    no_bg = load_segmentation_folder(root, classes=["sky", "cat", "dog"])
    assert no_bg.background is None
    # errors: a value beyond the classes, a colour mask, a JPEG mask, a missing mask, no class names
    with pytest.raises(InvalidInputError, match=r"holds the value\(s\) 2: this folder's 2 classes are 0..1"):
        load_segmentation_folder(root, classes=["background", "cat"]).mask(0)
    Image.fromarray(RNG.integers(0, 3, (2, 3, 3), dtype=np.uint8)).save(root / "masks" / "a.png")
    with pytest.raises(InvalidInputError, match=r"is a colour \(RGB\) image; masks must be single-channel"):
        ds.mask(0)
    (root / "masks" / "a.png").unlink()
    Image.fromarray(a).save(root / "masks" / "a.jpg")
    with pytest.raises(InvalidInputError, match="is a lossy .jpg file"):
        open_segmentation("folder", root).mask(0)
    (root / "masks" / "a.jpg").unlink()
    with pytest.raises(InvalidInputError, match=r"1 mask\(s\) are missing under .*masks: 'a.jpg'"):
        open_segmentation("folder", root)
    (root / "classes.txt").unlink()
    with pytest.raises(InvalidInputError, match="has no classes.txt: write the class names there"):
        open_segmentation("folder", root)
    with pytest.raises(InvalidInputError, match="has no images/ and masks/ sub-folders"):
        load_segmentation_folder(tmp_path)


def test_exif_rotated_image_gets_a_turned_mask(tmp_path: Path):
    """An image stored 4x6 with EXIF orientation 6 is shown 6x4 by load_image: the mask turns with it."""
    root = tmp_path / "rot"
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[0, 0] = stored[0, 1] = (255, 0, 0)
    mask = np.zeros((4, 6), np.uint8)
    mask[0, 0] = mask[0, 1] = 1
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    (root / "images").mkdir(parents=True)
    img.save(root / "images" / "r.png", exif=exif)
    _mask(root / "masks" / "r.png", mask)
    ds = load_segmentation_folder(root, classes=["background", "red"])
    shown = np.asarray(ds[0].load())
    m = ds.mask(0)
    assert shown.shape[:2] == (6, 4) and m.shape == (6, 4)
    assert np.array_equal(m == 1, (shown == (255, 0, 0)).all(-1))
