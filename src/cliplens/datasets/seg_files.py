"""Helpers every segmentation loader shares: finding the data's folder, files by stem, split lists, class lists
and clear messages for what is missing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cliplens.datasets.base import is_hidden
from cliplens.errors import InvalidInputError

__all__ = ["first_folder", "given_path", "load_class_names", "read_split_file", "report_missing",
           "split_name", "stem_index"]


def first_folder(candidates: Iterable[Path], test: Callable[[Path], bool]) -> Path | None:
    for c in candidates:
        if c.is_dir() and test(c):
            return c
    return None


def given_path(root: str | os.PathLike | None, what: str, expected: str) -> Path:
    """``root`` as an absolute existing path, or a clear error (``expected`` describes the layout)."""
    if root is None:
        raise InvalidInputError(f"{what}: give root= (the folder holding {expected})")
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not path.exists():
        raise InvalidInputError(f"{what}: {os.fspath(root)!r} does not exist; give the folder holding {expected}")
    return path


def stem_index(folder: Path, exts: Iterable[str] | None = None) -> dict[str, str]:
    """``{stem: file name}`` of the files in ``folder`` (hidden ones skipped; with ``exts``, only those endings)."""
    keep = None if exts is None else {e.lower() for e in exts}
    out: dict[str, str] = {}
    with os.scandir(folder) as it:
        for e in sorted(it, key=lambda e: e.name):
            if is_hidden(e.name) or not e.is_file():
                continue
            stem, ext = os.path.splitext(e.name)
            if keep is not None and ext.lower() not in keep:
                continue
            out.setdefault(stem, e.name)
    return out


def read_split_file(path: Path, what: str) -> list[str]:
    """The ids listed in a split file (one per line; blank lines skipped; only the first field of a line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what} {path} is not a text file of image ids") from None
    ids = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    if not ids:
        raise InvalidInputError(f"{what} {path} lists no image ids (one per line)")
    return ids


def report_missing(what: str, missing: list[str], where: str, hint: str = "") -> None:
    if missing:
        shown = ", ".join(missing[:5]) + (f", … ({len(missing)} in all)" if len(missing) > 5 else "")
        raise InvalidInputError(f"{len(missing)} {what} missing under {where}: {shown}" + (f". {hint}" if hint else ""))


def split_name(split: Any, aliases: dict[str, str], allowed: str) -> str:
    if not isinstance(split, str) or not split.strip():
        raise InvalidInputError(f"split={split!r}: give a split name ({allowed})")
    s = split.strip()
    return aliases.get(s.lower(), s)


def load_class_names(file: str) -> list[str]:
    from importlib import resources

    text = resources.files("cliplens").joinpath("data", file).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]
