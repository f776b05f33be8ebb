"""open_segmentation (names, specs, paths, options), the shared interface (samples, subsets, describe) and the
toy-world segmentation set."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens.datasets import SEGMENTATION_SETS, SegSample, detect_segmentation_layout, open_segmentation
from cliplens.datasets.toy_segmentation import ToySegmentation
from cliplens.errors import InvalidInputError


def test_names_and_errors(tmp_path: Path):
    assert list(SEGMENTATION_SETS) == ["voc21", "voc20", "context60", "context59", "coco-stuff", "coco-object",
                                       "cityscapes", "ade20k", "imagenet-seg", "folder", "toy"]
    with pytest.raises(InvalidInputError, match=r"unknown segmentation set 'vocc'; names are \['voc21', 'voc20'"):
        open_segmentation("vocc")
    with pytest.raises(InvalidInputError, match="unknown segmentation set 'vocc'"):
        open_segmentation("vocc", root=tmp_path)
    with pytest.raises(InvalidInputError, match=r"the 'ade20k' segmentation set needs root="):
        open_segmentation("ade20k")
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['splt'\] for the 'ade20k' segmentation set"):
        open_segmentation("ade20k", tmp_path, splt="val")
    with pytest.raises(InvalidInputError, match="generated, it reads no files: drop root="):
        open_segmentation("toy", tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_segmentation(tmp_path / "missing")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(InvalidInputError, match=r"cannot tell which segmentation set .* name it: .*Expected layouts"):
        detect_segmentation_layout(tmp_path / "stuff")
    for name in ("voc21", "context59", "coco-stuff", "coco-object", "cityscapes", "ade20k", "imagenet-seg"):
        with pytest.raises(InvalidInputError, match="expected|give|holds no|not a"):
            open_segmentation(name, tmp_path / "stuff")
    with pytest.raises(InvalidInputError, match=r"\['split'\] given both in the spec"):
        open_segmentation("ade20k:split=val", tmp_path, split="val")
    with pytest.raises(InvalidInputError, match="is not key=value"):
        open_segmentation("toy:50")


def test_toy_matches_the_bench_classes():
    from cliplens.toyworld.captions import class_texts, object_text
    from cliplens.toyworld.scenes import render_scene, sample_scene

    ds = open_segmentation("toy:n=6,seed=3")
    assert isinstance(ds, ToySegmentation) and len(ds) == 6 and ds.layout == ds.name == "toy"
    texts = class_texts()
    assert len(ds.class_names) == 1 + len(texts) == 57 and ds.class_names[0] == "background" and ds.background == 0
    assert [f"a {n}" if n[0] not in "aeiou" else f"an {n}" for n in ds.class_names[1:]] == texts
    for i in range(6):
        sc = sample_scene(3, i, stream="test", image_size=64)
        img, masks = render_scene(sc)
        s = ds[i]
        assert s.id == f"test/3/{i}" and np.array_equal(s.image, img)
        m = s.load_mask()
        assert m.shape == (64, 64) and not (m == 255).any()
        assert (m[masks["background"]] == 0).all()
        for o, vis in zip(sc.objects, masks["visible"], strict=True):
            assert (m[vis] == 1 + texts.index(object_text(o.colour, o.shape))).all()
    shapes = open_segmentation("toy", n=4, classes="shape", count=2, seed=1)
    assert shapes.class_names == ["background", "circle", "square", "triangle", "star", "cross", "heart", "diamond"]
    sc = shapes.scene(0)
    assert sc.count == 2
    assert set(np.unique(shapes.mask(0)).tolist()) <= {0} | {1 + shapes.class_names[1:].index(o.shape) for o in sc.objects}
    again = pickle.loads(pickle.dumps(shapes))
    assert np.array_equal(again.mask(3), shapes.mask(3))
    d = open_segmentation("toy:n=3,count=1|2,classes=colour").describe()
    json.dumps(d)
    assert d["options"]["count"] == [1, 2] and d["options"]["classes"] == "colour" and d["num_classes"] == 9
    for spec, match in [("toy:n=0", "positive number"), ("toy:classes=size", "classes='size'"),
                        ("toy:count=5", "1 to 4 objects"), ("toy:stream=dev", "unknown stream 'dev'"),
                        ("toy:weight=3", r"unknown option\(s\) \['weight'\]")]:
        with pytest.raises(InvalidInputError, match=match):
            open_segmentation(spec)


def test_samples_subsets_and_describe(tmp_path: Path):
    ds = open_segmentation("toy", n=10, seed=2)
    s = ds[-1]
    assert isinstance(s, SegSample) and s.id == "test/2/9" and "toy scene test/2/9" in repr(s.mask)
    assert s.mask.path is None
    assert s.load().size == (64, 64) and s.load("L").mode == "L"
    sub = ds[2:8:2]
    assert sub.ids == ["test/2/2", "test/2/4", "test/2/6"] and sub.class_names == ds.class_names
    subsub = sub.subset([-1])
    assert subsub.parent is ds and subsub.indices == [6] and np.array_equal(subsub.mask(0), ds.mask(6))
    assert subsub.describe()["subset"]["indices"] == [6]
    keep = np.zeros(10, bool)
    keep[[1, 3]] = True
    assert ds.subset(keep).ids == ["test/2/1", "test/2/3"]
    with pytest.raises(InvalidInputError, match="out of range"):
        ds.subset([10])
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(TypeError):
        ds["a"]
    d = ds.describe()
    assert set(d) >= {"name", "layout", "root", "split", "num_samples", "num_classes", "class_names", "ignore_index",
                      "background", "reduce_zero_label", "options", "fingerprint"}
    assert d["fingerprint"] == open_segmentation("toy", n=10, seed=2).fingerprint() != ds[:5].fingerprint()
    # a sample made by hand: arrays and PNG files of class indices
    png = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 3]], np.uint8)).save(png)
    assert SegSample(np.zeros((1, 2, 3), np.uint8), png, "x").load_mask().tolist() == [[0, 3]]
    assert SegSample("x.jpg", np.array([[1, 2]], np.uint8), "x").load_mask().dtype == np.int64
