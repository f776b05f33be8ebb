"""Image-tower families: how a source model's image tower becomes a :class:`~cliplens.core.view.VisionView`.

A *family* is one kind of image tower as a source library builds it (open_clip's CLIP ViT, a timm SigLIP tower
inside open_clip, transformers' ``SiglipVisionModel``, timm's EVA02, OpenAI's ModifiedResNet, …). Each lives in
one file under ``cliplens/models/`` that registers a :class:`TowerFamily`: a test that recognises the source
model, a builder that returns a view over its weights (references, no copies) with the pooling head that
states its own decomposition rule (:mod:`cliplens.core.heads`), and optionally a test on an open_clip config
(for :func:`cliplens.list_models`, without building the model).

The source adapters (:class:`~cliplens.models.openclip.OpenCLIPAdapter`,
:class:`~cliplens.models.hf.HFCLIPAdapter`) ask :func:`family_for` for the family of the model they wrap; the
text side stays the source library's own. A family defined outside the package works the same way::

    from cliplens.models.families import TowerFamily, register_family

    register_family(TowerFamily(
        name="my-vit", summary="my lab's ViT", library="open_clip",
        matches=lambda model: type(getattr(model, "visual", None)).__name__ == "MyViT",
        build=lambda model, name: my_view(model.visual, name),
    ))
    cliplens.wrap(model)   # decompose, maps, store, … now run on it

Families are tried in registration order (built-ins first, then the ones registered), the first whose
``matches`` is true wins; ``register_family(..., first=True)`` puts one ahead of the built-ins.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cliplens.core.view import VisionView
from cliplens.errors import UnsupportedArchitectureError

__all__ = ["BUILTIN_MODULES", "TowerFamily", "families", "family_for", "family_named", "register_family",
           "supported_config"]

#: the files of the built-in families, imported on first use (each calls :func:`register_family`)
BUILTIN_MODULES = (
    "cliplens.models.clip_vit",
    "cliplens.models.eva",
    "cliplens.models.siglip",
    "cliplens.models.resnet",
)


@dataclass(frozen=True)
class TowerFamily:
    """One image-tower family.

    Attributes:
        name: short id (``"clip-vit"``, ``"siglip"``, ``"eva02"``, ``"resnet"``).
        summary: one line: what it is and its pooling head.
        library: the source library whose models it reads (``"open_clip"``, ``"transformers"``, or anything).
        matches: ``matches(model) -> bool`` for the source model object (the whole model, as wrapped).
        build: ``build(model, name) -> VisionView`` over the model's weights (references, no copies); raises
            :class:`~cliplens.errors.UnsupportedArchitectureError` naming what it cannot read.
        config: optional ``config(open_clip_config) -> note | None``: a note (what the family reads) when the
            open_clip config is this family's, else ``None``; raise ``UnsupportedArchitectureError`` when it is
            the family's but a variant it cannot read.
        exact: what decomposes exactly and what does not (README table, errors).
    """

    name: str
    summary: str
    library: str
    matches: Callable[[Any], bool]
    build: Callable[[Any, str], VisionView]
    config: Callable[[dict[str, Any]], str | None] | None = None
    exact: str = ""


_FAMILIES: list[TowerFamily] = []
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    external = list(_FAMILIES)
    _FAMILIES.clear()
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    _FAMILIES.extend(f for f in external if f not in _FAMILIES)


def register_family(family: TowerFamily, *, first: bool = False) -> TowerFamily:
    """Add ``family`` (replacing one of the same name and library); ``first``: try it before the others."""
    if not isinstance(family, TowerFamily):
        raise TypeError(f"register_family takes a TowerFamily, got {type(family).__name__}")
    for i, f in enumerate(_FAMILIES):
        if (f.name, f.library) == (family.name, family.library):
            del _FAMILIES[i]
            break
    if first:
        _FAMILIES.insert(0, family)
    else:
        _FAMILIES.append(family)
    return family


def families() -> list[TowerFamily]:
    """Every registered family, in the order they are tried."""
    _load_builtins()
    return list(_FAMILIES)


def family_named(name: str, library: str | None = None) -> TowerFamily:
    for f in families():
        if f.name == name and (library is None or f.library == library):
            return f
    raise KeyError(name)


def _tower_kind(model: Any) -> str:
    for attr in ("visual", "vision_model"):
        sub = getattr(model, attr, None)
        if sub is not None:
            inner = getattr(sub, "trunk", None)
            kind = type(sub).__name__
            return f"{kind} ({type(inner).__name__})" if inner is not None else kind
    return type(model).__name__


def family_for(model: Any, name: str = "", library: str | None = None) -> TowerFamily:
    """The first family whose ``matches`` accepts ``model`` (of ``library`` when given); refuses the others
    with the list of families cliplens reads."""
    for f in families():
        if library is not None and f.library not in (library, "any"):
            continue
        try:
            if f.matches(model):
                return f
        except Exception:  # a family's test must not break the others'
            continue
    known = "; ".join(f"{f.name} ({f.library}): {f.summary}" for f in families()
                      if library is None or f.library in (library, "any"))
    raise UnsupportedArchitectureError(
        f"{name or 'this model'} has an image tower of a kind cliplens does not read ({_tower_kind(model)}). "
        f"Families it reads: {known}. To add one, register a TowerFamily (cliplens.models.families; README "
        "'Add a model family').")


def build_view(model: Any, name: str = "", library: str | None = None) -> VisionView:
    """The view of ``model``'s image tower through its family."""
    return family_for(model, name, library).build(model, name)


def supported_config(cfg: dict[str, Any]) -> tuple[TowerFamily, str] | None:
    """The family that reads an open_clip config and its note, or ``None`` when no family claims it (raises
    :class:`~cliplens.errors.UnsupportedArchitectureError` for a claimed variant that cannot be read)."""
    for f in families():
        if f.library != "open_clip" or f.config is None:
            continue
        note = f.config(cfg)
        if note is not None:
            return f, note
    return None
