"""Output files and folders: checked to be writable, never overwritten."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cliplens.errors import CliplensError, InvalidInputError

__all__ = ["fresh_dir", "unique_path", "writable_dir", "writable_file"]


def _cannot_write(path: Path) -> str:
    """Why files cannot be written in the folder ``path`` (created if needed); ``""`` when they can."""
    if path.exists() and not path.is_dir():
        return "is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".cliplens-write-test-"):
            pass
    except OSError as e:
        return f"cannot be created or written to ({e.strerror or e})"
    return ""


def writable_dir(path: Path, option: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = Path(path).expanduser()
    problem = _cannot_write(path)
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
