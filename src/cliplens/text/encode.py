"""Text side: validation, batched embedding and text directions.

Everything here goes through a model's own tokenizer and text tower (an adapter's ``_tokenize``
and ``_encode_tokens``), so embeddings equal the source library's ``encode_text``. Texts longer
than the model's context are truncated by the source tokenizer exactly as the source does
(open_clip and Hugging Face both keep the end-of-text token as the last token), with a
:class:`~cliplens.errors.TextTruncatedWarning` naming them.

Speed: for text towers whose embedding depends on no position after the end-of-text token (causal
attention, end-of-text pooling: the rule is :meth:`cliplens.models.CLIPAdapter._pooled_positions`),
the texts are tokenized at once, sorted by that position, and each batch runs only up to its own
longest text (a 77-token context typically holds prompts of 8–20 tokens); the results come back in
the caller's order and equal the full-length ones up to float rounding (≤ 1e-6 relative, fp32).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.errors import EmptyTextError, InvalidInputError, TextTruncatedWarning

__all__ = ["TextEncoder", "encode_texts", "text_directions", "validate_texts", "warn_texts"]


class TextEncoder(Protocol):
    """What the text functions need from a model (every :class:`~cliplens.models.CLIPAdapter` has it).

    Optional, used where present: ``_pooled_positions(tokens)`` (run each batch only up to its longest
    text), ``_warn_texts(texts)`` (words the tokenizer cannot read), ``text_fingerprint()`` and
    ``_text_parts()`` (the text-embedding cache, :mod:`cliplens.text.cache`).
    """

    @property
    def context_length(self) -> int: ...

    def _tokenize(self, texts: Sequence[str]) -> Any: ...

    def _count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def _encode_tokens(self, tokens: Any) -> Tensor: ...


def _abbrev(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def validate_texts(
    texts: str | Sequence[str],
    count_tokens: Callable[[Sequence[str]], Sequence[int]] | None,
    context_length: int | None,
    *,
    allow_empty: bool = False,
) -> list[str]:
    """Check texts before tokenizing; returns them as a list.

    Args:
        texts: one text or a sequence of texts.
        allow_empty: accept the empty text ``''`` (not whitespace, more likely a blank line by mistake): class
            names filled into a prompt ensemble, where ``''`` is the empty prompt (each filled prompt is then
            checked by :func:`check_filled`).
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
        if not t.strip() and not (allow_empty and t == ""):
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


def check_filled(names: Sequence[str], templates: Sequence[Any], texts: Sequence[str]) -> None:
    """Refuse a prompt ensemble that fills a template into an empty text (``texts[i·K + j]`` is class ``i`` in
    template ``j``): the empty class name ``''`` is fine in ``'a photo of a {}.'``, not in the bare ``'{}'``."""
    k = len(templates)
    for n, text in enumerate(texts):
        if not text.strip():
            i, j = divmod(n, k)
            raise EmptyTextError(
                f"class {i} ({names[i]!r}) in template {j} ({templates[j]!r}) makes an empty prompt; give the class "
                "some words, or use templates with words around '{}' (the empty class name is the empty prompt of "
                "the ensemble)")


def progress_bar(enabled: bool, total: int, description: str) -> Any:
    if not enabled:
        return None
    from cliplens.progress import progress_bar as make_bar

    progress = make_bar()
    progress.start()
    progress.add_task(description, total=total)
    return progress


def warn_texts(adapter: TextEncoder, texts: list[str]) -> None:
    """The warnings texts get before they are embedded: too long for the context
    (:func:`validate_texts`), words the tokenizer cannot read (the adapter's ``_warn_texts``)."""
    validate_texts(texts, adapter._count_tokens, adapter.context_length)
    warn_words = getattr(adapter, "_warn_texts", None)
    if warn_words is not None:
        warn_words(texts)


def take_tokens(tokens: Any, rows: Tensor, length: int | None = None) -> Any:
    """Rows ``rows`` of a tokenizer's output, cut to the first ``length`` positions (``None``: all): a ``[B, L]``
    tensor, or a mapping of them such as Hugging Face's ``input_ids`` / ``attention_mask``."""
    if isinstance(tokens, Tensor):
        return tokens[rows.to(tokens.device), :length]
    if isinstance(tokens, Mapping):
        return {k: take_tokens(v, rows, length) if isinstance(v, Tensor) and v.ndim == 2 else v
                for k, v in tokens.items()}
    raise TypeError(f"cannot take rows of tokens of type {type(tokens).__name__}")


