"""The map interface: one method per file, registered by name, batched over images and texts.

A map method turns images and text directions into *raw score maps* ``[B, T, h, w]``: one map
per (image, text), on the token grid (``h, w = gh, gw``) or at pixels. *What* is explained (texts,
classes with a contrast, prompt ensembles: :mod:`cliplens.maps.targets`) is kept apart from *how*
(the method). Register your own::

    @register_map("my-method")
    class MyMethod(MapMethod):
        def raw(self, model, pixels, directions):
            ...  # -> [B, T, gh, gw]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

from cliplens.errors import InvalidInputError

__all__ = ["MapMethod", "get_map", "map_names", "register_map"]


class MapMethod:
    """Base class of map methods. Parameters are keyword arguments of the constructor."""

    #: the registered name (set by :func:`register_map`)
    name: ClassVar[str] = ""
    #: whether the map depends on the text (baselines do not; contrasts do not apply to them)
    text_dependent: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    def raw(self, model: Any, pixels: Tensor, directions: Tensor) -> Tensor:
        """Raw score maps ``[B, T, h, w]`` for preprocessed ``pixels`` ``[B, 3, H, W]`` and unit-norm
        text ``directions`` ``[T, E]``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"


_REGISTRY: dict[str, type[MapMethod]] = {}


def register_map(name: str) -> Callable[[type[MapMethod]], type[MapMethod]]:
    """Decorator: register a :class:`MapMethod` subclass under ``name``."""

    def deco(cls: type[MapMethod]) -> type[MapMethod]:
        if name in _REGISTRY:
            raise InvalidInputError(f"map method {name!r} is already registered")
        if not (isinstance(cls, type) and issubclass(cls, MapMethod)):
            raise InvalidInputError(f"register_map needs a MapMethod subclass, got {cls!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def map_names() -> list[str]:
    """The registered map methods (sorted)."""
    return sorted(_REGISTRY)


def get_map(name: str | MapMethod, **params: Any) -> MapMethod:
    """A map method instance by name (with parameters), or an instance returned as is."""
    if isinstance(name, MapMethod):
        return name
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidInputError(f"unknown map method {name!r}; registered: {', '.join(map_names())}") from None
    try:
        return cls(**params)
    except TypeError as e:
        raise InvalidInputError(f"map method {name!r}: {e}") from None
