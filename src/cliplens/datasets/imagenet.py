"""ImageNet-1k (ILSVRC 2012), usually its validation set, in either of its common layouts:

* class folders named by WordNet id: ``root/n01440764/ILSVRC2012_val_00000293.JPEG``;
* a flat folder of images with ``LOC_val_solution.csv`` (the Kaggle layout: columns ``ImageId,
  PredictionString``; the first token of ``PredictionString`` is the image's wnid). The images are in
  the same folder as the CSV, in ``ILSVRC/Data/CLS-LOC/val`` below it, or in ``images=``.

The 1,000 classes are built in (``cliplens/data/imagenet_classes.tsv``): the standard order (sorted
wnids) with OpenAI CLIP's curated class names. Every label is the standard index of the image's wnid,
never a position in a listing, so a folder holding only some classes still gets the right labels.
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from pathlib import Path

from cliplens.datasets.base import ListDataset, Sample, is_hidden, is_image_file, read_table
from cliplens.datasets.imagefolder import find_images, require_folder
from cliplens.errors import InvalidInputError

__all__ = ["ImageNetDataset", "SOLUTION", "WNID", "imagenet_classes", "load_imagenet"]

SOLUTION = "LOC_val_solution.csv"
#: a WordNet noun id
WNID = re.compile(r"n\d{8}")
_KAGGLE_VAL = Path("ILSVRC", "Data", "CLS-LOC", "val")


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1,000 ``(wnid, name)`` in the standard order (index = position), names as in OpenAI CLIP."""
    text = resources.files("cliplens").joinpath("data", "imagenet_classes.tsv").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        index, wnid, name = line.split("\t")
        assert int(index) == len(out), "imagenet_classes.tsv is out of order"
        out.append((wnid, name))
    assert len(out) == 1000
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {w: i for i, (w, _) in enumerate(imagenet_classes())}


class ImageNetDataset(ListDataset):
    """ImageNet (see the module's documentation); ``wnids[label]`` is a class's WordNet id."""

    root: Path

    @property
    def wnids(self) -> list[str]:
        return [w for w, _ in imagenet_classes()]


def _from_folders(folder: Path, classes: list[str]) -> tuple[list[Sample], int]:
    index = _wnid_index()
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise InvalidInputError(
            f"ImageNet folder {folder}: sub-folder(s) {unknown[:5]} are not ImageNet-1k WordNet ids (like n01440764)"
            + (f", … ({len(unknown)} in all)" if len(unknown) > 5 else "")
            + ". For folders named by class, use layout='imagefolder'")
    samples: list[Sample] = []
    skipped = 0
    for wnid in classes:
        files, n = find_images(folder / wnid)
        skipped += n
        for rel in files:
            samples.append(Sample(str(folder / wnid / rel), index[wnid], f"{wnid}/{rel}", {"wnid": wnid}))
    return samples, skipped


def _from_solution(solution: Path, images: Path) -> tuple[list[Sample], int]:
    index = _wnid_index()
    header, rows, _ = read_table(solution)
    for c in ("ImageId", "PredictionString"):
        if c not in header:
            raise InvalidInputError(f"{solution}: no {c!r} column; {SOLUTION} has the columns ImageId,"
                                    f"PredictionString (its columns are {header})")
    ci, cp = header.index("ImageId"), header.index("PredictionString")
    files, _ = find_images(images)
    by_stem: dict[str, str] = {}
    for rel in files:
        by_stem.setdefault(Path(rel).stem, rel)
    samples: list[Sample] = []
    missing: list[str] = []
    for ln, r in rows:
        image_id, pred = r[ci], r[cp].split()
        if not image_id or not pred:
            raise InvalidInputError(f"{solution}, line {ln}: empty ImageId or PredictionString")
        wnid = pred[0]
        if wnid not in index:
            raise InvalidInputError(f"{solution}, line {ln}: {wnid!r} (the first token of PredictionString) is not "
                                    "an ImageNet-1k WordNet id")
        rel = by_stem.get(image_id)
        if rel is None:
            missing.append(f"{image_id!r} (line {ln})")
            continue
        samples.append(Sample(str(images / rel), index[wnid], rel, {"wnid": wnid}))
    if missing:
        shown = ", ".join(missing[:5]) + (f", … ({len(missing)} in all)" if len(missing) > 5 else "")
        raise InvalidInputError(f"{solution}: {len(missing)} listed image(s) have no file in {images}: {shown}. "
                                "Give the folder of the images with images=...")
    listed = {Path(s.id).stem for s in samples}
    return samples, sum(1 for rel in files if Path(rel).stem not in listed)


