"""The Waterbirds layout (Sagawa et al. 2020; as distributed by the authors and WILDS).

``root/metadata.csv`` has (at least) the columns ``img_filename`` (relative to ``root``), ``y`` (0
landbird, 1 waterbird), ``place`` (0 land, 1 water) and ``split`` (0 train, 1 val, 2 test). Labels are
``y``; every sample's attributes are ``place``, ``group = 2 * y + place`` and ``split`` (its name).
"""

from __future__ import annotations

import os
from pathlib import Path

from cliplens.datasets.base import ListDataset, Sample, read_table
from cliplens.datasets.imagefolder import require_folder
from cliplens.errors import InvalidInputError

__all__ = ["CLASS_NAMES", "GROUP_NAMES", "METADATA", "PLACE_NAMES", "REQUIRED_COLUMNS", "SPLITS", "WaterbirdsDataset",
           "load_waterbirds"]

METADATA = "metadata.csv"
REQUIRED_COLUMNS = ("img_filename", "y", "place", "split")
CLASS_NAMES = ["landbird", "waterbird"]
PLACE_NAMES = ["land", "water"]
#: ``GROUP_NAMES[2 * y + place]``
GROUP_NAMES = ["landbird on land", "landbird on water", "waterbird on land", "waterbird on water"]
SPLITS = {"train": 0, "val": 1, "test": 2}
_SPLIT_NAMES = {v: k for k, v in SPLITS.items()}


class WaterbirdsDataset(ListDataset):
    """Waterbirds (see the module's documentation); ``group_names[group]`` names a group."""

    root: Path
    group_names: list[str] = GROUP_NAMES
    place_names: list[str] = PLACE_NAMES


def _split_code(split: str | int | None) -> int | None:
    if split is None:
        return None
    if isinstance(split, str) and split.lower() in SPLITS:
        return SPLITS[split.lower()]
    if isinstance(split, int) and not isinstance(split, bool) and split in _SPLIT_NAMES:
        return split
    raise InvalidInputError(f"split={split!r}: Waterbirds splits are 'train', 'val' and 'test' (or None for all)")


def load_waterbirds(
    root: str | os.PathLike,
    *,
    split: str | int | None = None,
    check_files: bool = True,
    name: str | None = None,
) -> WaterbirdsDataset:
    """Read a Waterbirds folder.

    Args:
        root: the folder holding ``metadata.csv`` (or the ``metadata.csv`` file itself).
        split: ``"train"``, ``"val"``, ``"test"`` (or 0, 1, 2), or ``None`` for all.
        check_files: make sure every listed image exists.

    Raises:
        InvalidInputError: no ``metadata.csv``, a missing column, a value out of range, a listed image
            that does not exist (the message names it and its line).
    """
    given = Path(os.path.expanduser(os.fspath(root)))
    if given.name == METADATA and given.is_file():
        given = given.parent
    folder = require_folder(given, "Waterbirds folder")
    meta = folder / METADATA
    if not meta.is_file():
        raise InvalidInputError(f"Waterbirds folder {folder} has no {METADATA} (columns "
                                f"{', '.join(REQUIRED_COLUMNS)}); give the folder that holds it")
    code = _split_code(split)
    header, rows, _ = read_table(meta)
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise InvalidInputError(f"{meta}: missing column(s) {absent}; the Waterbirds layout needs "
                                f"{list(REQUIRED_COLUMNS)} (its columns are {header})")
    col = {h: k for k, h in enumerate(header)}
    allowed = {"y": (0, 1), "place": (0, 1), "split": (0, 1, 2)}
    samples: list[Sample] = []
    missing: list[str] = []
    for ln, r in rows:
        vals: dict[str, int] = {}
        for c, ok in allowed.items():
            v = r[col[c]]
            try:
                vals[c] = int(float(v)) if v and float(v).is_integer() else int(v)
            except ValueError:
                vals[c] = -1
            if vals[c] not in ok:
                raise InvalidInputError(f"{meta}, line {ln}: {c} = {v!r}; it must be one of {list(ok)}")
        if code is not None and vals["split"] != code:
            continue
        rel = r[col["img_filename"]]
        if not rel:
            raise InvalidInputError(f"{meta}, line {ln}: empty img_filename")
        path = folder / rel
        if check_files and not path.is_file():
            missing.append(f"{rel!r} (line {ln})")
        y, place = vals["y"], vals["place"]
        attrs = {"place": place, "group": 2 * y + place, "split": _SPLIT_NAMES[vals["split"]]}
        samples.append(Sample(str(path), y, Path(rel).as_posix(), attrs))
    if missing:
        shown = ", ".join(missing[:5]) + (f", … ({len(missing)} in all)" if len(missing) > 5 else "")
        raise InvalidInputError(f"{meta}: {len(missing)} listed image(s) do not exist under {folder}: {shown}")
    if not samples:
        raise InvalidInputError(f"{meta}: no rows for split={split!r}")
    ds = WaterbirdsDataset(
        samples, name=name or "waterbirds", layout="waterbirds", class_names=CLASS_NAMES,
        attribute_names=["place", "group", "split"],
        attribute_values={"place": list(PLACE_NAMES), "group": list(GROUP_NAMES)},
        info={"root": str(folder), "split": _SPLIT_NAMES[code] if code is not None else None},
    )
    ds.root = folder
    return ds
