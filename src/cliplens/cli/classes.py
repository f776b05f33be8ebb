"""``--classes``, ``--classes-file`` and ``--class-list``: the class names of ``tags`` and ``segment``, read by
one parser (comma-separated names, files with one name per line, the lists cliplens ships), each class once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cliplens.errors import InvalidInputError

__all__ = ["class_options", "resolve_classes"]

#: the built-in lists, for the help (:data:`cliplens.datasets.class_lists.CLASS_LISTS` holds them)
_LISTS = "coco (80), voc (20), context59, ade20k (150), coco-stuff (171), imagenet (1,000)"


def class_options(f: Any) -> Any:
    """``--classes``, ``--classes-file``, ``--class-list`` (combined in this order)."""
    f = click.option("--class-list", default=None, metavar="NAME",
                     help=f"A class list cliplens ships: {_LISTS}.")(f)
    f = click.option("--classes-file", type=click.Path(path_type=Path), default=None,
                     help="A UTF-8 text file with one class name per line (blank lines and lines starting with # "
                          "are skipped).")(f)
    f = click.option("--classes", "-c", "classes", multiple=True,
                     help="Class names, comma-separated (dog,cat,traffic light); repeat to add more.")(f)
    return f


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def _from_option(values: Sequence[str]) -> list[tuple[str, str]]:
    named: list[tuple[str, str]] = []
    for value in values:
        items = value.split(",")
        empty = [i + 1 for i, c in enumerate(items) if not c.strip()]
        if empty and any(c.strip() for c in items):
            raise InvalidInputError(f"--classes {value!r}: item {empty[0]} is empty (two commas in a row, or a "
                                    "trailing comma); separate class names with single commas")
        for c in items:
            if c.strip():
                named.append((f"--classes item {len(named) + 1}", " ".join(c.split())))
    if values and not named:
        raise InvalidInputError(f"--classes {', '.join(map(repr, values))} holds no class names")
    return named


def _from_file(path: Path) -> list[tuple[str, str]]:
    path = Path(path).expanduser()
    where = f"--classes-file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except IsADirectoryError:
        raise InvalidInputError(f"{where} is a folder: pass a text file with one class per line") from None
    except FileNotFoundError:
        raise InvalidInputError(f"{where} does not exist (for a class list cliplens ships, use --class-list: "
                                f"{_LISTS})") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where} is not UTF-8 text: pass a text file with one class per line") from None
    except OSError as e:
        raise InvalidInputError(f"cannot read {where}: {e.strerror or e}") from None
    named = [(f"{where} line {n}", " ".join(line.split())) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.strip().startswith("#")]
    if not named:
        raise InvalidInputError(f"{where} holds no class names: one class per line")
    return named


def resolve_classes(classes: Sequence[str], classes_file: Path | None, class_list: str | None, *,
                    distinct: bool = True) -> list[str]:
    """The class names the options give, in order: ``--classes``, then the file, then the built-in list. Every
    class once (case and spacing ignored): a repeat is refused naming both places."""
    from cliplens.datasets.class_lists import class_list as builtin

    named = _from_option(classes)
    if classes_file is not None:
        named += _from_file(classes_file)
    if class_list is not None:
        named += [(f"--class-list {class_list}", n) for n in builtin(class_list, distinct=distinct)]
    if not named:
        raise InvalidInputError("give the classes with --classes a,b,c, --classes-file FILE (one per line) or "
                                f"--class-list NAME ({_LISTS})")
    seen: dict[str, str] = {}
    for where, name in named:
        k = _key(name)
        if k in seen:
            raise InvalidInputError(f"class {name!r} ({where}) repeats {seen[k]} (case and spacing are ignored); "
                                    "give each class once")
        seen[k] = where
    return [name for _, name in named]