def is_imagenet_folder(folder: Path) -> bool:
    """A folder with ``LOC_val_solution.csv``, or whose (non-hidden) sub-folders are all ImageNet wnids."""
    if (folder / SOLUTION).is_file():
        return True
    subs = [e.name for e in os.scandir(folder) if e.is_dir() and not is_hidden(e.name)]
    index = _wnid_index()
    return bool(subs) and all(WNID.fullmatch(s) and s in index for s in subs)


def load_imagenet(
    root: str | os.PathLike,
    *,
    split: str | None = None,
    images: str | os.PathLike | None = None,
    name: str | None = None,
) -> ImageNetDataset:
    """Read ImageNet: wnid class folders, or a flat folder with ``LOC_val_solution.csv``.

    Args:
        root: the folder (or the ``LOC_val_solution.csv`` file itself).
        split: read ``root/split`` if there is such a folder (e.g. ``"val"``); recorded in
            :meth:`~Dataset.describe` either way (default ``"val"`` for the CSV layout).
        images: the folder of the images for the CSV layout (default: next to the CSV, or
            ``ILSVRC/Data/CLS-LOC/val`` below it).

    Raises:
        InvalidInputError: a missing folder, a sub-folder that is not a wnid, a wnid that is not one of
            the 1,000, an image listed in the CSV with no file (the message names it).
    """
    given = Path(os.path.expanduser(os.fspath(root)))
    if given.is_file() and given.name.lower().endswith(".csv"):
        solution: Path | None = Path(os.path.abspath(given))
        folder = solution.parent
    else:
        folder = require_folder(given, "ImageNet folder")
        if split is not None and (folder / split).is_dir():
            folder = folder / split
        solution = folder / SOLUTION if (folder / SOLUTION).is_file() else None
    if solution is not None:
        if images is not None:
            img_dir = require_folder(images, "ImageNet images folder")
        elif (folder / _KAGGLE_VAL).is_dir():
            img_dir = folder / _KAGGLE_VAL
        else:
            img_dir = folder
        samples, unlisted = _from_solution(solution, img_dir)
        info = {"root": str(folder), "format": "LOC_val_solution", "images": str(img_dir),
                "split": split or "val", "unlisted_images": unlisted}
    else:
        subs = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not is_hidden(e.name))
        if not subs:
            loose = sum(1 for f in os.listdir(folder) if is_image_file(f))
            raise InvalidInputError(
                f"ImageNet folder {folder} has no wnid sub-folders and no {SOLUTION}"
                + (f" ({loose} images lie directly in it: put {SOLUTION} next to them)" if loose else ""))
        samples, skipped = _from_folders(folder, subs)
        info = {"root": str(folder), "format": "wnid folders", "split": split, "skipped_files": skipped,
                "num_wnid_folders": len(subs)}
        img_dir = folder
    if not samples:
        raise InvalidInputError(f"no ImageNet images found in {img_dir}")
    samples.sort(key=lambda s: s.id)
    ds = ImageNetDataset(samples, name=name or "imagenet", layout="imagenet",
                         class_names=[n for _, n in imagenet_classes()], attribute_names=["wnid"], info=info)
    ds.root = folder
    return ds
