from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliplens.datasets import ImageFolderDataset, detect_layout, load_image_folder, open_dataset
from cliplens.errors import CliplensError, InvalidInputError
from tests.datasets.conftest import IMAGENET_SAMPLES, link


@pytest.fixture()
def folder(tmp_path: Path, reference_rows) -> Path:
    """Classes created in the order zebra, apple, Mango (sorted: Mango, apple, zebra), with a nested folder,
    hidden files, a hidden folder, a non-image file and upper-case extensions."""
    photos = [IMAGENET_SAMPLES / r["file"] for r in reference_rows[:8]]
    root = tmp_path / "animals"
    link(photos[0], root / "zebra" / "z1.JPEG")
    link(photos[1], root / "zebra" / "nested" / "deeper" / "z2.jpg")
    link(photos[2], root / "apple" / "a1.jpeg")
    link(photos[3], root / "apple" / "A0.PNG")  # the extension decides, not the content
    link(photos[4], root / "Mango" / "m1.jpg")
    link(photos[5], root / "apple" / ".hidden.jpg")
    link(photos[6], root / "apple" / "._a1.jpeg")  # macOS resource fork
    link(photos[7], root / ".thumbs" / "t.jpg")  # hidden folder: not a class
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "readme.md").write_text("loose file in the root")
    return root


def test_classes_sorted_and_labels_from_folders(folder: Path):
    assert detect_layout(folder) == "imagefolder"
    ds = open_dataset(folder)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.class_names == ["Mango", "apple", "zebra"]
    assert ds.ids == ["Mango/m1.jpg", "apple/A0.PNG", "apple/a1.jpeg", "zebra/nested/deeper/z2.jpg", "zebra/z1.JPEG"]
    for s in ds:
        assert ds.class_names[s.label] == s.id.split("/")[0]
        assert Path(s.image).is_file() and Path(s.image).is_absolute()
        assert s.attributes == {}
    assert ds.labels.tolist() == [0, 1, 1, 2, 2]
    d = ds.describe()
    json.dumps(d)
    assert d["layout"] == "imagefolder" and d["num_samples"] == 5 and d["num_classes"] == 3
    assert d["skipped_files"] == 1  # notes.txt (hidden files are not counted)
    assert d["name"] == "animals"
    assert ds.class_counts() == {"Mango": 1, "apple": 2, "zebra": 2}


def test_order_does_not_depend_on_creation(folder: Path, tmp_path: Path):
    a = load_image_folder(folder)
    # the same files created in the reverse order
    other = tmp_path / "other"
    for s in reversed(list(a)):
        link(Path(s.image).resolve(), other / s.id)
    b = load_image_folder(other)
    assert b.ids == a.ids and b.labels.tolist() == a.labels.tolist()
    assert a.fingerprint() == b.fingerprint()


def test_split_subfolder_and_unlabelled(folder: Path, tmp_path: Path):
    top = tmp_path / "top"
    (top / "val").mkdir(parents=True)
    (top / "val" / "animals").symlink_to(folder)
    # split= reads root/split
    ds = open_dataset(top, split="val", layout="imagefolder")
    assert ds.class_names == ["animals"] and len(ds) == 5
    with pytest.raises(InvalidInputError, match="no folder"):
        open_dataset(top, split="test", layout="imagefolder")
    # loose images: refused by detection, read with layout="images"
    flat = tmp_path / "flat"
    for s in load_image_folder(folder):
        link(Path(s.image).resolve(), flat / s.id.replace("/", "_"))
    with pytest.raises(InvalidInputError, match="layout='images'"):
        open_dataset(flat)
    with pytest.raises(InvalidInputError, match="layout='images'"):
        open_dataset(flat, layout="imagefolder")
    un = open_dataset(flat, layout="images")
    assert len(un) == 5 and un.class_names == [] and set(un.labels.tolist()) == {-1}
    assert un.describe()["num_unlabelled"] == 5


def test_bad_folders(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="does not exist") as e:
        open_dataset(tmp_path / "nope")
    assert isinstance(e.value, CliplensError) and "nope" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="empty"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "noimages" / "cls").mkdir(parents=True)
    (tmp_path / "noimages" / "cls" / "a.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="no image files"):
        open_dataset(tmp_path / "noimages")
    with pytest.raises(InvalidInputError, match="is a file"):
        load_image_folder(tmp_path / "noimages" / "cls" / "a.txt")
