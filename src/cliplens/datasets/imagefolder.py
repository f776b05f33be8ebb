"""A folder with one sub-folder per class (``root/cat/001.jpg``, ``root/dog/x/002.png``), or a folder of
unlabelled images (layout ``"images"``).

Class names are the sub-folders' names, sorted; each image's label is the class of the folder it is in
(images in folders nested inside a class folder belong to that class). A folder whose sub-folders are all
named like splits (:data:`SPLIT_NAMES`: ``train/``, ``val/``, ``test/``, …) holds splits, not classes: ``split=``
picks one (its sub-folders are the classes), and without it the folder is refused with a message naming the
splits (read as classes, it would be a set whose classes are "train" and "test"). Only image files count
(:data:`~cliplens.datasets.base.IMAGE_EXTENSIONS`, any case); hidden files and folders (``.*``, which
includes macOS's ``._*``) are skipped. Samples are sorted by their path relative to the root, which is
also their id, so the order does not depend on the file system.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cliplens.datasets.base import IMAGE_EXTENSIONS, ListDataset, Sample, is_hidden, is_image_file
from cliplens.errors import InvalidInputError

__all__ = ["SPLIT_NAMES", "ImageFolderDataset", "find_images", "load_image_folder", "load_images", "require_folder",
           "split_folders"]

#: sub-folder names read as splits, not classes (compared ignoring case)
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing", "dev", "eval"})


def require_folder(root: str | os.PathLike, what: str = "data set folder") -> Path:
    """``root`` as an absolute path, or a clear error if it is missing or not a folder."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not path.exists():
        raise InvalidInputError(f"{what} {os.fspath(root)!r} does not exist: check the path")
    if not path.is_dir():
        raise InvalidInputError(f"{what} {os.fspath(root)!r} is a file, not a folder")
    return path


def find_images(folder: Path) -> tuple[list[str], int]:
    """Every image file under ``folder`` (nested folders included, hidden ones skipped, symbolic links
    followed once) as sorted POSIX paths relative to ``folder``; and the number of other files skipped."""
    found: list[str] = []
    skipped = 0
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        rel_dir = os.path.relpath(dirpath, folder)
        for f in filenames:
            if is_image_file(f):
                found.append(f if rel_dir == "." else Path(rel_dir, f).as_posix())
            elif not is_hidden(f):
                skipped += 1
    found.sort()
    return found, skipped


class ImageFolderDataset(ListDataset):
    """Images in class sub-folders (see the module's documentation); ``root`` is the folder."""

    root: Path


def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if not is_hidden(e.name) and e.is_dir())


def split_folders(root: Path) -> list[str]:
    """The sub-folders of ``root`` when every one is named like a split (``["test", "train"]``), else ``[]``."""
    subs = _class_folders(root)
    return subs if subs and all(s.lower() in SPLIT_NAMES for s in subs) else []


def _with_split(root: Path, split: str | None, *, classes: bool = True) -> Path:
    if split is None:
        splits = split_folders(root) if classes else []
        if splits:
            raise InvalidInputError(
                f"folder {root} holds the splits {', '.join(splits)} (sub-folders named like splits, not classes): "
                f"choose one with --split {splits[0]} (split={splits[0]!r} in Python); its sub-folders are then the "
                "classes. To read one split's classes, you may also give the split's own folder as the data set")
        return root
    sub = root / str(split)
    if not sub.is_dir():
        raise InvalidInputError(f"split={split!r}: there is no folder {sub}; give the split's own folder as the "
                                "data set, or leave split out")
    return sub


def load_image_folder(
    root: str | os.PathLike,
    *,
    split: str | None = None,
    name: str | None = None,
) -> ImageFolderDataset:
    """Read a folder with one sub-folder per class.

    Args:
        root: the folder (its sub-folders are the classes).
        split: read ``root/split`` instead (e.g. ``"val"`` for ``root/train``, ``root/val``).
        name: the data set's name (default: the folder's name).

    Raises:
        InvalidInputError: a missing or empty folder, no class sub-folders, or no images at all.
    """
    top = require_folder(root)
    folder = _with_split(top, split)
    classes = _class_folders(folder)
    if not classes:
        loose = [f for f in os.listdir(folder) if is_image_file(f)]
        if loose:
            raise InvalidInputError(
                f"folder {folder} has {len(loose)} images but no class sub-folders: an image-folder data set needs "
                "one sub-folder per class (root/CLASS/image.jpg). For unlabelled images use layout='images'")
        raise InvalidInputError(f"folder {folder} has no class sub-folders and no images: an image-folder data set "
                                "needs one sub-folder per class (root/CLASS/image.jpg)")
    samples: list[Sample] = []
    skipped = 0
    empty: list[str] = []
    for label, cls in enumerate(classes):
        files, n_skipped = find_images(folder / cls)
        skipped += n_skipped
        if not files:
            empty.append(cls)
        for rel in files:
            rel_path = f"{cls}/{rel}"
            samples.append(Sample(str(folder / cls / rel), label, rel_path, {}))
    if not samples:
        raise InvalidInputError(f"no image files in the class folders of {folder} (looked for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))}, any case)")
    samples.sort(key=lambda s: s.id)
    info: dict[str, Any] = {"root": str(top), "split": split, "skipped_files": skipped}
    if empty:
        info["empty_classes"] = empty
    ds = ImageFolderDataset(samples, name=name or top.name, layout="imagefolder", class_names=classes, info=info)
    ds.root = folder
    return ds


def load_images(
    root: str | os.PathLike,
    *,
    split: str | None = None,
    name: str | None = None,
) -> ImageFolderDataset:
    """Every image under a folder (nested folders included), unlabelled (``label == -1``, no classes).

    Raises:
        InvalidInputError: a missing folder or one with no images.
    """
    top = require_folder(root)
    folder = _with_split(top, split, classes=False)
    files, skipped = find_images(folder)
    if not files:
        raise InvalidInputError(f"folder {folder} holds no image files (looked for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))}, any case, in it and its sub-folders)")
    samples = [Sample(str(folder / rel), -1, rel, {}) for rel in files]
    ds = ImageFolderDataset(samples, name=name or top.name, layout="images", class_names=[],
                            info={"root": str(top), "split": split, "skipped_files": skipped})
    ds.root = folder
    return ds
