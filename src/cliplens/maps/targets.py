"""What a map explains, kept apart from how it is computed: texts, class names with a prompt ensemble,
and a contrast.

* ``Targets.texts(["a dog", "grass"])``: each text as it is.
* ``Targets.from_embeddings(embeddings, labels=["dog", "grass"])``: text embeddings you already have ``[T, E]``
  (any text tower, any prompt recipe), normalised and used as they are; the empty prompt for
  ``contrast="empty"`` (and CLIP Surgery) is ``empty=`` if given, else the model's own empty text.
* ``Targets.classes(["dog", "grass", "sky"], templates="imagenet", contrast="others")``: class names
  prompt-ensembled (each template filled, embedded, normalised, averaged, renormalised) and each map
  minus the mean map of the other classes.
* contrasts: ``"none"``; ``"others"`` (minus the mean over the other targets); ``"empty"`` (minus the map
  of the empty prompt: the same ensemble filled with ``""``); ``None`` (the default): the method's own
  default (``"others"`` for the decomposition map and raw token similarity, as in the first seed paper;
  ``"none"`` for CLIP Surgery, whose feature surgery already removes what the texts share).
* ensembles: ``"imagenet"`` (the 80 templates of CLIP's notebook), ``"surgery"`` (those and CLIP
  Surgery's 5 scene templates), ``"photo"`` (``"a photo of a {}."``), ``"toy"`` (the toy CLIP's own form), or
  your own list; :func:`model_targets` also takes ``"auto"``: the model's own default
  (:func:`cliplens.text.default_templates`).

Embeddings (each target's direction, the empty prompt's) come from the text-embedding cache
(:mod:`cliplens.text.cache`): computed once per text tower and kept in memory and on disk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import EmptyTextError, InvalidInputError
from cliplens.text.cache import cached_rows
from cliplens.text.encode import TextEncoder, encode_validated, validate_texts, warn_texts
from cliplens.text.templates import TEMPLATE_SETS, fill_template, resolve_templates
from cliplens.text.zeroshot import prompt_ensembles, zero_shot_classifier

__all__ = ["CONTRASTS", "TextEmbeddings", "Targets", "as_targets", "contrast_others", "model_targets"]

Contrast = Literal["none", "others", "empty"]
CONTRASTS: tuple[str, ...] = ("none", "others", "empty")
#: texts embedded per forward of the text tower (memory stays bounded for 1,000 classes)
TEXT_CHUNK = 256


def contrast_others(maps: Tensor, dim: int = 0) -> Tensor:
    """``maps[k] - mean_{j != k} maps[j]`` along ``dim`` (unchanged when there is one map)."""
    T = maps.shape[dim]
    if T < 2:
        return maps.clone()
    total = maps.sum(dim, keepdim=True)
    return maps - (total - maps) / (T - 1)


@dataclass(frozen=True)
class TextEmbeddings:
    """Unit-norm text directions ``[T, E]``, their labels, and the empty prompt's direction ``[E]`` when asked."""

    directions: Tensor
    labels: tuple[str, ...]
    empty: Tensor | None = None