def encoded_batches(adapter: TextEncoder, texts: list[str], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(rows, embeddings)`` per forward of the text tower: which of ``texts`` (indices) and their un-normalised
    float32 ``[len(rows), E]`` embeddings, ``batch_size`` texts at a time, under ``torch.no_grad()``.

    The texts are tokenized at once. Where the adapter's ``_pooled_positions`` gives each text's pooled
    position (the rule is stated there), they are sorted by it (stable) and each batch is cut after its
    largest one; otherwise batches follow the given order at full length.
    """
    with torch.no_grad():
        tokens = adapter._tokenize(texts)
        pooled = getattr(adapter, "_pooled_positions", None)
        positions = pooled(tokens) if pooled is not None else None
        if positions is not None:
            positions = positions.detach().long().cpu()
            order = torch.argsort(positions, stable=True)
        else:
            order = torch.arange(len(texts))
        sliceable = isinstance(tokens, (Tensor, Mapping))
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            if positions is not None:
                batch = take_tokens(tokens, rows, int(positions[rows].max()) + 1)
            elif len(rows) == len(texts):
                batch = tokens
            elif sliceable:
                batch = take_tokens(tokens, rows)
            else:  # an adapter's own kind of tokens: tokenize the batch again
                batch = adapter._tokenize(texts[start:start + batch_size])
            yield rows, _checked(adapter, adapter._encode_tokens(batch), len(rows))


def _checked(adapter: TextEncoder, emb: Any, n: int) -> Tensor:
    emb = getattr(emb, "text_embeds", emb)
    if not isinstance(emb, Tensor) or emb.ndim != 2 or emb.shape[0] != n:
        raise RuntimeError(
            f"{type(adapter).__name__}._encode_tokens returned "
            f"{getattr(emb, 'shape', type(emb).__name__)} for {n} texts; expected [B, E]"
        )
    return emb.detach().float()


def encode_validated(
    adapter: TextEncoder, texts: list[str], batch_size: int, progress: Any = None
) -> Tensor:
    """Un-normalised float32 ``[T, E]`` embeddings of already-validated ``texts``, in their order (see
    :func:`encoded_batches`); ``progress`` (from :func:`progress_bar`) advances per batch."""
    out: Tensor | None = None
    for rows, emb in encoded_batches(adapter, texts, batch_size):
        if out is None:
            out = emb.new_empty(len(texts), emb.shape[1])
        out[rows.to(out.device)] = emb
        if progress is not None:
            progress.advance(progress.task_ids[0], len(rows))
    assert out is not None  # texts is never empty here
    return out


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def encode_texts(
    adapter: TextEncoder,
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
    batch_size = check_batch_size(batch_size)
    texts = validate_texts(texts, None, None)
    warn_texts(adapter, texts)
    bar = progress_bar(progress, len(texts), "encoding texts")
    try:
        emb = encode_validated(adapter, texts, batch_size, bar)
    finally:
        if bar is not None:
            bar.stop()
    return F.normalize(emb, dim=-1) if normalize else emb

def text_directions(adapter: TextEncoder, texts_or_tensor: str | Sequence[str] | Tensor | np.ndarray) -> Tensor:
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
            raise InvalidInputError(
                f"text directions must be a [T, E] or [E] tensor, got shape {tuple(d.shape)}; "
                "flatten extra dimensions (e.g. .reshape(-1, E)) or pass a list of texts"
            )
        if not (d.is_floating_point() or d.is_complex()):
            d = d.float()
        if d.is_complex():
            raise InvalidInputError("text directions must be real-valued")
        expected = _embed_dim(adapter)
        if expected is not None and d.shape[1] != expected:
            raise InvalidInputError(
                f"text directions have dimension {d.shape[1]} but the model's embedding dimension is "
                f"{expected}; use directions from this model's encode_text (or pass texts)"
            )
        if d.shape[0] == 0:
            raise InvalidInputError("text directions are empty (T = 0)")
        if not bool(torch.isfinite(d).all()):
            raise InvalidInputError("text directions contain NaN or infinite values")
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
