"""The attention-strategy interface and its registry.

A block's attention turns the queries, keys and values of its heads into per-head outputs. A
*strategy* says how: the model's own softmax attention (``"vanilla"``), or one of the
dense-prediction variants (CLIP Surgery's v-v attention, ClearCLIP's q-q, NACLIP's k-k with a
Gaussian prior, …). Every strategy here has the form ``z = P · v`` for a pattern ``P`` of shape
``[B, H, N_query, N_key]``, which is what lets the forward record the pattern it actually used
(``attn.pattern``, ``attn.cls_pattern``) and split a head's output over source tokens exactly.

A strategy is an :class:`AttentionStrategy` subclass with a :meth:`~AttentionStrategy.pattern`
method (and optionally a faster :meth:`~AttentionStrategy.output`), registered under a name with
:func:`register_attention`; parameters are keyword arguments of its constructor::

    @register_attention("sharpened")
    class Sharpened(AttentionStrategy):
        def __init__(self, temperature: float = 0.5):
            super().__init__(temperature=temperature)

        def pattern(self, q, k, v, ctx):
            rows = q if ctx.rows is None else q[:, :, ctx.rows]
            return (rows @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 / self.params["temperature"]).softmax(-1)

    plan = Plan().at(-1, attention=get_attention("sharpened", temperature=0.3))

A plain function ``fn(q, k, v, ctx, **params) -> pattern [B, H, N, N]`` registers too (it
returns the full pattern; the rows asked for are sliced from it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from cliplens.core.view import BlockView
from cliplens.errors import InvalidInputError


@dataclass(frozen=True)
class AttentionContext:
    """What a strategy may need besides q, k and v.

    Attributes:
        layer: the block's index.
        block: the block's weights.
        grid: the token grid ``(gh, gw)``; token ``1 + r * gw + c`` is the patch at row r, column c
            (token 0 is CLS).
        rows: the query rows :meth:`AttentionStrategy.pattern` must return (``None``: all).
        x: the block's ``ln_1`` output ``[B, N, D]`` that q, k and v were projected from (GEM's
            temperature reads its norms).
    """

    layer: int
    block: BlockView
    grid: tuple[int, int]
    rows: slice | None = None
    x: Tensor | None = None

    def with_rows(self, rows: slice | None) -> AttentionContext:
        return AttentionContext(self.layer, self.block, self.grid, rows, self.x)


class AttentionStrategy:
    """Base class of attention strategies: ``z = pattern(q, k, v) @ v``.

    Args of :meth:`pattern` / :meth:`output`: ``q, k, v`` ``[B, H, N, dh]`` (biases included),
    and an :class:`AttentionContext`.
    """

    #: the registered name (set by :func:`register_attention`)
    name: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        """The attention pattern ``[B, H, Nq, N]`` for the query rows ``ctx.rows``."""
        raise NotImplementedError

    def output(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        """``z = pattern · v`` ``[B, H, N, dh]`` for every query (override with a fused kernel)."""
        return torch.matmul(self.pattern(q, k, v, ctx), v)

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., **params}``: what a store's manifest or a report records."""
        return {"name": self.name, **{k: _plain(v) for k, v in sorted(self.params.items())}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AttentionStrategy) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.describe().items())))


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return repr(v)


class _FunctionStrategy(AttentionStrategy):
    """A registered plain function ``fn(q, k, v, ctx, **params) -> [B, H, N, N]``."""

    fn: ClassVar[Callable[..., Tensor]]

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
        full = type(self).fn(q, k, v, ctx, **self.params)
        return full if ctx.rows is None else full[:, :, ctx.rows]


_REGISTRY: dict[str, type[AttentionStrategy]] = {}


def register_attention(name: str) -> Callable[[Any], Any]:
    """Decorator: register a strategy class (or a pattern function) under ``name``."""

    def deco(obj: Any) -> Any:
        if name in _REGISTRY:
            raise InvalidInputError(f"attention strategy {name!r} is already registered")
        if isinstance(obj, type) and issubclass(obj, AttentionStrategy):
            cls = obj
        elif callable(obj):
            cls = type(f"FunctionStrategy_{name}", (_FunctionStrategy,), {"fn": staticmethod(obj)})
        else:
            raise InvalidInputError(f"register_attention needs an AttentionStrategy subclass or a function, "
                                    f"got {type(obj).__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return obj

    return deco


def attention_names() -> list[str]:
    """The registered strategy names."""
    return sorted(_REGISTRY)


def get_attention(spec: str | AttentionStrategy, **params: Any) -> AttentionStrategy:
    """A strategy instance from a name (with parameters) or an instance (returned as is)."""
    if isinstance(spec, AttentionStrategy):
        if params:
            raise InvalidInputError("parameters go with a strategy name, not with a strategy instance")
        return spec
    if isinstance(spec, Mapping):
        spec = dict(spec)
        return get_attention(spec.pop("name"), **spec, **params)
    try:
        cls = _REGISTRY[spec]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown attention strategy {spec!r}; registered: {', '.join(attention_names())} "
            "(register your own with cliplens.core.attention.register_attention)"
        ) from None
    try:
        return cls(**params)
    except TypeError as e:
        raise InvalidInputError(f"attention strategy {spec!r}: {e}") from None


def scaled_scores(a: Tensor, b: Tensor, rows: slice | None, scale: float | None = None) -> Tensor:
    """``a[rows] · bᵀ · scale`` in float32 for half inputs (``scale`` default ``dh^-½``)."""
    a = a if rows is None else a[:, :, rows]
    s = (a.shape[-1] ** -0.5) if scale is None else scale
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    if a.shape[-2] == 1:  # one query row (the CLS taps): b·aᵀ avoids a slow batched matmul over strided views
        return torch.matmul(b, a.transpose(-1, -2)).transpose(-1, -2) * s
    return torch.matmul(a * s, b.transpose(-1, -2))  # scaling the [.., N, dh] side: no second [.., N, N] tensor


def softmax_rows(logits: Tensor, dtype: torch.dtype) -> Tensor:
    """Softmax over keys, computed in the logits' dtype (float32 for half inputs), cast to ``dtype``.

    ``logits`` must be a temporary the caller drops (every caller passes fresh scores): outside autograd the
    softmax is written over it, so that no second ``[.., N, N]`` tensor is allocated (the same numbers)."""
    if logits.is_contiguous() and not (torch.is_grad_enabled() and logits.requires_grad):
        return torch.softmax(logits, -1, out=logits).to(dtype)
    return logits.softmax(-1).to(dtype)
