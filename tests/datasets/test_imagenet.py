from __future__ import annotations

import ast
import importlib.util
import json
import random
from pathlib import Path

import pytest

import cliplens
from cliplens.datasets import ImageNetDataset, detect_layout, imagenet_classes, load_imagenet, open_dataset
from cliplens.errors import InvalidInputError
from tests.datasets.conftest import IMAGENET_SAMPLES, link

TSV = Path(cliplens.__file__).parent / "data" / "imagenet_classes.tsv"


def test_class_file():
    classes = imagenet_classes()
    assert len(classes) == 1000 and len({w for w, _ in classes}) == 1000
    wnids = [w for w, _ in classes]
    assert wnids == sorted(wnids)  # the standard order
    assert classes[0] == ("n01440764", "tench") and classes[999] == ("n15075141", "toilet paper")
    head = [ln for ln in TSV.read_text().splitlines() if ln.startswith("#")]
    text = " ".join(head)
    assert "wnid" in text and "CLIP" in text and "MIT" in text
    pyproject = Path(cliplens.__file__).parents[2] / "pyproject.toml"
    if pyproject.is_file():
        assert '"data/*"' in pyproject.read_text()  # shipped as package data


def test_class_file_matches_reference(reference_rows):
    classes = imagenet_classes()
    for r in reference_rows:
        assert classes[int(r["class_index"])][0] == r["wnid"], r


def _find(package: str) -> Path | None:
    """Where an installed package lives, without importing it (open_clip and timm are slow to import)."""
    spec = importlib.util.find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def test_class_file_matches_its_sources():
    oc, timm = _find("open_clip"), _find("timm")
    if oc is None or timm is None:
        pytest.skip("open_clip and timm (the sources of imagenet_classes.tsv) are not installed")
    tree = ast.parse((oc / "zero_shot_metadata.py").read_text())
    names = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", "") == "IMAGENET_CLASSNAMES" for t in n.targets))
    wnids = (timm / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    assert list(imagenet_classes()) == list(zip(wnids, names, strict=True))


@pytest.fixture()
def some(reference_rows) -> list[dict[str, str]]:
    return reference_rows[::17]  # 12 classes spread over the range


def test_flat_folder_with_solution(tmp_path: Path, some):
    root = tmp_path / "val"
    rows = []
    for k, r in enumerate(some):
        image_id = f"ILSVRC2012_val_{k:08d}"
        link(IMAGENET_SAMPLES / r["file"], root / f"{image_id}.JPEG")
        rows.append(f"{image_id},{r['wnid']} 10 20 110 120 {r['wnid']} 5 5 50 50")
    random.Random(0).shuffle(rows)  # order in the CSV does not matter
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    link(IMAGENET_SAMPLES / some[0]["file"], root / "not_listed.JPEG")
    assert detect_layout(root) == "imagenet"
    ds = open_dataset(root)
    assert isinstance(ds, ImageNetDataset) and len(ds) == len(some)
    assert ds.class_names == [n for _, n in imagenet_classes()]
    assert ds.labels.tolist() == [int(r["class_index"]) for r in some]
    assert [s.attributes["wnid"] for s in ds] == [r["wnid"] for r in some]
    assert [ds.wnids[s.label] for s in ds] == [r["wnid"] for r in some]
    d = ds.describe()
    json.dumps(d)
    assert d["format"] == "LOC_val_solution" and d["unlisted_images"] == 1 and d["split"] == "val"
    # the CSV itself, and the Kaggle layout (images under ILSVRC/Data/CLS-LOC/val)
    assert detect_layout(root / "LOC_val_solution.csv") == "imagenet"
    assert open_dataset(root / "LOC_val_solution.csv").labels.tolist() == ds.labels.tolist()
    kaggle = tmp_path / "kaggle"
    link(root / "LOC_val_solution.csv", kaggle / "LOC_val_solution.csv")
    for s in ds:
        link(Path(s.image), kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "val" / s.id)
    assert open_dataset(kaggle).labels.tolist() == ds.labels.tolist()


def test_wnid_folders(tmp_path: Path, some):
    root = tmp_path / "imagenet"
    for r in some:
        link(IMAGENET_SAMPLES / r["file"], root / "val" / r["wnid"] / r["file"])
    assert detect_layout(root / "val") == "imagenet"
    ds = open_dataset(root, layout="imagenet", split="val")
    # labels are the standard indices of the wnids, not positions among the 12 folders
    assert ds.labels.tolist() == [int(r["class_index"]) for r in some]
    assert ds.ids == [f"{r['wnid']}/{r['file']}" for r in some]
    assert ds.describe()["num_wnid_folders"] == len(some)


def test_bad_imagenet(tmp_path: Path, some):
    root = tmp_path / "in"
    link(IMAGENET_SAMPLES / some[0]["file"], root / some[0]["wnid"] / "a.JPEG")
    link(IMAGENET_SAMPLES / some[1]["file"], root / "cats" / "b.JPEG")
    assert detect_layout(root) == "imagefolder"  # not all wnids
    with pytest.raises(InvalidInputError, match=r"\['cats'\] are not ImageNet-1k WordNet ids"):
        load_imagenet(root)
    flat = tmp_path / "flat"
    link(IMAGENET_SAMPLES / some[0]["file"], flat / "x1.JPEG")
    sol = flat / "LOC_val_solution.csv"
    sol.write_text(f"ImageId,PredictionString\nx1,{some[0]['wnid']} 1 2 3 4\nx2,{some[1]['wnid']} 1 2 3 4\n")
    with pytest.raises(InvalidInputError, match=r"1 listed image\(s\) have no file .*'x2' \(line 3\)"):
        open_dataset(flat)
    sol.write_text("ImageId,PredictionString\nx1,n99999999 1 2 3 4\n")
    with pytest.raises(InvalidInputError, match="line 2: 'n99999999' .* not an ImageNet-1k WordNet id"):
        open_dataset(flat)
    sol.write_text("ImageId,Labels\nx1,n01440764\n")
    with pytest.raises(InvalidInputError, match="no 'PredictionString' column"):
        load_imagenet(flat)
    sol.unlink()
    with pytest.raises(InvalidInputError, match="no wnid sub-folders and no LOC_val_solution.csv"):
        load_imagenet(flat)
