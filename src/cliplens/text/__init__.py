"""Text: validation and batched embedding (:mod:`.encode`), prompt templates (:mod:`.templates`),
zero-shot classifiers (:mod:`.zeroshot`), the text-embedding cache (:mod:`.cache`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.text.encode import TextEncoder, encode_texts, text_directions, validate_texts
    from cliplens.text.templates import (
        AUTO,
        IMAGENET_TEMPLATES,
        SCENE_TEMPLATES,
        SURGERY_TEMPLATES,
        TEMPLATE_SETS,
        TOY_TEMPLATES,
        Template,
        default_templates,
        fill_template,
        resolve_templates,
    )
    from cliplens.text.zeroshot import zero_shot_classifier

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "AUTO": "cliplens.text.templates",
    "IMAGENET_TEMPLATES": "cliplens.text.templates",
    "SCENE_TEMPLATES": "cliplens.text.templates",
    "SURGERY_TEMPLATES": "cliplens.text.templates",
    "TEMPLATE_SETS": "cliplens.text.templates",
    "TOY_TEMPLATES": "cliplens.text.templates",
    "Template": "cliplens.text.templates",
    "TextEncoder": "cliplens.text.encode",
    "default_templates": "cliplens.text.templates",
    "encode_texts": "cliplens.text.encode",
    "fill_template": "cliplens.text.templates",
    "resolve_templates": "cliplens.text.templates",
    "text_directions": "cliplens.text.encode",
    "validate_texts": "cliplens.text.encode",
    "zero_shot_classifier": "cliplens.text.zeroshot",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "AUTO", "IMAGENET_TEMPLATES", "SCENE_TEMPLATES", "SURGERY_TEMPLATES", "TEMPLATE_SETS", "TOY_TEMPLATES", "Template",
    "TextEncoder", "default_templates", "encode_texts", "fill_template", "resolve_templates", "text_directions",
    "validate_texts", "zero_shot_classifier",
]
