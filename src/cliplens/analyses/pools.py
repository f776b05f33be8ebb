"""Text pools for TEXTSPAN: the built-in ones and a reader for the user's own.

A pool is a list of short texts; TEXTSPAN describes each attention head by the pool's texts whose
directions explain most of the head's variance over a set of images. Built in (package data,
written for cliplens by ``tools/make_textspan_pool.py``):

* ``"general"``: about 3,500 varied image descriptions (colours, shapes, textures, materials,
  patterns, places in the image, counts, objects, animals, people, scenes, weather, time of day,
  seasons, art styles, lighting, camera, moods, text and letters, symbols, food, vehicles,
  buildings, abstract concepts), for real CLIPs;
* ``"toy"``: phrases about the toy world's factors (every shape, colour, size, position,
  background kind and colour, and count 1-4, four phrasings each), in words the toy tokenizer
  knows; :func:`toy_pool_factors` says which factor and value each phrase names.

A user file has one text per line (UTF-8); blank lines and lines starting with ``#`` are
skipped, surrounding whitespace is stripped, and repeated texts are kept once (with a warning).

When no pool is named, :func:`default_pool` chooses by the model (the one rule ``textspan``, ``atlas``,
``retrieve`` and ``debias`` follow): ``toy`` for the toy CLIP, ``general`` for the others.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from cliplens.errors import InvalidInputError

__all__ = ["POOLS", "default_pool", "load_pool", "read_pool_file", "toy_pool_factors", "TOY_FACTORS_FILE"]

#: built-in pools: name -> file in ``cliplens/data``
POOLS: dict[str, str] = {"general": "textspan_general.txt", "toy": "textspan_toy.txt"}
#: ``text<TAB>factor<TAB>value`` for every line of the toy pool (with a header line)
TOY_FACTORS_FILE = "textspan_toy_factors.tsv"


#: how the command line's help states :func:`default_pool`
DEFAULT_POOL_HELP = "default: toy for a store of the toy CLIP, else general"


def default_pool(model: Mapping[str, Any]) -> str:
    """The pool TEXTSPAN uses when none is named, for the model a store records (``store.header["model"]``, or
    any mapping with its ``family``): ``"toy"`` for the toy CLIP — its tokenizer knows only the toy world's
    words, so the general pool's descriptions would be cut to unknown tokens, each with a warning — and
    ``"general"`` for every other model."""
    return "toy" if model.get("family") == "toy" else "general"


def _data_text(filename: str) -> str:
    return resources.files("cliplens").joinpath("data", filename).read_text(encoding="utf-8")


def _parse(text: str, source: str) -> list[str]:
    texts: list[str] = []
    seen: set[str] = set()
    repeated: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line in seen:
            repeated.append(line)
            continue
        seen.add(line)
        texts.append(line)
    if not texts:
        raise InvalidInputError(
            f"the text pool {source} has no texts: give one text per line (blank lines and lines "
            "starting with '#' are skipped)")
    if repeated:
        shown = ", ".join(repr(t) for t in list(dict.fromkeys(repeated))[:3])
        more = "" if len(set(repeated)) <= 3 else ", ..."
        warnings.warn(f"the text pool {source} repeats {len(repeated)} line(s) ({shown}{more}); each text is "
                      f"kept once, so the pool has {len(texts)} texts", stacklevel=3)
    return texts


def read_pool_file(path: str | Path) -> list[str]:
    """Texts of a user's pool file (one per line; blank lines and ``#`` lines skipped; repeats
    kept once, with a warning). Raises :class:`~cliplens.errors.InvalidInputError` if the file is
    missing, unreadable, not UTF-8 text, or has no texts."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "a folder" if p.is_dir() else "not found"
        raise InvalidInputError(f"text pool file {str(p)!r}: {what}. Give a text file with one text per line, "
                                f"or a built-in pool: {', '.join(map(repr, POOLS))}")
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"text pool file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start}); "
                                "save it as UTF-8, one text per line") from None
    except OSError as e:
        raise InvalidInputError(f"text pool file {str(p)!r} cannot be read: {e.strerror or e}") from None
    return _parse(raw, repr(str(p)))


def load_pool(name_or_path: str | Path) -> list[str]:
    """A pool's texts, in file order: ``"general"``, ``"toy"`` (see :data:`POOLS`), or the path
    of a user's file (see :func:`read_pool_file`). A built-in name wins over a file of the same
    name in the working directory (write ``./general`` for the file)."""
    if isinstance(name_or_path, str) and name_or_path in POOLS:
        return _parse(_data_text(POOLS[name_or_path]), f"{name_or_path!r} (built in)")
    if not isinstance(name_or_path, (str, Path)):
        raise InvalidInputError(f"a text pool is a built-in name ({', '.join(map(repr, POOLS))}) or a file path, "
                                f"not {type(name_or_path).__name__}")
    return read_pool_file(name_or_path)


def toy_pool_factors() -> dict[str, tuple[str, str]]:
    """For each text of the ``"toy"`` pool, the scene factor it names and the value:
    ``{"a photo of a red shape": ("colour", "red"), "three shapes": ("count", "3"), ...}``.

    Factors are named as in :class:`~cliplens.toyworld.scenes.SceneFactors`: ``shape``,
    ``colour``, ``size``, ``position`` (of an object), ``bg_kind``, ``bg_colour``, ``count``
    (the value is the number as a string, "1" to "4")."""
    out: dict[str, tuple[str, str]] = {}
    lines = _data_text(TOY_FACTORS_FILE).splitlines()
    for line in lines[1:]:  # header: text, factor, value
        if line.strip():
            text, factor, value = line.split("\t")
            out[text] = (factor, value)
    return out
