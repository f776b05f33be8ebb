"""Running the forward for a decomposition: which tensors it records, and how they are read out by the pooling head.

* CLS pooling reads one token: each head's contribution at the CLS query is recorded as the forward runs
  (``attn.cls_contrib``, or ``attn.z`` at CLS without the spatial split), and every other component at CLS.
* A head that reads every token (attention pooling, a mean) knows its pooling weights only once the forward
  has ended. Without the spatial split the forward records each head's output and each component at every
  token, read out at the end; the spatial split is built by replaying each block's attention from its recorded
  input and kept factored (:mod:`cliplens.decomposition.replay`); under a plan or hooks, which a replay must not
  repeat, the forward records each layer's pattern and values instead.
* A sub-LayerNorm over the concatenated heads (EVA02) is frozen at the query tokens' statistics
  (:class:`~cliplens.decomposition.algebra.FrozenSubNorm`).

:func:`decompose` returns a :class:`~cliplens.decomposition.decomposition.Decomposition`; the store's writer
reads layers with :func:`read_layer` by the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from cliplens.core.forward import run_vision
from cliplens.core.hooks import Hook, resolve_names
from cliplens.core.plan import Plan
from cliplens.core.trunk import needs_blocks
from cliplens.core.view import VisionView
from cliplens.decomposition.algebra import FrozenSubNorm
from cliplens.decomposition.decomposition import Decomposition, resolve_layers
from cliplens.errors import InvalidInputError

__all__ = ["decompose", "query_outputs", "read_heads", "read_layer"]


def _compose(first: Hook | None, then: Callable[[Tensor, str], None]) -> Hook:
    """Run the user's hook (may replace the tensor), then an observer on the result."""

    def hook(t: Tensor, name: str) -> Tensor | None:
        new = first(t, name) if first is not None else None
        then(t if new is None else new, name)
        return new

    return hook


