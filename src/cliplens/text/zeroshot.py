"""Zero-shot classifiers from class names and prompt templates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.errors import InvalidInputError
from cliplens.text.encode import TextEncoder, check_batch_size, encode_validated, progress_bar, validate_texts
from cliplens.text.templates import IMAGENET_TEMPLATES, Template, fill_template

__all__ = ["zero_shot_classifier"]


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
    notebook).

    Args:
        adapter: the model.
        classnames: class names (``"{}"`` in a template is replaced by each).
        templates: format strings with one ``{}`` (default: the 80 :data:`IMAGENET_TEMPLATES`),
            or callables ``name -> text``; a single string or callable is one template.
        batch_size: texts per forward pass (the result does not depend on it).
        progress: show a rich progress bar (over classes).
    """
    batch_size = check_batch_size(batch_size)
    names = validate_texts(classnames, None, None)
    if isinstance(templates, str) or callable(templates):
        templates = [templates]  # type: ignore[list-item]
    templates = list(templates)  # type: ignore[arg-type]
    if not templates:
        raise InvalidInputError("no templates given; use e.g. ['a photo of a {}.'] or IMAGENET_TEMPLATES")
    k = len(templates)
    texts = [fill_template(t, name, j) for name in names for j, t in enumerate(templates)]
    validate_texts(texts, adapter._count_tokens, adapter.context_length)
    per_chunk = max(1, batch_size // k)
    bar = progress_bar(progress, len(names), "zero-shot classifier")
    rows: list[Tensor] = []
    try:
        for start in range(0, len(names), per_chunk):
            n = min(per_chunk, len(names) - start)
            chunk = texts[start * k:(start + n) * k]
            emb = F.normalize(encode_validated(adapter, chunk, batch_size), dim=-1)
            rows.append(F.normalize(emb.view(n, k, -1).mean(dim=1), dim=-1))
            if bar is not None:
                bar.advance(bar.task_ids[0], n)
    finally:
        if bar is not None:
            bar.stop()
    return torch.cat(rows, 0)
