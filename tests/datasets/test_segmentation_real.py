"""Segmentation loaders on the real samples: VOC crops (RGB and palette masks), ADE20K, COCO-Object."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens.datasets import SegSample, detect_segmentation_layout, open_segmentation
from cliplens.errors import InvalidInputError, MissingDependencyError
from tests.datasets.conftest import ADE_SAMPLES, COCO_MINI, VOC_CROPS, link, need

# pycocotools' mask.decode warns under numpy 2 (its own code; the masks are right)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# VOC's colour of class k, written out (the data set's devkit table), and void
VOC_COLOURS = [
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
    (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128), (64, 128, 128),
    (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
]
VOID = (224, 224, 192)


def _rgb_to_index(rgb: np.ndarray) -> np.ndarray:
    codes = rgb[..., 0].astype(np.int64) * 65536 + rgb[..., 1].astype(np.int64) * 256 + rgb[..., 2]
    table = {r * 65536 + g * 256 + b: k for k, (r, g, b) in enumerate([*VOC_COLOURS, VOID])}
    out = np.full(rgb.shape[:2], -1, dtype=np.int64)
    for code in np.unique(codes[::4, ::4]).tolist() + np.unique(codes[1::2, 1::2]).tolist():
        k = table[code]
        out[codes == code] = 255 if k == len(VOC_COLOURS) else k
    assert (out >= 0).all()
    return out


@pytest.fixture(scope="module")
def voc_truth() -> dict[str, np.ndarray]:
    """Each crop's class indices, from its RGB target and the colour table above."""
    return {p.name[: -len("_target.png")]: _rgb_to_index(np.asarray(Image.open(p).convert("RGB")))
            for p in sorted(need(VOC_CROPS).glob("*_target.png"))}


def _voc_tree(tmp: Path, palette: bool, truth: dict[str, np.ndarray]) -> tuple[Path, list[str], dict[str, np.ndarray]]:
    """voc-crops arranged as VOCdevkit/VOC2012 (images as PNG), masks RGB (links) or converted to 'P'."""
    root = tmp / ("voc_p" if palette else "voc_rgb")
    voc = root / "VOCdevkit" / "VOC2012"
    ids = sorted(p.name[: -len("_image.png")] for p in need(VOC_CROPS).glob("*_image.png"))
    for i in ids:
        link(VOC_CROPS / f"{i}_image.png", voc / "JPEGImages" / f"{i}.png")
        target = VOC_CROPS / f"{i}_target.png"
        dst = voc / "SegmentationClass" / f"{i}.png"
        if palette:
            dst.parent.mkdir(parents=True, exist_ok=True)
            p = Image.fromarray(truth[i].astype(np.uint8), mode="P")
            flat = [v for c in VOC_COLOURS for v in c] + [0, 0, 0] * (255 - len(VOC_COLOURS)) + list(VOID)
            p.putpalette(flat)
            p.save(dst)
        else:
            link(target, dst)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("\n".join(ids[:10]) + "\n")
    (sets / "train.txt").write_text("\n".join(ids[10:]) + "\n")
    return root, ids, truth


@pytest.mark.parametrize("palette", [False, True])
def test_voc_crops(tmp_path: Path, palette: bool, voc_truth):
    root, ids, truth = _voc_tree(tmp_path, palette, voc_truth)
    if palette:
        assert Image.open(root / "VOCdevkit/VOC2012/SegmentationClass" / f"{ids[0]}.png").mode == "P"
    ds = open_segmentation("voc21", root)
    assert ds.ids == ids[:10] and ds.split == "val" and ds.layout == "voc" and len(ds.class_names) == 21
    assert ds.class_names[0] == "background" and ds.class_names[15] == "person" and ds.background == 0
    assert not ds.reduce_zero_label
    v20 = open_segmentation("voc20", root / "VOCdevkit")  # the obvious sub-folder works too
    assert v20.class_names == ds.class_names[1:] and v20.background is None and v20.reduce_zero_label
    for k, s in enumerate(ds):
        assert isinstance(s, SegSample) and s.id == ids[k] and s.mask.path.endswith(f"SegmentationClass/{s.id}.png")
        m = s.load_mask()
        assert m.dtype == np.int64 and m.shape == (513, 513) == s.load().size[::-1]
        assert np.array_equal(m, truth[s.id])
        assert set(np.unique(m).tolist()) <= set(range(21)) | {255}
        assert (m == 255).any() and (m == 0).any()  # the void boundary and background are there
        m20 = v20.mask(k)
        expect = np.where((m == 0) | (m == 255), 255, m - 1)
        assert np.array_equal(m20, expect) and m20.max() <= 255 and ((m20 < 20) | (m20 == 255)).all()
    assert np.array_equal(pickle.loads(pickle.dumps(v20)).mask(3), v20.mask(3))  # for DataLoader workers
    assert open_segmentation("voc21:split=train", root).ids == ids[10:]
    assert open_segmentation("voc21", root, split=None).ids == ids
    d = ds.describe()
    json.dumps(d)
    assert (d["layout"], d["split"], d["num_samples"], d["background"], d["ignore_index"]) == ("voc", "val", 10, 0, 255)
    assert d["root"].endswith("VOC2012")
    with pytest.raises(InvalidInputError, match=r"holds data for several segmentation sets: \['voc21', 'voc20'\]"):
        open_segmentation(root)


