"""Method parameters from text (the command line's ``--param``), checked against each method's signature.

``--param NAME=VALUE`` sets a parameter of every chosen method that has it (an error when none has it);
``--param METHOD.NAME=VALUE`` sets it for that method only. A value is read as ``true``/``false``, ``none``, an
integer, a number, a comma-separated list of those, or else text. The method's own constructor then checks it
(types, ranges), so an error always names the method, the parameter and what it takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cliplens.errors import InvalidInputError

__all__ = ["Parameter", "method_parameters", "parse_params", "parse_value"]


@dataclass(frozen=True)
class Parameter:
    """One constructor parameter of a map method."""

    name: str
    default: Any
    annotation: str


def method_parameters(name: str) -> list[Parameter]:
    """The parameters of the map method registered as ``name``, in signature order, with defaults."""
    from cliplens.maps.base import map_class

    sig = inspect.signature(map_class(name).__init__)
    out = []
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
        out.append(Parameter(p.name, None if p.default is p.empty else p.default, "" if ann is p.empty else ann))
    return out


def parse_value(text: str) -> Any:
    """``"true"`` → True, ``"none"`` → None, ``"3"`` → 3, ``"0.5"`` → 0.5, ``"4,6"`` → [4, 6], else the text."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null", ""):
        return None
    if "," in t:
        return [parse_value(part) for part in t.split(",") if part.strip()]
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def parse_params(specs: Iterable[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["sigma=3", "gem.blocks=4"]`` for ``methods`` → ``{method: {param: value}}`` (see the module docs)."""
    names = {m: {p.name for p in method_parameters(m)} for m in methods}
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for spec in specs:
        if "=" not in spec:
            raise InvalidInputError(f"--param {spec!r}: give NAME=VALUE or METHOD.NAME=VALUE (e.g. --param sigma=3 "
                                    "--param gem.blocks=4)")
        key, value = spec.split("=", 1)
        key = key.strip().replace("-", "_")
        target, _, param = key.rpartition(".")
        if target:
            target = target.replace("_", "-")
            if target not in names:
                raise InvalidInputError(f"--param {spec!r}: {target!r} is not one of the methods run here "
                                        f"({', '.join(methods)})")
            if param not in names[target]:
                raise InvalidInputError(f"--param {spec!r}: {target} has no parameter {param!r}; its parameters: "
                                        f"{', '.join(sorted(names[target])) or 'none'}")
            out[target][param] = parse_value(value)
            continue
        having = [m for m in methods if param in names[m]]
        if not having:
            listed = "; ".join(f"{m}: {', '.join(sorted(names[m])) or 'none'}" for m in methods)
            raise InvalidInputError(f"--param {spec!r}: no method run here has a parameter {param!r} ({listed}); "
                                    "`cliplens methods NAME` lists a method's parameters")
        for m in having:
            out[m][param] = parse_value(value)
    return out
