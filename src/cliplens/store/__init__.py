"""A store of decompositions for a whole data set: chunked, resumable, sharded over processes, read back
memory-mapped (:mod:`.writer`, :mod:`.reader`, :mod:`.schema`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.store.reader import Store
    from cliplens.store.schema import FIELDS, StoreSettings
    from cliplens.store.writer import build_store

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "FIELDS": "cliplens.store.schema",
    "Store": "cliplens.store.reader",
    "StoreSettings": "cliplens.store.schema",
    "build_store": "cliplens.store.writer",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = ["FIELDS", "Store", "StoreSettings", "build_store"]
