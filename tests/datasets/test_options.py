"""Data sets as they ship: loader options typed by the layout (``--option``, ``--split``, specs), the generic
folder's void value, VOC exports without split files, split folders, toy-spec values, presets by layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens.cli.common import loader_options
from cliplens.datasets import open_dataset, open_segmentation
from cliplens.datasets.options import convert_options, layout_options, options_help
from cliplens.datasets.seg_folder import load_segmentation_folder
from cliplens.errors import InvalidInputError
from cliplens.evaluation.protocol import protocol_for
from tests.datasets.conftest import IMAGENET_SAMPLES, link

RNG = np.random.default_rng(0)


def _img(path: Path, h: int = 6, w: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def _folder(root: Path, values: np.ndarray, classes: list[str]) -> Path:
    """A generic images/ + masks/ folder with one 6x8 image whose mask holds ``values``."""
    _img(root / "images" / "a.png")
    _mask(root / "masks" / "a.png", values)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


VALUES = np.array([[0, 1, 2, 3] * 2] * 6)


# ---------------------------------------------------------------------------------------------- typed options
def test_values_become_the_types_the_layout_declares():
    declared = layout_options(load_segmentation_folder)
    assert {"classes", "images", "masks", "void", "reduce_zero_label", "background"} <= set(declared)
    assert "root" not in declared
    got = convert_options(load_segmentation_folder, {"reduce_zero_label": "false", "void": "11", "background": "none",
                                                     "classes": "sky|road|car", "masks": "labels"}, "the folder")
    assert got == {"reduce_zero_label": False, "void": 11, "background": None, "classes": ("sky", "road", "car"),
                   "masks": "labels"}
    for word, value in [("true", True), ("Yes", True), ("on", True), ("1", True), ("FALSE", False), ("no", False),
                        ("off", False), ("0", False)]:
        assert convert_options(load_segmentation_folder, {"reduce_zero_label": word}, "x") == {
            "reduce_zero_label": value}
    assert convert_options(load_segmentation_folder, {"background": "auto"}, "x") == {"background": "auto"}
    assert convert_options(load_segmentation_folder, {"background": "0"}, "x") == {"background": 0}
    assert convert_options(load_segmentation_folder, {"classes": "mine.txt"}, "x") == {"classes": "mine.txt"}
    # values from Python pass as they are
    assert convert_options(load_segmentation_folder, {"void": 11, "classes": ["a"]}, "x") == {"void": 11,
                                                                                             "classes": ["a"]}


def test_unknown_and_ill_typed_options_are_refused_with_the_list():
    with pytest.raises(InvalidInputError) as e:
        convert_options(load_segmentation_folder, {"reduce_zero_label": "maybe"}, "the 'folder' segmentation set")
    msg = str(e.value)
    assert "reduce_zero_label='maybe' is not true/false" in msg and "void (an integer or none)" in msg
    assert "reduce_zero_label (true/false)" in msg and "\n" not in msg
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['ignore'\] for the 'folder' segmentation "
                                                r"set; its options are: classes \(a path or names separated by \| or "
                                                r"none\)"):
        open_segmentation("folder", "/nowhere", ignore="11")
    with pytest.raises(InvalidInputError, match=r"void='eleven' is not an integer or none"):
        open_segmentation("folder", "/nowhere", void="eleven")
    assert "check_files (true/false)" in options_help(load_segmentation_folder)


def test_reduce_zero_label_false_is_off_and_true_is_on(tmp_path: Path):
    root = _folder(tmp_path / "f", VALUES, ["background", "a", "b", "c"])
    off = open_segmentation("folder", root, reduce_zero_label="false")  # the text --option gives
    assert off.reduce_zero_label is False and np.array_equal(off.mask(0), VALUES)
    assert off.describe()["reduce_zero_label"] is False
    on = open_segmentation(f"folder:reduce_zero_label=true,classes={tmp_path / 'f' / 'classes.txt'}", root)
    assert on.reduce_zero_label is True
    assert np.array_equal(on.mask(0), np.where(VALUES == 0, 255, VALUES - 1))


def test_background_index_and_none(tmp_path: Path):
    root = _folder(tmp_path / "f", VALUES, ["sky", "road", "car", "tree"])
    assert open_segmentation("folder", root).background is None  # "auto": the first class is not "background"
    assert open_segmentation("folder", root, background="0").background == 0
    assert open_segmentation("folder", root, background="2").background == 2
    named = _folder(tmp_path / "g", VALUES, ["background", "road", "car", "tree"])
    assert open_segmentation("folder", named).background == 0
    assert open_segmentation("folder", named, background="none").background is None
    with pytest.raises(InvalidInputError, match="give a class index"):
        open_segmentation("folder", root, background="7")


def test_the_folder_takes_a_void_value(tmp_path: Path):
    # CamVid: 11 classes 0..10, void 11
    camvid = VALUES.copy()
    camvid[0, :3] = 11
    root = _folder(tmp_path / "camvid", camvid, [f"class{k}" for k in range(11)])
    with pytest.raises(InvalidInputError, match=r"holds the value\(s\) 11: .*pass it as void="):
        open_segmentation("folder", root).mask(0)
    ds = open_segmentation("folder", root, void="11")
    m = ds.mask(0)
    assert (m[0, :3] == 255).all() and np.array_equal(m[1:], camvid[1:]) and ds.describe()["options"]["void"] == 11
    # with reduce_zero_label the void value is read before the shift
    red = open_segmentation("folder", root, void="11", reduce_zero_label="true",
                            classes="|".join(f"class{k}" for k in range(10)))
    assert np.array_equal(red.mask(0), np.where((camvid == 0) | (camvid == 11), 255, camvid - 1))
    # a void value that is also a class of the list is refused
    with pytest.raises(InvalidInputError, match=r"void=3 is also class 3 \('class3'\)"):
        open_segmentation("folder", root, void="3")


# ---------------------------------------------------------------------------------------------- splits
def _voc_export(root: Path) -> Path:
    """A VOC export without ImageSets (as labelme's voc export writes it)."""
    voc = root / "VOC2012"
    for stem in ("b", "a"):
        _img(voc / "JPEGImages" / f"{stem}.jpg")
        _mask(voc / "SegmentationClass" / f"{stem}.png", np.full((6, 8), 15))
    return root


def test_split_none_reads_a_voc_export_without_split_files(tmp_path: Path):
    root = _voc_export(tmp_path)
    with pytest.raises(InvalidInputError, match=r"--split none"):
        open_segmentation("voc21", root)
    for given in ({"split": "none"}, {"split": "None"}, {"split": "null"}, {"split": None}):
        ds = open_segmentation("voc21", root, **given)
        assert ds.split is None and ds.ids == ["a", "b"] and (ds.mask(0) == 15).all()
    assert open_segmentation("voc21:split=none", root).ids == ["a", "b"]
    assert open_segmentation("voc20", root, split="none").mask(1)[0, 0] == 14


def test_a_folder_of_split_folders_is_not_read_as_classes(tmp_path: Path):
    photos = sorted(IMAGENET_SAMPLES.glob("*.JPEG"))[:4]
    if len(photos) < 4:
        pytest.skip("reference data not found")
    top = tmp_path / "cifar"
    link(photos[0], top / "train" / "cat" / "1.jpg")
    link(photos[1], top / "train" / "dog" / "2.jpg")
    link(photos[2], top / "test" / "cat" / "3.jpg")
    link(photos[3], top / "test" / "dog" / "4.jpg")
    with pytest.raises(InvalidInputError) as e:
        open_dataset(top)
    msg = str(e.value)
    assert "holds the splits test, train" in msg and "--split test" in msg and "\n" not in msg
    ds = open_dataset(top, split="train")
    assert ds.class_names == ["cat", "dog"] and len(ds) == 2
    assert open_dataset(top / "test").class_names == ["cat", "dog"]  # the split's own folder
    # a folder with a class that is not a split name stays a folder of classes
    link(photos[0], top / "bird" / "5.jpg")
    assert open_dataset(top).class_names == ["bird", "test", "train"]


def test_cli_option_text_is_parsed_once():
    assert loader_options(("reduce_zero_label=false", "classes=a|b", "name= x ")) == {
        "reduce_zero_label": "false", "classes": "a|b", "name": "x"}
    with pytest.raises(InvalidInputError, match="given twice"):
        loader_options(("void=11", "void=12"))
    with pytest.raises(InvalidInputError, match="KEY=VALUE"):
        loader_options(("=3",))
    # --split joins the options (once)
    assert loader_options(("void=11",), split="none") == {"void": "11", "split": "none"}
    assert loader_options(("split=val",)) == {"split": "val"}
    with pytest.raises(InvalidInputError, match="split is given twice"):
        loader_options(("split=val",), split="test")


# ---------------------------------------------------------------------------------------------- toy specs
@pytest.mark.parametrize("spec, words", [
    ("toy:seed=-1", "seed=-1; a seed is a whole number from 0 up"),
    ("toy:seed=abc", "seed='abc' is not an integer"),
    ("toy:stream=-2", "stream=-2; give a stream name"),
    ("toy:image_size=100000", "image_size=100000; give a size in pixels from 8 to 1024"),
    ("toy:n=true", "n='true' is not an integer"),
    ("toy:count=9", "1 to 4 objects"),
])
def test_toy_specs_refuse_bad_values_in_one_paragraph(spec, words):
    for opener in (open_dataset, open_segmentation):
        with pytest.raises(InvalidInputError) as e:
            ds = opener(spec)
            ds[0]
        assert words in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- presets
def test_presets_come_from_the_layout_never_the_folder_name(tmp_path: Path):
    root = _folder(tmp_path / "cityscapes", VALUES, ["background", "a", "b", "c"])
    ds = open_segmentation(root)  # detected: the generic folder, whatever its name
    assert ds.name == "cityscapes" and ds.layout == ds.preset == "folder"
    assert protocol_for(ds.preset).size == 336 != protocol_for("cityscapes").size
    renamed = open_segmentation("voc21", _voc_export(tmp_path / "x"), split="none", name="cityscapes")
    assert renamed.preset == "voc21"  # name= renames it; its protocol stays VOC's
    assert open_segmentation("voc20", tmp_path / "x", split="none").preset == "voc20"
    assert open_segmentation("toy:n=2")[0:1].preset == "toy"  # subsets keep it


def test_builtin_class_lists():
    from cliplens.datasets.class_lists import CLASS_LISTS, class_list

    sizes = {name: len(class_list(name)) for name in CLASS_LISTS}
    assert sizes == {"coco": 80, "voc": 20, "context59": 59, "ade20k": 150, "coco-stuff": 171, "imagenet": 1000}
    assert class_list("coco")[:3] == ["person", "bicycle", "car"] and "background" not in class_list("voc")
    distinct = class_list("imagenet", distinct=True)
    assert len(distinct) == 998 == len(set(distinct)) and distinct[:5] == class_list("imagenet")[:5]
    with pytest.raises(InvalidInputError, match="no built-in class list 'cifar'.*coco"):
        class_list("cifar")
