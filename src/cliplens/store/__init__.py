"""A store of decompositions for a whole data set: chunked, resumable, sharded over processes, read back
memory-mapped (:mod:`.writer`, :mod:`.reader`, :mod:`.schema`)."""

from __future__ import annotations

from cliplens.store.reader import Store
from cliplens.store.schema import FIELDS, StoreSettings
from cliplens.store.writer import build_store

__all__ = ["FIELDS", "Store", "StoreSettings", "build_store"]
