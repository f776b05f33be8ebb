"""COCO-Stuff 164k (171 classes) and COCO-Object (80 thing classes + background).

**COCO-Stuff** (``coco-stuff``): 171 classes, 0..79 the COCO things and 80..170 the stuff classes
(:data:`COCO_STUFF_CLASSES`), 255 unlabelled. Read from, per image and in this order:

* mmsegmentation's converted ``<stem>_labelTrainIds.png`` (values 0..170, 255), or
* an official ``stuffthingmaps_trainval2017`` PNG (values 0..181 = COCO category id - 1, 255 unlabelled),
  converted with the standard 182 -> 171 table: the 80 used thing ids and the 91 stuff ids (92..182)
  renumbered in order; the 11 thing ids COCO never uses (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
  have no class and become 255 (they do not occur in the released maps).

Layouts (``root`` = the folder holding them, or its ``coco_stuff164k`` / ``coco`` sub-folder):
mmsegmentation's ``images/val2017/*.jpg`` + ``annotations/val2017/*.png``, or COCO's ``val2017/*.jpg``
(or ``images/val2017``) + ``stuffthingmaps_trainval2017/val2017/*.png``.

**COCO-Object** (``coco-object``): 81 classes, 0 = background and 1..80 the thing categories in the
order of their COCO ids (names from the annotation file). Drawn from ``annotations/instances_val2017.json``
with pycocotools (``annToMask``), images in ``val2017/`` (or ``images/val2017``):

* every pixel no object covers is background 0; there are no ignore pixels (as the field's conversion,
  which merges all stuff and unlabelled pixels into background);
* overlaps: objects are painted largest first (by the annotation's ``area``, ties by annotation id), so a
  pixel shared by several objects takes the smallest one's class (a cup stays a cup on the dining table
  whose outline encloses it);
* crowd regions (``iscrowd=1``, RLE masks of many instances) are painted first, under every single
  instance, with their category (``crowd="object"``, default: a crowd of people is people); or left
  background (``crowd="background"``) or set to 255 (``crowd="ignore"``);
* images without annotations are all background (they stay in the set, as in the field's 5,000).

Also read: mmsegmentation-style ``annotations/val2017/<stem>_instanceTrainIds.png`` (values 0..80, as
GroupViT converts COCO-Stuff maps) when no instances file is there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cliplens.datasets.base import IMAGE_EXTENSIONS
from cliplens.datasets.seg_files import given_path, load_class_names, report_missing, split_name, stem_index
from cliplens.datasets.segmentation import (
    IGNORE,
    FileSegmentationDataset,
    SegmentationDataset,
    check_raw_values,
    read_mask_file,
)
from cliplens.errors import InvalidInputError, MissingDependencyError

__all__ = ["COCO_OBJECT_CLASSES", "COCO_STUFF_CLASSES", "COCO_THING_IDS", "CROWD_RULES", "CocoObjectDataset",
           "STUFFTHINGMAP_TO_TRAIN_ID", "find_coco_object", "find_coco_stuff", "load_coco_object", "load_coco_stuff",
           "stuffthingmap_to_train_ids"]

#: the 80 COCO category ids in use (of 1..91)
COCO_THING_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
)
#: COCO-Stuff 164k's 171 classes (0..79 things, 80..170 stuff)
COCO_STUFF_CLASSES: list[str] = load_class_names("seg_classes_coco_stuff.txt")
COCO_OBJECT_CLASSES: list[str] = ["background", *COCO_STUFF_CLASSES[:80]]
CROWD_RULES = ("object", "background", "ignore")


def _stuffthingmap_table() -> np.ndarray:
    """value of a stuffthingmaps PNG (COCO id - 1) -> train id; 255 -> 255; unused ids -> 255; others -> -1."""
    lut = np.full(256, -1, dtype=np.int64)
    lut[:91] = IGNORE  # thing ids COCO never uses (the used ones are set below)
    kept = [i - 1 for i in COCO_THING_IDS] + list(range(91, 182))
    lut[kept] = np.arange(len(kept))
    lut[IGNORE] = IGNORE
    return lut


#: ``STUFFTHINGMAP_TO_TRAIN_ID[value]``: the 182 -> 171 table (-1: not a stuffthingmaps value)
STUFFTHINGMAP_TO_TRAIN_ID: np.ndarray = _stuffthingmap_table()


def stuffthingmap_to_train_ids(raw: np.ndarray, source: str = "mask") -> np.ndarray:
    """An official stuffthingmaps PNG's values (0..181, 255) -> COCO-Stuff's 171 train ids (255 unlabelled)."""
    check_raw_values(raw, 181, source, "stuffthingmaps_trainval2017 PNGs hold 0..181 (COCO id - 1) and 255 "
                                       "(unlabelled); is this a COCO-Stuff 164k map?")
    return STUFFTHINGMAP_TO_TRAIN_ID[raw.astype(np.int64)]


def decode_coco_stuff(p: str) -> np.ndarray:
    """A ``*_labelTrainIds.png`` (read as is) or a stuffthingmaps PNG (converted) -> train ids 0..170, 255."""
    raw = read_mask_file(p)
    if p.endswith("_labelTrainIds.png"):
        check_raw_values(raw, 170, p, "COCO-Stuff *_labelTrainIds.png hold 0..170 and 255 (unlabelled)")
        return raw.astype(np.int64)
    return stuffthingmap_to_train_ids(raw, p)


def decode_coco_object_map(p: str) -> np.ndarray:
    raw = read_mask_file(p)
    check_raw_values(raw, 80, p, "COCO-Object *_instanceTrainIds.png hold 0 (background) and 1..80")
    return raw.astype(np.int64)


_SPLITS = {"val": "val2017", "train": "train2017", "validation": "val2017"}
_STUFF_EXPECTED = ("images/val2017/ + annotations/val2017/ (mmsegmentation's coco_stuff164k), or val2017/ + "
                   "stuffthingmaps_trainval2017/val2017/")
_OBJECT_EXPECTED = "val2017/ (or images/val2017/) + annotations/instances_val2017.json"


def _roots(path: Path) -> list[Path]:
    return [path, path / "coco_stuff164k", path / "coco"]


def _has_png(folder: Path, suffix: str = ".png") -> bool:
    if not folder.is_dir():
        return False
    with os.scandir(folder) as it:
        return any(e.name.endswith(suffix) for e in it)


def find_coco_stuff(path: Path, split: str = "val2017") -> tuple[Path, Path, Path] | None:
    """``(root, image folder, mask folder)`` of a COCO-Stuff layout at or below ``path``, or None."""
    for r in _roots(path):
        if not r.is_dir():
            continue
        mm_masks = r / "annotations" / split
        if (r / "images" / split).is_dir() and _has_png(mm_masks) and not _only_instance_maps(mm_masks):
            return r, r / "images" / split, mm_masks
        official = r / "stuffthingmaps_trainval2017" / split
        if official.is_dir():
            for imgs in (r / split, r / "images" / split):
                if imgs.is_dir():
                    return r, imgs, official
    return None


def _only_instance_maps(folder: Path) -> bool:
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.name.endswith(".png")]
    return bool(names) and all(n.endswith("_instanceTrainIds.png") for n in names)


def find_coco_object(path: Path, split: str = "val2017") -> tuple[Path, Path, Path] | None:
    """``(root, image folder, instances json or instance-map folder)`` of a COCO-Object layout, or None."""
    for r in _roots(path):
        if not r.is_dir():
            continue
        ann = r / "annotations" / f"instances_{split}.json"
        for imgs in (r / split, r / "images" / split):
            if imgs.is_dir() and ann.is_file():
                return r, imgs, ann
        maps = r / "annotations" / split
        if (r / "images" / split).is_dir() and _has_png(maps, "_instanceTrainIds.png"):
            return r, r / "images" / split, maps
    return None


def probe(path: Path) -> list[str]:
    """The sets of this module that ``path`` holds (for :func:`~.registry.detect_segmentation_layout`)."""
    if not path.is_dir():
        return []
    splits = ("val2017", "train2017")
    return ((["coco-stuff"] if any(find_coco_stuff(path, s) for s in splits) else [])
            + (["coco-object"] if any(find_coco_object(path, s) for s in splits) else []))


def load_coco_stuff(
    root: str | os.PathLike,
    *,
    split: str = "val2017",
    check_files: bool = True,
    name: str | None = None,
) -> FileSegmentationDataset:
    """COCO-Stuff 164k (see the module's documentation).

    Args:
        root: the folder holding the layout (or its ``coco_stuff164k`` / ``coco`` sub-folder).
        split: ``"val2017"`` (5,000 images; ``"val"`` too) or ``"train2017"``.

    Raises:
        InvalidInputError: no COCO-Stuff layout, an image without a mask, a value that is not a
            stuffthingmaps value.
    """
    split = split_name(split, _SPLITS, "'val2017' or 'train2017'")
    path = given_path(root, "coco-stuff", _STUFF_EXPECTED)
    found = find_coco_stuff(path, split) if path.is_dir() else None
    if found is None:
        raise InvalidInputError(f"coco-stuff: no COCO-Stuff {split} data under {os.fspath(root)!r}; expected "
                                f"{_STUFF_EXPECTED.replace('val2017', split)}")
    folder, image_dir, mask_dir = found
    images = stem_index(image_dir, IMAGE_EXTENSIONS)
    if not images:
        raise InvalidInputError(f"coco-stuff: {image_dir} holds no images")
    with os.scandir(mask_dir) as it:
        mask_files = {e.name for e in it}
    entries: list[tuple[str, str, str]] = []
    missing: list[str] = []
    for stem, fname in images.items():
        if f"{stem}_labelTrainIds.png" in mask_files:
            mask = f"{stem}_labelTrainIds.png"
        elif f"{stem}.png" in mask_files or not check_files:
            mask = f"{stem}.png"
        else:
            missing.append(repr(stem))
            continue
        entries.append((str(image_dir / fname), str(mask_dir / mask), stem))
    report_missing("mask(s) are", missing, str(mask_dir),
                   "each image needs <stem>_labelTrainIds.png or a stuffthingmaps <stem>.png")

    return FileSegmentationDataset(
        entries, decode_coco_stuff, name=name or "coco-stuff", layout="coco-stuff", class_names=COCO_STUFF_CLASSES,
        background=None, reduce_zero_label=False, root=folder, split=split,
        options={"masks": str(mask_dir)},
    )


class CocoObjectDataset(SegmentationDataset):
    """COCO-Object drawn from an instances file (see the module's documentation)."""

    def __init__(self, coco: Any, annotations: Path, image_dir: Path, *, root: Path, split: str, crowd: str,
                 check_files: bool, name: str) -> None:
        self.coco = coco
        self.annotations = str(annotations)
        self.image_dir = image_dir
        self.crowd = crowd
        cats = sorted(coco.cats.values(), key=lambda c: int(c["id"]))
        self.category_ids = [int(c["id"]) for c in cats]
        self._contiguous = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self.class_names = ["background", *(str(c.get("name", c["id"])) for c in cats)]
        imgs = sorted(coco.imgs.values(), key=lambda im: (str(im.get("file_name", "")), int(im["id"])))
        bad = [im for im in imgs if not im.get("file_name") or "height" not in im or "width" not in im]
        if bad:
            raise InvalidInputError(f"{annotations}: image entries need file_name, height and width (image id "
                                    f"{bad[0].get('id')} lacks them)")
        self._images = imgs
        if check_files:
            missing = [repr(im["file_name"]) for im in imgs if not (image_dir / im["file_name"]).is_file()]
            report_missing("image(s) listed in the annotations are", missing, str(image_dir))
        if not imgs:
            raise InvalidInputError(f"{annotations} lists no images")
        self.name = name
        self.layout = "coco-object"
        self.preset = "coco-object"
        self.background = 0
        self.reduce_zero_label = False
        self.root = str(root)
        self.split = split
        self.options = {"crowd": crowd, "annotations": self.annotations, "source": "instances"}

    def __len__(self) -> int:
        return len(self._images)

    def _id(self, i: int) -> str:
        return os.path.splitext(self._images[i]["file_name"])[0]

    def _image(self, i: int) -> str:
        return str(self.image_dir / self._images[i]["file_name"])

    def _mask_source(self, i: int) -> str:
        return f"{self.annotations} (image id {self._images[i]['id']})"

    def image_id(self, i: int) -> int:
        """The COCO image id of sample ``i``."""
        return int(self._images[self._index(i)]["id"])

    def _read_mask(self, i: int) -> np.ndarray:
        info = self._images[i]
        h, w = int(info["height"]), int(info["width"])
        label = np.zeros((h, w), dtype=np.int64)
        anns = list(self.coco.imgToAnns.get(info["id"], []))
        order = sorted(anns, key=lambda a: (0 if a.get("iscrowd", 0) else 1, -float(a.get("area", 0.0)),
                                            int(a.get("id", 0))))
        for a in order:
            crowd = bool(a.get("iscrowd", 0))
            if crowd and self.crowd == "background":
                continue
            cid = int(a["category_id"])
            if cid not in self._contiguous:
                raise InvalidInputError(f"{self.annotations}: annotation {a.get('id')} has category_id {cid}, which "
                                        "is not among the file's categories")
            try:
                with warnings.catch_warnings():  # pycocotools' decode warns under numpy 2 (harmless)
                    warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                    m = self.coco.annToMask(a)
            except Exception as e:  # a malformed polygon or RLE
                raise InvalidInputError(f"{self.annotations}: cannot draw annotation {a.get('id')} of image "
                                        f"{info['id']} ({type(e).__name__}: {e})") from None
            if m.shape != (h, w):
                raise InvalidInputError(f"{self.annotations}: annotation {a.get('id')} is {m.shape[0]}x{m.shape[1]} "
                                        f"but its image is {h}x{w}")
            label[m > 0] = IGNORE if crowd and self.crowd == "ignore" else self._contiguous[cid]
        return label

    def _describe(self) -> dict[str, Any]:
        return {"category_ids": list(self.category_ids)}


def _require_pycocotools() -> Any:
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise MissingDependencyError("COCO-Object masks are drawn from the instance annotations with pycocotools, "
                                     "which is not installed: pip install pycocotools") from None
    return COCO


def _open_coco(path: Path) -> Any:
    COCO = _require_pycocotools()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"cannot read the COCO annotations {str(path)!r}: {e}") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise InvalidInputError(f"{str(path)!r} is not a COCO instances file: it needs 'images', 'annotations' and "
                                "'categories'")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise InvalidInputError(f"{str(path)!r}: malformed COCO instances file ({type(e).__name__}: {e})") from None
    return coco


def load_coco_object(
    root: str | os.PathLike,
    *,
    split: str = "val2017",
    annotations: str | os.PathLike | None = None,
    crowd: str = "object",
    check_files: bool = True,
    name: str | None = None,
) -> SegmentationDataset:
    """COCO-Object (see the module's documentation).

    Args:
        root: the COCO folder (``val2017/`` and ``annotations/``), or its ``coco`` sub-folder.
        split: ``"val2017"`` (``"val"`` too) or ``"train2017"``.
        annotations: the instances file, if not ``root/annotations/instances_<split>.json``.
        crowd: crowd regions as their category (``"object"``), ``"background"`` or ``"ignore"`` (255).

    Raises:
        MissingDependencyError: pycocotools is not installed (needed for the instances file).
        InvalidInputError: no such layout, a malformed instances file, a listed image that is missing.
    """
    split = split_name(split, _SPLITS, "'val2017' or 'train2017'")
    if crowd not in CROWD_RULES:
        raise InvalidInputError(f"crowd={crowd!r}: choose one of {list(CROWD_RULES)}")
    path = given_path(root, "coco-object", _OBJECT_EXPECTED)
    if annotations is not None:
        ann = Path(os.path.abspath(os.path.expanduser(os.fspath(annotations))))
        if not ann.is_file():
            raise InvalidInputError(f"coco-object: annotations={os.fspath(annotations)!r} is not a file; give an "
                                    "instances_*.json")
        cands = [r / d for r in _roots(path) for d in (split, f"images/{split}")]
        image_dir = next((c for c in cands if c.is_dir()), None)
        if image_dir is None:
            raise InvalidInputError(f"coco-object: no {split}/ or images/{split}/ image folder under "
                                    f"{os.fspath(root)!r}")
        found: tuple[Path, Path, Path] | None = (path, image_dir, ann)
    else:
        found = find_coco_object(path, split) if path.is_dir() else None
    if found is None:
        raise InvalidInputError(f"coco-object: no COCO {split} instance annotations under {os.fspath(root)!r}; "
                                f"expected {_OBJECT_EXPECTED.replace('val2017', split)}")
    folder, image_dir, source = found
    if source.is_file():
        return CocoObjectDataset(_open_coco(source), source, image_dir, root=folder, split=split, crowd=crowd,
                                 check_files=check_files, name=name or "coco-object")
    # precomputed maps (<stem>_instanceTrainIds.png, 0..80)
    images = stem_index(image_dir, IMAGE_EXTENSIONS)
    entries: list[tuple[str, str, str]] = []
    missing: list[str] = []
    for stem, fname in images.items():
        mask = source / f"{stem}_instanceTrainIds.png"
        if check_files and not mask.is_file():
            missing.append(repr(stem))
            continue
        entries.append((str(image_dir / fname), str(mask), stem))
    report_missing("mask(s) are", missing, str(source), "each image needs <stem>_instanceTrainIds.png")
    if not entries:
        raise InvalidInputError(f"coco-object: {image_dir} holds no images")

    return FileSegmentationDataset(
        entries, decode_coco_object_map, name=name or "coco-object", layout="coco-object", class_names=COCO_OBJECT_CLASSES,
        background=0, reduce_zero_label=False, root=folder, split=split,
        options={"source": "instanceTrainIds", "masks": str(source)},
    )
