"""Maps of where each text is: one method per file behind :class:`~cliplens.maps.base.MapMethod`.

``cliplens.maps.get("surgery")(model, images, targets)`` -> :class:`~cliplens.maps.base.Maps`;
``method.raw(model, pixels, texts)`` -> raw ``[B, T, gh, gw]`` scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.maps.base import (
        ImageMaps,
        MapMethod,
        Maps,
        get,
        get_map,
        map_names,
        normalize_maps,
        register_map,
    )
    from cliplens.maps.surgery import Surgery, feature_surgery, surgery_parts, surgery_plan
    from cliplens.maps.targets import Targets, TextEmbeddings, as_targets, contrast_others

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "ImageMaps": "cliplens.maps.base",
    "MapMethod": "cliplens.maps.base",
    "Maps": "cliplens.maps.base",
    "Surgery": "cliplens.maps.surgery",
    "Targets": "cliplens.maps.targets",
    "TextEmbeddings": "cliplens.maps.targets",
    "as_targets": "cliplens.maps.targets",
    "contrast_others": "cliplens.maps.targets",
    "feature_surgery": "cliplens.maps.surgery",
    "get": "cliplens.maps.base",
    "get_map": "cliplens.maps.base",
    "map_names": "cliplens.maps.base",
    "normalize_maps": "cliplens.maps.base",
    "register_map": "cliplens.maps.base",
    "surgery_parts": "cliplens.maps.surgery",
    "surgery_plan": "cliplens.maps.surgery",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "ImageMaps", "MapMethod", "Maps", "Surgery", "Targets", "TextEmbeddings", "as_targets", "contrast_others",
    "feature_surgery", "get", "get_map", "map_names", "normalize_maps", "register_map", "surgery_parts",
    "surgery_plan",
]
