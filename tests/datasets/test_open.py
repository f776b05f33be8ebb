"""open_dataset's detection and errors, and what every Dataset shares (indexing, subsets, describe)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cliplens
from cliplens.datasets import LAYOUTS, Sample, Subset, detect_layout, open_dataset
from cliplens.errors import InvalidInputError
from tests.datasets.conftest import IMAGENET_SAMPLES, LABELS_CSV


def test_unknown_layout_option_and_paths(tmp_path: Path, reference_rows):
    with pytest.raises(InvalidInputError, match=r"unknown data set layout 'coco'; layouts are"):
        open_dataset(LABELS_CSV, layout="coco")
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['label_col'\] for the 'csv' layout"):
        open_dataset(LABELS_CSV, label_col="name")
    assert open_dataset(LABELS_CSV, layout="TSV", label_column="name").layout == "csv"  # alias, any case
    with pytest.raises(InvalidInputError, match="does not exist: give a folder"):
        open_dataset(tmp_path / "missing.csv")
    with pytest.raises(InvalidInputError, match="is a single image"):
        open_dataset(IMAGENET_SAMPLES / reference_rows[0]["file"])
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InvalidInputError, match="not a .csv or .tsv file"):
        detect_layout(tmp_path / "x.json")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "list.csv").write_text("path,label\n")
    with pytest.raises(InvalidInputError, match=r"holds \['list.csv'\]: give the file"):
        open_dataset(tmp_path / "d")
    (tmp_path / "d" / "metadata.csv").write_text("a,b\n")
    with pytest.raises(InvalidInputError, match="does not have the Waterbirds columns"):
        open_dataset(tmp_path / "d")


def test_sequence_behaviour(reference_rows):
    ds = open_dataset(LABELS_CSV, label_column="name")
    n = len(ds)
    assert isinstance(ds[0], Sample) and ds[-1].id == reference_rows[-1]["file"]
    assert ds[np.int64(3)].id == reference_rows[3]["file"]
    with pytest.raises(IndexError):
        ds[n]
    with pytest.raises(TypeError):
        ds["a"]
    sl = ds[10:20:2]
    assert isinstance(sl, Subset) and sl.ids == [r["file"] for r in reference_rows[10:20:2]]
    sub = sl.subset([-1, 0])  # a subset of a subset indexes the original
    assert sub.parent is ds and sub.indices == [18, 10]
    assert sub.class_names == ds.class_names and sub[0].label == ds[18].label
    mask = np.zeros(n, dtype=bool)
    mask[[1, 5]] = True
    assert ds.subset(mask).indices == [1, 5] and len(ds.subset([])) == 0
    with pytest.raises(InvalidInputError, match="out of range"):
        ds.subset([n])
    with pytest.raises(InvalidInputError, match="boolean mask"):
        ds.subset(mask[:-1])
    with pytest.raises(InvalidInputError, match="no attribute 'colour'"):
        ds.attribute("colour")
    d = sub.describe()
    json.dumps(d)
    assert d["num_samples"] == 2 and d["subset"]["of_num_samples"] == n and d["subset"]["indices"] == [18, 10]
    assert d["fingerprint"] != ds.describe()["fingerprint"]
    img = ds[0].load()
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert "200 samples" in repr(ds)
    assert sorted(LAYOUTS) == ["csv", "imagefolder", "imagenet", "images", "toy", "waterbirds"]


def test_imports_only_what_it_may():
    """datasets/ imports only cliplens.errors, .images, .toyworld (scenes, captions) and itself; never cli/."""
    src = Path(cliplens.__file__).parent / "datasets"
    bad = []
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for m in mods:
                if m.startswith("cliplens") and not m.startswith(
                        ("cliplens.datasets", "cliplens.errors", "cliplens.images", "cliplens.toyworld.scenes",
                         "cliplens.toyworld.captions")):
                    bad.append((path.name, m))
    assert not bad, bad
