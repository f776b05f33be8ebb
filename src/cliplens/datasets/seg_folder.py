"""The generic segmentation layout (``folder``): ``root/images/`` and ``root/masks/`` with the same relative
paths and stems; masks single-channel PNGs of class indices (``L`` or palette ``P``, whose indices are the
classes); class names from ``root/classes.txt`` (one per line) or ``classes=[...]``.

Options (``--option KEY=VALUE`` on the command line, keywords in Python):

* ``classes=``: a file with one class name per line, or the names separated by ``|`` (default
  ``root/classes.txt``);
* ``images=`` / ``masks=``: the two sub-folders' names (default ``images`` and ``masks``);
* ``void=``: the stored value of pixels that are not scored, besides 255 (CamVid's void is 11); read as 255;
* ``reduce_zero_label=true``: stored 0 means unlabelled (-> 255) and k means class k - 1;
* ``background=``: the background class's index (for a background threshold), ``none``, or ``auto`` (0 when the
  first class is named "background").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from cliplens.datasets.csv import read_class_list
from cliplens.datasets.imagefolder import find_images
from cliplens.datasets.seg_files import first_folder, given_path, report_missing, stem_index
from cliplens.datasets.segmentation import (
    IGNORE,
    FileSegmentationDataset,
    check_raw_values,
    read_mask_file,
    reduce_zero_label,
)
from cliplens.errors import InvalidInputError

__all__ = ["decode_folder_mask", "folder_root", "load_segmentation_folder", "probe"]


def decode_folder_mask(p: str, num_classes: int, reduce: bool = False, void: int | None = None) -> np.ndarray:
    """A generic mask: class indices as stored, or with ``reduce`` 0 -> 255, k -> k - 1; the stored value
    ``void`` (if any) -> 255."""
    raw = read_mask_file(p)
    c = num_classes
    if void is not None and void != IGNORE:
        raw = np.where(raw == void, IGNORE, raw)
    if reduce:
        check_raw_values(raw, c, p, f"with reduce_zero_label the stored values are 0 (unlabelled) and 1..{c}")
        return reduce_zero_label(raw)
    void_note = f", {void} = void" if void is not None and void != IGNORE else ""
    check_raw_values(raw, c - 1, p, f"this folder's {c} classes are 0..{c - 1} (255 = ignore{void_note}); if a "
                     "value marks unlabelled pixels, pass it as void= (--option void=N)")
    return raw


def folder_root(path: Path, images: str, masks: str) -> Path | None:
    return first_folder([path], lambda p: (p / images).is_dir() and (p / masks).is_dir())


def load_segmentation_folder(
    root: str | os.PathLike,
    *,
    classes: str | os.PathLike | Sequence[str] | None = None,
    images: str = "images",
    masks: str = "masks",
    reduce_zero_label: bool = False,
    void: int | None = None,
    background: int | None | str = "auto",
    check_files: bool = True,
    name: str | None = None,
) -> FileSegmentationDataset:
    """Read ``root/images/`` + ``root/masks/`` (see the module's documentation).

    Args:
        classes: class names in index order (a list, or a text file with one per line); default
            ``root/classes.txt``.
        images: the images sub-folder's name.
        masks: the masks sub-folder's name.
        reduce_zero_label: map stored 0 -> 255 and k -> k - 1 (for masks whose 0 means "unlabelled").
        void: a stored value that marks pixels not scored, read as 255 (CamVid: 11); 255 always is.
        background: the background class's index; ``"auto"``: 0 if ``classes[0]`` is "background", else none.

    Raises:
        InvalidInputError: no such folders, no class names, an image without a mask.
    """
    path = given_path(root, "segmentation folder", f"{images}/ and {masks}/")
    folder = folder_root(path, images, masks) if path.is_dir() else None
    if folder is None:
        raise InvalidInputError(f"segmentation folder {os.fspath(root)!r} has no {images}/ and {masks}/ sub-folders; "
                                f"the generic layout is root/{images}/ (the images) and root/{masks}/ (one "
                                "single-channel PNG of class indices per image, same stem), with root/classes.txt")
    if classes is None:
        if not (folder / "classes.txt").is_file():
            raise InvalidInputError(f"segmentation folder {folder} has no classes.txt: write the class names there, "
                                    "one per line in index order, or pass classes=[...]")
        classes = folder / "classes.txt"
    class_names = read_class_list(classes)
    if void is not None:
        stored = len(class_names) + (1 if reduce_zero_label else 0)  # stored class values are 0..stored-1
        if isinstance(void, bool) or not isinstance(void, (int, np.integer)) or not 0 <= void <= IGNORE:
            raise InvalidInputError(f"void={void!r}: give the stored mask value (0..255) of pixels that are not "
                                    "scored, e.g. void=11 for CamVid")
        first = 1 if reduce_zero_label else 0
        if first <= void < stored:
            k = void - first
            raise InvalidInputError(f"void={void} is also class {k} ({class_names[k]!r}) of the class list: a value "
                                    "cannot be both. Drop that name from the class list (the classes are the values "
                                    f"0..{len(class_names) - 1}; the void value comes after them), or give another "
                                    "void value")
    if background == "auto":
        bg = 0 if class_names[0].strip().lower() in ("background", "_background_", "bg") else None
    elif background is None or (isinstance(background, int) and 0 <= background < len(class_names)):
        bg = background
    else:
        raise InvalidInputError(f"background={background!r}: give a class index (0..{len(class_names) - 1}), None "
                                "or 'auto'")
    found, _ = find_images(folder / images)
    if not found:
        raise InvalidInputError(f"{folder / images} holds no images")
    entries: list[tuple[str, str, str]] = []
    missing: list[str] = []
    mask_dirs: dict[str, dict[str, str]] = {}
    for rel in found:
        sub, fname = os.path.split(rel)
        stem = os.path.splitext(fname)[0]
        mdir = folder / masks / sub
        if sub not in mask_dirs:
            mask_dirs[sub] = stem_index(mdir) if mdir.is_dir() else {}
        mname = mask_dirs[sub].get(stem)
        if mname is None:
            missing.append(repr(rel))
            continue
        entries.append((str(folder / images / rel), str(mdir / mname), Path(sub, stem).as_posix()))
    if check_files:
        report_missing("mask(s) are", missing, str(folder / masks),
                       f"each image needs a mask with the same stem (e.g. {masks}/<name>.png)")
    else:
        if not entries:
            raise InvalidInputError(f"no image under {folder / images} has a mask in {folder / masks}")
    return FileSegmentationDataset(
        entries, partial(decode_folder_mask, num_classes=len(class_names), reduce=bool(reduce_zero_label),
                         void=None if void is None else int(void)),
        name=name or folder.name, layout="folder", class_names=class_names, background=bg,
        reduce_zero_label=bool(reduce_zero_label), root=folder, split=None,
        options={"images": images, "masks": masks, "classes": os.fspath(classes)
                 if isinstance(classes, (str, os.PathLike)) else "given", "void": None if void is None else int(void)},
    )


def probe(path: Path) -> list[str]:
    """``["folder"]`` when ``path`` holds ``images/`` and ``masks/`` (for layout detection)."""
    return ["folder"] if path.is_dir() and folder_root(path, "images", "masks") is not None else []
