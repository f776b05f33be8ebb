"""Zero-shot classifiers from class names and prompt templates (cached: :mod:`cliplens.text.cache`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.errors import InvalidInputError
from cliplens.text.cache import cached_rows
from cliplens.text.encode import (
    TextEncoder,
    check_batch_size,
    check_filled,
    encoded_batches,
    progress_bar,
    validate_texts,
    warn_texts,
)
from cliplens.text.templates import IMAGENET_TEMPLATES, Template, fill_template

__all__ = ["SCORE_KINDS", "probabilities", "prompt_ensembles", "scores_to_probabilities", "zero_shot_classifier"]

#: how logits become probabilities
SCORE_KINDS = ("softmax", "sigmoid")


def zero_shot_classifier(
    adapter: TextEncoder,
    classnames: str | Sequence[str],
    templates: str | Template | Sequence[Template] = IMAGENET_TEMPLATES,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """Zero-shot class embeddings -> float32 ``[C, E]``, one unit-norm row per class.

    For each class, every template is filled with the class name and embedded; each
    template embedding is L2-normalised, the normalised embeddings are averaged over the
    templates, and the mean is L2-normalised again (the recipe of CLIP's prompt-engineering
    notebook). All C × K prompts go through the text tower in one sorted pass (each batch only as
    long as its longest prompt, where the tower allows: :func:`cliplens.text.encode.encoded_batches`).
    The result is cached per (text tower, classes, templates) in memory and on disk
    (:mod:`cliplens.text.cache`; templates given as callables are not cached).

    Args:
        adapter: the model.
        classnames: class names (``"{}"`` in a template is replaced by each).
        templates: format strings with one ``{}`` (default: the 80 :data:`IMAGENET_TEMPLATES`),
            or callables ``name -> text``; a single string or callable is one template.
        batch_size: texts per forward pass (the result does not depend on it).
        progress: show a rich progress bar (over the prompts).
    """
    batch_size = check_batch_size(batch_size)
    names = validate_texts(classnames, None, None, allow_empty=True)  # '' is the ensemble's empty prompt
    if isinstance(templates, str) or callable(templates):
        templates = [templates]  # type: ignore[list-item]
    templates = list(templates)  # type: ignore[arg-type]
    if not templates:
        raise InvalidInputError("no templates given; use e.g. ['a photo of a {}.'] or IMAGENET_TEMPLATES")
    texts = [fill_template(t, name, j) for name in names for j, t in enumerate(templates)]
    check_filled(names, templates, texts)
    return cached_rows(adapter, "classes", names, templates,
                       compute=lambda: prompt_ensembles(adapter, texts, len(templates), batch_size, progress),
                       warn=lambda: warn_texts(adapter, texts))


def prompt_ensembles(adapter: TextEncoder, texts: list[str], k: int, batch_size: int = 256,
                     progress: bool = False) -> Tensor:
    """``[len(texts) // k, E]``: consecutive groups of ``k`` prompts, each prompt L2-normalised, averaged over its
    group and L2-normalised again. Not validated, not cached (the empty prompt's texts go through here)."""
    n = len(texts) // k
    bar = progress_bar(progress, len(texts), "zero-shot classifier")
    sums: Tensor | None = None
    try:
        for rows, emb in encoded_batches(adapter, texts, batch_size):
            if sums is None:
                sums = emb.new_zeros(n, emb.shape[1])
            sums.index_add_(0, (rows // k).to(sums.device), F.normalize(emb, dim=-1))
            if bar is not None:
                bar.advance(bar.task_ids[0], len(rows))
    finally:
        if bar is not None:
            bar.stop()
    assert sums is not None  # texts is never empty here
    return F.normalize(sums / k, dim=-1)


def scores_to_probabilities(cosines: Tensor, *, scale: float, bias: float = 0.0, kind: str = "softmax") -> Tensor:
    """Probabilities from cosine similarities ``[..., T]`` (the last axis: the texts), the one rule every place
    that reports them uses: logits ``scale · cos + bias``; ``"softmax"`` over the texts (CLIP, whose probabilities
    sum to 1 over the texts given), or ``"sigmoid"`` of each logit on its own (SigLIP: each image–text pair is a
    yes/no, independent of the other texts). Computed in float32 (float64 inputs stay float64)."""
    if kind not in SCORE_KINDS:
        raise InvalidInputError(f"score kind {kind!r}: expected one of {', '.join(SCORE_KINDS)}")
    x = cosines if cosines.dtype == torch.float64 else cosines.float()
    logits = scale * x + bias
    return torch.sigmoid(logits) if kind == "sigmoid" else logits.softmax(-1)


def probabilities(adapter: Any, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
    """``[B, T]`` the model's probabilities for images × texts (embeddings normalised here), by its own
    ``logit_scale``, ``logit_bias`` and ``score_kind`` (:class:`cliplens.models.CLIPAdapter`)."""
    img = F.normalize(image_embeddings.float(), dim=-1)
    txt = F.normalize(text_embeddings.float().to(img.device), dim=-1)
    return scores_to_probabilities(img @ txt.T, scale=adapter.logit_scale, bias=adapter.logit_bias,
                                   kind=adapter.score_kind)
