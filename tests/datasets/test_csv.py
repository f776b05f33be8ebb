from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliplens.datasets import CsvDataset, detect_layout, imagenet_classes, load_csv, open_dataset
from cliplens.errors import InvalidInputError
from tests.datasets.conftest import IMAGENET_SAMPLES, LABELS_CSV, link


def test_reference_labels_by_index(reference_rows):
    ds = open_dataset(LABELS_CSV, label_column="class_index", classes="imagenet")
    assert isinstance(ds, CsvDataset) and ds.layout == "csv"
    assert len(ds) == len(reference_rows) == 200
    names = [n for _, n in imagenet_classes()]
    assert ds.class_names == names
    for s, r in zip(ds, reference_rows, strict=True):
        assert s.label == int(r["class_index"])
        assert s.id == r["file"] and Path(s.image) == IMAGENET_SAMPLES / r["file"]
        assert s.attributes == {"wnid": r["wnid"], "name": r["name"]}
        assert imagenet_classes()[s.label][0] == r["wnid"]
    d = ds.describe()
    json.dumps(d)
    assert d["path_column"] == "file" and d["label_column"] == "class_index" and d["labels"] == "index"


def test_reference_labels_auto_columns(reference_rows):
    """With no options: path column 'file', label column 'class_index'; the wnid column agrees with the
    ImageNet indices, so the class names are ImageNet's 1,000."""
    from cliplens.datasets import imagenet_classes

    ds = open_dataset(LABELS_CSV)
    assert detect_layout(LABELS_CSV) == "csv"
    assert ds.labels.tolist() == [int(r["class_index"]) for r in reference_rows]
    assert ds.class_names == [name for _, name in imagenet_classes()]
    assert ds.attribute_names == ["wnid", "name"]


