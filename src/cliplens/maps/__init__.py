"""Maps of where each text is: one method per file behind :class:`~cliplens.maps.base.MapMethod`.

``cliplens.maps.get("surgery")(model, images, targets)`` -> :class:`~cliplens.maps.base.Maps`;
``method.raw(model, pixels, texts)`` -> raw ``[B, T, gh, gw]`` scores.
"""

from __future__ import annotations

from cliplens.maps import (  # noqa: F401  (register the methods)
    baselines,
    chefer,
    clearclip,
    decomposition,
    gem,
    gradcam,
    legrad,
    maskclip,
    naclip,
    raw_attention,
    resclip,
    rollout,
    sclip,
    surgery,
    token_similarity,
)
from cliplens.maps.base import ImageMaps, MapMethod, Maps, get_map, map_names, normalize_maps, register_map
from cliplens.maps.surgery import Surgery, feature_surgery, surgery_parts, surgery_plan
from cliplens.maps.targets import Targets, TextEmbeddings, as_targets, contrast_others

get = get_map

__all__ = [
    "ImageMaps", "MapMethod", "Maps", "Surgery", "Targets", "TextEmbeddings", "as_targets", "contrast_others",
    "feature_surgery", "get", "get_map", "map_names", "normalize_maps", "register_map", "surgery_parts",
    "surgery_plan",
]
