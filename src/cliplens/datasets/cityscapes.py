"""Cityscapes (fine annotations): the 19 evaluated classes (train ids 0..18), 255 for everything else.

Layout: ``leftImg8bit/<split>/<city>/<base>_leftImg8bit.png`` and
``gtFine/<split>/<city>/<base>_gtFine_labelTrainIds.png`` (written by the official
``createTrainIdLabelImgs``) or, when that is absent, ``<base>_gtFine_labelIds.png`` converted with the
official id -> train id table (:data:`LABEL_ID_TO_TRAIN_ID`, cityscapesScripts' ``labels.py``): the 19
evaluated ids become 0..18, every other id (void, parking, rail track, guard rail, bridge, tunnel, pole
group, caravan, trailer, …) 255. ``root`` is the folder holding ``leftImg8bit`` and ``gtFine`` (or its
``cityscapes`` sub-folder). Ids are ``<city>/<base>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cliplens.datasets.base import is_hidden
from cliplens.datasets.seg_files import first_folder, given_path, report_missing, split_name
from cliplens.datasets.segmentation import IGNORE, FileSegmentationDataset, check_raw_values, read_mask_file
from cliplens.errors import InvalidInputError

__all__ = ["CITYSCAPES_CLASSES", "LABEL_ID_TO_TRAIN_ID", "decode_cityscapes", "find_cityscapes_root", "label_ids_to_train_ids",
           "load_cityscapes"]

#: train id -> name
CITYSCAPES_CLASSES: list[str] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]
#: label id -> train id for the 19 evaluated classes (every other id -> 255)
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 31: 16, 32: 17, 33: 18,
}
_LUT = np.full(256, IGNORE, dtype=np.int64)
for _id, _train in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_id] = _train

_EXPECTED = "leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_labelTrainIds.png " \
            "(or *_gtFine_labelIds.png)"
_SPLITS = {"validation": "val", "training": "train"}
_IMG_SUFFIX = "_leftImg8bit"


def label_ids_to_train_ids(raw: np.ndarray, source: str = "mask") -> np.ndarray:
    """``*_gtFine_labelIds.png`` values -> train ids (0..18, 255 for the others)."""
    check_raw_values(raw, 255, source, "Cityscapes label ids are 0..255", ignore=False)
    return _LUT[raw.astype(np.int64)]


def decode_cityscapes(p: str) -> np.ndarray:
    """A ``*_labelTrainIds.png`` (read as is) or ``*_labelIds.png`` (converted) -> train ids."""
    raw = read_mask_file(p)
    if p.endswith("_labelTrainIds.png"):
        check_raw_values(raw, 18, p, "Cityscapes train ids are 0..18 and 255")
        return raw.astype(np.int64)
    return label_ids_to_train_ids(raw, p)


def find_cityscapes_root(path: Path) -> Path | None:
    return first_folder([path, path / "cityscapes"],
                        lambda p: (p / "leftImg8bit").is_dir() and (p / "gtFine").is_dir())


def probe(path: Path) -> list[str]:
    """``["cityscapes"]`` if ``path`` holds Cityscapes (for detection)."""
    return ["cityscapes"] if path.is_dir() and find_cityscapes_root(path) else []


def load_cityscapes(
    root: str | os.PathLike,
    *,
    split: str = "val",
    check_files: bool = True,
    name: str | None = None,
) -> FileSegmentationDataset:
    """Cityscapes fine annotations (see the module's documentation).

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        split: ``"val"`` (500 images), ``"train"`` or ``"test"`` (no public labels).

    Raises:
        InvalidInputError: no such folders or split, an image without its annotation.
    """
    split = split_name(split, _SPLITS, "'val', 'train'")
    path = given_path(root, "cityscapes", _EXPECTED)
    folder = find_cityscapes_root(path) if path.is_dir() else None
    if folder is None:
        raise InvalidInputError(f"cityscapes: {os.fspath(root)!r} has no leftImg8bit/ and gtFine/ folders; expected "
                                f"{_EXPECTED}")
    img_root, gt_root = folder / "leftImg8bit" / split, folder / "gtFine" / split
    for d in (img_root, gt_root):
        if not d.is_dir():
            have = sorted(p.name for p in d.parent.iterdir() if p.is_dir() and not is_hidden(p.name))
            raise InvalidInputError(f"cityscapes: no {d.relative_to(folder)} folder (the splits there are {have}); "
                                    "give another split=")
    entries: list[tuple[str, str, str]] = []
    missing: list[str] = []
    cities = sorted(c for c in os.listdir(img_root) if not is_hidden(c) and (img_root / c).is_dir())
    for city in cities:
        gt_files = set(os.listdir(gt_root / city)) if (gt_root / city).is_dir() else set()
        for fname in sorted(os.listdir(img_root / city)):
            stem, ext = os.path.splitext(fname)
            if is_hidden(fname) or not stem.endswith(_IMG_SUFFIX):
                continue
            base = stem[: -len(_IMG_SUFFIX)]
            train = f"{base}_gtFine_labelTrainIds.png"
            ids = f"{base}_gtFine_labelIds.png"
            if train in gt_files:
                mask = train
            elif ids in gt_files or not check_files:
                mask = ids
            else:
                missing.append(repr(f"{city}/{base}"))
                continue
            entries.append((str(img_root / city / fname), str(gt_root / city / mask), f"{city}/{base}"))
    report_missing("annotation(s) are", missing, str(gt_root),
                   "each image needs <base>_gtFine_labelTrainIds.png or <base>_gtFine_labelIds.png")
    if not entries:
        raise InvalidInputError(f"cityscapes: no *{_IMG_SUFFIX}.png images under {img_root}/<city>/")

    return FileSegmentationDataset(
        entries, decode_cityscapes, name=name or "cityscapes", layout="cityscapes", class_names=CITYSCAPES_CLASSES,
        background=None, reduce_zero_label=False, root=folder, split=split, options={},
    )
