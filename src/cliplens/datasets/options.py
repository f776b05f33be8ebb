"""A layout's options, declared by its loader's signature, and the one rule that turns option text into them.

Every loader (``load_voc21``, ``load_segmentation_folder``, ``load_csv``, the toy world's constructors, …)
declares its options as keyword parameters with type annotations; :func:`layout_options` reads them, so the
list of options and their types lives in one place, the loader itself. Text values, from the command line
(``--option KEY=VALUE``, ``--split``) or a spec (``"voc21:split=none"``, ``"toy:n=50,seed=3"``), are turned into
those types by :func:`convert_options`:

* ``bool``: ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0`` (any case); anything else is refused
  (so ``reduce_zero_label=false`` is off, never a non-empty string that reads as on);
* ``int`` (and ``float``): a number; ``None`` where the option allows it: ``none`` or ``null``;
* a sequence (``classes=``, the toy world's ``shapes=``, ``count=``): values separated by ``|``
  (``classes=sky|road|car``); a single value stays a single value (a file name, one shape);
* text and paths: as given.

Where an option allows several types, they are tried in that order: none, true/false, integer, number,
``|``-list, text. Values that are not text (from Python) are passed as they are. An unknown option or a value of
the wrong type is refused with one paragraph listing the layout's options and their types.
"""

from __future__ import annotations

import functools
import inspect
import os
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from cliplens.errors import InvalidInputError

__all__ = ["BOOL_WORDS", "NONE_WORDS", "convert_options", "describe_type", "layout_options", "options_help", "parse_spec"]

BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
NONE_WORDS = ("none", "null")
#: a loader's first parameter when it names the data's location (given apart, not an option)
_LOCATION = ("root", "path", "spec")


def parse_spec(spec: str, *, bare: str | None = None) -> tuple[str, dict[str, str]]:
    """The one spec syntax of every data set: ``"NAME:key=value,key=value"`` -> ``("NAME", {key: value})``.

    Values stay text (:func:`convert_options` gives them the loader's types). ``bare``: the option a bare word
    sets (the toy world's ``"toy:colour"`` is ``label=colour``); without it a bare word is refused.
    """
    head, _, rest = spec.partition(":")
    opts: dict[str, str] = {}
    for item in (s.strip() for s in rest.split(",")):
        if not item:
            continue
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq:
            if bare is None:
                raise InvalidInputError(f"data set spec {spec!r}: {item!r} is not key=value (e.g. 'toy:n=50,seed=3' "
                                        "or 'voc21:split=val')")
            key, value = bare, key
        if key in opts:
            raise InvalidInputError(f"data set spec {spec!r} sets {key!r} twice")
        opts[key] = value
    return head.strip(), opts


@functools.cache
def layout_options(loader: Callable[..., Any]) -> dict[str, Any]:
    """``{option: type}`` of a loader (a function or a class, whose ``__init__`` is read): its parameters but
    the first when that names the data's location (``root``, ``path``, ``spec``), with their annotations
    (``Any`` where there is none)."""
    target = loader.__init__ if isinstance(loader, type) else loader  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: the options keep no type
        hints = {}
    params = [p for p in inspect.signature(target).parameters.values()
              if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if params and params[0].name in _LOCATION and params[0].kind is not params[0].KEYWORD_ONLY:
        params = params[1:]
    return {p.name: hints.get(p.name, Any) for p in params}


def _members(hint: Any) -> list[Any]:
    """The types a hint allows, unions flattened (``str | None`` -> ``[str, NoneType]``)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(hint) for m in _members(a)]
    return [hint]


def _is_sequence(t: Any) -> bool:
    origin = typing.get_origin(t) or t
    return isinstance(origin, type) and origin is not str and issubclass(origin, Sequence)


def _is_path(t: Any) -> bool:
    return t is os.PathLike or typing.get_origin(t) is os.PathLike


_PLURAL = {int: "integers", float: "numbers", str: "names", bool: "true/false values"}


def describe_type(hint: Any) -> str:
    """``str | None`` -> ``"text or none"``: how an option's type reads in a message."""
    members = _members(hint)
    words = []
    for t in members:
        if t is type(None):
            words.append("none")
        elif t is bool:
            words.append("true/false")
        elif t is int:
            words.append("an integer")
        elif t is float:
            words.append("a number")
        elif t is str:
            words.append("a path" if any(_is_path(m) for m in members) else "text")
        elif _is_path(t):
            words.append("a path")
        elif _is_sequence(t):
            inner = (typing.get_args(t) or (str,))[0]
            words.append(f"{_PLURAL.get(inner, 'values')} separated by |")
        elif t is Any:
            words.append("any value")
        else:
            words.append(getattr(t, "__name__", str(t)))
    return " or ".join(dict.fromkeys(words))


def options_help(loader: Callable[..., Any]) -> str:
    """``"split (text or none), check_files (true/false), …"``: a loader's options for a message."""
    return ", ".join(f"{k} ({describe_type(t)})" for k, t in layout_options(loader).items())


class _Refused(Exception):
    pass


def _convert(text: str, hint: Any) -> Any:
    """``text`` as a value of ``hint`` (see the module docs), or :class:`_Refused`."""
    if hint is Any:
        return text
    allowed = _members(hint)
    word = text.strip().lower()
    if type(None) in allowed and word in NONE_WORDS:
        return None
    if bool in allowed and word in BOOL_WORDS:
        return BOOL_WORDS[word]
    if int in allowed:
        try:
            return int(text.strip())
        except ValueError:
            pass
    if float in allowed:
        try:
            return float(text.strip())
        except ValueError:
            pass
    for t in allowed:
        if _is_sequence(t) and "|" in text:
            inner = (typing.get_args(t) or (str,))[0]
            return tuple(_convert(part.strip(), inner) for part in text.split("|"))
    if any(t is str or _is_path(t) for t in allowed):
        return text
    for t in allowed:  # a sequence of one value (count=2 for ``int | Sequence[int]`` was taken above)
        if _is_sequence(t):
            inner = (typing.get_args(t) or (str,))[0]
            return (_convert(text.strip(), inner),)
    raise _Refused


def convert_options(loader: Callable[..., Any], options: dict[str, Any], what: str) -> dict[str, Any]:
    """``options`` with each text value turned into the type ``loader`` declares for it (see the module docs).

    ``what`` names the layout in messages (``"the 'folder' segmentation set"``).

    Raises:
        InvalidInputError: an option the loader does not take, or a value that is not of its type.
    """
    declared = layout_options(loader)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise InvalidInputError(f"unknown option(s) {unknown} for {what}; its options are: {options_help(loader)}")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(value, str):
            out[key] = value
            continue
        try:
            out[key] = _convert(value, declared[key])
        except _Refused:
            raise InvalidInputError(f"{what}: {key}={value!r} is not {describe_type(declared[key])}; its options "
                                    f"are: {options_help(loader)}") from None
    return out
