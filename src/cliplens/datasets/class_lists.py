"""The class lists cliplens ships, by name: what ``--class-list`` and ``classes="coco"`` take.

* ``coco``: the 80 COCO object categories (COCO-Object's classes without its background);
* ``voc``: PASCAL VOC's 20 object classes (no background);
* ``context59``: PASCAL Context's 59 classes; ``ade20k``: ADE20K's 150; ``coco-stuff``: COCO-Stuff's 171;
* ``imagenet``: the 1,000 ImageNet classes with OpenAI CLIP's names, in the standard order (two names, "missile"
  and "sunglasses", name two classes each; :func:`class_list` keeps each name once, where it first appears, when
  the names must be distinct).

Each comes from the module of its data set (the one place it is written); this module only names them.
"""

from __future__ import annotations

from collections.abc import Callable

from cliplens.errors import InvalidInputError

__all__ = ["CLASS_LISTS", "class_list"]


def _coco() -> list[str]:
    from cliplens.datasets.coco import COCO_OBJECT_CLASSES

    return COCO_OBJECT_CLASSES[1:]


def _voc() -> list[str]:
    from cliplens.datasets.voc import VOC20_CLASSES

    return list(VOC20_CLASSES)


def _context59() -> list[str]:
    from cliplens.datasets.voc import CONTEXT59_CLASSES

    return list(CONTEXT59_CLASSES)


def _ade20k() -> list[str]:
    from cliplens.datasets.ade20k import ADE20K_CLASSES

    return list(ADE20K_CLASSES)


def _coco_stuff() -> list[str]:
    from cliplens.datasets.coco import COCO_STUFF_CLASSES

    return list(COCO_STUFF_CLASSES)


def _imagenet() -> list[str]:
    from cliplens.datasets.imagenet import imagenet_classes

    return [name for _, name in imagenet_classes()]


#: name -> (what it is, how to read it)
CLASS_LISTS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "coco": ("the 80 COCO object categories", _coco),
    "voc": ("PASCAL VOC's 20 object classes", _voc),
    "context59": ("PASCAL Context's 59 classes", _context59),
    "ade20k": ("ADE20K's 150 classes", _ade20k),
    "coco-stuff": ("COCO-Stuff's 171 classes", _coco_stuff),
    "imagenet": ("the 1,000 ImageNet classes (CLIP's names)", _imagenet),
}


def class_list(name: str, *, distinct: bool = False) -> list[str]:
    """The class names of the built-in list ``name`` (see the module docs); ``distinct``: each name once, in
    the order it first appears (for tasks where two classes cannot share a text)."""
    key = name.strip().lower().replace("_", "-")
    if key not in CLASS_LISTS:
        raise InvalidInputError(f"no built-in class list {name!r}; there are: "
                                + "; ".join(f"{k} ({what})" for k, (what, _) in CLASS_LISTS.items()))
    names = CLASS_LISTS[key][1]()
    return list(dict.fromkeys(names)) if distinct else names
