"""Text: validation and batched embedding (:mod:`.encode`), prompt templates (:mod:`.templates`),
zero-shot classifiers (:mod:`.zeroshot`)."""

from __future__ import annotations

from cliplens.text.encode import TextEncoder, encode_texts, text_directions, validate_texts
from cliplens.text.templates import (
    IMAGENET_TEMPLATES,
    SCENE_TEMPLATES,
    SURGERY_TEMPLATES,
    TEMPLATE_SETS,
    Template,
    fill_template,
)
from cliplens.text.zeroshot import zero_shot_classifier

__all__ = [
    "IMAGENET_TEMPLATES", "SCENE_TEMPLATES", "SURGERY_TEMPLATES", "TEMPLATE_SETS", "Template", "TextEncoder", "encode_texts", "fill_template", "text_directions",
    "validate_texts", "zero_shot_classifier",
]