def decompose(
    view: VisionView,
    pixel_values: Tensor,
    *,
    spatial: bool = True,
    layers: Iterable[int] | int | None = None,
    last: int | None = None,
    dtype: torch.dtype | None = None,
    plan: Plan | None = None,
    hooks: Mapping[str, Hook] | None = None,
) -> Decomposition:
    """Run the forward once and return the exact :class:`Decomposition` of its embedding.

    ``layers`` (layer indices; negatives count from the end) or ``last=k`` (the last ``k`` layers) selects the
    layers whose attention is split per head (and per token when ``spatial``); neither: all. Other layers keep
    one attention term each. (An int ``layers=k`` used to mean the last ``k``: it is refused, naming ``last=``.) ``dtype`` (default float32) is the
    precision of the stored terms and of every joint-space computation. ``plan`` and ``hooks`` run
    the forward with other attention or edits (see :func:`cliplens.core.forward.run_vision`); the
    decomposition is that forward's, and it raises if the hooks broke the additive structure
    (e.g. replacing ``resid_post``).

    For CLS pooling every component is recorded at the CLS token only, and only the CLS row of each attention
    pattern is computed. Heads that read every token (attention and mean pooling) record the components at
    every token and read them out with the head's frozen weights; a spatial decomposition then needs each head
    layer's full attention pattern (``[B, H, N, N]`` per layer: keep batches small).
    """
    L = view.num_layers
    if L == 0 and (layers is not None or last is not None):  # an opaque trunk (ResNet): nothing to split per layer
        needs_blocks("a decomposition over chosen layers", view)
    head_layers = resolve_layers(layers, L, last=last)
    dtype = dtype or torch.float32
    head = view.head
    cls_only = head.reads_cls_only
    if spatial and not cls_only and L and not hooks and (plan is None or plan.is_vanilla(L)):
        return _factored(view, pixel_values, head_layers, dtype, plan)
    blocks = (plan or Plan()).resolve(L)
    user: dict[str, Hook] = {}
    for pattern, fn in (hooks or {}).items():
        for n in resolve_names([pattern], L, blocks):
            user[n] = fn
    taps: dict[str, list[Tensor]] = {}

    def keep(t: Tensor, name: str) -> None:
        if cls_only and name.endswith("attn.z"):
            t = t[:, 0].clone()  # the CLS query's row only: do not keep [B, N, H, dh] alive
        taps.setdefault(name, []).append(t)

    if cls_only:
        wanted = ["attn.cls_contrib"] if spatial else ["attn.z"]
    else:
        wanted = ["attn.pattern", "attn.v"] if spatial else ["attn.z"]
    all_hooks = dict(user)
    for i in head_layers:
        for tap in wanted:
            name = f"blocks.{i}.{tap}"
            all_hooks[name] = _compose(user.get(name), keep)
    names = ["embed", "final"] + (["blocks.*.mlp_out", "blocks.*.attn_out"] if L else [])  # L = 0: an opaque trunk
    with torch.no_grad():
        out = run_vision(view, pixel_values, plan=plan, names=names, cls_only=cls_only, hooks=all_hooks)
    c = out.cache
    final = c["final"][:, None] if cls_only else c["final"]  # [B, N_read, D]
    readout = head.readout(final)
    nonlinear = readout.nonlinear if readout.nonlinear is not None else torch.zeros_like(out.embedding)
    readout.nonlinear = None
    w = readout.weights  # [B, R, N_read]

    def read(t: Tensor) -> Tensor:  # one component at the tokens the head reads -> [B, R, D]
        if cls_only:
            return (w[:, :, 0, None] * t[:, None]).to(dtype)
        return torch.einsum("brn,bnd->brd", w.to(t.dtype), t).to(dtype)

    embed_term = read(c["embed"])
    mlp_out = torch.stack([read(c[f"blocks.{i}.mlp_out"]) for i in range(L)], 2) if L else \
        embed_term.new_zeros(*embed_term.shape[:2], 0, embed_term.shape[-1])
    attn_out = torch.stack([read(c[f"blocks.{i}.attn_out"]) for i in range(L)], 2) if L else mlp_out.clone()
    B, R = embed_term.shape[:2]
    tokens = (view.num_prefix_tokens + out.grid[0] * out.grid[1],) if spatial else ()
    sub_ln = any(view.blocks[i].attn_norm is not None for i in head_layers)
    # each layer's values written into one tensor and its taps dropped as it is read: the peak holds the recorded
    # taps and this tensor once, not a list of per-layer copies and their stack
    heads = embed_term.new_empty(B, R, len(head_layers), *tokens, view.num_heads, view.head_dim)
    shift = embed_term.new_zeros(B, R, len(head_layers), embed_term.shape[-1]) if sub_ln else None
    for j, i in enumerate(head_layers):
        h, sh = read_layer(view, taps, i, w, cls_only, spatial)
        heads[:, :, j] = h
        del h
        if shift is not None and sh is not None:
            shift[:, :, j] = sh
        for tap in wanted:
            taps.pop(f"blocks.{i}.{tap}", None)
    # a block without its residual connection cuts every earlier site off the embedding: their terms are 0
    cut = max((i for i, b in enumerate(blocks) if not b.residual), default=-1)
    if cut >= 0:
        embed_term.zero_()
        mlp_out[:, :, :cut] = 0
        attn_out[:, :, :cut] = 0
        for j, layer in enumerate(head_layers):
            if layer < cut:
                heads[:, :, j] = 0
                if shift is not None:
                    shift[:, :, j] = 0
    settings: dict[str, Any] = {"input_size": list(pixel_values.shape[-2:])}
    if plan is not None and not plan.is_vanilla(L):
        settings["plan"] = plan.describe(L)
    if cut > 0:
        settings["cut_before"] = cut
    if hooks:
        settings["hooks"] = sorted(user)
    if view.trunk is not None:
        settings["not_decomposed"] = view.trunk.description
    dec = Decomposition(
        view, embed_term=embed_term, mlp_out=mlp_out, attn_out=attn_out, heads=heads, head_layers=head_layers,
        spatial=spatial, readout=readout, final=final.to(dtype), nonlinear=nonlinear.to(dtype),
        embedding=out.embedding, grid=out.grid, settings=settings, shift=shift,
    )
    if out.replaced:
        err = float(dec.relative_error().max())
        if not err <= dec.tolerance:
            raise InvalidInputError(
                f"hooks replaced {', '.join(sorted(out.replaced))}, and the parts no longer sum to the embedding "
                f"(relative error {err:.2g}). A decomposition stays exact when hooks edit q, k, v, attention "
                "patterns or whole components (embed, attn_out of layers without per-head terms, mlp_out, "
                "attn.z with spatial=False); edits of the residual stream or, for spatial decompositions, of "
                "attn.z or attn_out break it."
            )
    return dec


