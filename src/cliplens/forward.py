"""One functional forward over a :class:`~cliplens.models.view.VisionView`.

The forward equals the source library's ``encode_image`` (tested on random
weights for every supported family) and records only the tensors the caller
names. Hook names are predictable, TransformerLens-style:

Global:
    ``embed``            ``[B, N, D]``  residual stream after ``ln_pre`` (x_0)
    ``pooled``           ``[B, D]``     CLS token of the last residual stream
    ``ln_post.mean``     ``[B]``        mean of ``pooled`` (frozen by the decomposition)
    ``ln_post.std``      ``[B]``        ``sqrt(var + eps)`` of ``pooled``
    ``embedding``        ``[B, E]``     the image embedding (un-normalised)

Per block ``l`` (prefix ``blocks.{l}.``):
    ``resid_pre``        ``[B, N, D]``
    ``ln_1``             ``[B, N, D]``
    ``attn.q`` ``attn.k`` ``attn.v``   ``[B, N, H, dh]``  (biases included)
    ``attn.pattern``     ``[B, H, N, N]``  full attention (forces explicit attention)
    ``attn.cls_pattern`` ``[B, H, N]``     the CLS query's row only (cheap)
    ``attn.z``           ``[B, N, H, dh]`` per-head output before the out-projection
    ``attn.cls_contrib`` ``[B, N, H, dh]`` α(CLS→m)·v_m per source token m and head:
                         the head-space direct contributions to the CLS output
                         (sums over m to ``attn.z`` at CLS)
    ``attn_out``         ``[B, N, D]``  attention output (out-proj bias and layer-scale included)
    ``resid_mid``        ``[B, N, D]``
    ``ln_2``             ``[B, N, D]``
    ``mlp.hidden``       ``[B, N, Dm]`` after the activation
    ``mlp_out``          ``[B, N, D]``  MLP output (layer-scale included)
    ``resid_post``       ``[B, N, D]``

Names accept ``*`` wildcards (``blocks.*.mlp_out``). With ``cls_only=True``
every per-token tensor is recorded at the CLS query position only (the token
axis is dropped), which is what the decomposition needs and keeps memory flat.

Hooks (``hooks={name: fn}``) may replace a tensor on the fly:
``fn(tensor, name) -> tensor | None`` (``None`` keeps it). Hooking
``attn.pattern`` switches that block to explicit attention so the edited
pattern is used. ``attn.cls_pattern``, ``attn.cls_contrib`` and the
``ln_post`` statistics are read-only: hooks on them may observe (return
``None``) but not replace them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.attention import AttentionContext, get_attention
from cliplens.models.view import VisionView, apply_activation_

Hook = Callable[[Tensor, str], "Tensor | None"]

GLOBAL_NAMES = ("embed", "pooled", "ln_post.mean", "ln_post.std", "embedding")
BLOCK_NAMES = (
    "resid_pre", "ln_1", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.cls_pattern",
    "attn.z", "attn.cls_contrib", "attn_out", "resid_mid", "ln_2", "mlp.hidden", "mlp_out",
    "resid_post",
)
READ_ONLY = ("attn.cls_pattern", "attn.cls_contrib", "ln_post.mean", "ln_post.std")
# recorded tensors whose token axis is *not* a query position (cls_only leaves them alone)
_NOT_QUERY_INDEXED = ("attn.cls_pattern", "attn.cls_contrib")


def hook_names(num_layers: int) -> list[str]:
    """Every recordable name for a tower with ``num_layers`` blocks."""
    return list(GLOBAL_NAMES) + [f"blocks.{i}.{n}" for i in range(num_layers) for n in BLOCK_NAMES]


def resolve_names(patterns: Iterable[str], num_layers: int) -> set[str]:
    """Expand wildcards; unknown names raise ``KeyError`` listing the valid forms."""
    valid = hook_names(num_layers)
    valid_set = set(valid)
    out: set[str] = set()
    for p in patterns:
        if p in valid_set:
            out.add(p)
            continue
        matched = fnmatch.filter(valid, p)
        if not matched:
            raise KeyError(
                f"unknown hook name {p!r} for a {num_layers}-layer tower. Valid names: "
                f"{', '.join(GLOBAL_NAMES)}, and blocks.<0..{num_layers - 1}>.<"
                f"{'|'.join(BLOCK_NAMES)}> (wildcards like 'blocks.*.mlp_out' work)."
            )
        out.update(matched)
    return out


@dataclass
class ForwardOutput:
    """Result of :func:`run_vision`."""

    embedding: Tensor
    cache: dict[str, Tensor] = field(default_factory=dict)
    grid: tuple[int, int] = (0, 0)

    def __getitem__(self, name: str) -> Tensor:
        return self.cache[name]


def positional_embedding_for(view: VisionView, grid: tuple[int, int]) -> Tensor:
    """The positional embedding for a ``grid`` of patches.

    At the native grid it is the model's own. For another grid the patch part is
    resized as an image (bicubic, ``align_corners=False``, no antialiasing) from the
    native grid to the new one, and the CLS position is kept — the same rule as
    Hugging Face's ``interpolate_pos_encoding``.
    """
    pos = view.positional_embedding
    native = view.grid_size
    if tuple(grid) == tuple(native):
        return pos
    d = pos.shape[-1]
    cls_pos, patch_pos = pos[:1], pos[1:]
    patch_pos = patch_pos.reshape(1, native[0], native[1], d).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), size=tuple(grid), mode="bicubic", align_corners=False)
    patch_pos = patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(-1, d)
    return torch.cat([cls_pos, patch_pos], dim=0)


class _Recorder:
    def __init__(self, record: set[str], hooks: Mapping[str, Hook], cls_only: bool) -> None:
        self.record = record
        self.hooks = hooks
        self.cls_only = cls_only
        self.cache: dict[str, Tensor] = {}

    def wants(self, name: str) -> bool:
        return name in self.record or name in self.hooks

    def __call__(self, name: str, t: Tensor, short: str = "") -> Tensor:
        hook = self.hooks.get(name)
        if hook is not None:
            new = hook(t, name)
            if new is not None and (short or name) in READ_ONLY:
                raise ValueError(
                    f"{name!r} is read-only: it is derived and not used downstream, so a hook on it may observe "
                    "it (return None) but not replace it; hook attn.pattern to change attention"
                )
            if new is not None:
                if new.shape != t.shape:
                    raise ValueError(f"hook on {name!r} returned shape {tuple(new.shape)}, expected {tuple(t.shape)}")
                t = new
        if name in self.record:
            rec = t
            if self.cls_only and rec.dim() >= 3 and short not in _NOT_QUERY_INDEXED:
                # query axis: dim 2 for [B,H,N,N] patterns, else dim 1
                rec = rec[:, :, 0] if short == "attn.pattern" else rec[:, 0]
                rec = rec.clone()  # do not keep the full [B, N, ...] storage alive
            self.cache[name] = rec
        return t


def run_vision(
    view: VisionView,
    pixel_values: Tensor,
    *,
    names: Iterable[str] = (),
    hooks: Mapping[str, Hook] | None = None,
    cls_only: bool = False,
    attention: str = "vanilla",
) -> ForwardOutput:
    """Run the image tower functionally, recording ``names`` and applying ``hooks``.

    ``pixel_values`` is a preprocessed ``[B, C, H, W]`` batch; H and W must be multiples
    of the patch size (other sizes interpolate the positional embedding).
    """
    L = view.num_layers
    record = resolve_names(names, L)
    hook_map: dict[str, Hook] = {}
    for pattern, fn in (hooks or {}).items():
        for n in resolve_names([pattern], L):
            hook_map[n] = fn
    rec = _Recorder(record, hook_map, cls_only)
    strategy = get_attention(attention)

    x = pixel_values.to(device=view.device, dtype=view.dtype)
    B = x.shape[0]
    ph, pw = view.patch_size
    grid = (x.shape[-2] // ph, x.shape[-1] // pw)
    x = F.conv2d(x, view.patch_weight, view.patch_bias, stride=(ph, pw))  # [B, D, gh, gw]
    x = x.flatten(2).transpose(1, 2)  # [B, gh*gw, D]
    cls = view.class_embedding.to(x.dtype).expand(B, 1, -1)
    x = torch.cat([cls, x], dim=1) + positional_embedding_for(view, grid).to(x.dtype)
    if view.ln_pre is not None:
        x = view.ln_pre(x)
    x = rec("embed", x)

    for i, blk in enumerate(view.blocks):
        p = f"blocks.{i}."
        H, dh = blk.num_heads, blk.head_dim
        N = x.shape[1]
        x = rec(p + "resid_pre", x, "resid_pre")
        h = rec(p + "ln_1", blk.ln_1(x), "ln_1")
        if blk.qkv_weight is not None:
            qkv = F.linear(h, blk.qkv_weight, blk.qkv_bias).view(B, N, 3, H, dh)
            q, k, v = qkv.unbind(2)
        else:
            q = F.linear(h, blk.q_weight, blk.q_bias).view(B, N, H, dh)
            k = F.linear(h, blk.k_weight, blk.k_bias).view(B, N, H, dh)
            v = F.linear(h, blk.v_weight, blk.v_bias).view(B, N, H, dh)
        if rec.wants(p + "attn.q"):
            q = rec(p + "attn.q", q, "attn.q")
        if rec.wants(p + "attn.k"):
            k = rec(p + "attn.k", k, "attn.k")
        if rec.wants(p + "attn.v"):
            v = rec(p + "attn.v", v, "attn.v")
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, N, dh]

        pattern_name = p + "attn.pattern"
        ctx = AttentionContext(
            layer=i, block=blk, need_pattern=pattern_name in record,
            pattern_hook=(lambda t, _n=pattern_name: rec(_n, t, "attn.pattern")) if rec.wants(pattern_name) else None,
        )
        z, _ = strategy(qh, kh, vh, ctx)  # [B, H, N, dh]

        want_cls_pat = rec.wants(p + "attn.cls_pattern")
        want_contrib = rec.wants(p + "attn.cls_contrib")
        if want_cls_pat or want_contrib:
            from cliplens.attention import softmax_pattern

            alpha = softmax_pattern(qh[:, :, :1], kh)[:, :, 0]  # [B, H, N]
            if want_cls_pat:
                rec(p + "attn.cls_pattern", alpha, "attn.cls_pattern")
            if want_contrib:
                contrib = (alpha.unsqueeze(-1) * vh).transpose(1, 2)  # [B, N, H, dh]
                rec(p + "attn.cls_contrib", contrib, "attn.cls_contrib")

        del h, q, k, v, qh, kh, vh
        if blk.qkv_weight is not None:
            del qkv
        z = z.transpose(1, 2)  # [B, N, H, dh]
        if rec.wants(p + "attn.z"):
            z = rec(p + "attn.z", z, "attn.z")
        a = F.linear(z.reshape(B, N, H * dh), blk.out_weight, blk.out_bias)
        del z
        if blk.ls_1 is not None:
            a = a * blk.ls_1.to(a.dtype)
        a = rec(p + "attn_out", a, "attn_out")
        x = rec(p + "resid_mid", x + a, "resid_mid")
        del a

        h2 = rec(p + "ln_2", blk.ln_2(x), "ln_2")
        # the pre-activation has no hook name, so the activation may run in place
        hid = apply_activation_(F.linear(h2, blk.fc1_weight, blk.fc1_bias), blk.activation)
        del h2
        if rec.wants(p + "mlp.hidden"):
            hid = rec(p + "mlp.hidden", hid, "mlp.hidden")
        m = F.linear(hid, blk.fc2_weight, blk.fc2_bias)
        del hid
        if blk.ls_2 is not None:
            m = m * blk.ls_2.to(m.dtype)
        m = rec(p + "mlp_out", m, "mlp_out")
        x = rec(p + "resid_post", x + m, "resid_post")

    pooled = rec("pooled", x[:, 0])
    if rec.wants("ln_post.mean") or rec.wants("ln_post.std"):
        pf = pooled.float() if view.ln_post.compute_fp32 else pooled
        mean = pf.mean(-1)
        std = torch.sqrt(pf.var(-1, unbiased=False) + view.ln_post.eps)
        rec("ln_post.mean", mean)
        rec("ln_post.std", std)
    out = view.ln_post(pooled)
    if view.proj is not None:
        out = out @ view.proj.to(out.dtype)
    out = rec("embedding", out)
    return ForwardOutput(embedding=out, cache=rec.cache, grid=grid)
