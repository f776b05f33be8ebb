"""Text: validation and batched embedding (:mod:`.encode`), prompt templates (:mod:`.templates`),
zero-shot classifiers (:mod:`.zeroshot`), the text-embedding cache (:mod:`.cache`)."""

from __future__ import annotations

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

__all__ = [
    "AUTO", "IMAGENET_TEMPLATES", "SCENE_TEMPLATES", "SURGERY_TEMPLATES", "TEMPLATE_SETS", "TOY_TEMPLATES", "Template",
    "TextEncoder", "default_templates", "encode_texts", "fill_template", "resolve_templates", "text_directions",
    "validate_texts", "zero_shot_classifier",
]