def test_voc_errors(tmp_path: Path, voc_truth):
    root, ids, _ = _voc_tree(tmp_path, False, voc_truth)
    voc = root / "VOCdevkit" / "VOC2012"
    with pytest.raises(InvalidInputError, match=r"no split file .*test.txt \(the splits there are \['train', 'val'\]\)"):
        open_segmentation("voc21", root, split="test")
    with pytest.raises(InvalidInputError, match="is not a PASCAL VOC 2012 folder; expected VOCdevkit/VOC2012/"):
        open_segmentation("voc21", tmp_path)
    with pytest.raises(InvalidInputError, match="the 'voc21' segmentation set needs root="):
        open_segmentation("voc21")
    # a colour outside the VOC map, and a mask that is not its image's size
    bad = np.asarray(Image.open(VOC_CROPS / f"{ids[0]}_target.png").convert("RGB")).copy()
    bad[:3, :3] = (10, 20, 30)
    (voc / "SegmentationClass" / f"{ids[0]}.png").unlink()
    Image.fromarray(bad).save(voc / "SegmentationClass" / f"{ids[0]}.png")
    ds = open_segmentation("voc21", root)
    with pytest.raises(InvalidInputError, match=r"colour\(s\) \(10, 20, 30\) that are not in the VOC colour map"):
        ds.mask(0)
    (voc / "SegmentationClass" / f"{ids[1]}.png").unlink()
    clean = np.asarray(Image.open(VOC_CROPS / f"{ids[1]}_target.png").convert("RGB"))
    Image.fromarray(clean[:500, :400]).save(voc / "SegmentationClass" / f"{ids[1]}.png")
    with pytest.raises(InvalidInputError, match=r"is 500x400 \(height x width\) but its image .* is 513x513"):
        ds[1].load_mask()
    (voc / "SegmentationClass" / f"{ids[2]}.png").unlink()
    with pytest.raises(InvalidInputError, match=rf"1 mask\(s\) are missing under .*SegmentationClass: '{ids[2]}'"):
        open_segmentation("voc21", root)


def test_ade_samples(tmp_path: Path):
    need(ADE_SAMPLES)
    ds = open_segmentation("ade20k", ADE_SAMPLES)
    assert detect_segmentation_layout(ADE_SAMPLES) == "ade20k"
    assert len(ds) == 3 and ds.class_names[0] == "wall" and len(ds.class_names) == 150
    assert ds.reduce_zero_label and ds.background is None and ds.split is None  # the flat layout has no split
    # the class names are objectInfo150's first names (mmsegmentation's list; entry 90 keeps "television receiver")
    rows = (ADE_SAMPLES / "objectInfo150.txt").read_text().splitlines()[1:]
    first = [r.split("\t")[-1].split(",")[0].strip() for r in rows]
    first[89] = "television receiver"
    assert ds.class_names == first
    for s in ds:
        m = s.load_mask()
        raw = np.asarray(Image.open(ADE_SAMPLES / "annotations" / f"{s.id}.png")).astype(np.int64)
        assert m.shape == raw.shape == s.load().size[::-1]
        assert np.array_equal(m, np.where(raw == 0, 255, raw - 1))
        assert ((m <= 149) | (m == 255)).all() and (m == 255).any() and (m < 150).any()
    # the standard layout, with its split
    std = tmp_path / "ADEChallengeData2016"
    for s in ds:
        link(Path(s.image), std / "images" / "validation" / Path(s.image).name)
        link(ADE_SAMPLES / "annotations" / f"{s.id}.png", std / "annotations" / "validation" / f"{s.id}.png")
    ds2 = open_segmentation("ade20k", tmp_path, split="val")
    assert ds2.split == "validation" and ds2.ids == ds.ids and np.array_equal(ds2.mask(2), ds.mask(2))
    with pytest.raises(InvalidInputError, match="no ADE20K training data"):
        open_segmentation("ade20k", std, split="train")
    (std / "annotations" / "validation" / f"{ds.ids[0]}.png").unlink()
    with pytest.raises(InvalidInputError, match=r"1 annotation\(s\) are missing"):
        open_segmentation("ade20k", std)