@dataclass(frozen=True)
class Targets:
    """Texts or class names to map, with an optional prompt ensemble and a contrast (see the module docs)."""

    names: tuple[str, ...]
    templates: tuple[str, ...] | None = None
    contrast: Contrast | None = None
    #: the targets' own text embeddings ``[T, E]`` (:meth:`from_embeddings`), and their empty prompt ``[E]``
    embeddings: Tensor | None = field(default=None, compare=False, repr=False)
    empty: Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # in a prompt ensemble the class name '' is the empty prompt (each filled prompt is checked when embedded)
        names = tuple(validate_texts(list(self.names), None, None, allow_empty=self.templates is not None))
        counts = Counter(" ".join(n.lower().split()) for n in names)
        dup = [n for n in names if counts[" ".join(n.lower().split())] > 1]
        if dup:
            raise InvalidInputError(f"duplicate targets: {', '.join(repr(d) for d in dict.fromkeys(dup))}; each text "
                                    "or class may appear once (case and spacing ignored)")
        object.__setattr__(self, "names", names)
        if self.contrast is not None and self.contrast not in CONTRASTS:
            raise InvalidInputError(f"contrast must be one of {', '.join(CONTRASTS)} (or None: the method's "
                                    f"default); got {self.contrast!r}")
        if self.contrast == "others" and len(names) < 2:
            raise InvalidInputError("contrast 'others' subtracts the mean map of the other targets: it needs two "
                                    "or more; use contrast 'none' or 'empty' for a single text")
        if self.templates is not None:
            templates = tuple(self.templates)
            if not templates:
                raise InvalidInputError("no templates given; use e.g. ['a photo of a {}.'] or 'imagenet'")
            for j, t in enumerate(templates):
                fill_template(t, "x", j)  # each template takes a name
            object.__setattr__(self, "templates", templates)

    @classmethod
    def texts(cls, texts: str | Sequence[str], contrast: Contrast | None = None) -> Targets:
        """Texts used as they are."""
        return cls(tuple([texts] if isinstance(texts, str) else texts), None, contrast)

    @classmethod
    def from_embeddings(cls, embeddings: Tensor, labels: Sequence[str] | None = None, *,
                        contrast: Contrast | None = None, empty: Tensor | None = None) -> Targets:
        """Targets from text embeddings you already have: ``embeddings`` ``[T, E]`` (each row L2-normalised here,
        as every target is), named by ``labels`` (default ``"text 0"``, ``"text 1"``, …). ``empty`` ``[E]``: the
        empty prompt's embedding for ``contrast="empty"`` and CLIP Surgery's single-text feature surgery (default:
        the model's own empty text, embedded when a method needs it)."""
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or embeddings.shape[0] < 1:
            raise InvalidInputError("embeddings must be a tensor [targets, dim], got "
                                    + (f"shape {tuple(embeddings.shape)}" if isinstance(embeddings, Tensor)
                                       else type(embeddings).__name__))
        if not bool(torch.isfinite(embeddings).all()) or bool((embeddings.norm(dim=-1) == 0).any()):
            raise InvalidInputError("every target embedding must be finite and non-zero")
        T = embeddings.shape[0]
        names = [f"text {i}" for i in range(T)] if labels is None else [labels] if isinstance(labels, str) else list(labels)
        if len(names) != T:
            raise InvalidInputError(f"{T} embeddings but {len(names)} labels")
        if empty is not None and (not isinstance(empty, Tensor) or empty.shape != embeddings.shape[1:]):
            raise InvalidInputError(f"empty must be one embedding [{embeddings.shape[1]}], got "
                                    + (f"shape {tuple(empty.shape)}" if isinstance(empty, Tensor) else type(empty).__name__))
        d = F.normalize(embeddings.detach().float(), dim=-1)
        e = None if empty is None else F.normalize(empty.detach().float(), dim=0)
        return cls(tuple(names), None, contrast, d, e)

    @classmethod
    def classes(cls, names: Sequence[str], *, templates: str | Sequence[str] = "imagenet",
                contrast: Contrast | None = None) -> Targets:
        """Class names in a prompt ensemble (a name from :data:`cliplens.text.TEMPLATE_SETS` or your own list)."""
        if isinstance(templates, str):
            if templates not in TEMPLATE_SETS:
                raise InvalidInputError(f"unknown template set {templates!r}; known: {', '.join(TEMPLATE_SETS)} (or "
                                        "pass a list of templates with '{}')")
            templates = TEMPLATE_SETS[templates]
        return cls(tuple(names), tuple(templates), contrast)

    def __len__(self) -> int:
        return len(self.names)

    def describe(self) -> dict[str, Any]:
        n = len(self.templates) if self.templates else 0
        out = {"targets": list(self.names), "templates": n or None, "contrast": self.contrast}
        return out if self.embeddings is None else {**out, "embeddings": "given"}

    # ---- embeddings ---------------------------------------------------------
    def embed(self, model: TextEncoder, *, with_empty: bool = False) -> TextEmbeddings:
        """Unit-norm directions, and the empty prompt's with ``with_empty`` (both cached per text tower:
        :mod:`cliplens.text.cache`; the texts' warnings are given the first time this model embeds them)."""
        names = list(self.names)
        if self.embeddings is not None:
            d = self.embeddings.to(model.device) if hasattr(model, "device") else self.embeddings
            return TextEmbeddings(d, self.names, self.empty_direction(model) if with_empty else None)
        if self.templates is None:
            d = cached_rows(model, "texts", names, None,
                            compute=lambda: F.normalize(encode_validated(model, names, TEXT_CHUNK), dim=-1),
                            warn=lambda: warn_texts(model, names))
        else:
            d = zero_shot_classifier(model, names, list(self.templates), batch_size=TEXT_CHUNK)
        return TextEmbeddings(d, self.names, self.empty_direction(model) if with_empty else None)

    def empty_direction(self, model: TextEncoder) -> Tensor:
        """The empty prompt: the ensemble's templates filled with ``""`` (or ``""`` itself), embedded,
        normalised, averaged and renormalised -> ``[E]``; for targets from embeddings, their ``empty`` when given."""
        if self.empty is not None:
            return self.empty.to(model.device) if hasattr(model, "device") else self.empty
        templates = self.templates or ("{}",)
        texts = [t.replace("{}", "") for t in templates]

        def warn() -> None:
            warn_words = getattr(model, "_warn_texts", None)
            if warn_words is not None:
                warn_words(texts)

        rows = cached_rows(model, "empty", [""], list(templates),
                           compute=lambda: prompt_ensembles(model, texts, len(texts), TEXT_CHUNK), warn=warn)
        return rows[0]

    # ---- contrasts ------------------------------------------------------------
    def resolved_contrast(self, default: str) -> str:
        """The contrast to apply: this target's, or the method's ``default``."""
        return default if self.contrast is None else self.contrast


def model_targets(model: ImageTextModel, names: Sequence[str], templates: str | Sequence[str] | None, *, clip_default: str,
                  contrast: Contrast | None = None) -> Targets:
    """:class:`Targets` for ``model``: ``names`` as they are (``templates`` ``None`` or ``"none"``) or in a prompt
    ensemble, where ``"auto"`` is the model's own default (:func:`cliplens.text.default_templates`: the toy CLIP's
    prompt form, else ``clip_default``)."""
    templates = resolve_templates(model, templates, clip_default)
    if templates is None or (isinstance(templates, str) and templates == "none"):
        return Targets.texts(list(names), contrast=contrast)
    return Targets.classes(list(names), templates=templates, contrast=contrast)


def as_targets(targets: Targets | str | Sequence[str] | Tensor) -> Targets:
    """A :class:`Targets` from texts (a string or a list), text embeddings ``[T, E]``
    (:meth:`Targets.from_embeddings`) or a :class:`Targets`."""
    if isinstance(targets, Targets):
        return targets
    if isinstance(targets, Tensor):
        return Targets.from_embeddings(targets)
    if isinstance(targets, str) or (isinstance(targets, Sequence) and all(isinstance(t, str) for t in targets)):
        if not targets:
            raise EmptyTextError("no targets given: pass at least one text or class name")
        return Targets.texts(targets)
    raise InvalidInputError(f"targets must be texts, text embeddings [T, E] or a cliplens.maps.Targets, got "
                            f"{type(targets).__name__}")
