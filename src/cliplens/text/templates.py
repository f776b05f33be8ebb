"""Prompt templates: the 80 ImageNet templates, named ensembles, the model-aware default, and filling a
template with a class name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cliplens.errors import InvalidInputError

__all__ = ["AUTO", "IMAGENET_TEMPLATES", "SCENE_TEMPLATES", "SURGERY_TEMPLATES", "TEMPLATE_SETS", "TOY_TEMPLATES",
           "Template", "default_templates", "fill_template", "resolve_templates"]

Template = str | Callable[[str], str]

#: The 80 ImageNet prompt templates of CLIP's prompt-engineering notebook (``{}`` = class name).
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

#: five scene templates that CLIP Surgery (and MaskCLIP) add to the ImageNet ones
SCENE_TEMPLATES: tuple[str, ...] = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)

#: CLIP Surgery's prompt ensemble: the 80 ImageNet templates and the 5 scene templates (85)
SURGERY_TEMPLATES: tuple[str, ...] = IMAGENET_TEMPLATES + SCENE_TEMPLATES

#: the toy CLIP's own prompt form (its captions and zero-shot prompts: "a photo of a red circle"); every word
#: is in its vocabulary, which has none of the ImageNet templates' other words
TOY_TEMPLATES: tuple[str, ...] = ("a photo of a {}",)

#: named prompt ensembles (``"none"``: the texts as they are)
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "surgery": SURGERY_TEMPLATES,
    "photo": ("a photo of a {}.",),
    "toy": TOY_TEMPLATES,
    "none": ("{}",),
}

#: the template-set name that means "the model's own default" (:func:`default_templates`)
AUTO = "auto"


def default_templates(model: Any, clip_default: str) -> str:
    """The prompt ensemble a command uses for ``model`` when none is asked: the model's own prompt form where it
    has one (its adapter's ``prompt_templates``: ``"toy"`` for the toy CLIP, whose vocabulary has no word of
    CLIP's templates), else ``clip_default`` (what the command uses for real CLIPs: ``"imagenet"`` or
    ``"surgery"``)."""
    own = getattr(model, "prompt_templates", None)
    return own if own in TEMPLATE_SETS else clip_default


def resolve_templates(model: Any, templates: str | Sequence[str] | None, clip_default: str
                      ) -> str | Sequence[str] | None:
    """``templates`` with :data:`AUTO` replaced by :func:`default_templates` (anything else as given)."""
    if isinstance(templates, str) and templates == AUTO:
        return default_templates(model, clip_default)
    return templates


def fill_template(template: Template, name: str, index: int) -> str:
    if callable(template):
        text = template(name)
        if not isinstance(text, str):
            raise TypeError(f"template {index} returned {type(text).__name__}, not a str")
        return text
    if not isinstance(template, str):
        raise TypeError(f"template {index} must be a str with '{{}}' or a callable, got {type(template).__name__}")
    if "{}" not in template:
        raise InvalidInputError(
            f"template {index} ({template!r}) has no '{{}}' placeholder for the class name; "
            "write e.g. 'a photo of a {}.'"
        )
    try:
        return template.format(name)
    except (IndexError, KeyError, ValueError) as e:
        raise InvalidInputError(
            f"template {index} ({template!r}) cannot be filled with a class name ({e}); use exactly "
            "one '{}' and double any other braces ('{{', '}}')"
        ) from None
