"""Maps of where each text is: one method per file behind :class:`~cliplens.maps.base.MapMethod`.

``cliplens.maps.get("decomposition").raw(model, pixels, text_embeddings)`` -> ``[B, T, gh, gw]``.
"""

from __future__ import annotations

from cliplens.maps import baselines, decomposition  # noqa: F401  (register the methods)
from cliplens.maps.base import MapMethod, get_map, map_names, register_map
from cliplens.maps.targets import contrast_others

get = get_map

__all__ = ["MapMethod", "contrast_others", "get", "get_map", "map_names", "register_map"]
