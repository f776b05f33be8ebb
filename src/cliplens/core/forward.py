"""One functional forward over a :class:`~cliplens.core.view.VisionView`, run as a per-block plan.

``embed → block(plan_l) for each l → head`` (the pooling head, :mod:`cliplens.core.heads`) (see :mod:`cliplens.core.plan`). With the default plan
it equals the source library's image forward (tested on random weights for every supported
family); the *head* also carries every token through ``ln_post`` and the projection when asked
(the dense output). Only the tensors named in ``names`` are recorded; ``hooks`` may replace
tensors on the fly (:mod:`cliplens.core.hooks` lists the names).

Taps are computed from the attention actually used: ``attn.cls_pattern`` and ``attn.cls_contrib``
come from the block's strategy, after any hook on ``attn.q``/``attn.k``/``attn.v`` or
``attn.pattern``, so a decomposition taken under edited attention still sums to the embedding of
that same forward.

**Gradients.** :func:`run_vision` follows the ambient autograd mode: run it with gradients
enabled (the default outside ``torch.no_grad()``) to differentiate the embedding (or a dense
output) with respect to the input pixels or to any recorded tensor::

    x.requires_grad_(True)
    out = run_vision(view, x, names=["blocks.11.attn.pattern"])   # record full tensors (cls_only=False)
    score = out.embedding @ text
    grad_x, grad_pattern = torch.autograd.grad(score.sum(), [x, out["blocks.11.attn.pattern"]])

The adapters' inference entry points (``encode_image``, ``decompose``, …) run without autograd.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention import AttentionContext, AttentionStrategy
from cliplens.core.hooks import Hook, Recorder, resolve_names
from cliplens.core.plan import BlockPlan, Plan, SidePath
from cliplens.core.view import BlockView, VisionView, apply_activation, apply_activation_
from cliplens.errors import InvalidInputError


@dataclass
class ForwardOutput:
    """Result of :func:`run_vision`: the embedding, the recorded tensors, the token grid."""

    embedding: Tensor
    cache: dict[str, Tensor] = field(default_factory=dict)
    grid: tuple[int, int] = (0, 0)
    #: names whose tensors a hook replaced
    replaced: set[str] = field(default_factory=set)

    def __getitem__(self, name: str) -> Tensor:
        return self.cache[name]

    @property
    def dense(self) -> Tensor:
        """``[B, N, E]`` every main-stream token through ``ln_post`` and the projection (CLS first)."""
        return self.cache["dense"]


def positional_embedding_for(view: VisionView, grid: tuple[int, int], mode: str | None = None) -> Tensor:
    """The positional embedding for a ``grid`` of patches.

    At the native grid it is the model's own. For another grid the patch part is resized as an
    image (``mode``, one of :data:`cliplens.core.plan.POSITIONAL_MODES`, which says whose rule each is; ``None``:
    the model's own rule, ``view.positional``; ``align_corners=False``) from the native grid to the new one (in
    float32, or float64 for a float64 table), and the CLS position is kept. The model's own table is never
    modified.
    """
    pos = view.positional_embedding
    native = view.grid_size
    mode = mode or view.positional
    if tuple(grid) == tuple(native):
        return pos
    d = pos.shape[-1]
    k = view.num_prefix_tokens
    cls_pos, patch_pos = pos[:k], pos[k:]
    patch_pos = patch_pos.reshape(1, native[0], native[1], d).permute(0, 3, 1, 2)
    patch_pos = patch_pos if patch_pos.dtype == torch.float64 else patch_pos.float()
    if mode == "bicubic_dino":  # the scale factor (n + 0.1) / n0, not the size: DINO's sampling points
        scale = ((grid[0] + 0.1) / native[0], (grid[1] + 0.1) / native[1])
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", align_corners=False,
                                  recompute_scale_factor=False)
    else:
        antialias = mode.endswith("_antialias")
        patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode=mode.removesuffix("_antialias"),
                                  align_corners=False, antialias=antialias)
    patch_pos = patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(-1, d)
    return torch.cat([cls_pos, patch_pos], dim=0)


def project_tokens(view: VisionView, x: Tensor) -> Tensor:
    """Every token through the pooling head on its own (:meth:`cliplens.core.heads.PoolHead.dense`; for CLS
    pooling: ``ln_post`` with each token's statistics, then the projection): ``[B, N, D]`` -> ``[B, N, E]``."""
    return view.head.dense(x)


def _qkv(blk: BlockView, h: Tensor, B: int, N: int, grid: tuple[int, int] = (0, 0)) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v ``[B, N, H, dh]`` (biases included); with a rotary embedding, q and k of the patch tokens are
    rotated here, before the ``attn.q``/``attn.k`` hooks, so every strategy and every method that reads the
    recorded q and k sees them as the source's attention does."""
    H, dh = blk.num_heads, blk.head_dim
    if blk.qkv_weight is not None:
        q, k, v = F.linear(h, blk.qkv_weight, blk.qkv_bias).view(B, N, 3, H, dh).unbind(2)
    else:
        q, k, v = (F.linear(h, blk.q_weight, blk.q_bias).view(B, N, H, dh),
                   F.linear(h, blk.k_weight, blk.k_bias).view(B, N, H, dh),
                   F.linear(h, blk.v_weight, blk.v_bias).view(B, N, H, dh))
    if blk.rope is not None:
        q, k = blk.rope(q, grid), blk.rope(k, grid)
    return q, k, v


def _out_proj(blk: BlockView, z: Tensor) -> Tensor:
    """``[B, N, H, dh]`` -> ``[B, N, D]`` through the sub-LayerNorm over the concatenated heads (where the block
    has one), the out-projection (bias) and the layer-scale."""
    B, N = z.shape[:2]
    cat = z.reshape(B, N, -1)
    if blk.attn_norm is not None:
        cat = blk.attn_norm(cat)
    a = F.linear(cat, blk.out_weight, blk.out_bias)
    return a if blk.ls_1 is None else a * blk.ls_1.to(a.dtype)


def _mlp(blk: BlockView, h2: Tensor, rec: Recorder | None, prefix: str) -> Tensor:
    pre = F.linear(h2, blk.fc1_weight, blk.fc1_bias)
    if blk.gate_weight is not None:  # gated (SwiGLU): act(gate·h) ⊙ (fc1·h), then the optional norm
        hid = apply_activation(F.linear(h2, blk.gate_weight, blk.gate_bias), blk.activation) * pre
    else:
        # the pre-activation has no hook name, so the activation may run in place (not under autograd)
        inplace = not (torch.is_grad_enabled() and pre.requires_grad)
        hid = apply_activation_(pre, blk.activation) if inplace else apply_activation(pre, blk.activation)
    if blk.mlp_norm is not None:
        hid = blk.mlp_norm(hid)
    if rec is not None and rec.wants(prefix + "mlp.hidden"):
        hid = rec(prefix + "mlp.hidden", hid)
    m = F.linear(hid, blk.fc2_weight, blk.fc2_bias)
    return m if blk.ls_2 is None else m * blk.ls_2.to(m.dtype)


def _attend(
    strategy: AttentionStrategy, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext, rec: Recorder,
    prefix: str, cls_taps: bool,
) -> Tensor:
    """Run one attention (main or side) -> ``z`` ``[B, N, H, dh]``, recording its taps."""
    pattern_name = prefix + "attn.pattern"
    cls_pat_name, contrib_name = prefix + "attn.cls_pattern", prefix + "attn.cls_contrib"
    want_cls = cls_taps and (rec.wants(cls_pat_name) or rec.wants(contrib_name))
    if rec.wants(pattern_name):
        pattern = rec(pattern_name, strategy.pattern(q, k, v, ctx))
        z = torch.matmul(pattern, v)
        alpha = pattern[:, :, 0] if want_cls else None
    else:
        z = strategy.output(q, k, v, ctx)
        alpha = None
        if want_cls:
            alpha = strategy.pattern(q, k, v, ctx.with_rows(slice(0, 1)))[:, :, 0]
    if alpha is not None:
        if rec.wants(cls_pat_name):
            rec(cls_pat_name, alpha)
        if rec.wants(contrib_name):
            rec(contrib_name, (alpha.unsqueeze(-1) * v).transpose(1, 2))  # [B, N, H, dh]
    return z.transpose(1, 2)  # [B, N, H, dh]


def _side_step(
    path: SidePath, blk: BlockView, ctx: AttentionContext, q: Tensor, k: Tensor, v: Tensor,
    x_in: Tensor, sides: dict[str, Tensor], rec: Recorder, prefix: str,
) -> None:
    p = f"{prefix}side.{path.name}."
    stream = sides.get(path.name)
    if stream is None:
        stream = x_in if path.start == "residual" else torch.zeros_like(x_in)
    z = _attend(path.attention, q, k, v, ctx, rec, p, cls_taps=False)  # type: ignore[arg-type]
    if rec.wants(p + "attn.z"):
        z = rec(p + "attn.z", z)
    a = _out_proj(blk, z)
    if rec.wants(p + "attn_out"):
        a = rec(p + "attn_out", a)
    stream = stream + a
    if path.mlp:
        stream = stream + _mlp(blk, blk.ln_2(stream), None, p)
    if rec.wants(p + "resid_post"):
        stream = rec(p + "resid_post", stream)
    sides[path.name] = stream


def _block(
    i: int, blk: BlockView, bp: BlockPlan, x: Tensor, grid: tuple[int, int], rec: Recorder,
    sides: dict[str, Tensor],
) -> Tensor:
    p = f"blocks.{i}."
    B, N = x.shape[:2]
    if rec.wants(p + "resid_pre"):
        x = rec(p + "resid_pre", x)
    h = blk.ln_1(x)
    if rec.wants(p + "ln_1"):
        h = rec(p + "ln_1", h)
    q, k, v = _qkv(blk, h, B, N, grid)
    if rec.wants(p + "attn.q"):
        q = rec(p + "attn.q", q)
    if rec.wants(p + "attn.k"):
        k = rec(p + "attn.k", k)
    if rec.wants(p + "attn.v"):
        v = rec(p + "attn.v", v)
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, N, dh]
    del q, k, v
    ctx = AttentionContext(layer=i, block=blk, grid=grid, x=h)
    for path in bp.side:
        _side_step(path, blk, ctx, qh, kh, vh, x, sides, rec, p)
    z = _attend(bp.attention, qh, kh, vh, ctx, rec, p, cls_taps=True)  # type: ignore[arg-type]
    del qh, kh, vh, h, ctx
    if rec.wants(p + "attn.z"):
        z = rec(p + "attn.z", z)
    a = _out_proj(blk, z)
    del z
    if rec.wants(p + "attn_out"):
        a = rec(p + "attn_out", a)
    x = x + a if bp.residual else a
    del a
    if rec.wants(p + "resid_mid"):
        x = rec(p + "resid_mid", x)
    if bp.mlp:
        h2 = blk.ln_2(x)
        if rec.wants(p + "ln_2"):
            h2 = rec(p + "ln_2", h2)
        m = _mlp(blk, h2, rec, p)
        del h2
        if rec.wants(p + "mlp_out"):
            m = rec(p + "mlp_out", m)
        x = x + m
        del m
    elif rec.wants(p + "mlp_out"):
        rec(p + "mlp_out", torch.zeros_like(x))
    if rec.wants(p + "resid_post"):
        x = rec(p + "resid_post", x)
    return x


