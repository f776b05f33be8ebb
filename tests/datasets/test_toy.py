from __future__ import annotations

import json

import numpy as np
import pytest

from cliplens.datasets import ToyDataset, detect_layout, load_toy, open_dataset
from cliplens.datasets.toy import FACTORS, parse_toy_spec
from cliplens.errors import InvalidInputError
from cliplens.toyworld.captions import PROMPT_SETS
from cliplens.toyworld.scenes import BG_KINDS, COLOURS, SHAPES, render_scene, sample_scene


def test_deterministic_and_equal_to_the_toy_world():
    a = open_dataset("toy:n=12,seed=5")
    b = ToyDataset(12, seed=5)
    assert detect_layout("toy") == "toy" and a.layout == "toy"
    assert a.ids == b.ids and a.labels.tolist() == b.labels.tolist() and a.fingerprint() == b.fingerprint()
    for i in (0, 7, 11):
        sa, sb = a[i], b[i]
        assert sa.image.dtype == np.uint8 and sa.image.shape == (64, 64, 3)
        assert np.array_equal(sa.image, sb.image) and sa.attributes == sb.attributes
        scene = sample_scene(5, i, stream="test", count=1, image_size=64)
        assert np.array_equal(sa.image, render_scene(scene)[0])
        assert sa.attributes["shape"] == scene.objects[0].shape
    # order of access does not matter; another seed or stream gives other scenes
    assert np.array_equal(ToyDataset(12, seed=5)[11].image, a[11].image)
    assert ToyDataset(12, seed=6).fingerprint() != a.fingerprint()
    assert ToyDataset(12, seed=5, stream="eval").ids != a.ids


def test_label_factors():
    ds = open_dataset("toy", n=40)  # defaults: label=shape, single objects, the held-out "test" stream
    assert ds.class_names == list(SHAPES) == list(PROMPT_SETS["shape"].classes)
    assert ds.attribute_names == list(FACTORS)
    for s in ds:
        assert s.attributes["count"] == "1"
        assert ds.class_names[s.label] == s.attributes["shape"]
        assert all(isinstance(v, str) for v in s.attributes.values())
        assert set(s.attributes) == set(FACTORS)
    col = open_dataset("toy:colour,n=30")
    assert col.class_names == list(COLOURS) and col.name == "toy-colour"
    assert [col.class_names[s.label] for s in col] == col.attribute("colour")
    cnt = open_dataset("toy:label=count,n=60,seed=3,stream=eval")
    assert cnt.class_names == ["1", "2", "3", "4"]
    assert set(cnt.labels.tolist()) == {0, 1, 2, 3}
    assert [int(c) - 1 for c in cnt.attribute("count")] == cnt.labels.tolist()
    bg = load_toy("toy:label=background,n=20")
    assert bg.class_names == list(BG_KINDS) and bg.factor == "bg_kind"
    two = load_toy("toy:shapes=square|circle,bg_kind=striped", n=20)
    assert two.class_names == ["square", "circle"]
    assert set(two.attribute("shape")) <= {"square", "circle"} and set(two.attribute("bg_kind")) == {"striped"}
    pos = load_toy(n=10, label="position", count=2)
    assert set(pos.attribute("count")) == {"2"} and len(pos.class_names) == 9
    assert pos.render(0)[1]["visible"].shape == (2, 64, 64)


def test_describe_subset():
    ds = open_dataset("toy:label=count,n=20", count=(1, 3))
    assert ds.class_names == ["1", "3"]
    d = ds.describe()
    json.dumps(d)
    assert (d["n"], d["seed"], d["stream"], d["label"], d["count"]) == (20, 0, "test", "count", [1, 3])
    sub = ds.subset(ds.labels == 1)
    assert len(sub) > 0 and set(sub.labels.tolist()) == {1}
    assert np.array_equal(sub[0].image, ds[sub.indices[0]].image)
    assert sub.describe()["subset"]["indices"] == sub.indices
    assert sub.stream == "test"  # the parent's data attributes pass through


def test_bad_toy():
    for spec, kw, match in [
        ("toy:label=weight", {}, "unknown label factor 'weight'"),
        ("toy:shapes=circle|hexagon", {}, r"unknown shape value\(s\) \['hexagon'\]"),
        ("toy", {"n": 0}, "positive number"),
        ("toy:n=abc", {}, "is not an integer"),
        ("toy", {"stream": "dev"}, "unknown stream 'dev'"),
        ("toy", {"count": 5}, "1 to 4 objects"),
        ("toy:n=5", {"n": 6}, "both in the spec"),
        ("toy", {"colour": "red"}, r"unknown option\(s\) \['colour'\]"),
        ("toy:n=5,n=6", {}, "twice"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            open_dataset(spec, **kw)
    with pytest.raises(InvalidInputError, match="no splits"):
        open_dataset("toy", split="test")
    assert parse_toy_spec("toy:colour, n=3, count=1|2") == {"label": "colour", "n": 3, "count": (1, 2)}
