"""Reopening a data set from its recorded description (a store's header): toy specs, folders, CSV lists,
subsets and waterbirds come back as the same data set; what moved or changed is refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens.datasets import Dataset, open_dataset
from cliplens.datasets.reopen import check_same_dataset, reopen_dataset
from cliplens.errors import InvalidInputError


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def _roundtrip(ds: Dataset) -> Dataset:
    """The description as a store's header holds it (through JSON), reopened."""
    d = json.loads(json.dumps(ds.describe()))
    again = reopen_dataset(d)
    assert again.ids == ds.ids and list(again.labels) == list(ds.labels) and again.class_names == ds.class_names
    assert again.describe() == ds.describe()
    return again


@pytest.mark.parametrize("spec", ["toy:label=shape,n=12,seed=5",
                                  "toy:label=count,n=9,seed=3,stream=eval,shapes=circle|square,bg_kind=striped",
                                  "toy:label=colour,n=7,seed=2,stream=7,count=1|2,image_size=32"])
def test_toy_specs_come_back(spec):
    ds = _roundtrip(open_dataset(spec))
    assert len(ds) == open_dataset(spec).n
    np.testing.assert_array_equal(np.asarray(ds[3].image), np.asarray(open_dataset(spec)[3].image))


def test_folders_lists_and_subsets_come_back(tmp_path):
    root = tmp_path / "pets"
    for i in range(3):
        _png(root / "cat" / f"c{i}.png", i)
        _png(root / "dog" / f"d{i}.png", 10 + i)
    _roundtrip(open_dataset(root))
    _roundtrip(open_dataset(root).subset([4, 0, 2]))
    (tmp_path / "list.csv").write_text("path,label,split\n" + "".join(
        f"pets/{c}/{c[0]}{i}.png,{c},{'train' if i else 'test'}\n" for c in ("cat", "dog") for i in range(3)))
    _roundtrip(open_dataset(tmp_path / "list.csv"))
    _roundtrip(open_dataset(tmp_path / "list.csv", split="train", classes=["dog", "cat"]))
    wb = tmp_path / "wb"
    (wb / "metadata.csv").parent.mkdir()
    rows = []
    for i in range(4):
        _png(wb / f"{i}.png", 20 + i)
        rows.append(f"{i}.png,{i % 2},{i // 2},{i % 3}")
    (wb / "metadata.csv").write_text("img_filename,y,place,split\n" + "\n".join(rows) + "\n")
    _roundtrip(open_dataset(wb, split="train"))


def test_what_moved_or_changed_is_refused(tmp_path):
    root = tmp_path / "pets"
    for i in range(2):
        _png(root / "cat" / f"c{i}.png", i)
        _png(root / "dog" / f"d{i}.png", 10 + i)
    d = json.loads(json.dumps(open_dataset(root).describe()))
    _png(root / "dog" / "d9.png", 9)  # a new image: another data set
    with pytest.raises(InvalidInputError, match="is not the one the store was made from.*cliplens store build"):
        reopen_dataset(d)
    root.rename(tmp_path / "moved")
    with pytest.raises(InvalidInputError, match=r"cannot be reopened: .*pets does not exist any more.*--data"):
        reopen_dataset(d)
    with pytest.raises(InvalidInputError, match="does not know how to open the 'test-scenes' layout"):
        reopen_dataset({"layout": "test-scenes", "n": 3})
    with pytest.raises(InvalidInputError, match="description is incomplete"):
        reopen_dataset({"layout": "toy", "name": "toy-shape"})
    ds = open_dataset("toy:n=5")
    check_same_dataset(ds, ds.describe())
    with pytest.raises(InvalidInputError, match="'--data toy:n=4' is not the one"):
        check_same_dataset(open_dataset("toy:n=4"), ds.describe(), "'--data toy:n=4'")
