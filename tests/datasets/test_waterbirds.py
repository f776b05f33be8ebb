from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliplens.datasets import WaterbirdsDataset, detect_layout, load_waterbirds, open_dataset
from cliplens.datasets.waterbirds import GROUP_NAMES
from cliplens.errors import InvalidInputError
from tests.datasets.conftest import IMAGENET_SAMPLES, link

#: img_filename, y, place, split, in no particular order
ROWS = [
    ("200.Common_Yellowthroat/c1.jpg", 0, 1, 2),
    ("001.Black_footed_Albatross/b1.jpg", 1, 1, 0),
    ("001.Black_footed_Albatross/b2.jpg", 1, 0, 1),
    ("150.Sage_Thrasher/s1.jpg", 0, 0, 0),
    ("150.Sage_Thrasher/s2.jpg", 0, 0, 2),
    ("086.Pacific_Loon/p1.jpg", 1, 1, 2),
]


@pytest.fixture()
def wb(tmp_path: Path, reference_rows) -> Path:
    root = tmp_path / "waterbird_complete95_forest2water2"
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for k, (f, y, place, split) in enumerate(ROWS):
        link(IMAGENET_SAMPLES / reference_rows[k]["file"], root / f)
        lines.append(f"{k + 1},{f},{y},{split},{place},/x/y/{k}.jpg")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_waterbirds(wb: Path):
    assert detect_layout(wb) == "waterbirds"
    ds = open_dataset(wb)
    assert isinstance(ds, WaterbirdsDataset)
    assert ds.class_names == ["landbird", "waterbird"]
    assert ds.attribute_names == ["place", "group", "split"]
    assert ds.ids == [r[0] for r in ROWS]  # the file's order, labels from y
    assert ds.labels.tolist() == [r[1] for r in ROWS]
    assert ds.attribute("place") == [r[2] for r in ROWS]
    assert ds.attribute("group") == [2 * r[1] + r[2] for r in ROWS]
    assert ds.attribute("split") == [["train", "val", "test"][r[3]] for r in ROWS]
    assert ds.group_names == GROUP_NAMES == ["landbird on land", "landbird on water", "waterbird on land",
                                             "waterbird on water"]
    assert ds.attribute_values["group"][ds[0].attributes["group"]] == "landbird on water"
    for s in ds:
        assert Path(s.image) == wb / s.id and Path(s.image).is_file()
    d = ds.describe()
    json.dumps(d)
    assert d["layout"] == "waterbirds" and d["split"] is None and d["num_classes"] == 2
    test = open_dataset(wb, split="test")
    assert test.ids == [r[0] for r in ROWS if r[3] == 2] and test.describe()["split"] == "test"
    assert detect_layout(wb / "metadata.csv") == "waterbirds"
    assert open_dataset(wb / "metadata.csv", split=0).ids == [r[0] for r in ROWS if r[3] == 0]


def test_bad_waterbirds(wb: Path, tmp_path: Path):
    with pytest.raises(InvalidInputError, match="splits are 'train', 'val' and 'test'"):
        load_waterbirds(wb, split="dev")
    meta = wb / "metadata.csv"
    text = meta.read_text()
    meta.write_text(text.replace(",2,1,/x/y/0.jpg", ",5,1,/x/y/0.jpg"))
    with pytest.raises(InvalidInputError, match=r"line 2: split = '5'; it must be one of \[0, 1, 2\]"):
        load_waterbirds(wb)
    meta.write_text(text + "7,gone/g.jpg,1,0,0,z\n")
    with pytest.raises(InvalidInputError, match=r"'gone/g.jpg' \(line 8\)"):
        load_waterbirds(wb)
    meta.write_text("img_filename,y,split\na.jpg,0,0\n")
    # detection no longer sees Waterbirds; asking for it names the missing column
    with pytest.raises(InvalidInputError, match=r"missing column\(s\) \['place'\]"):
        open_dataset(wb, layout="waterbirds")
    with pytest.raises(InvalidInputError, match="has no metadata.csv"):
        load_waterbirds(tmp_path)