def embed(view: VisionView, pixel_values: Tensor, positional: str | None = None) -> tuple[Tensor, tuple[int, int]]:
    """Patch embedding, CLS token, positions (interpolated for other grids), ``ln_pre``; with an opaque trunk
    (:mod:`cliplens.core.trunk`) the trunk's tokens replace the patch embedding and the CLS token."""
    x = pixel_values.to(device=view.device, dtype=view.dtype)
    B = x.shape[0]
    ph, pw = view.patch_size
    grid = (x.shape[-2] // ph, x.shape[-1] // pw)
    if view.trunk is not None:
        x = view.trunk(x)
        if x.shape[1] != view.num_prefix_tokens + grid[0] * grid[1]:
            raise InvalidInputError(
                f"the image tower's trunk turned a {tuple(pixel_values.shape[-2:])} input into {x.shape[1]} tokens, "
                f"not {view.num_prefix_tokens} + {grid[0]}×{grid[1]}: give an input whose sides are multiples of "
                f"{ph} pixels")
        x = x + positional_embedding_for(view, grid, positional).to(x.dtype)
        return (view.ln_pre(x) if view.ln_pre is not None else x), grid
    x = F.conv2d(x, view.patch_weight, view.patch_bias, stride=(ph, pw))  # [B, D, gh, gw]
    x = x.flatten(2).transpose(1, 2)  # [B, gh*gw, D]
    if view.class_embedding is not None:
        x = torch.cat([view.class_embedding.to(x.dtype).expand(B, 1, -1), x], dim=1)
    x = x + positional_embedding_for(view, grid, positional).to(x.dtype)
    if view.ln_pre is not None:
        x = view.ln_pre(x)
    return x, grid


def run_vision(
    view: VisionView,
    pixel_values: Tensor,
    *,
    plan: Plan | None = None,
    names: Iterable[str] = (),
    hooks: Mapping[str, Hook] | None = None,
    cls_only: bool = False,
) -> ForwardOutput:
    """Run the image tower functionally under ``plan``, recording ``names`` and applying ``hooks``.

    ``pixel_values`` is a preprocessed ``[B, C, H, W]`` batch; H and W must be multiples of the
    patch size (other sizes than the native one interpolate the positional embedding). Add
    ``"dense"`` (and ``"side.{name}.dense"``) to ``names`` for the per-token outputs.
    """
    L = view.num_layers
    plan = plan or Plan()
    blocks = plan.resolve(L)
    record = resolve_names(names, L, blocks)
    hook_map: dict[str, Hook] = {}
    for pattern, fn in (hooks or {}).items():
        for n in resolve_names([pattern], L, blocks):
            hook_map[n] = fn
    rec = Recorder(record, hook_map, cls_only)

    x, grid = embed(view, pixel_values, plan.positional)
    if rec.wants("embed"):
        x = rec("embed", x)
    sides: dict[str, Tensor] = {}
    for i, (blk, bp) in enumerate(zip(view.blocks, blocks, strict=True)):
        x = _block(i, blk, bp, x, grid, rec, sides)

    if rec.wants("final"):
        x = rec("final", x)
    out = view.head(x, rec)
    if rec.wants("embedding"):
        out = rec("embedding", out)
    if rec.wants("dense"):
        rec("dense", project_tokens(view, x))
    for name, stream in sides.items():
        if rec.wants(f"side.{name}.dense"):
            rec(f"side.{name}.dense", project_tokens(view, stream))
    return ForwardOutput(embedding=out, cache=rec.cache, grid=grid, replaced=rec.replaced)
