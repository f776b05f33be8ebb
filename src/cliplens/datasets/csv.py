"""A CSV or TSV file listing images: a path column, a label column and any other columns as attributes.

::

    path,label,photographer
    imgs/001.jpg,cat,ann
    /data/x/002.jpg,dog,bob

Paths are relative to the file's folder (or ``root=``), or absolute. Labels are class names or integer
indices: with names, the class names are the sorted unique names of the *whole* file (so every split
of a file gets the same indices) or the order given by ``classes=``; with integers, the class names
come from ``classes=`` (a list, a file with one name per line, or ``"imagenet"`` for the standard
1,000 classes), or from the file itself: a ``wnid`` column that agrees with the labels' ImageNet indices
gives the 1,000 ImageNet names, a ``name`` column (one name per index) names the indices it covers; else
they are ``class_0 .. class_K``. The delimiter (``,``, tab, ``;`` or ``|``) is detected
from the header line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cliplens.datasets.base import AttributeValue, ListDataset, Sample, read_table
from cliplens.datasets.imagenet import _wnid_index, imagenet_classes
from cliplens.errors import InvalidInputError

__all__ = ["AUTO", "CsvDataset", "PATH_COLUMNS", "LABEL_COLUMNS", "load_csv", "read_class_list"]

#: column names tried, in order and ignoring case, when ``path_column`` / ``label_column`` are not given
PATH_COLUMNS = ("path", "filepath", "file_path", "image_path", "img_path", "filename", "file_name", "file",
                "image", "img", "img_filename", "image_file")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "category", "target", "y", "class_index",
                 "class_id", "label_index")

_INT = re.compile(r"[+-]?\d+")


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


#: "find the column by its name" (the default of ``path_column`` and ``label_column``)
AUTO: Any = _Auto()


class CsvDataset(ListDataset):
    """Images listed in a CSV/TSV file (see the module's documentation)."""

    path: Path


def _few(items: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", … ({len(items)} in all)" if len(items) > n else "")


def read_class_list(classes: str | os.PathLike | Sequence[str]) -> list[str]:
    """Class names from a list, ``"imagenet"`` (the standard 1,000, CLIP's names), or a text file with one
    name per line (blank lines and ``#`` comments skipped; on lines with tabs the last field is the name,
    so ``cliplens/data/imagenet_classes.tsv`` can be given too)."""
    if isinstance(classes, str) and classes.lower() == "imagenet":
        from cliplens.datasets.imagenet import imagenet_classes

        return [name for _, name in imagenet_classes()]
    if isinstance(classes, (str, os.PathLike)):
        path = Path(os.path.expanduser(os.fspath(classes)))
        if not path.is_file():
            raise InvalidInputError(f"classes={os.fspath(classes)!r}: no such file. Give the class names (a list in "
                                    "Python; names separated by | on the command line: classes=sky|road|car), a text "
                                    "file with one name per line, or 'imagenet'")
        names = []
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            names.append(line.split("\t")[-1].strip())
        if not names:
            raise InvalidInputError(f"classes file {path} lists no class names (one name per line)")
        return names
    names = [str(c) for c in classes]
    if not names:
        raise InvalidInputError("classes= is an empty list: give the class names in label order")
    return names


def _find_column(header: list[str], given: Any, candidates: tuple[str, ...], what: str, option: str,
                 path: Path, allow_none: bool = False) -> str | None:
    if given is None and allow_none:
        return None
    if given is AUTO:
        lower = {h.lower(): h for h in header}
        for c in candidates:
            if c in lower:
                return lower[c]
        hint = f", or {option}=None for unlabelled images" if allow_none else ""
        raise InvalidInputError(f"{path}: no {what} column (looked for {', '.join(candidates)}); its columns are "
                                f"{header}. Name it with {option}=...{hint}")
    if given not in header:
        raise InvalidInputError(f"{path}: unknown column {given!r} ({option}=); its columns are {header}")
    return str(given)


def _convert_column(values: list[str]) -> list[AttributeValue]:
    """All integers -> int; all numbers (empty = NaN) -> float; otherwise the strings."""
    if values and all(_INT.fullmatch(v) for v in values):
        return [int(v) for v in values]
    try:
        floats = [float(v) if v else math.nan for v in values]
    except ValueError:
        return list(values)
    if any(v for v in values):
        return list(floats)
    return list(values)


def _labels(values: list[tuple[int, str]], classes: Any, label_type: str, path: Path, column: str
            ) -> tuple[list[int], list[str], str]:
    """``(labels, class_names, how)`` from the label column's ``(line, value)`` pairs."""
    empty = [ln for ln, v in values if not v]
    if empty:
        raise InvalidInputError(f"{path}: empty label ({column!r}) on line(s) {_few(empty)}; every image needs a "
                                "label (or pass label_column=None to read the list unlabelled)")
    class_list = read_class_list(classes) if classes is not None else None
    all_int = all(_INT.fullmatch(v) for _, v in values)
    if label_type not in ("auto", "index", "name"):
        raise InvalidInputError(f"label_type={label_type!r}: use 'auto', 'index' or 'name'")
    if label_type == "auto":
        if all_int and class_list is not None and all(_INT.fullmatch(c) for c in class_list):
            raise InvalidInputError(f"{path}: the labels and the class names are all integers, so it is unclear "
                                    "whether a label is an index or a name; say label_type='index' or 'name'")
        label_type = "index" if all_int else "name"
    if label_type == "index":
        if not all_int:
            ln, v = next((ln, v) for ln, v in values if not _INT.fullmatch(v))
            raise InvalidInputError(f"{path}, line {ln}: label {v!r} is not an integer (label_type='index')")
        labels = [int(v) for _, v in values]
        neg = [(ln, v) for ln, v in values if int(v) < 0]
        if neg:
            raise InvalidInputError(f"{path}, line {neg[0][0]}: negative label {neg[0][1]}; labels are class "
                                    "indices 0, 1, …")
        if class_list is None:
            return labels, [f"class_{i}" for i in range(max(labels) + 1)], "index"
        over = [(ln, v) for ln, v in values if int(v) >= len(class_list)]
        if over:
            raise InvalidInputError(f"{path}, line {over[0][0]}: label {over[0][1]} is out of range for the "
                                    f"{len(class_list)} classes given with classes= (indices 0..{len(class_list) - 1})")
        return labels, class_list, "index"
    if class_list is None:
        names = sorted({v for _, v in values})
        index = {n: i for i, n in enumerate(names)}
        return [index[v] for _, v in values], names, "name"
    index = {}
    for i, n in enumerate(class_list):
        index.setdefault(n, i)
    unknown = [(ln, v) for ln, v in values if v not in index]
    if unknown:
        shown = _few([f"{v!r} (line {ln})" for ln, v in unknown], 3)
        raise InvalidInputError(f"{path}: unknown class {shown}; the classes given with classes= are "
                                f"{_few(class_list, 10)}")
    dups = {n for n in class_list if class_list.count(n) > 1} if len(set(class_list)) != len(class_list) else set()
    used_dup = sorted({v for _, v in values if v in dups})
    if used_dup:
        raise InvalidInputError(f"{path}: the class name(s) {used_dup} appear more than once in classes=, so the "
                                "label is ambiguous; use integer labels (label_type='index')")
    return [index[v] for _, v in values], class_list, "name"


#: columns that may name each row's class when the labels are integer indices
NAME_COLUMNS = ("name", "class_name", "classname", "label_name", "category_name")


def _names_from_columns(header: list[str], rows: list[tuple[int, list[str]]], labels: list[int],
                        placeholders: list[str], file: Path) -> tuple[list[str], str]:
    """Class names for integer labels from the file itself: a ``wnid`` column whose WordNet ids have exactly
    the labels' ImageNet indices gives the 1,000 ImageNet names; else a name column consistent with the labels
    (one name per index) names the indices it covers. Otherwise the placeholders ``class_0 …`` stay."""
    lower = {h.lower(): k for k, h in enumerate(header)}
    if "wnid" in lower:
        wnid_index = _wnid_index()
        col = lower["wnid"]
        if all(wnid_index.get(r[col].strip()) == y for (_, r), y in zip(rows, labels, strict=True)):
            return [name for _, name in imagenet_classes()], "index (ImageNet classes: the wnid column agrees)"
    for name in NAME_COLUMNS:
        if name in lower:
            col = lower[name]
            seen: dict[int, str] = {}
            if all(seen.setdefault(y, r[col].strip()) == r[col].strip() and r[col].strip()
                   for (_, r), y in zip(rows, labels, strict=True)):
                names = [seen.get(i, p) for i, p in enumerate(placeholders)]
                return names, f"index (names from the {header[col]!r} column)"
    return placeholders, "index"


def load_csv(
    path: str | os.PathLike,
    *,
    path_column: str = AUTO,
    label_column: str | None = AUTO,
    classes: str | os.PathLike | Sequence[str] | None = None,
    label_type: str = "auto",
    attribute_columns: Sequence[str] | None = None,
    group_column: str | None = None,
    id_column: str | None = None,
    split: str | int | None = None,
    split_column: str = "split",
    root: str | os.PathLike | None = None,
    check_files: bool = True,
    name: str | None = None,
) -> CsvDataset:
    """Read a CSV/TSV list of images.

    Args:
        path: the file (``.csv``, ``.tsv``, ``.txt``; the delimiter is detected from the header).
        path_column: the column of image paths (default: the first of :data:`PATH_COLUMNS` present).
        label_column: the column of labels (default: the first of :data:`LABEL_COLUMNS` present);
            ``None``: unlabelled (``label == -1``).
        classes: class names in label order: a list, a file with one name per line, or ``"imagenet"``.
        label_type: ``"auto"`` (integers are indices, anything else names), ``"index"`` or ``"name"``.
        attribute_columns: the columns kept as attributes (default: all but the path, label and id
            columns). Integer columns become ints, numeric ones floats, the rest strings.
        group_column: a column holding the group (e.g. Waterbirds-style groups); it is kept as the
            attribute ``"group"``.
        id_column: a column of unique ids (default: the path as written in the file).
        split: keep only rows whose ``split_column`` equals this (class names still come from every row).
        root: the folder relative paths start from (default: the file's folder).
        check_files: make sure every listed file exists.
        name: the data set's name (default: the file's name without its suffix).

    Raises:
        InvalidInputError: a missing or empty file, an unknown column, an empty or unknown label, a
            label out of range, a listed file that does not exist (the message names the file and line).
    """
    file = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not file.exists():
        raise InvalidInputError(f"data set list {os.fspath(path)!r} does not exist: check the path")
    if not file.is_file():
        raise InvalidInputError(f"{os.fspath(path)!r} is a folder, not a CSV/TSV file")
    header, rows, delimiter = read_table(file)
    pcol = _find_column(header, path_column, PATH_COLUMNS, "image path", "path_column", file)
    lcol = _find_column(header, label_column, LABEL_COLUMNS, "label", "label_column", file, allow_none=True)
    icol = _find_column(header, id_column, (), "id", "id_column", file, allow_none=True)
    gcol = _find_column(header, group_column, (), "group", "group_column", file, allow_none=True)
    col = {h: k for k, h in enumerate(header)}
    assert pcol is not None

    # labels from every row (so that the indices do not depend on the split)
    if lcol is not None:
        labels, class_names, how = _labels([(ln, r[col[lcol]]) for ln, r in rows], classes, label_type, file, lcol)
    else:
        labels, class_names, how = [-1] * len(rows), (read_class_list(classes) if classes is not None else []), "none"
    if how == "index" and classes is None:  # integer labels and no class list: names from the file, if it has them
        class_names, how = _names_from_columns(header, rows, labels, class_names, file)

    if attribute_columns is None:
        attr_cols = [h for h in header if h not in (pcol, lcol, icol)]
    else:
        unknown = [c for c in attribute_columns if c not in header]
        if unknown:
            raise InvalidInputError(f"{file}: unknown column(s) {unknown} in attribute_columns=; its columns are "
                                    f"{header}")
        attr_cols = list(attribute_columns)
        if gcol is not None and gcol not in attr_cols:
            attr_cols.append(gcol)
    attr_names = ["group" if c == gcol else c for c in attr_cols]
    if gcol is not None and gcol != "group" and "group" in attr_cols:
        raise InvalidInputError(f"{file}: group_column={gcol!r}, but there is also a column named 'group'; leave "
                                "group_column out or drop 'group' from attribute_columns=")
    columns = {c: _convert_column([r[col[c]] for _, r in rows]) for c in attr_cols}

    keep = list(range(len(rows)))
    if split is not None:
        if split_column not in header:
            raise InvalidInputError(f"{file}: split={split!r} needs a {split_column!r} column (split_column=); its "
                                    f"columns are {header}")
        keep = [k for k in keep if rows[k][1][col[split_column]] == str(split)]
        if not keep:
            present = sorted({r[col[split_column]] for _, r in rows})
            raise InvalidInputError(f"{file}: no rows with {split_column} == {str(split)!r}; its {split_column!r} "
                                    f"values are {present}")

    base = Path(os.path.abspath(os.path.expanduser(os.fspath(root)))) if root is not None else file.parent
    if root is not None and not base.is_dir():
        raise InvalidInputError(f"root={os.fspath(root)!r} is not a folder")
    samples: list[Sample] = []
    missing: list[str] = []
    empty: list[int] = []
    for k in keep:
        ln, r = rows[k]
        value = r[col[pcol]]
        if not value:
            empty.append(ln)
            continue
        p = Path(os.path.expanduser(value))
        full = p if p.is_absolute() else base / p
        if check_files and not full.is_file():
            missing.append(f"{value!r} (line {ln})")
        ident = r[col[icol]] if icol is not None else Path(value).as_posix()
        attrs = {a: columns[c][k] for a, c in zip(attr_names, attr_cols, strict=True)}
        samples.append(Sample(str(full), labels[k], ident, attrs))
    if empty:
        raise InvalidInputError(f"{file}: empty image path ({pcol!r}) on line(s) {_few(empty)}")
    if missing:
        raise InvalidInputError(f"{file}: {len(missing)} listed file(s) do not exist: {_few(missing)}. Relative "
                                f"paths start from {base}" + ("" if root is not None else
                                                              " (pass root=... if they start elsewhere)"))
    if len({s.id for s in samples}) != len(samples):
        seen: dict[str, int] = {}
        for k in keep:
            ln, r = rows[k]
            ident = r[col[icol]] if icol is not None else Path(r[col[pcol]]).as_posix()
            if ident in seen:
                what = f"id {ident!r} ({icol!r})" if icol is not None else f"file {ident!r}"
                raise InvalidInputError(f"{file}: the {what} is listed twice (lines {seen[ident]} and {ln}); each "
                                        "image must appear once" + ("" if icol is not None else
                                                                    " (or give unique ids with id_column=)"))
            seen[ident] = ln
    info = {
        "root": str(base), "file": str(file), "delimiter": delimiter, "path_column": pcol, "label_column": lcol,
        "labels": how, "split": split, "split_column": split_column if split is not None else None,
        "classes": (classes if isinstance(classes, str) else os.fspath(classes)
                    if isinstance(classes, os.PathLike) else "list" if classes is not None else None),
    }
    ds = CsvDataset(samples, name=name or file.stem, layout="csv", class_names=class_names,
                    attribute_names=attr_names, info=info)
    ds.path = file
    return ds
