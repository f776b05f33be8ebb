"""Hook names, as data, and the recorder that applies hooks and keeps what was asked for.

Global names:
    ``embed``            ``[B, N, D]``  residual stream after ``ln_pre`` (x_0)
    ``final``            ``[B, N, D]``  the last residual stream, as the pooling head reads it
    ``pooled``           ``[B, D]``     CLS pooling: the CLS token of the last residual stream; attention
                                        pooling: the pooled vector before its MLP; mean pooling with the
                                        LayerNorm after the mean: the mean
    ``ln_post.mean``     ``[B]``        CLS pooling: mean of ``pooled`` (frozen by the decomposition)
    ``ln_post.std``      ``[B]``        CLS pooling: ``sqrt(var + eps)`` of ``pooled``
    ``head.pattern``     ``[B, Hp, N]`` attention pooling: the probe's attention over the tokens
    ``embedding``        ``[B, E]``     the image embedding (un-normalised)
    ``dense``            ``[B, N, E]``  every token of the last residual stream through the pooling head on
                                        its own (:meth:`PoolHead.dense`; CLS pooling: ``ln_post`` with
                                        per-token statistics and the projection); CLS first when there is one
    ``side.{s}.dense``   ``[B, N, E]``  the same for side path ``s`` (plans with side paths)

Per block ``l`` (prefix ``blocks.{l}.``):
    ``resid_pre``        ``[B, N, D]``
    ``ln_1``             ``[B, N, D]``
    ``attn.q`` ``attn.k`` ``attn.v``   ``[B, N, H, dh]``  (biases included; q and k rotated where the tower has
                         rotary embeddings, EVA02)
    ``attn.pattern``     ``[B, H, N, N]``  the full pattern the block's strategy used
    ``attn.cls_pattern`` ``[B, H, N]``     its CLS query row only (cheap)
    ``attn.z``           ``[B, N, H, dh]`` per-head output before the out-projection
    ``attn.cls_contrib`` ``[B, N, H, dh]`` α(CLS→m)·v_m per source token m and head, from the
                         pattern actually used: sums over m to ``attn.z`` at CLS
    ``attn_out``         ``[B, N, D]``  attention output (out-proj bias and layer-scale included)
    ``resid_mid``        ``[B, N, D]``
    ``ln_2``             ``[B, N, D]``
    ``mlp.hidden``       ``[B, N, Dm]`` what fc2 reads: after the activation (gated MLPs: act(gate)·fc1; with
                         an MLP norm: after it)
    ``mlp_out``          ``[B, N, D]``  MLP output (layer-scale included; zeros when the plan drops it)
    ``resid_post``       ``[B, N, D]``

Per block ``l`` where side path ``s`` runs (prefix ``blocks.{l}.side.{s}.``): ``attn.pattern``,
``attn.z``, ``attn_out`` and ``resid_post`` (the side stream after this block).

Names accept ``*`` wildcards (``blocks.*.mlp_out``). With ``cls_only=True`` every per-token tensor
is recorded at the CLS query position only (the token axis is dropped).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence

from torch import Tensor

from cliplens.core.plan import BlockPlan
from cliplens.errors import HookNameError, InvalidInputError

Hook = Callable[[Tensor, str], "Tensor | None"]

GLOBAL_NAMES = ("embed", "final", "pooled", "ln_post.mean", "ln_post.std", "head.pattern", "embedding", "dense")
BLOCK_NAMES = (
    "resid_pre", "ln_1", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.cls_pattern",
    "attn.z", "attn.cls_contrib", "attn_out", "resid_mid", "ln_2", "mlp.hidden", "mlp_out",
    "resid_post",
)
SIDE_BLOCK_NAMES = ("attn.pattern", "attn.z", "attn_out", "resid_post")
#: derived tensors that nothing downstream reads: hooks may observe them, not replace them
READ_ONLY = ("attn.cls_pattern", "attn.cls_contrib", "ln_post.mean", "ln_post.std")
# recorded tensors whose token axis is *not* a query position (cls_only leaves them alone)
_NOT_QUERY_INDEXED = ("attn.cls_pattern", "attn.cls_contrib", "head.pattern")


def hook_names(num_layers: int, plan: Sequence[BlockPlan] | None = None) -> list[str]:
    """Every recordable name for a tower with ``num_layers`` blocks (run with ``plan``, resolved)."""
    names = list(GLOBAL_NAMES) + [f"blocks.{i}.{n}" for i in range(num_layers) for n in BLOCK_NAMES]
    if plan is not None:
        sides: list[str] = []
        for i, bp in enumerate(plan):
            for s in bp.side:
                names += [f"blocks.{i}.side.{s.name}.{n}" for n in SIDE_BLOCK_NAMES]
                if s.name not in sides:
                    sides.append(s.name)
        names += [f"side.{s}.dense" for s in sides]
    return names


def resolve_names(patterns: Iterable[str], num_layers: int, plan: Sequence[BlockPlan] | None = None) -> set[str]:
    """Expand wildcards; unknown names raise :class:`HookNameError` listing the valid forms."""
    if isinstance(patterns, str):
        patterns = [patterns]
    valid = hook_names(num_layers, plan)
    valid_set = set(valid)
    out: set[str] = set()
    for p in patterns:
        if not isinstance(p, str):
            raise InvalidInputError(f"hook names are strings, got {type(p).__name__} {p!r}")
        if p in valid_set:
            out.add(p)
            continue
        matched = fnmatch.filter(valid, p)
        if not matched:
            sides = sorted({n.split(".")[1] for n in valid if n.startswith("side.")})
            side_help = (f"; with side paths ({', '.join(sides)}): blocks.<l>.side.<name>.<"
                         f"{'|'.join(SIDE_BLOCK_NAMES)}> and side.<name>.dense") if sides else ""
            raise HookNameError(
                f"unknown hook name {p!r} for a {num_layers}-layer tower. Valid names: "
                f"{', '.join(GLOBAL_NAMES)}, and blocks.<0..{num_layers - 1}>.<"
                f"{'|'.join(BLOCK_NAMES)}>{side_help} (wildcards like 'blocks.*.mlp_out' work)."
            )
        out.update(matched)
    return out


def short_name(name: str) -> str:
    """``blocks.3.attn.z`` -> ``attn.z``; ``blocks.3.side.s.attn_out`` -> ``attn_out``; globals unchanged."""
    parts = name.split(".")
    if parts[0] != "blocks":
        return name
    return ".".join(parts[4:] if len(parts) > 3 and parts[2] == "side" else parts[2:])


class Recorder:
    """Applies hooks (``fn(tensor, name) -> tensor | None``) and records the names asked for."""

    def __init__(self, record: set[str], hooks: Mapping[str, Hook], cls_only: bool) -> None:
        self.record = record
        self.hooks = hooks
        self.cls_only = cls_only
        self.cache: dict[str, Tensor] = {}
        #: names whose tensor a hook replaced
        self.replaced: set[str] = set()

    def wants(self, name: str) -> bool:
        return name in self.record or name in self.hooks

    def __call__(self, name: str, t: Tensor) -> Tensor:
        short = short_name(name)
        hook = self.hooks.get(name)
        if hook is not None:
            new = hook(t, name)
            if new is not None and short in READ_ONLY:
                raise InvalidInputError(
                    f"{name!r} is read-only: it is derived and not used downstream, so a hook on it may observe "
                    "it (return None) but not replace it; hook attn.pattern to change attention"
                )
            if new is not None:
                if not isinstance(new, Tensor) or new.shape != t.shape:
                    got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                    raise InvalidInputError(f"hook on {name!r} returned {got}, expected a tensor of shape "
                                            f"{tuple(t.shape)}")
                if new is not t:
                    self.replaced.add(name)
                t = new
        if name in self.record:
            rec = t
            dense = name == "dense" or name.endswith(".dense")
            if self.cls_only and rec.dim() >= 3 and short not in _NOT_QUERY_INDEXED and not dense:
                # query axis: dim 2 for [B,H,N,N] patterns, else dim 1
                rec = rec[:, :, 0] if short == "attn.pattern" else rec[:, 0]
                rec = rec.clone()  # do not keep the full [B, N, ...] storage alive
            self.cache[name] = rec
        return t
