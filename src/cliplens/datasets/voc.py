"""PASCAL VOC 2012 segmentation (``voc21``, ``voc20``) and PASCAL Context (``context60``, ``context59``).

**VOC** (``VOCdevkit/VOC2012/``): ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` and
``ImageSets/Segmentation/<split>.txt``. Masks are palette (``P``) PNGs whose indices are the classes:
0 background, 1..20 the objects (:data:`VOC_CLASSES`), 255 void (object boundaries and unsure pixels).
RGB masks in the VOC colour map are read too (each colour mapped to its index; (224, 224, 192) is 255),
as are greyscale masks holding the indices.

* ``voc21``: the 21 classes with background at 0, void 255;
* ``voc20``: the 20 object classes: ``reduce_zero_label`` (background -> 255, 1..20 -> 0..19), as the
  field evaluates "VOC without background".

**PASCAL Context** in the mmsegmentation layout (``VOCdevkit/VOC2010/``): ``JPEGImages/<id>.jpg``,
``SegmentationClassContext/<id>.png`` (greyscale, 0 = background, 1..59 the 59 most frequent classes,
the converted labels of the Context release) and ``ImageSets/SegmentationContext/<split>.txt``.

* ``context60``: background at 0, then the 59 classes (:data:`CONTEXT59_CLASSES`, alphabetical as
  in the Context release's 59-class list);
* ``context59``: ``reduce_zero_label`` (background -> 255, 1..59 -> 0..58).

``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC2012`` / ``VOC2010``.
``split=None`` (``--split none`` on the command line, ``"voc21:split=none"`` as a spec) reads every mask of the
mask folder instead of a split file: for exports without ``ImageSets`` (labelme's, CVAT's). Plain class names are VOC's
words with compound words split (``"dining table"``, ``"potted plant"``, ``"tv monitor"``).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from cliplens.datasets.seg_files import (
    first_folder,
    given_path,
    load_class_names,
    read_split_file,
    report_missing,
    stem_index,
)
from cliplens.datasets.segmentation import (
    IGNORE,
    FileSegmentationDataset,
    check_raw_values,
    read_mask_file,
    reduce_zero_label,
)
from cliplens.errors import InvalidInputError

__all__ = ["CONTEXT59_CLASSES", "CONTEXT60_CLASSES", "VOC20_CLASSES", "VOC_CLASSES", "VOC_VOID_COLOUR",
           "decode_context", "decode_voc", "find_context_root", "find_voc_root", "load_context", "load_context59", "load_context60", "load_voc",
           "load_voc20", "load_voc21", "voc_colormap", "voc_rgb_to_index"]

#: VOC's 21 classes, index = the value in the masks
VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor",
]
VOC20_CLASSES: list[str] = VOC_CLASSES[1:]
#: the colour of void (255) in VOC's colour map
VOC_VOID_COLOUR = (224, 224, 192)
#: PASCAL Context's 59 classes (index 1..59 of the stored masks, 0..58 of ``context59``)
CONTEXT59_CLASSES: list[str] = load_class_names("seg_classes_context59.txt")
CONTEXT60_CLASSES: list[str] = ["background", *CONTEXT59_CLASSES]

_VOC_EXPECTED = "VOCdevkit/VOC2012/ with JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt"
_CONTEXT_EXPECTED = ("VOCdevkit/VOC2010/ with JPEGImages/, SegmentationClassContext/ and "
                     "ImageSets/SegmentationContext/<split>.txt (the mmsegmentation layout)")


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC colour map, uint8 ``[n, 3]``: index ``i``'s bits spread over R, G, B from the top bit down."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for bit in range(7, -1, -1):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << bit
            c >>= 3
        cmap[i] = rgb
    return cmap


_CMAP = voc_colormap()
#: colour code (r << 16 | g << 8 | b) -> class index, for the 21 classes and void
_COLOUR_TO_INDEX: dict[int, int] = {
    (int(r) << 16) | (int(g) << 8) | int(b): k for k, (r, g, b) in enumerate(_CMAP[: len(VOC_CLASSES)])
}
_COLOUR_TO_INDEX[(VOC_VOID_COLOUR[0] << 16) | (VOC_VOID_COLOUR[1] << 8) | VOC_VOID_COLOUR[2]] = IGNORE
_KNOWN_CODES = np.array(sorted(_COLOUR_TO_INDEX), dtype=np.int64)
_KNOWN_INDEX = np.array([_COLOUR_TO_INDEX[c] for c in _KNOWN_CODES.tolist()], dtype=np.int64)


def voc_rgb_to_index(rgb: np.ndarray, source: str = "mask") -> np.ndarray:
    """An RGB mask in the VOC colour map -> class indices (int64; void colour -> 255).

    Raises:
        InvalidInputError: a colour that is none of the 21 classes' nor void's (the message names it).
    """
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2].astype(np.int64)
    pos = np.minimum(np.searchsorted(_KNOWN_CODES, codes), len(_KNOWN_CODES) - 1)
    known = _KNOWN_CODES[pos] == codes
    if not known.all():
        unknown = [str(((c >> 16) & 255, (c >> 8) & 255, c & 255)) for c in np.unique(codes[~known]).tolist()]
        shown = ", ".join(unknown[:6]) + (", …" if len(unknown) > 6 else "")
        raise InvalidInputError(f"RGB mask {source} holds colour(s) {shown} that are not in the VOC colour map (the "
                                f"21 class colours and {VOC_VOID_COLOUR} for void); was it resized or saved as JPEG?")
    return _KNOWN_INDEX[pos]


def decode_voc(p: str, background: bool = True) -> np.ndarray:
    """A VOC mask (palette, greyscale or RGB colour map) -> voc21 indices, or voc20 ones without ``background``."""
    raw = read_mask_file(p, allow_rgb=True)
    if raw.ndim == 3:
        idx = voc_rgb_to_index(raw, p)
    else:
        check_raw_values(raw, 20, p, "VOC masks hold 0 (background), 1..20 (the classes) and 255 (void)")
        idx = raw.astype(np.int64)
    return idx if background else reduce_zero_label(idx)


def decode_context(p: str, background: bool = True) -> np.ndarray:
    """A Context mask (0..59) -> context60 indices, or context59 ones without ``background``."""
    raw = read_mask_file(p)
    check_raw_values(raw, 59, p, "PASCAL Context masks (mmsegmentation's conversion) hold 0 (background) and 1..59")
    idx = raw.astype(np.int64)
    return idx if background else reduce_zero_label(idx)


def find_voc_root(path: Path, year: str = "VOC2012", masks: str = "SegmentationClass") -> Path | None:
    """The ``VOC20xx`` folder at or below ``path`` holding ``JPEGImages`` and ``masks``, or None."""
    cands = [path, path / year, path / "VOCdevkit" / year]
    return first_folder(cands, lambda p: (p / "JPEGImages").is_dir() and (p / masks).is_dir())


def find_context_root(path: Path) -> Path | None:
    return find_voc_root(path, "VOC2010", "SegmentationClassContext")


def probe(path: Path) -> list[str]:
    """The sets of this module that ``path`` holds (for :func:`~.registry.detect_segmentation_layout`)."""
    if not path.is_dir():
        return []
    return (["voc21", "voc20"] if find_voc_root(path) else []) + (["context60", "context59"]
                                                                  if find_context_root(path) else [])


def _entries(folder: Path, masks: str, sets: str, split: str | None, what: str,
             check_files: bool) -> list[tuple[str, str, str]]:
    mask_dir = folder / masks
    images = folder / "JPEGImages"
    if split is None:
        mask_index = stem_index(mask_dir, (".png",))
        ids = list(mask_index)
        if not ids:
            raise InvalidInputError(f"{what}: {mask_dir} holds no PNG masks")
    else:
        if not isinstance(split, str) or not split.strip():
            raise InvalidInputError(f"{what}: split={split!r}; give a split name ('val', 'train', …) or none (every "
                                    "mask)")
        split_file = folder / "ImageSets" / sets / f"{split}.txt"
        if not split_file.is_file():
            listed = sorted(p.stem for p in (folder / "ImageSets" / sets).glob("*.txt")) \
                if (folder / "ImageSets" / sets).is_dir() else []
            raise InvalidInputError(f"{what}: no split file {split_file}" +
                                    (f" (the splits there are {listed})" if listed else "") +
                                    "; give another split (--split NAME), or none (--split none, split=None in "
                                    f"Python) to read every mask in {mask_dir}")
        ids = read_split_file(split_file, f"{what} split file")
    image_index: dict[str, str] | None = None
    entries: list[tuple[str, str, str]] = []
    missing_images: list[str] = []
    missing_masks: list[str] = []
    for i in ids:
        img = images / f"{i}.jpg"
        if not img.is_file():
            if image_index is None:
                image_index = stem_index(images)
            name = image_index.get(i)
            img = images / name if name else img
            if name is None and check_files:
                missing_images.append(repr(i))
        mask = mask_dir / f"{i}.png"
        if check_files and not mask.is_file():
            missing_masks.append(repr(i))
        entries.append((str(img), str(mask), i))
    report_missing("image(s) are", missing_images, str(images), "every listed id needs JPEGImages/<id>.jpg")
    report_missing("mask(s) are", missing_masks, str(mask_dir), f"every listed id needs {masks}/<id>.png")
    return entries


def load_voc(
    root: str | os.PathLike,
    *,
    split: str | None = "val",
    background: bool = True,
    check_files: bool = True,
    name: str | None = None,
) -> FileSegmentationDataset:
    """PASCAL VOC 2012 segmentation (see the module's documentation).

    Args:
        root: the folder holding ``VOCdevkit``, ``VOCdevkit`` or ``VOC2012``.
        split: ``"val"`` (1,449 images), ``"train"``, ``"trainval"``, … (a file of
            ``ImageSets/Segmentation``), or ``None`` for every mask in ``SegmentationClass``.
        background: ``True`` -> ``voc21``; ``False`` -> ``voc20`` (background -> 255).

    Raises:
        InvalidInputError: no VOC folder, no split file, a listed image or mask missing.
    """
    what = "voc21" if background else "voc20"
    path = given_path(root, what, _VOC_EXPECTED)
    folder = find_voc_root(path) if path.is_dir() else None
    if folder is None:
        raise InvalidInputError(f"{what}: {os.fspath(root)!r} is not a PASCAL VOC 2012 folder; expected "
                                f"{_VOC_EXPECTED}")
    entries = _entries(folder, "SegmentationClass", "Segmentation", split, what, check_files)

    return FileSegmentationDataset(
        entries, partial(decode_voc, background=background), name=name or what, layout="voc", class_names=VOC_CLASSES if background else VOC20_CLASSES,
        background=0 if background else None, reduce_zero_label=not background, root=folder, split=split,
        options={"background": background}, preset=what,
    )


def load_voc21(root: str | os.PathLike, *, split: str | None = "val", check_files: bool = True,
               name: str | None = None) -> FileSegmentationDataset:
    """VOC 2012 with background: 21 classes, 0 = background, 255 = void."""
    return load_voc(root, split=split, background=True, check_files=check_files, name=name)


def load_voc20(root: str | os.PathLike, *, split: str | None = "val", check_files: bool = True,
               name: str | None = None) -> FileSegmentationDataset:
    """VOC 2012 without background: 20 classes; background and void are 255."""
    return load_voc(root, split=split, background=False, check_files=check_files, name=name)


def load_context(
    root: str | os.PathLike,
    *,
    split: str | None = "val",
    background: bool = True,
    check_files: bool = True,
    name: str | None = None,
) -> FileSegmentationDataset:
    """PASCAL Context in the mmsegmentation layout (see the module's documentation).

    Args:
        root: the folder holding ``VOCdevkit``, ``VOCdevkit`` or ``VOC2010``.
        split: ``"val"`` (5,105 images) or ``"train"`` (files of ``ImageSets/SegmentationContext``), or
            ``None`` for every mask in ``SegmentationClassContext``.
        background: ``True`` -> ``context60``; ``False`` -> ``context59`` (background -> 255).
    """
    what = "context60" if background else "context59"
    path = given_path(root, what, _CONTEXT_EXPECTED)
    folder = find_context_root(path) if path.is_dir() else None
    if folder is None:
        raise InvalidInputError(f"{what}: {os.fspath(root)!r} is not a PASCAL Context folder; expected "
                                f"{_CONTEXT_EXPECTED}")
    entries = _entries(folder, "SegmentationClassContext", "SegmentationContext", split, what, check_files)

    return FileSegmentationDataset(
        entries, partial(decode_context, background=background), name=name or what, layout="context",
        class_names=CONTEXT60_CLASSES if background else CONTEXT59_CLASSES,
        background=0 if background else None, reduce_zero_label=not background, root=folder, split=split,
        options={"background": background}, preset=what,
    )


def load_context60(root: str | os.PathLike, *, split: str | None = "val", check_files: bool = True,
                   name: str | None = None) -> FileSegmentationDataset:
    """PASCAL Context with background: 60 classes, 0 = background."""
    return load_context(root, split=split, background=True, check_files=check_files, name=name)


def load_context59(root: str | os.PathLike, *, split: str | None = "val", check_files: bool = True,
                   name: str | None = None) -> FileSegmentationDataset:
    """PASCAL Context without background: 59 classes; background -> 255."""
    return load_context(root, split=split, background=False, check_files=check_files, name=name)
