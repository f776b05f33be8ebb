"""Lazy package exports: importing cliplens, or one of its packages, costs next to nothing.

A package's ``__init__`` names what it exports and the module each name comes from; the module is imported
the first time the name is used (PEP 562 ``__getattr__``). So ``cliplens --help`` and ``import cliplens`` do
not load torch, and ``cliplens.load`` loads the model code when it is first called. Each package keeps an
``if TYPE_CHECKING:`` block with the same imports for type checkers and editors; ``tests/test_layout.py``
checks that the two agree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package``, whose names ``exports`` maps to the modules
    that define them (absolute names, e.g. ``{"load": "cliplens.models.registry"}``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later uses are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
