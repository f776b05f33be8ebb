"""ADE20K (SceneParsing, 150 classes).

Layout: ``ADEChallengeData2016/images/validation/*.jpg`` and ``ADEChallengeData2016/annotations/validation/*.png``
(``root`` = the folder holding ``ADEChallengeData2016`` or that folder itself); also a flat ``images/`` +
``annotations/`` with the files directly inside (as in the scene-parsing sample data), whose split is
recorded as ``None``. Annotations hold 0 ("other", not scored) and 1..150 (the classes of
``objectInfo150``); the field evaluates them with ``reduce_zero_label``: 0 -> 255, k -> k - 1, so class
0 is "wall". Class names are the first name of each ``objectInfo150`` entry (as mmsegmentation lists
them; entry 90 "television receiver").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cliplens.datasets.base import IMAGE_EXTENSIONS
from cliplens.datasets.seg_files import given_path, load_class_names, report_missing, split_name, stem_index
from cliplens.datasets.segmentation import (
    FileSegmentationDataset,
    check_raw_values,
    read_mask_file,
    reduce_zero_label,
)
from cliplens.errors import InvalidInputError

__all__ = ["ADE20K_CLASSES", "decode_ade20k", "find_ade_root", "load_ade20k"]

#: the 150 classes, index = annotation value - 1
ADE20K_CLASSES: list[str] = load_class_names("seg_classes_ade20k.txt")
_SPLITS = {"val": "validation", "train": "training"}
_EXPECTED = "ADEChallengeData2016/images/validation/ and ADEChallengeData2016/annotations/validation/"


def decode_ade20k(p: str) -> np.ndarray:
    """An ADE20K annotation (0..150) -> class indices 0..149, 255 (reduce_zero_label)."""
    raw = read_mask_file(p)
    check_raw_values(raw, 150, p, "ADE20K annotations hold 0 (other) and 1..150", ignore=False)
    return reduce_zero_label(raw)


def _has_images(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    with os.scandir(folder) as it:
        return any(e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in it)


def find_ade_root(path: Path, split: str | None = None) -> tuple[Path, Path, Path] | None:
    """``(root, image folder, annotation folder)`` of an ADE20K layout at or below ``path``, or None.

    With ``split=None`` any of ``validation`` / ``training`` counts (for detection)."""
    splits = [split] if split else ["validation", "training"]
    for r in (path / "ADEChallengeData2016", path):
        if not ((r / "images").is_dir() and (r / "annotations").is_dir()):
            continue
        for s in splits:
            if (r / "images" / s).is_dir() and (r / "annotations" / s).is_dir():
                return r, r / "images" / s, r / "annotations" / s
        if _has_images(r / "images") and _has_images(r / "annotations"):
            return r, r / "images", r / "annotations"
    return None


def probe(path: Path) -> list[str]:
    """``["ade20k"]`` if ``path`` holds ADE20K (for detection)."""
    return ["ade20k"] if path.is_dir() and find_ade_root(path) else []


def load_ade20k(
    root: str | os.PathLike,
    *,
    split: str = "validation",
    check_files: bool = True,
    name: str | None = None,
) -> FileSegmentationDataset:
    """ADE20K's 150 classes with ``reduce_zero_label`` (see the module's documentation).

    Args:
        root: the folder holding ``ADEChallengeData2016`` (or that folder, or a flat images/ + annotations/).
        split: ``"validation"`` (2,000 images; ``"val"`` too) or ``"training"``.

    Raises:
        InvalidInputError: no ADE20K layout, an image without its annotation, a value above 150.
    """
    split = split_name(split, _SPLITS, "'validation' or 'training'")
    path = given_path(root, "ade20k", _EXPECTED)
    found = find_ade_root(path, split) if path.is_dir() else None
    if found is None:
        raise InvalidInputError(f"ade20k: no ADE20K {split} data under {os.fspath(root)!r}; expected "
                                f"{_EXPECTED.replace('validation', split)} (or images/ + annotations/ holding the "
                                "files)")
    folder, image_dir, ann_dir = found
    flat = image_dir.name == "images"
    images = stem_index(image_dir, IMAGE_EXTENSIONS)
    if not images:
        raise InvalidInputError(f"ade20k: {image_dir} holds no images")
    entries: list[tuple[str, str, str]] = []
    missing: list[str] = []
    for stem, fname in images.items():
        ann = ann_dir / f"{stem}.png"
        if check_files and not ann.is_file():
            missing.append(repr(stem))
            continue
        entries.append((str(image_dir / fname), str(ann), stem))
    report_missing("annotation(s) are", missing, str(ann_dir), "each image needs annotations/<split>/<stem>.png")

    return FileSegmentationDataset(
        entries, decode_ade20k, name=name or "ade20k", layout="ade20k", class_names=ADE20K_CLASSES, background=None,
        reduce_zero_label=True, root=folder, split=None if flat else split, options={"flat": flat},
    )