def _coco():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(need(COCO_MINI) / "annotations" / "instances_val2017.json"))


def test_coco_object_against_ann_to_mask():
    coco = _coco()
    ds = open_segmentation(COCO_MINI)  # detected: val2017/ + annotations/instances_val2017.json
    assert ds.layout == "coco-object" and len(ds) == 79 and ds.background == 0 and ds.split == "val2017"
    cats = sorted(coco.cats.values(), key=lambda c: c["id"])
    assert ds.class_names == ["background"] + [c["name"] for c in cats] and len(ds.class_names) == 81
    contiguous = {c["id"]: k + 1 for k, c in enumerate(cats)}
    checked_overlap = False
    for i in range(0, 79, 8):
        img_id = ds.image_id(i)
        info = coco.imgs[img_id]
        assert ds[i].id == info["file_name"][:-4]
        m = ds.mask(i)
        assert m.shape == (info["height"], info["width"]) == ds[i].load().size[::-1]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        cover = np.sum(masks, axis=0) if masks else np.zeros(m.shape)
        assert (m[cover == 0] == 0).all()  # every pixel of no object is background, no ignore pixels
        assert ((m >= 0) & (m <= 80)).all()
        for a, am in zip(anns, masks, strict=True):
            alone = am & (cover == 1)
            assert (m[alone] == contiguous[a["category_id"]]).all()
        # overlaps: the smaller object wins
        for a, am in zip(anns, masks, strict=True):
            for b, bm in zip(anns, masks, strict=True):
                both = am & bm & (cover == 2)
                if a["id"] != b["id"] and both.any() and a["area"] < b["area"] and not b["iscrowd"]:
                    assert (m[both] == contiguous[a["category_id"]]).all()
                    checked_overlap = True
    assert checked_overlap
    assert np.array_equal(pickle.loads(pickle.dumps(ds)).mask(5), ds.mask(5))


def test_coco_object_crowd_rules():
    coco = _coco()
    crowd = next(a for a in coco.anns.values() if a["iscrowd"])
    ds = {rule: open_segmentation("coco-object", COCO_MINI, crowd=rule) for rule in ("object", "background", "ignore")}
    i = [ds["object"].image_id(k) for k in range(len(ds["object"]))].index(crowd["image_id"])
    others = [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[crowd["image_id"]] if not a["iscrowd"]]
    only_crowd = coco.annToMask(crowd).astype(bool) & ~np.any(others, axis=0)
    assert only_crowd.sum() > 100
    label = list(sorted(coco.cats)).index(crowd["category_id"]) + 1
    assert (ds["object"].mask(i)[only_crowd] == label).all()
    assert (ds["background"].mask(i)[only_crowd] == 0).all()
    assert (ds["ignore"].mask(i)[only_crowd] == 255).all()
    assert ds["ignore"].describe()["options"]["crowd"] == "ignore"
    with pytest.raises(InvalidInputError, match=r"crowd='skip': choose one of \['object', 'background', 'ignore'\]"):
        open_segmentation("coco-object", COCO_MINI, crowd="skip")


def test_coco_object_needs_pycocotools(monkeypatch):
    need(COCO_MINI)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(MissingDependencyError, match="pip install pycocotools"):
        open_segmentation("coco-object", COCO_MINI)