def _factored(view: VisionView, pixel_values: Tensor, head_layers: tuple[int, ...], dtype: torch.dtype,
              plan: Plan | None) -> Decomposition:
    """The spatial decomposition of a tower whose head reads every token, its split factored
    (:mod:`cliplens.decomposition.replay`)."""
    from cliplens.decomposition.replay import replay_split

    f = replay_split(view, pixel_values, head_layers, dtype, plan)
    settings: dict[str, Any] = {"input_size": list(pixel_values.shape[-2:])}
    return Decomposition(
        view, embed_term=f.embed_term, mlp_out=f.mlp_out, attn_out=f.attn_out, head_rows=f.head_rows,
        head_values=f.head_values, head_layers=head_layers, spatial=True, readout=f.readout, final=f.final,
        nonlinear=f.nonlinear, embedding=f.embedding, grid=f.grid, settings=settings, shift=f.shift,
    )


def query_outputs(taps: dict[str, list[Tensor]], layer: int, cls_only: bool, spatial: bool) -> Tensor:
    """``[B, Nq, H, dh]``: one layer's heads' outputs (before the out-projection) at the query tokens the pooling
    head reads (the CLS token alone for CLS pooling), from what the forward recorded (see :func:`read_heads`)."""
    p = f"blocks.{layer}."
    if cls_only:
        t = taps[p + ("attn.cls_contrib" if spatial else "attn.z")][-1]
        return (t.sum(1) if spatial else t)[:, None]
    if not spatial:
        return taps[p + "attn.z"][-1]
    pattern, v = taps[p + "attn.pattern"][-1], taps[p + "attn.v"][-1]
    return torch.einsum("bhnm,bmhj->bnhj", pattern, v)


def read_layer(view: VisionView, taps: dict[str, list[Tensor]], layer: int, w: Tensor, cls_only: bool,
               spatial: bool) -> tuple[Tensor, Tensor | None]:
    """One head layer's head-space values (:func:`read_heads`) and, for a block with a sub-LayerNorm over its
    concatenated heads, its shift read out ``[B, R, D]`` (else ``None``): the sub-LN frozen at the query tokens'
    statistics (:class:`~cliplens.decomposition.algebra.FrozenSubNorm`) scales the values by ``γ_s/σ_n``."""
    blk = view.blocks[layer]
    if blk.attn_norm is None:
        return read_heads(taps, layer, w, cls_only, spatial), None
    frozen = FrozenSubNorm.at(blk, query_outputs(taps, layer, cls_only, spatial))
    values = frozen.heads(read_heads(taps, layer, frozen.weights(w), cls_only, spatial))
    return values, frozen.shift(w.to(values.dtype))


def read_heads(taps: dict[str, list[Tensor]], layer: int, w: Tensor, cls_only: bool, spatial: bool) -> Tensor:
    """One head layer's head-space values read out with the head's token weights ``w`` ``[B, R, N]``, from what
    the forward recorded (``taps``: name -> tensors; for CLS pooling ``attn.cls_contrib`` or ``attn.z`` at the CLS
    query, else ``attn.pattern`` and ``attn.v``, or ``attn.z``): ``[B, R, N, H, dh]`` (spatial) or ``[B, R, H, dh]``."""
    p = f"blocks.{layer}."
    if cls_only:  # recorded at the CLS query: [B, N, H, dh] per source token, or [B, H, dh]
        t = taps[p + ("attn.cls_contrib" if spatial else "attn.z")][-1]
        w0 = w[:, :, 0]
        if bool((w0 == 1).all()):  # CLS pooling reads the CLS token with weight 1: a view, no copy
            return t[:, None]
        return w0.reshape(*w.shape[:2], *(1,) * (t.dim() - 1)) * t[:, None]
    if not spatial:
        z = taps[p + "attn.z"][-1]  # [B, N, H, dh]
        return torch.einsum("brn,bnhj->brhj", w.to(z.dtype), z)
    pattern, v = taps[p + "attn.pattern"][-1], taps[p + "attn.v"][-1]  # [B, H, N, M], [B, M, H, dh]
    rows = torch.einsum("brn,bhnm->brhm", w.to(pattern.dtype), pattern)  # each readout's weighted pattern row
    return rows.permute(0, 1, 3, 2)[..., None] * v[:, None]  # [B, R, M, H, dh]
