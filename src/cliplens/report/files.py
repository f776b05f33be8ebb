"""Output files and folders: checked to be writable before any work, never overwritten unasked.

The one rule every command follows (the README's command-line section states it):

- a **folder** it writes (``--out``, ``--maps``) is used if it is new or empty; otherwise a fresh numbered
  subfolder ``run-2``, ``run-3``, … is made inside it (:func:`fresh_dir`), and nothing already there is
  touched;
- a **file** the user names (``--plot``, ``--json-out``, ``--export``) is refused if it exists, unless
  ``--overwrite`` is given (:func:`claim_output`, called before any work); it is written under a temporary
  name and renamed when complete (:func:`written_then_renamed`), so a run that fails part-way never leaves a
  truncated file in place of the user's;
- a file a command names itself in a folder it did not make (``ablate``'s ``ablation-curve.png`` in the
  store) takes a new numbered name (:func:`unique_path`) rather than replace one there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cliplens.errors import CliplensError, InvalidInputError, OutputExistsError

__all__ = ["claim_output", "fresh_dir", "unique_path", "writable_dir", "writable_file", "written_then_renamed"]


#: the folders ``cliplens report`` and ``cliplens demo`` write to when no ``--out`` is given (here, not in the
#: heavy modules that make them, so that the command line shows them without loading those)
REPORT_DIR = "cliplens-report"
DEMO_DIR = "cliplens-demo"

def _cannot_write(path: Path, create: bool = True) -> str:
    """Why files cannot be written in the folder ``path`` (created if needed; with ``create=False`` a folder
    that is not there is not made: its nearest existing parent is checked instead); ``""`` when they can."""
    if path.exists() and not path.is_dir():
        return "is a file, not a folder"
    target = path
    if not create:
        while not target.exists() and target != target.parent:
            target = target.parent
        if target.exists() and not target.is_dir():
            return f"cannot be created or written to ({target} is a file)"
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".cliplens-write-test-"):
            pass
    except OSError as e:
        return f"cannot be created or written to ({e.strerror or e})"
    return ""


def writable_dir(path: Path, option: str, *, create: bool = True) -> Path:
    """Create ``path`` if needed and check that files can be written in it. ``create=False``: check only that it
    could be (for a check before the work, which leaves no empty folder behind if the work fails first)."""
    path = Path(path).expanduser()
    problem = _cannot_write(path, create)
    if problem:
        raise InvalidInputError(f"{option} {str(path)!r} {problem}: pass a folder you can write to")
    return path


def writable_file(path: Path, option: str) -> Path:
    """Check, before any work, that the file ``path`` can be written (its folder is created if needed)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InvalidInputError(f"{option} {str(path)!r} is a folder: pass a file name")
    problem = _cannot_write(path.parent)
    if problem:
        raise InvalidInputError(f"{option} {str(path)!r}: its folder {str(path.parent)!r} {problem}; pass a file "
                                "in a folder you can write to")
    return path


def unique_path(path: Path) -> Path:
    """Never overwrite a file that is already there: add -2, -3, … to the name."""
    if not path.exists():
        return path
    for i in range(2, 100_000):
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not cand.exists():
            return cand
    raise CliplensError(f"too many files named like {path}: pick another folder")


def fresh_dir(out_dir: Path, option: str = "--out") -> tuple[Path, str]:
    """``out_dir`` if it is new or empty, else a fresh numbered subfolder ``run-2``, ``run-3``, … inside it
    (nothing already there is touched). Returns the folder and a note for the user."""
    out = writable_dir(Path(out_dir), option)
    if not any(p for p in out.iterdir() if not p.name.startswith(".cliplens-write-test-")):
        return out, ""
    for i in range(2, 100_000):
        cand = out / f"run-{i}"
        try:
            cand.mkdir()
        except FileExistsError:
            continue
        return cand, f"{out} is not empty: writing to the fresh folder {cand} instead (nothing is overwritten)"
    raise InvalidInputError(f"{out} holds too many numbered runs: pass another {option}")


def _exists_message(path: Path, option: str) -> str:
    return (f"{option} {str(path)!r} already exists: nothing was written and the file is left as it was. Pass "
            "another file name, or add --overwrite to replace it.")


def claim_output(path: str | os.PathLike[str], *, overwrite: bool, option: str,
                 companions: tuple[str, ...] = ()) -> Path:
    """Check, before any work, that the file ``path`` may be written: not a folder, its folder writable (created
    if needed), and not already there unless ``overwrite`` (the user's ``--overwrite``). Returns the path, ``~``
    expanded; a :class:`~cliplens.errors.OutputExistsError` naming the file and ``--overwrite`` otherwise.
    ``companions``: suffixes of files written along with it (a ``.json`` sidecar), checked the same way."""
    path = writable_file(Path(path), option)
    for p in (path, *(path.with_suffix(s) for s in companions)):
        if p.is_dir():
            raise InvalidInputError(f"{option} {str(path)!r}: {str(p)!r} is a folder; pass another file name")
        if os.path.lexists(p) and not overwrite:
            raise OutputExistsError(_exists_message(p, option))
    return path


def _temporary_name(path: Path) -> Path:
    """A name next to ``path`` that nothing uses, ending in ``path``'s suffix (so that writers which pick the
    format from the suffix, as matplotlib does, write the same format)."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{path.suffix}")


@contextlib.contextmanager
def written_then_renamed(path: str | os.PathLike[str], *, overwrite: bool, option: str,
                         companions: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary name next to ``path`` to write the file to; when the block ends without an error, rename
    it to ``path`` (atomic on one file system), else remove it. A run that fails part-way so leaves the user's
    earlier file whole, never a truncated one. Without ``overwrite``, a file that appeared at ``path`` since
    :func:`claim_output` is not replaced either (the error names it).

    ``companions``: suffixes of files written next to the temporary one under its name (``".json"`` for a
    sidecar ``tmp.with_suffix(".json")``), renamed along with it to ``path.with_suffix(suffix)``."""
    path = Path(path).expanduser()
    tmp = _temporary_name(path)
    pairs = [(tmp, path)] + [(tmp.with_suffix(s), path.with_suffix(s)) for s in companions]
    try:
        yield tmp
        if not overwrite:
            taken = [dst for _, dst in pairs if os.path.lexists(dst)]
            if taken:
                raise OutputExistsError(_exists_message(taken[0], option))
        for src, dst in pairs:
            if src.exists():
                os.replace(src, dst)
    finally:
        for src, _ in pairs:
            src.unlink(missing_ok=True)
