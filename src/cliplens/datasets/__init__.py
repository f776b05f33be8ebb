"""Data sets: one loader per layout, all yielding :class:`Sample` (image, label, id, attributes).

:func:`open_dataset` picks the layout from what it is given (:func:`detect_layout`):

* ``"toy"``, ``"toy:colour"``, ``"toy:label=count,n=500"`` -> ``toy`` (:func:`~.toy.load_toy`);
* a ``.csv`` / ``.tsv`` / ``.txt`` file -> ``csv`` (:func:`~.csv.load_csv`), except ``LOC_val_solution.csv``
  (``imagenet``) and a Waterbirds ``metadata.csv`` (``waterbirds``);
* a folder with ``metadata.csv`` (img_filename, y, place, split) -> ``waterbirds``
  (:func:`~.waterbirds.load_waterbirds`);
* a folder with ``LOC_val_solution.csv``, or whose sub-folders are all ImageNet wnids -> ``imagenet``
  (:func:`~.imagenet.load_imagenet`);
* any other folder with sub-folders -> ``imagefolder`` (:func:`~.imagefolder.load_image_folder`); a folder
  whose sub-folders are all named like splits (``train/``, ``test/``) needs ``split=``;
* a folder of unlabelled images -> ``images`` (:func:`~.imagefolder.load_images`), only when asked for
  with ``layout="images"`` (detection refuses a folder with no labels rather than guess).

Labels and class names always come from the data (folder names, columns, metadata, scene factors),
never from the order in which files happen to be listed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cliplens.datasets.base import (
    IMAGE_EXTENSIONS,
    Dataset,
    ListDataset,
    Sample,
    Subset,
    is_hidden,
    is_image_file,
)
from cliplens.datasets.csv import CsvDataset, load_csv, read_class_list
from cliplens.datasets.imagefolder import ImageFolderDataset, load_image_folder, load_images
from cliplens.datasets.imagenet import (
    SOLUTION,
    ImageNetDataset,
    imagenet_classes,
    is_imagenet_folder,
    load_imagenet,
)
from cliplens.datasets.options import NONE_WORDS, convert_options
from cliplens.datasets.toy import ToyDataset, load_toy
from cliplens.datasets.waterbirds import METADATA, REQUIRED_COLUMNS, WaterbirdsDataset, load_waterbirds
from cliplens.errors import InvalidInputError

__all__ = [
    "IMAGE_EXTENSIONS", "LAYOUTS", "CsvDataset", "Dataset", "ImageFolderDataset", "ImageNetDataset", "ListDataset",
    "Sample", "Subset", "ToyDataset", "WaterbirdsDataset", "detect_layout", "imagenet_classes", "load_csv",
    "load_image_folder", "load_imagenet", "load_images", "load_toy", "load_waterbirds", "open_dataset",
    "read_class_list",
]

#: layout name -> loader ``(spec, **options) -> Dataset``
LAYOUTS: dict[str, Callable[..., Dataset]] = {
    "imagefolder": load_image_folder,
    "images": load_images,
    "csv": load_csv,
    "waterbirds": load_waterbirds,
    "imagenet": load_imagenet,
    "toy": load_toy,
}
_LAYOUT_ALIASES = {"tsv": "csv", "folder": "imagefolder", "image_folder": "imagefolder", "imagenet-val": "imagenet",
                   "imagenet_val": "imagenet"}
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def _is_toy_spec(spec: Any) -> bool:
    return isinstance(spec, str) and (spec.strip().lower() == "toy" or spec.strip().lower().startswith("toy:"))


def _header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError):
        return []
    for d in (",", "\t", ";", "|"):
        if d in line:
            return [h.strip().strip('"') for h in line.rstrip("\r\n").split(d)]
    return [line.strip()]


def detect_layout(spec: str | os.PathLike) -> str:
    """The layout :func:`open_dataset` would use for ``spec`` (see the module's table).

    Raises:
        InvalidInputError: a path that does not exist, an empty folder, a folder of loose images (no
            classes), or a file that is not a CSV/TSV.
    """
    if _is_toy_spec(spec):
        return "toy"
    raw = os.fspath(spec)
    path = Path(os.path.expanduser(raw))
    if not path.exists():
        raise InvalidInputError(
            f"data set {raw!r} does not exist: give a folder (class sub-folders, Waterbirds, ImageNet), a .csv/.tsv "
            "file listing images, or 'toy' / 'toy:...' for the toy world")
    if path.is_file():
        if path.name == SOLUTION or {"ImageId", "PredictionString"} <= set(_header(path)):
            return "imagenet"
        if path.name == METADATA and set(REQUIRED_COLUMNS) <= set(_header(path)):
            return "waterbirds"
        if path.suffix.lower() in _TABLE_SUFFIXES:
            return "csv"
        if is_image_file(path.name):
            raise InvalidInputError(f"{raw!r} is a single image; a data set is a folder or a .csv/.tsv list of images")
        raise InvalidInputError(f"{raw!r} is not a .csv or .tsv file or a folder; cannot tell its data set layout")
    meta = path / METADATA
    if meta.is_file():
        if set(REQUIRED_COLUMNS) <= set(_header(meta)):
            return "waterbirds"
    if is_imagenet_folder(path):
        return "imagenet"
    entries = [e for e in os.scandir(path) if not is_hidden(e.name)]
    if any(e.is_dir() for e in entries):
        return "imagefolder"
    if not entries:
        raise InvalidInputError(f"data set folder {raw!r} is empty")
    loose = [e.name for e in entries if is_image_file(e.name)]
    tables = sorted(e.name for e in entries if e.name.lower().endswith(_TABLE_SUFFIXES))
    if meta.is_file():
        raise InvalidInputError(f"{meta} does not have the Waterbirds columns {list(REQUIRED_COLUMNS)} (its columns "
                                f"are {_header(meta)}); for another list of images, give the CSV file itself")
    if tables:
        raise InvalidInputError(f"folder {raw!r} has no class sub-folders but holds {tables}: give the file that lists "
                                "the images (and their labels) as the data set")
    if loose:
        raise InvalidInputError(f"folder {raw!r} holds {len(loose)} images but no class sub-folders, so there are no "
                                "labels. Put each class in its own sub-folder, list the images in a CSV, or pass "
                                "layout='images' to read them unlabelled")
    raise InvalidInputError(f"folder {raw!r} holds no images, class sub-folders or image lists")


def open_dataset(spec: str | os.PathLike, *, layout: str | None = None, split: str | int | None = None,
                 **options: Any) -> Dataset:
    """Open a data set, detecting its layout from ``spec`` unless ``layout`` is given.

    Args:
        spec: a folder, a CSV/TSV file, or ``"toy"`` / ``"toy:key=value,..."``.
        layout: one of :data:`LAYOUTS` (``"imagefolder"``, ``"images"``, ``"csv"``, ``"waterbirds"``,
            ``"imagenet"``, ``"toy"``).
        split: which part (``"train"``/``"val"``/``"test"`` for Waterbirds; a sub-folder for folder
            layouts; a value of the ``split`` column for CSVs). The toy world has streams instead.
        **options: passed to the layout's loader (e.g. ``label_column=``, ``classes=`` for CSVs,
            ``label=``, ``n=`` for the toy world). Text values (from ``--option``) become the types the loader
            declares: ``"false"`` a bool, ``"3"`` an int, ``"none"`` None (:mod:`cliplens.datasets.options`).

    Raises:
        InvalidInputError: an unknown layout or option, or whatever the loader finds wrong.
    """
    if layout is None:
        layout = detect_layout(spec)
    key = _LAYOUT_ALIASES.get(layout.lower(), layout.lower()) if isinstance(layout, str) else layout
    if key not in LAYOUTS:
        raise InvalidInputError(f"unknown data set layout {layout!r}; layouts are {sorted(LAYOUTS)}")
    loader = LAYOUTS[key]
    if key == "toy":  # load_toy converts its options itself
        if split is not None and not (isinstance(split, str) and split.strip().lower() in NONE_WORDS):
            raise InvalidInputError("the toy world has no splits: choose a stream (stream='test', 'eval', …) and seed")
        return loader(spec if _is_toy_spec(spec) else None, **options)
    if split is not None:
        options["split"] = split
    return loader(spec, **convert_options(loader, options, f"the {key!r} layout"))

# segmentation data sets: images with per-pixel class masks (their own interface, see .segmentation)
from cliplens.datasets.seg_folder import load_segmentation_folder  # noqa: E402
from cliplens.datasets.segmentation import (  # noqa: E402
    SEGMENTATION_SETS,
    SegmentationDataset,
    SegSample,
    detect_segmentation_layout,
    open_segmentation,
)

__all__ += [
    "SEGMENTATION_SETS", "SegSample", "SegmentationDataset", "detect_segmentation_layout", "load_segmentation_folder",
    "open_segmentation",
]