def test_integer_labels_named_from_the_file(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.png")
    (tmp_path / "a.csv").write_text("path,label,name\n0.png,2,dog\n1.png,0,cat\n2.png,2,dog\n")
    assert open_dataset(tmp_path / "a.csv").class_names == ["cat", "class_1", "dog"]
    (tmp_path / "b.csv").write_text("path,label,name\n0.png,2,dog\n1.png,0,cat\n2.png,2,wolf\n")  # inconsistent
    assert open_dataset(tmp_path / "b.csv").class_names == ["class_0", "class_1", "class_2"]
    (tmp_path / "c.csv").write_text("path,label,wnid\n0.png,1,n01440764\n")  # wnid disagrees with the index
    assert open_dataset(tmp_path / "c.csv").class_names == ["class_0", "class_1"]


def test_reference_labels_by_name(reference_rows):
    ds = open_dataset(LABELS_CSV, label_column="name")
    assert ds.class_names == sorted({r["name"] for r in reference_rows})
    for s, r in zip(ds, reference_rows, strict=True):
        assert ds.class_names[s.label] == r["name"]
        assert s.attributes["class_index"] == int(r["class_index"])  # integer column -> int
    # an order given with classes= (reversed): labels follow the names, not the file
    order = list(reversed(ds.class_names))
    ds2 = open_dataset(LABELS_CSV, label_column="name", classes=order)
    assert ds2.class_names == order
    assert [ds2.class_names[s.label] for s in ds2] == [r["name"] for r in reference_rows]


def _photos(rows, n):
    return [IMAGENET_SAMPLES / r["file"] for r in rows[:n]]


def test_tsv_relative_absolute_classes_file_and_split(tmp_path: Path, reference_rows):
    p = _photos(reference_rows, 4)
    link(p[0], tmp_path / "imgs" / "a.jpg")
    link(p[1], tmp_path / "imgs" / "b.jpg")
    link(p[2], tmp_path / "imgs" / "c.jpg")
    (tmp_path / "classes.txt").write_text("# my classes, in label order\nzebra\n\napple\nmango\n")
    tsv = tmp_path / "list.tsv"
    tsv.write_text(
        "image\tclass\tsplit\tscore\tnote\n"
        "imgs/b.jpg\tmango\ttrain\t0.5\tx, y\n"
        f"{p[3]}\tzebra\ttest\t1\t\n"  # absolute path
        "imgs/a.jpg\tapple\ttrain\t\tz\n"
        "\n"
        "imgs/c.jpg\tzebra\ttrain\t2.5\tw\n"
    )
    assert detect_layout(tsv) == "csv"
    ds = open_dataset(tsv, classes=tmp_path / "classes.txt")
    assert ds.describe()["delimiter"] == "\t"
    assert ds.class_names == ["zebra", "apple", "mango"]
    assert [ds.class_names[s.label] for s in ds] == ["mango", "zebra", "apple", "zebra"]
    assert ds.ids == ["imgs/b.jpg", p[3].as_posix(), "imgs/a.jpg", "imgs/c.jpg"]
    assert Path(ds[0].image) == tmp_path / "imgs" / "b.jpg" and Path(ds[1].image) == p[3]
    assert ds[0].attributes == {"split": "train", "score": 0.5, "note": "x, y"}
    assert ds[2].attributes["score"] != ds[2].attributes["score"]  # empty number -> NaN
    # without classes=: sorted unique names of the whole file, also for a split
    train = open_dataset(tsv, split="train")
    assert train.class_names == ["apple", "mango", "zebra"] and len(train) == 3
    assert [train.class_names[s.label] for s in train] == ["mango", "apple", "zebra"]
    test = open_dataset(tsv, split="test")
    assert test.class_names == train.class_names and test[0].label == 2
    with pytest.raises(InvalidInputError, match=r"no rows with split == 'val'.*\['test', 'train'\]"):
        open_dataset(tsv, split="val")


def test_options_semicolons_ids_groups(tmp_path: Path, reference_rows):
    p = _photos(reference_rows, 2)
    f = tmp_path / "l.csv"
    f.write_text(f"key;where;kind;grp\nk1;{p[0]};1;3\nk2;{p[1]};0;1\n")
    ds = load_csv(f, path_column="where", label_column="kind", id_column="key", group_column="grp",
                  classes=["no", "yes"])
    assert ds.describe()["delimiter"] == ";"
    assert ds.ids == ["k1", "k2"] and ds.labels.tolist() == [1, 0]
    assert ds.attribute_names == ["group"] and ds[0].attributes == {"group": 3}
    un = load_csv(f, path_column="where", label_column=None)
    assert un.labels.tolist() == [-1, -1] and un.class_names == [] and un.attribute_names == ["key", "kind", "grp"]


def test_bad_csvs(tmp_path: Path, reference_rows):
    p = _photos(reference_rows, 2)
    f = tmp_path / "bad.csv"

    def bad(text: str, match: str, **kw):
        f.write_text(text)
        with pytest.raises(InvalidInputError, match=match):
            load_csv(f, **kw)

    bad("", "is empty")
    bad("path,label\n", "no rows")
    bad(f"path,label\n{p[0]},cat\nmissing/x.jpg,dog\n", r"1 listed file\(s\) do not exist: 'missing/x.jpg' \(line 3\)")
    bad(f"path,label\n{p[0]},cat\n", r"unknown column 'lbl'.*\['path', 'label'\]", label_column="lbl")
    bad(f"path,label\n{p[0]},cat\n", r"unknown column 'where'", path_column="where")
    bad(f"where,label\n{p[0]},cat\n", r"no image path column .*path_column=")
    bad(f"path,what\n{p[0]},cat\n", r"no label column .*label_column=None")
    bad(f"path,label\n{p[0]},cat\n{p[1]},emu\n", r"unknown class 'emu' \(line 3\)", classes=["cat", "dog"])
    bad(f"path,label\n{p[0]},0\n{p[1]},2\n", r"line 3: label 2 is out of range for the 2 classes", classes=["a", "b"])
    bad(f"path,label\n{p[0]},1\n", "label_type='index' or 'name'", classes=["1", "2"])
    bad(f"path,label\n{p[0]},-1\n", "negative label")
    bad(f"path,label\n{p[0]},\n", r"empty label \('label'\) on line\(s\) 2")
    bad(f"path,label\n{p[0]},cat,extra\n", "line 2: 3 fields where the header has 2")
    bad(f"path,label\n{p[0]},cat\n{p[0]},dog\n", r"listed twice \(lines 2 and 3\)")
    bad(f"path,label\n{p[0]},a\n", "no such file", classes=tmp_path / "nope.txt")
    bad(f"path,label\n{p[0]},a\n", "split_column", split="train")
    bad(f"path,path\n{p[0]},a\n", "more than once")
    # with the label index mode, names of a label_type='index' list are refused
    bad(f"path,label\n{p[0]},cat\n", "not an integer", label_type="index")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_csv(tmp_path / "nope.csv")
    # labels with classes="imagenet" map a name used twice in CLIP's names only by index
    bad(f"path,label\n{p[0]},missile\n", "appear more than once", classes="imagenet")
    # listed relative to another folder: root=
    link(p[0], tmp_path / "elsewhere" / "a.jpg")
    f.write_text("path,label\na.jpg,cat\n")
    with pytest.raises(InvalidInputError, match="pass root="):
        load_csv(f)
    assert Path(load_csv(f, root=tmp_path / "elsewhere")[0].image) == tmp_path / "elsewhere" / "a.jpg"
    assert len(load_csv(f, check_files=False)) == 1
