"""Output files and folders: checked to be writable, never overwritten."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cliplens.errors import CliplensError, InvalidInputError

__all__ = ["fresh_dir", "unique_path", "writable_dir"]


def writable_dir(path: Path, option: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{option} {str(path)!r} is a file, not a folder: pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".cliplens-write-test-"):
            pass
    except OSError as e:
        raise InvalidInputError(f"{option} {str(path)!r}: cannot write there ({e.strerror or e}); pass a folder you "
                                "can write to") from None
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
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{option} {str(out)!r} is a file, not a folder: pass another {option}")
    writable_dir(out, option)
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
