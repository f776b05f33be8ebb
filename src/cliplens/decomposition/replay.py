"""The spatial split of a pooling head that reads every token, held factored and built by replaying attention.

A CLS head reads one token, so the forward can record each head's contribution at that token as it runs
(``attn.cls_contrib``). A learned probe (SigLIP's MAP head, PE-Core) or a mean reads every token with weights
``ω`` ``[B, R, N]`` known only once the forward has ended. Recording every layer's attention pattern (``[B, H, N,
N]``) and values until then, and then reading them out per pooling head, holds ``R`` × the spatial split
(``[B, R, L, N, H, dh]``: 700 MiB for SigLIP B/16 at batch 8).

Here the forward records only each block's input ``x_l`` (one ``[B, N, D]`` per layer). Once ``ω`` is known,
each block's attention is run again from ``x_l`` (its ``ln_1``, q, k, v and softmax pattern ``P``, as the
forward computed them), and the split is kept *factored*:

    rows[r, h, m] = Σ_n ω[r, n] P[h, n, m],        values[m, h] = v_h(ln_1(x_l))_m,

so that head ``h`` carries source token ``m`` into readout ``r`` as ``rows[r, h, m] · values[m, h]``
(:attr:`cliplens.decomposition.Decomposition.factored`). The layer's attention output read out is
``ls ⊙ (W_O · Σ_m rows[r, ·, m] values[m] + w_r b_O)``; its MLP output read out is what is left of the block:
``ρ(x_{l+1}) − ρ(x_l) − ρ(attn_l)``. The components therefore sum to the read-out last residual stream exactly
(the sum telescopes), and each MLP term is what the block added to the stream, rounding included. A sub-LayerNorm
over the concatenated heads (EVA02, PE-Core) is frozen per token from the replayed ``z = P v``, as in the forward
(:class:`~cliplens.decomposition.algebra.FrozenSubNorm`).

The replay costs each block's q, k, v projections and pattern once more (about a quarter of the forward) and
holds, beyond the result, one ``[B, N, D]`` per layer: the spatial split's peak memory stays within twice the
plain forward's (``benchmarks/bench_decompose.py``). It is used for the model's own attention without hooks;
under a plan or hooks (which may change attention in ways a replay must not repeat) the forward records the
patterns instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cliplens.core.attention import AttentionContext, get_attention
from cliplens.core.forward import _qkv, run_vision
from cliplens.core.heads import Readout
from cliplens.core.plan import Plan
from cliplens.core.view import BlockView, VisionView
from cliplens.decomposition.algebra import FrozenSubNorm

__all__ = ["FactoredSplit", "replay_split"]

#: images replayed together (their q, k, v and patterns are the replay's transient memory)
REPLAY_CHUNK = 4


@dataclass
class FactoredSplit:
    """What :func:`replay_split` returns (per-image tensors in the decomposition's dtype)."""

    embedding: Tensor
    grid: tuple[int, int]
    readout: Readout
    final: Tensor
    nonlinear: Tensor
    embed_term: Tensor  # [B, R, D]
    attn_out: Tensor  # [B, R, L, D]
    mlp_out: Tensor  # [B, R, L, D]
    head_rows: Tensor  # [B, R, Lh, H, N]
    head_values: Tensor  # [B, Lh, N, H, dh]
    shift: Tensor | None  # [B, R, Lh, D] (towers with a sub-LN)


def replay_split(view: VisionView, pixel_values: Tensor, head_layers: Sequence[int], dtype: torch.dtype,
                 plan: Plan | None = None) -> FactoredSplit:
    """Run the forward once (recording each block's input), then replay each block's attention (module docs).
    ``plan`` may set the positional rule; its blocks must be the model's own (:meth:`Plan.is_vanilla`)."""
    L = view.num_layers
    assert plan is None or plan.is_vanilla(L), "a replay repeats the model's own attention only"
    with torch.no_grad():
        out = run_vision(view, pixel_values, plan=plan, names=["final", "blocks.*.resid_pre"])
        c = out.cache
        final = c.pop("final")
        readout = view.head.readout(final)
        nonlinear = readout.nonlinear if readout.nonlinear is not None else torch.zeros_like(out.embedding)
        readout.nonlinear = None
        w = readout.weights.to(dtype)  # [B, R, N]
        B, R, N = w.shape
        H, dh, D = view.num_heads, view.head_dim, view.width

        def read(t: Tensor) -> Tensor:
            return torch.einsum("brn,bnd->brd", w, t.to(dtype))

        where = {layer: j for j, layer in enumerate(head_layers)}
        embed_term = read(c["blocks.0.resid_pre"])
        attn_out = w.new_empty(B, R, L, D)
        mlp_out = w.new_empty(B, R, L, D)
        # untouched until written, so these pages become resident only as each block's input is freed
        rows = w.new_empty(B, R, len(head_layers), H, N)
        values = w.new_empty(B, len(head_layers), N, H, dh)
        sub_ln = any(view.blocks[i].attn_norm is not None for i in head_layers)
        shift = w.new_zeros(B, R, len(head_layers), D) if sub_ln else None
        vanilla = get_attention("vanilla")
        read_x = embed_term
        for i, blk in enumerate(view.blocks):
            x = c.pop(f"blocks.{i}.resid_pre")
            j = where.get(i)
            # a few images at a time: the replay's transient (q, k, v and [H, N, N] patterns) stays small
            for b0 in range(0, B, REPLAY_CHUNK):
                b1 = min(B, b0 + REPLAY_CHUNK)
                r, v, a, sh = _replay_block(blk, i, x[b0:b1], w[b0:b1], out.grid, vanilla, dtype)
                attn_out[b0:b1, :, i] = a
                if j is not None:
                    rows[b0:b1, :, j] = r
                    values[b0:b1, j] = v
                    if shift is not None and sh is not None:
                        shift[b0:b1, :, j] = sh
                del r, v, a, sh
            del x
            read_next = read(c[f"blocks.{i + 1}.resid_pre"] if i + 1 < L else final)
            mlp_out[:, :, i] = read_next - read_x - attn_out[:, :, i]
            read_x = read_next
    return FactoredSplit(embedding=out.embedding, grid=out.grid, readout=readout, final=final.to(dtype),
                         nonlinear=nonlinear.to(dtype), embed_term=embed_term, attn_out=attn_out, mlp_out=mlp_out,
                         head_rows=rows, head_values=values, shift=shift)


def _replay_block(blk: BlockView, layer: int, x: Tensor, w: Tensor, grid: tuple[int, int], strategy,
                  dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """One block's attention replayed from its input ``x`` ``[b, N, D]``: ``(rows [b, R, H, N], values [b, N, H,
    dh], the attention output read out [b, R, D], the sub-LN shift read out [b, R, D] or None)``."""
    B, N = x.shape[:2]
    h = blk.ln_1(x)
    q, k, v = _qkv(blk, h, B, N, grid)
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if qh.dtype in (torch.float32, torch.float64):  # the vanilla softmax, scaled and normalised in place
        pattern = torch.matmul(qh, kh.transpose(-1, -2)).mul_(qh.shape[-1] ** -0.5)
        torch.softmax(pattern, -1, out=pattern)  # [b, H, N, N]
    else:  # half precision: the strategy's own (scores in float32)
        pattern = strategy.pattern(qh, kh, vh, AttentionContext(layer=layer, block=blk, grid=grid, x=h))
    del q, k, h, qh, kh
    wl, frozen = w, None
    if blk.attn_norm is not None:  # the sub-LN's per-token statistics, from the outputs at every token
        frozen = FrozenSubNorm.at(blk, torch.matmul(pattern, vh).transpose(1, 2))
        wl = frozen.weights(w)
    del vh
    # each readout's weighted pattern row: [b, 1, R, N] @ [b, H, N, N] -> [b, H, R, N] (no copy of the pattern)
    rows = torch.matmul(wl.to(pattern.dtype)[:, None], pattern).transpose(1, 2).to(dtype)  # [b, R, H, N]
    del pattern
    values = v.to(dtype)
    if frozen is not None:
        values = frozen.heads(values)
    read_z = torch.einsum("brhm,bmhj->brhj", rows, values).reshape(*rows.shape[:2], -1)  # [b, R, H·dh]
    a = read_z @ blk.out_weight.detach().to(dtype).t()
    shift = None
    if frozen is not None:
        if blk.ls_1 is not None:
            a = a * blk.ls_1.detach().to(dtype)
        shift = frozen.shift(w)  # the rest of the layer's output, layer-scale and bias included
        a = a + shift
    else:
        if blk.out_bias is not None:
            a = a + w.sum(-1)[..., None] * blk.out_bias.detach().to(dtype)
        if blk.ls_1 is not None:
            a = a * blk.ls_1.detach().to(dtype)
    return rows, values, a, shift
