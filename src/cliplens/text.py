"""Text side: validation, batched embedding, zero-shot classifiers and text directions.

Everything here goes through an adapter's own tokenizer and text tower
(:meth:`~cliplens.models.base.CLIPAdapter._tokenize` /
:meth:`~cliplens.models.base.CLIPAdapter._encode_tokens`), so embeddings equal the
source library's ``encode_text``. Texts longer than the model's context are
truncated by the source tokenizer exactly as the source does (open_clip and
Hugging Face both keep the end-of-text token as the last token), with a
:class:`~cliplens.errors.TextTruncatedWarning` naming them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.errors import EmptyTextError, TextTruncatedWarning

if TYPE_CHECKING:  # pragma: no cover
    from cliplens.models.base import CLIPAdapter

__all__ = [
    "IMAGENET_TEMPLATES",
    "Template",
    "encode_texts",
    "text_directions",
    "validate_texts",
    "zero_shot_classifier",
]

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


def _abbrev(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def validate_texts(
    texts: str | Sequence[str],
    count_tokens: Callable[[Sequence[str]], Sequence[int]] | None,
    context_length: int | None,
) -> list[str]:
    """Check texts before tokenizing; returns them as a list.

    Args:
        texts: one text or a sequence of texts.
        count_tokens: tokens each text needs, start/end tokens included, before truncation
            (an adapter's ``_count_tokens``); counts of 0 mean "unknown". ``None`` skips the
            length check.
        context_length: the model's text context (tokens).

    Raises:
        EmptyTextError: for an empty sequence, or an empty / whitespace-only text (the message
            names its index).
        TypeError: for a text that is not a ``str``.

    Warns:
        TextTruncatedWarning: once, naming every text (abbreviated) longer than the context
            and its token count. Such texts are still embedded: the tokenizer truncates them.
    """
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, (bytes, Tensor, np.ndarray)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    if not out:
        raise EmptyTextError("no texts given (an empty list); pass at least one non-empty string")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is a {type(t).__name__}, not a str: {t!r}")
        if not t.strip():
            raise EmptyTextError(
                f"text {i} is empty or whitespace only ({t!r}); remove it or give it some words "
                "(for a class list read from a file, look for blank lines)"
            )
    if count_tokens is not None and context_length:
        counts = list(count_tokens(out))
        long = [(i, n) for i, n in enumerate(counts) if n and n > context_length]
        if long:
            shown = ", ".join(f"#{i} {_abbrev(out[i])} ({n} tokens)" for i, n in long[:5])
            more = f" and {len(long) - 5} more" if len(long) > 5 else ""
            warnings.warn(
                f"{len(long)} text(s) need more than the model's {context_length}-token context and "
                f"will be truncated (keeping the end-of-text token, as the source does): {shown}{more}",
                TextTruncatedWarning,
                stacklevel=3,
            )
    return out


def _progress(enabled: bool, total: int, description: str) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), transient=True)
    progress.start()
    progress.add_task(description, total=total)
    return progress


def _encode_validated(
    adapter: CLIPAdapter, texts: list[str], batch_size: int, progress: Any = None
) -> Tensor:
    chunks: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            emb = adapter._encode_tokens(adapter._tokenize(batch))
            emb = getattr(emb, "text_embeds", emb)
            if not isinstance(emb, Tensor) or emb.ndim != 2 or emb.shape[0] != len(batch):
                raise RuntimeError(
                    f"{type(adapter).__name__}._encode_tokens returned "
                    f"{getattr(emb, 'shape', type(emb).__name__)} for {len(batch)} texts; expected [B, E]"
                )
            chunks.append(emb.detach().float())
            if progress is not None:
                progress.advance(progress.task_ids[0], len(batch))
    return torch.cat(chunks, 0)


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def encode_texts(
    adapter: CLIPAdapter,
    texts: str | Sequence[str],
    *,
    normalize: bool = True,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """Embed texts with the adapter's tokenizer and text tower -> float32 ``[T, E]``.

    Texts are validated (:func:`validate_texts`), tokenized and encoded ``batch_size`` at a
    time under ``torch.no_grad()`` (the result does not depend on ``batch_size``), and
    L2-normalised unless ``normalize=False``. ``progress=True`` shows a rich progress bar.
    The result is on the text tower's device.
    """
    batch_size = _check_batch_size(batch_size)
    texts = validate_texts(texts, adapter._count_tokens, adapter.context_length)
    bar = _progress(progress, len(texts), "encoding texts")
    try:
        emb = _encode_validated(adapter, texts, batch_size, bar)
    finally:
        if bar is not None:
            bar.stop()
    return F.normalize(emb, dim=-1) if normalize else emb


def _fill(template: Template, name: str, index: int) -> str:
    if callable(template):
        text = template(name)
        if not isinstance(text, str):
            raise TypeError(f"template {index} returned {type(text).__name__}, not a str")
        return text
    if not isinstance(template, str):
        raise TypeError(f"template {index} must be a str with '{{}}' or a callable, got {type(template).__name__}")
    if "{}" not in template:
        raise ValueError(
            f"template {index} ({template!r}) has no '{{}}' placeholder for the class name; "
            "write e.g. 'a photo of a {}.'"
        )
    try:
        return template.format(name)
    except (IndexError, KeyError, ValueError) as e:
        raise ValueError(
            f"template {index} ({template!r}) cannot be filled with a class name ({e}); use exactly "
            "one '{}' and double any other braces ('{{', '}}')"
        ) from None


def zero_shot_classifier(
    adapter: CLIPAdapter,
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
    batch_size = _check_batch_size(batch_size)
    names = validate_texts(classnames, None, None)
    if isinstance(templates, str) or callable(templates):
        templates = [templates]  # type: ignore[list-item]
    templates = list(templates)  # type: ignore[arg-type]
    if not templates:
        raise ValueError("no templates given; use e.g. ['a photo of a {}.'] or IMAGENET_TEMPLATES")
    k = len(templates)
    texts = [_fill(t, name, j) for name in names for j, t in enumerate(templates)]
    validate_texts(texts, adapter._count_tokens, adapter.context_length)
    per_chunk = max(1, batch_size // k)
    bar = _progress(progress, len(names), "zero-shot classifier")
    rows: list[Tensor] = []
    try:
        for start in range(0, len(names), per_chunk):
            n = min(per_chunk, len(names) - start)
            chunk = texts[start * k:(start + n) * k]
            emb = F.normalize(_encode_validated(adapter, chunk, batch_size), dim=-1)
            rows.append(F.normalize(emb.view(n, k, -1).mean(dim=1), dim=-1))
            if bar is not None:
                bar.advance(bar.task_ids[0], n)
    finally:
        if bar is not None:
            bar.stop()
    return torch.cat(rows, 0)


def text_directions(adapter: CLIPAdapter, texts_or_tensor: str | Sequence[str] | Tensor | np.ndarray) -> Tensor:
    """Directions in the joint embedding space -> float32 ``[T, E]``.

    Texts (a string or a list of strings) are embedded with :func:`encode_texts` and
    L2-normalised. A tensor (or numpy array) of shape ``[T, E]`` or ``[E]`` is returned as a
    float32 ``[T, E]`` as given (not re-normalised), after checking that ``E`` matches the
    model's embedding dimension.
    """
    if isinstance(texts_or_tensor, (Tensor, np.ndarray)):
        d = torch.as_tensor(texts_or_tensor)
        if d.ndim == 1:
            d = d.unsqueeze(0)
        if d.ndim != 2:
            raise ValueError(
                f"text directions must be a [T, E] or [E] tensor, got shape {tuple(d.shape)}; "
                "flatten extra dimensions (e.g. .reshape(-1, E)) or pass a list of texts"
            )
        if not (d.is_floating_point() or d.is_complex()):
            d = d.float()
        if d.is_complex():
            raise ValueError("text directions must be real-valued")
        expected = _embed_dim(adapter)
        if expected is not None and d.shape[1] != expected:
            raise ValueError(
                f"text directions have dimension {d.shape[1]} but the model's embedding dimension is "
                f"{expected}; use directions from this model's encode_text (or pass texts)"
            )
        if d.shape[0] == 0:
            raise ValueError("text directions are empty (T = 0)")
        if not bool(torch.isfinite(d).all()):
            raise ValueError("text directions contain NaN or infinite values")
        return d.detach().float()
    if isinstance(texts_or_tensor, (str, Sequence)):
        return encode_texts(adapter, texts_or_tensor, normalize=True)
    raise TypeError(
        f"text directions must be texts or a [T, E] tensor, got {type(texts_or_tensor).__name__}"
    )


def _embed_dim(adapter: Any) -> int | None:
    try:
        return int(adapter.vision.embed_dim)
    except Exception:
        return None
