"""Attention strategies, keyed by name.

The functional forward (:mod:`cliplens.forward`) asks a strategy to turn a
block's queries, keys and values into the per-head attention output. The
vanilla strategy is the model's own softmax attention; dense-prediction
methods (CLIP Surgery's v-v path, MaskCLIP, SCLIP, ClearCLIP, NACLIP, GEM…)
register their own strategy here under their name, so the forward itself never
changes.

A strategy is a callable ``(q, k, v, ctx) -> (z, pattern)`` with ``q, k, v`` of
shape ``[B, H, N, dh]``; it returns ``z`` ``[B, H, N, dh]`` and, when
``ctx.need_pattern`` is true, the attention pattern ``[B, H, N, N]`` it used
(else ``None``). ``ctx.pattern_hook`` (if set) must be applied to the pattern
before it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.models.view import BlockView


@dataclass
class AttentionContext:
    layer: int
    block: BlockView
    need_pattern: bool = False
    pattern_hook: Callable[[Tensor], Tensor] | None = None


Strategy = Callable[[Tensor, Tensor, Tensor, AttentionContext], tuple[Tensor, Tensor | None]]

_REGISTRY: dict[str, Strategy] = {}


def register_attention(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator: register an attention strategy under ``name``."""

    def deco(fn: Strategy) -> Strategy:
        if name in _REGISTRY:
            raise ValueError(f"attention strategy {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def get_attention(name: str) -> Strategy:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention strategy {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def available_attention() -> list[str]:
    return sorted(_REGISTRY)


def softmax_pattern(q: Tensor, k: Tensor) -> Tensor:
    """``softmax(q kᵀ / sqrt(dh))`` -> ``[B, H, Nq, Nk]`` (computed in float32 for half inputs)."""
    scale = q.shape[-1] ** -0.5
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float().softmax(-1).to(q.dtype)
    return logits.softmax(-1)


@register_attention("vanilla")
def vanilla(q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor | None]:
    """The model's own attention. Uses the fused kernel unless the pattern is needed."""
    if not ctx.need_pattern and ctx.pattern_hook is None:
        return F.scaled_dot_product_attention(q, k, v), None
    pattern = softmax_pattern(q, k)
    if ctx.pattern_hook is not None:
        pattern = ctx.pattern_hook(pattern)
    return torch.matmul(pattern, v), pattern
