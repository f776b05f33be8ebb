"""The one place where a component of the residual stream is carried into the joint space.

The pooling head, with its normalisation statistics and pooling weights frozen at their values in the real
forward (:class:`cliplens.core.heads.Readout`), is affine in the last residual stream ``x``; ``x`` is a sum of
components (the embedding term, each attention layer, each MLP). So each component ``c`` maps to the joint
space on its own:

    J(c) = Σ_r s_r · (ρ_r(c) ⊙ γ) · M_r   +   share(c) · K,        K = Σ_r (β · M_r − s_r m_r · γ · M_r) + b,

where ``ρ_r(c) = Σ_n ω[r, n] c_n`` is the component read out by readout ``r`` (one for CLS and mean pooling, one
per pooling head for attention pooling), ``s_r``/``m_r`` the readout's frozen scale and mean, ``γ``/``β`` the
head's LayerNorm, ``M_r = in_r · out_r`` the readout's map and ``b`` the head's constant
(:mod:`cliplens.core.heads.base`). ``K`` — the LayerNorm's mean and bias and the head's constant — is shared
among the components by the rule of :mod:`cliplens.decomposition.shares`, so the mapped components sum to
the linear part of the embedding exactly; a head that is not affine (SigLIP's MLP after the pooling
attention) adds one lumped term.

An attention head's output ``z^h`` (head space, before the out-projection) maps through
``W_O^h · diag(ls ⊙ γ) · in_r · out_r``; the out-projection's bias through the readout's weight sum
``w_r = Σ_n ω[r, n]``.

A block with a LayerNorm over its concatenated heads before the out-projection (EVA02's sub-LN,
``BlockView.attn_norm``) is made linear the same way, with its per-token statistics frozen
(:class:`FrozenSubNorm`): the head term at query token ``n`` becomes ``W_O^h (γ_s^h ⊙ z^h_n / σ_n)`` — still split
per source token through α — and the rest of the layer's output, ``W_O (β_s − γ_s μ_n / σ_n) + b_O``, is the
layer's *shift*, one term of its own (it carries no share of ``K``; the layer's out-projection bias is in it, so
``HeadWeights.out_bias`` is zero for such a layer). The decomposition (:mod:`cliplens.decomposition.decomposition`), the store's reader,
ablation, TEXTSPAN, the atlas and CLIP Surgery's by-head split all go through :class:`JointMap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from cliplens.core.heads.base import ln_stats
from cliplens.core.view import BlockView, VisionView

__all__ = ["FrozenSubNorm", "HeadWeights", "JointMap"]


@dataclass
class HeadWeights:
    """The weight-derived matrices of a tower's pooling head and out-projections, detached, in one dtype, on
    one device (from a view, or read back from a store's projections file)."""

    gamma: Tensor  # [D]   (ones when the head has no LayerNorm)
    beta: Tensor  # [D]   (zeros)
    readout_in: Tensor | None  # [R, D, k] (None: identity, k = D)
    readout_out: Tensor  # [R, k, E]
    bias: Tensor  # [E]
    out_weight: Tensor  # [L, D, H·dh] each layer's out-projection, layer-scale folded in
    out_bias: Tensor  # [L, D]       its bias, layer-scale folded in
    num_heads: int

    @classmethod
    def from_view(cls, view: VisionView, dtype: torch.dtype = torch.float32) -> HeadWeights:
        head = view.head
        ln = head.norm
        D = view.width
        dev = view.device

        def vec(t: Tensor | None, fill: float) -> Tensor:
            return torch.full((D,), fill, device=dev, dtype=dtype) if t is None else t.detach().to(dtype)

        gamma = vec(None if ln is None else ln.weight, 1.0)
        beta = vec(None if ln is None else ln.bias, 0.0)
        rin = head.readout_in()
        rout = head.readout_out().detach().to(device=dev, dtype=dtype)
        b = head.bias()
        out_w, out_b = [], []
        for blk in view.blocks:
            w = blk.out_weight.detach().to(dtype)
            ob = torch.zeros(D, device=dev, dtype=dtype) if blk.out_bias is None or blk.attn_norm is not None \
                else blk.out_bias.detach().to(dtype)  # a sub-LN layer's bias is inside its shift term
            if blk.ls_1 is not None:
                ls = blk.ls_1.detach().to(dtype)
                w, ob = w * ls[:, None], ob * ls
            out_w.append(w)
            out_b.append(ob)
        E = int(rout.shape[-1])
        return cls(gamma=gamma, beta=beta, readout_in=None if rin is None else rin.detach().to(dtype), readout_out=rout,
                   bias=torch.zeros(E, device=dev, dtype=dtype) if b is None else b.detach().to(dtype),
                   out_weight=torch.stack(out_w) if out_w else torch.zeros(0, D, D, device=dev, dtype=dtype),
                   out_bias=torch.stack(out_b) if out_b else torch.zeros(0, D, device=dev, dtype=dtype),
                   num_heads=view.num_heads if view.blocks else 1)

    def tensors(self) -> dict[str, Tensor]:
        """The matrices as named tensors (what a store's projections file holds; ``readout_in`` only when it is not
        the identity)."""
        out = {"ln_gamma": self.gamma, "ln_beta": self.beta, "readout_out": self.readout_out, "head_bias": self.bias,
               "out_weight": self.out_weight, "out_bias": self.out_bias}
        if self.readout_in is not None:
            out["readout_in"] = self.readout_in
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], num_heads: int, dtype: torch.dtype = torch.float32) -> HeadWeights:
        """Back from :meth:`tensors` (also reads a store of the first format: ``proj`` ``[D, E]``, no head bias)."""
        rout = t["readout_out"] if "readout_out" in t else t["proj"][None]
        bias = t["head_bias"] if "head_bias" in t else torch.zeros(rout.shape[-1])
        return cls(gamma=t["ln_gamma"].to(dtype), beta=t["ln_beta"].to(dtype),
                   readout_in=t["readout_in"].to(dtype) if "readout_in" in t else None, readout_out=rout.to(dtype),
                   bias=bias.to(dtype), out_weight=t["out_weight"].to(dtype), out_bias=t["out_bias"].to(dtype),
                   num_heads=num_heads)

    def to(self, dtype: torch.dtype) -> HeadWeights:
        def cast(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(dtype)

        return HeadWeights(cast(self.gamma), cast(self.beta), cast(self.readout_in), cast(self.readout_out),  # type: ignore[arg-type]
                           cast(self.bias), cast(self.out_weight), cast(self.out_bias), self.num_heads)  # type: ignore[arg-type]

    @property
    def num_readouts(self) -> int:
        return int(self.readout_out.shape[0])


@dataclass
class JointMap:
    """Residual and head space → joint space through a frozen pooling head (see the module docs).

    Per image: ``scale`` ``[B, R]`` (``s_r``), ``mean`` ``[B, R]`` (``m_r``), ``wsum`` ``[B, R]`` (``w_r``).
    """

    w: HeadWeights
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    # ---- weight-only pieces (cached) -----------------------------------------------------------------------
    def _full(self) -> Tensor:
        """``[R, D, E]`` ``diag(γ) · in_r · out_r`` (built only when ``in`` is the identity, or small)."""
        if "full" not in self._cache:
            w = self.w
            m = w.readout_out if w.readout_in is None else torch.matmul(w.readout_in, w.readout_out)
            self._cache["full"] = w.gamma[None, :, None] * m
        return self._cache["full"]

    def first(self) -> Tensor:
        """``[R, D, k]`` ``diag(γ) · in_r`` (``k = E`` with the second factor folded in when ``in`` is the
        identity)."""
        if "first" not in self._cache:
            w = self.w
            self._cache["first"] = self._full() if w.readout_in is None else w.gamma[None, :, None] * w.readout_in
        return self._cache["first"]

    def second(self) -> Tensor | None:
        """``[R, k, E]`` ``out_r``, or ``None`` when :meth:`first` already reaches the joint space."""
        return None if self.w.readout_in is None else self.w.readout_out

    def constants(self) -> tuple[Tensor, Tensor]:
        """``(g [R, E], c [R, E])``: ``γ · M_r`` and ``β · M_r`` (what the LayerNorm's mean and bias become)."""
        if "g" not in self._cache:
            w = self.w
            for key, vec in (("g", w.gamma), ("c", w.beta)):
                if w.readout_in is None:
                    self._cache[key] = torch.einsum("d,rde->re", vec, w.readout_out)
                else:
                    self._cache[key] = torch.einsum("rk,rke->re", torch.einsum("d,rdk->rk", vec, w.readout_in),
                                                    w.readout_out)
        return self._cache["g"], self._cache["c"]

    def total_constant(self, scale: Tensor, mean: Tensor) -> Tensor:
        """``K`` ``[B, E]``: the LayerNorm's mean and bias and the head's constant, for every image."""
        g, c = self.constants()
        return c.sum(0)[None] - torch.einsum("br,re->be", scale * mean, g) + self.w.bias[None]

    # ---- residual-space components -------------------------------------------------------------------------
    def residual(self, values: Tensor, scale: Tensor) -> Tensor:
        """``Σ_r s_r (ρ_r ⊙ γ) M_r`` for read-out values ``[B, R, ..., D]`` -> ``[B, ..., E]`` (no constants)."""
        B, R = values.shape[:2]
        extra = values.dim() - 3
        s = scale.reshape(B, R, *(1,) * (extra + 1))
        v = values * s
        first = self.first()
        y = torch.einsum("br...d,rdk->br...k", v, first)
        second = self.second()
        if second is not None:
            y = torch.einsum("br...k,rke->br...e", y, second)
        return y.sum(1)

    def component(self, values: Tensor, share: float, scale: Tensor, mean: Tensor) -> Tensor:
        """``J(c)`` for read-out values ``[B, R, ..., D]`` carrying ``share`` of ``K`` each -> ``[B, ..., E]``."""
        y = self.residual(values, scale)
        k = self.total_constant(scale, mean)
        return y + share * k.reshape(k.shape[0], *(1,) * (y.dim() - 2), -1)

    # ---- attention heads ----------------------------------------------------------------------------------------
    def head_first(self, layers: Sequence[int]) -> Tensor:
        """``[Lh, H, R, dh, k]``: head space → the readouts' first factor, ``W_O^h · diag(ls ⊙ γ) · in_r``."""
        key = f"head_first:{tuple(layers)}"
        if key not in self._cache:
            H = self.w.num_heads
            first = self.first()  # [R, D, k]
            maps = []
            for layer in layers:
                wo = self.w.out_weight[layer]  # [D, H·dh]
                dh = wo.shape[1] // H
                maps.append(torch.einsum("dhj,rdk->hrjk", wo.reshape(-1, H, dh), first))
            R, k = first.shape[0], first.shape[-1]
            self._cache[key] = (torch.stack(maps) if maps else first.new_zeros(0, H, R, 1, k))
        return self._cache[key]

    def head_bias(self, layers: Sequence[int], scale: Tensor, wsum: Tensor) -> Tensor:
        """``[B, Lh, E]``: each layer's out-projection bias (layer-scale folded) read out and mapped:
        ``Σ_r s_r w_r (b_O ⊙ γ) M_r``."""
        if not layers:
            return scale.new_zeros(scale.shape[0], 0, self.w.readout_out.shape[-1])
        b = self.w.out_bias[list(layers)]  # [Lh, D]
        first = self.first()
        y = torch.einsum("ld,rdk->lrk", b, first)
        second = self.second()
        if second is not None:
            y = torch.einsum("lrk,rke->lre", y, second)
        return torch.einsum("br,lre->ble", scale * wsum, y)

    def head_factors(self, layer: int, head: int) -> tuple[Tensor, Tensor]:
        """``(A [R, dh, E], bias [R, E])`` for one head: its head-space values' map per readout, and its 1/H of
        the layer's out-projection bias per readout (to be scaled by ``s_r w_r``). With
        :meth:`constants` and the head constant, a head's term is linear in a few per-image numbers
        (TEXTSPAN's factorisation)."""
        first = self.head_first([layer])[0, head]  # [R, dh, k]
        fb = torch.einsum("d,rdk->rk", self.w.out_bias[layer], self.first()) / self.w.num_heads
        second = self.second()
        if second is None:
            return first, fb
        return torch.einsum("rjk,rke->rje", first, second), torch.einsum("rk,rke->re", fb, second)

    def heads(self, values: Tensor, layers: Sequence[int], scale: Tensor) -> Tensor:
        """Head-space values ``[B, R, Lh, (N,) H, dh]`` -> joint ``[B, Lh, (N,) H, E]`` (no constants)."""
        B, R = values.shape[:2]
        extra = values.dim() - 5  # 1 with a source-token axis
        s = scale.reshape(B, R, *(1,) * (values.dim() - 2))
        first = self.head_first(layers)  # [Lh, H, R, dh, k]
        eq = "brlnhj,lhrjk->brlnhk" if extra else "brlhj,lhrjk->brlhk"
        y = torch.einsum(eq, values * s, first)
        second = self.second()
        if second is not None:
            y = torch.einsum("brl...k,rke->brl...e", y, second)
        return y.sum(1)

    def heads_against(self, values: Tensor, layers: Sequence[int], scale: Tensor, directions: Tensor) -> Tensor:
        """Like :meth:`heads`, already projected on ``directions`` ``[E, T]`` -> ``[B, Lh, (N,) H, T]``."""
        B, R = values.shape[:2]
        extra = values.dim() - 5
        first = self.head_first(layers)  # [Lh, H, R, dh, k]
        second = self.second()
        d = directions if second is None else torch.einsum("rke,et->rkt", second, directions)
        if second is None:
            maps = torch.einsum("lhrjk,kt->lhrjt", first, d)
        else:
            maps = torch.einsum("lhrjk,rkt->lhrjt", first, d)
        s = scale.reshape(B, R, *(1,) * (values.dim() - 2))
        eq = "brlnhj,lhrjt->blnht" if extra else "brlhj,lhrjt->blht"
        return torch.einsum(eq, values * s, maps)

    def spatial_heads(self, rows: Tensor, values: Tensor, layers: Sequence[int], scale: Tensor,
                      directions: Tensor | None = None, sum_heads: bool = False) -> Tensor:
        """The factored spatial split -> per source token: ``rows`` ``[B, R, Lh, H, N]`` (each readout's weighted
        attention row per head), ``values`` ``[B, Lh, N, H, dh]`` (each source token's head-space value; the
        value of readout ``r``, head ``h``, token ``n`` is ``rows[r, h, n] · values[n, h]``) -> ``[B, Lh, N, H, X]``
        (``[B, Lh, N, X]`` with ``sum_heads``), ``X = E``, or ``T`` with ``directions`` ``[E, T]`` (no constants).
        Layer by layer, so the ``[B, R, Lh, N, H, dh]`` values are never held."""
        B, R, _, H, N = rows.shape
        second = self.second()
        d = None
        if directions is not None:
            d = directions if second is None else torch.einsum("rke,et->rkt", second, directions)
        first = self.head_first(layers)  # [Lh, H, R, dh, k]
        X = int(self.w.readout_out.shape[-1]) if d is None else int(directions.shape[-1])  # type: ignore[union-attr]
        out = rows.new_empty(B, len(layers), N, *(() if sum_heads else (H,)), X)
        for j in range(len(layers)):
            f = first[j]  # [H, R, dh, k]
            if d is None:
                maps = f if second is None else torch.einsum("hrjk,rke->hrje", f, second)
            else:
                maps = torch.einsum("hrjk,kt->hrjt", f, d) if second is None else torch.einsum("hrjk,rkt->hrjt", f, d)
            dh = maps.shape[2]
            u = ((rows[:, :, j] * scale[:, :, None, None]).permute(0, 3, 2, 1)[..., None]
                 * values[:, j, :, :, None, :])  # [B, N, H, R, dh]
            if sum_heads:
                out[:, j] = u.reshape(B, N, H * R * dh) @ maps.reshape(H * R * dh, X)
            else:
                out[:, j] = torch.einsum("bnhx,hxt->bnht", u.reshape(B, N, H, R * dh), maps.reshape(H, R * dh, X))
        return out

    def head_against(self, values: Tensor, layer: int, head: int, scale: Tensor, directions: Tensor) -> Tensor:
        """One head's head-space values ``[B, R, ..., dh]`` (e.g. per source token) -> ``[B, ..., T]`` projected on
        ``directions`` ``[E, T]`` (no constants)."""
        first = self.head_first([layer])[0, head]  # [R, dh, k]
        second = self.second()
        maps = torch.einsum("rjk,kt->rjt", first, directions) if second is None else \
            torch.einsum("rjk,rkt->rjt", first, torch.einsum("rke,et->rkt", second, directions))
        B, R = values.shape[:2]
        s = scale.reshape(B, R, *(1,) * (values.dim() - 2))
        return torch.einsum("br...j,rjt->b...t", values * s, maps)

    def residual_against(self, values: Tensor, scale: Tensor, directions: Tensor) -> Tensor:
        """Like :meth:`residual`, projected on ``directions`` ``[E, T]`` -> ``[B, ..., T]``."""
        first = self.first()
        second = self.second()
        d = directions if second is None else torch.einsum("rke,et->rkt", second, directions)
        maps = torch.einsum("rdk,kt->rdt", first, d) if second is None else torch.einsum("rdk,rkt->rdt", first, d)
        B, R = values.shape[:2]
        s = scale.reshape(B, R, *(1,) * (values.dim() - 2))
        return torch.einsum("br...d,rdt->b...t", values * s, maps)


@dataclass
class FrozenSubNorm:
    """A block's sub-LayerNorm over the concatenated heads (``BlockView.attn_norm``) frozen at the per-token
    statistics of one forward (see the module docs): ``inv_sd`` ``[B, Nq]`` (``1/σ_n``) and ``mean`` ``[B, Nq]``
    (``μ_n``) at the query tokens the pooling head reads (the CLS token alone for CLS pooling)."""

    block: BlockView
    inv_sd: Tensor
    mean: Tensor

    @classmethod
    def at(cls, block: BlockView, z: Tensor) -> FrozenSubNorm:
        """Freeze at the heads' outputs ``z`` ``[B, Nq, H, dh]`` (before the sub-LN) of the query tokens."""
        assert block.attn_norm is not None
        mean, sd = ln_stats(block.attn_norm, z.reshape(*z.shape[:2], -1))
        return cls(block, (1 / sd).to(z.dtype), mean.to(z.dtype))

    def weights(self, w: Tensor) -> Tensor:
        """The head's token weights ``w`` ``[B, R, Nq]`` times each query token's ``1/σ_n``."""
        return w * self.inv_sd[:, None].to(w.dtype)

    def heads(self, values: Tensor) -> Tensor:
        """Head-space values read with :meth:`weights` (``[B, R, (N,) H, dh]``) times ``γ_s`` per head: what
        ``W_O^h`` multiplies."""
        g = self.block.attn_norm.weight  # type: ignore[union-attr]
        if g is None:
            return values
        H = self.block.num_heads
        return values * g.detach().to(values.dtype).reshape(H, -1)

    def shift(self, w: Tensor) -> Tensor:
        """``[B, R, D]``: the layer's shift read out with the head's token weights ``w`` ``[B, R, Nq]``:
        ``ls ⊙ (W_O (w_r β_s − γ_s Σ_n w[r, n] μ_n/σ_n) + w_r b_O)``."""
        blk, ln = self.block, self.block.attn_norm
        assert ln is not None
        dt = w.dtype
        wsum = w.sum(-1)  # [B, R]
        m = (w * (self.mean * self.inv_sd)[:, None].to(dt)).sum(-1)  # [B, R]
        width = blk.out_weight.shape[1]
        gamma = torch.ones(width, dtype=dt, device=w.device) if ln.weight is None else ln.weight.detach().to(dt)
        pre = -m[..., None] * gamma
        if ln.bias is not None:
            pre = pre + wsum[..., None] * ln.bias.detach().to(dt)
        out = pre @ blk.out_weight.detach().to(dt).t()
        if blk.out_bias is not None:
            out = out + wsum[..., None] * blk.out_bias.detach().to(dt)
        return out if blk.ls_1 is None else out * blk.ls_1.detach().to(dt)
