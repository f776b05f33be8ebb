"""Exact decomposition of a CLIP ViT image embedding into direct effects.

For a pre-LN ViT with CLS pooling,

    z = proj^T · LN_post(x_L[CLS]),   x_L = x_0 + Σ_l attn_l + Σ_l mlp_l,

and attention at the CLS query splits over heads h and source tokens m:

    attn_l[CLS] = Σ_h Σ_m ls_1 ⊙ W_O^h · α^{l,h}_{CLS,m} (W_V^h LN_1(x)_m + b_V^h)  +  ls_1 ⊙ b_O.

Freezing LN_post's mean μ and scale σ at their values in the real forward makes z a sum of
*components*, each mapped to the joint space by the rule of :mod:`cliplens.decomposition.shares`.
The sum is exact to float rounding (:meth:`Decomposition.check`; tolerance per dtype in
:data:`CHECK_TOLERANCE`).

Head outputs are kept in *head space* (``d_head`` per head) and carried to the joint space by the
precomputed matrix ``W_O^h · diag(ls_1 ⊙ γ) · proj`` divided by the per-image σ; only the CLS query
row of each attention pattern is ever computed. :meth:`Decomposition.project` scores every
component against text directions without materialising the ``[B, L, N, H, E]`` tensor.

A decomposition may be taken under a :class:`~cliplens.core.plan.Plan` or with hooks that edit
attention: the taps come from the attention actually used, so it sums to the embedding of that
same forward. A block that drops its residual connection cuts every earlier site off the
embedding: their terms are zero.

A decomposition is data: :meth:`~Decomposition.save` / :meth:`~Decomposition.load` (safetensors with
a JSON header holding the model's fingerprint, the settings and the dtype), :meth:`~Decomposition.cat`
and indexing along images (``dec[2:5]``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cliplens.core.heads import Readout
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import select_layers
from cliplens.core.view import VisionView, fingerprint_view
from cliplens.decomposition.algebra import HeadWeights, JointMap
from cliplens.decomposition.scores import ComponentScores, head_positions
from cliplens.decomposition.shares import num_sites, site_share
from cliplens.errors import InvalidInputError, ModelLoadError, OutputExistsError
from cliplens.text.encode import TextEncoder, text_directions

__all__ = ["CHECK_TOLERANCE", "Decomposition", "check_tolerance", "resolve_layers"]

FORMAT = "cliplens.decomposition/3"
#: the second format: no factored spatial split (still read)
FORMAT_2 = "cliplens.decomposition/2"

#: relative tolerance of :meth:`Decomposition.check` by the lower of the model's and the
#: decomposition's precision (measured on random ViT-B-16 / L-14 / HF B-32 towers, batch 4: fp32 ≤ 4.5e-7,
#: fp16 ≤ 1.2e-3, bf16 ≤ 9.9e-3; see the README)
CHECK_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}


def check_tolerance(*dtypes: torch.dtype) -> float:
    """The tolerance for the least precise of ``dtypes``."""
    return max(CHECK_TOLERANCE.get(d, 1e-5) for d in dtypes)


def resolve_layers(layers: Iterable[int] | int | None, num_layers: int, *, last: int | None = None
                   ) -> tuple[int, ...]:
    """``layers``: layer indices (negatives count from the end); ``last=k``: the last ``k``; neither: all layers
    (:func:`cliplens.core.plan.select_layers`, which refuses the old int ``layers=k`` for "the last k")."""
    chosen = select_layers(num_layers, layers, last)
    return tuple(range(num_layers)) if chosen is None else tuple(chosen)


class Decomposition:
    """The image embedding as an exact sum of direct effects, with labelled axes.

    Build with :meth:`cliplens.models.CLIPAdapter.decompose` or :func:`decompose`.

    Stored, each component *read out* by the pooling head's ``R`` readouts (:mod:`cliplens.core.heads`; one
    for CLS pooling, where a read-out component is its value at the CLS token; one per pooling head for
    attention pooling) in residual space:
        ``embed_term`` ``[B, R, D]`` (x_0, the embedding term), ``mlp_out`` ``[B, R, L, D]``,
        ``attn_out`` ``[B, R, L, D]`` (each layer's whole attention output), ``heads`` head-space values
        ``[B, R, Lh, N, H, dh]`` (spatial: per source token) or ``[B, R, Lh, H, dh]`` for ``head_layers``;
        ``readout`` (the head's frozen statistics and pooling weights), ``final`` ``[B, N_read, D]`` (the last
        residual stream at the tokens the head reads), ``nonlinear`` ``[B, E]`` (the head's lumped nonlinear
        part; zeros for affine heads) and ``embedding`` ``[B, E]`` (the model's own output in the same forward);
        for a tower with a sub-LayerNorm over the concatenated heads (EVA02) ``shift`` ``[B, R, Lh, D]``, each head
        layer's shift read out (the heads then hold ``γ_s ⊙ z/σ_s``, the sub-LN frozen per token; see
        :class:`~cliplens.decomposition.algebra.FrozenSubNorm` and :meth:`shift_terms`).

    Joint-space views (``[..., E]``) are computed on demand through :class:`~cliplens.decomposition.algebra.
    JointMap`: :meth:`head_terms`, :meth:`mlp_terms`, :meth:`token_terms`, :meth:`attention_layer_terms`,
    :meth:`layer_terms`, :meth:`readout_terms`, :meth:`pool_terms`, :meth:`shift_terms`, :meth:`reconstruct`;
    :meth:`project`
    scores everything against texts. Nothing here carries autograd history.
    """

    def __init__(
        self,
        view: VisionView,
        *,
        embed_term: Tensor,
        mlp_out: Tensor,
        attn_out: Tensor,
        heads: Tensor | None = None,
        head_layers: tuple[int, ...],
        spatial: bool,
        readout: Readout,
        final: Tensor,
        nonlinear: Tensor,
        embedding: Tensor,
        grid: tuple[int, int],
        scale: Tensor | None = None,
        model: TextEncoder | None = None,
        fingerprint: str | None = None,
        settings: Mapping[str, Any] | None = None,
        shift: Tensor | None = None,
        head_rows: Tensor | None = None,
        head_values: Tensor | None = None,
        _map: JointMap | None = None,
    ) -> None:
        self.view = view
        #: the model whose text tower embeds texts given to :meth:`project` (set by ``model.decompose``)
        self.model = model
        self.embed_term = embed_term.detach()
        self.mlp_out = mlp_out.detach()
        self.attn_out = attn_out.detach()
        #: the spatial split of a head that reads every token, factored (see :attr:`factored`): ``[B, R, Lh, H, N]``
        #: each readout's weighted attention row per head and ``[B, Lh, N, H, dh]`` each source token's value
        self.head_rows = None if head_rows is None else head_rows.detach()
        self.head_values = None if head_values is None else head_values.detach()
        if heads is None and self.head_rows is None:
            raise InvalidInputError("a decomposition needs its head values (heads) or their factors (head_rows and "
                                    "head_values)")
        self._heads = None if heads is None else heads.detach()
        self.head_layers = tuple(int(i) for i in head_layers)
        self.spatial = bool(spatial)
        self.readout = readout
        self.final = final.detach()
        self.nonlinear = nonlinear.detach()
        self.embedding = embedding.detach()
        self.grid = (int(grid[0]), int(grid[1]))
        self.dtype = self.embed_term.dtype
        #: per-image factor applied to every joint-space output (1, or 1/‖z‖ after normalized())
        self.scale = torch.ones(self.batch_size, dtype=self.dtype, device=self.embed_term.device) if scale is None \
            else scale.detach()
        #: ``[B, R, Lh, D]`` each head layer's sub-LayerNorm shift read out (towers with a sub-LN over the
        #: concatenated heads, EVA02); ``[B, R, 0, D]`` for the others (see :meth:`shift_terms`)
        self.shift = (self.embed_term.new_zeros(*self.embed_term.shape[:2], 0, self.embed_term.shape[-1])
                      if shift is None else shift.detach())
        #: digest of the model's weights and preprocessing (see CLIPAdapter.fingerprint)
        self.fingerprint = fingerprint
        #: how it was made (plan, hooks, input size, …): recorded by save()
        self.settings: dict[str, Any] = dict(settings or {})
        self._map = _map or JointMap(HeadWeights.from_view(view, self.dtype))

    # ---- shapes and labels --------------------------------------------------
    @property
    def factored(self) -> bool:
        """Whether the spatial split is held factored (a pooling head that reads every token): head ``h`` of layer
        ``l`` carries source token ``n`` into readout ``r`` as ``head_rows[:, r, l, h, n] · head_values[:, l, n, h]``.
        A learned probe's pooling weights are known only after the forward, so the split would otherwise hold a
        value per readout × layer × token × head (``[B, 12, 12, 197, 12, 64]`` for SigLIP B/16); the factors hold
        ``R`` rows and one value per token. Every joint-space view contracts the factors layer by layer."""
        return self.head_rows is not None

    @property
    def heads(self) -> Tensor:
        """Head-space values read out: ``[B, R, Lh, N, H, dh]`` (spatial) or ``[B, R, Lh, H, dh]``. For a
        :attr:`factored` split this builds the full tensor (large: prefer the joint-space views)."""
        if self._heads is not None:
            return self._heads
        rows, values = self.head_rows, self.head_values
        assert rows is not None and values is not None
        return rows.permute(0, 1, 2, 4, 3)[..., None] * values[:, None]

    @property
    def _source_tokens(self) -> int:
        """The source tokens a spatial split runs over."""
        if self.head_values is not None:
            return int(self.head_values.shape[2])
        return int(self.heads.shape[3])

    @property
    def batch_size(self) -> int:
        return int(self.embed_term.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    @property
    def num_layers(self) -> int:
        return int(self.mlp_out.shape[2])

    @property
    def num_heads(self) -> int:
        return self.view.num_heads

    @property
    def num_readouts(self) -> int:
        """The pooling head's readouts ``R`` (1 for CLS and mean pooling; the pooling heads of attention pooling)."""
        return int(self.embed_term.shape[1])

    @property
    def prefix(self) -> int:
        """Tokens before the patches: 1 (CLS) or 0."""
        return self.view.num_prefix_tokens

    @property
    def num_tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    @property
    def num_sites(self) -> int:
        """2L+1: the embedding term, L attention layers and L MLPs share the head's mean, bias and constant."""
        return num_sites(self.num_layers)

    @property
    def normalized_form(self) -> bool:
        """Whether this is the decomposition of the unit-norm embedding (see :meth:`normalized`)."""
        return bool(self.settings.get("normalized", False))

    @property
    def head_kind(self) -> str:
        return self.view.head.kind

    def __repr__(self) -> str:
        return (
            f"Decomposition(batch={self.batch_size}, layers={self.num_layers}, heads={self.num_heads}, "
            f"tokens={self.num_tokens}, spatial={self.spatial}, head_layers={list(self.head_layers)}, "
            f"pooling={self.head_kind} ({self.num_readouts} readout{'s' * (self.num_readouts != 1)}), "
            f"dtype={str(self.dtype).replace('torch.', '')}{', normalized' if self.normalized_form else ''}"
            f"{', trunk not decomposed' if 'not_decomposed' in self.settings else ''})"
        )

    def _replace(self, **changes: Any) -> Decomposition:
        kw: dict[str, Any] = dict(
            embed_term=self.embed_term, mlp_out=self.mlp_out, attn_out=self.attn_out, heads=self._heads,
            head_rows=self.head_rows, head_values=self.head_values,
            head_layers=self.head_layers, spatial=self.spatial, readout=self.readout, final=self.final,
            nonlinear=self.nonlinear, embedding=self.embedding, grid=self.grid, scale=self.scale, model=self.model,
            fingerprint=self.fingerprint, settings=self.settings, shift=self.shift, _map=self._map,
        )
        kw.update(changes)
        return Decomposition(self.view, **kw)

    def normalized(self) -> Decomposition:
        """The same decomposition of the *unit-norm* embedding (every term divided by ‖z‖)."""
        if self.normalized_form:
            return self
        norm = self.embedding.to(self.dtype).norm(dim=-1)
        return self._replace(scale=self.scale / norm, settings={**self.settings, "normalized": True})

    # ---- images: slicing and concatenation ----------------------------------
    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Decomposition:
        """The decomposition of some images (``dec[0]``, ``dec[2:5]``, ``dec[[0, 3]]``, a bool mask)."""
        if isinstance(index, int):
            if not -self.batch_size <= index < self.batch_size:
                raise InvalidInputError(f"image index {index} out of range for {self.batch_size} images")
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.embed_term.device)
            if index.dtype == torch.bool:
                index = index.nonzero().flatten()
            index = index.long()
            if index.numel() and not (-self.batch_size <= int(index.min()) and int(index.max()) < self.batch_size):
                raise InvalidInputError(f"image indices out of range for {self.batch_size} images")

        def take(t: Tensor) -> Tensor:
            return t[index]

        return self._replace(**{name: take(t) for name, t in self._per_image().items()},
                             readout=_readout_apply(self.readout, take))

    @staticmethod
    def cat(parts: Sequence[Decomposition]) -> Decomposition:
        """Concatenate decompositions of the same model and settings along images."""
        parts = list(parts)
        if not parts:
            raise InvalidInputError("Decomposition.cat needs at least one decomposition")
        first = parts[0]
        for i, d in enumerate(parts[1:], 1):
            diffs = [name for name, a, b in (
                ("model (fingerprint)", first.fingerprint, d.fingerprint),
                ("spatial", first.spatial, d.spatial), ("head layers", first.head_layers, d.head_layers),
                ("token grid", first.grid, d.grid), ("dtype", first.dtype, d.dtype),
                ("normalized", first.normalized_form, d.normalized_form),
                ("layers", first.num_layers, d.num_layers)) if a != b]
            if d.view is not first.view and first.fingerprint is None:
                diffs.append("model (different weight views, no fingerprint)")
            if diffs:
                raise InvalidInputError(f"cannot concatenate decomposition {i} with decomposition 0: they differ in "
                                        f"{', '.join(diffs)}")

        kinds = {tuple(d._per_image()) for d in parts}
        if len(kinds) > 1:
            parts = [d._replace(heads=d.heads, head_rows=None, head_values=None) for d in parts]

        def cat(name: str) -> Tensor:
            return torch.cat([d._per_image()[name] for d in parts], 0)

        readout = Readout(**{f: torch.cat([getattr(d.readout, f) for d in parts], 0) for f in _READOUT_FIELDS})
        joined = {"heads": None, "head_rows": None, "head_values": None}
        joined.update({name: cat(name) for name in parts[0]._per_image()})
        return first._replace(**joined, readout=readout)

    def _per_image(self) -> dict[str, Tensor]:
        """The per-image tensors held (sliced and concatenated along images; saved)."""
        out = {}
        for name in _PER_IMAGE:
            t = self._heads if name == "heads" else getattr(self, name)
            if t is not None:
                out[name] = t
        return out

    # ---- the frozen head ----------------------------------------------------
    @property
    def _rscale(self) -> Tensor:
        """``[B, R]``: each readout's scale ``s_r``, times the per-image factor :attr:`scale`."""
        return self.readout.scale.to(self.dtype) * self.scale[:, None]

    @property
    def _wsum(self) -> Tensor:
        """``[B, R]``: each readout's weight sum ``w_r = Σ_n ω[r, n]`` (what a bias present at every token gets)."""
        return self.readout.weights.to(self.dtype).sum(-1)

    def _constant(self) -> Tensor:
        """``[B, E]``: ``K`` (the head's mean, bias and constant), times :attr:`scale`."""
        return self._map.total_constant(self.readout.scale.to(self.dtype), self.readout.mean.to(self.dtype)) \
            * self.scale[:, None]

    def to_joint(self, values: Tensor, share: float) -> Tensor:
        """Map read-out residual-space terms ``[B, R, ..., D]`` that each carry ``share`` of the head's constant to
        ``[B, ..., E]``."""
        y = self._map.residual(values, self._rscale)
        k = self._constant()
        return y + share * k.reshape(k.shape[0], *(1,) * (y.dim() - 2), -1)

    def head_maps(self) -> Tensor:
        """``[Lh, H, R, dh, k]``: head space → each readout's first factor (the joint space itself, ``k = E``, for
        CLS and mean pooling: ``W_O^h · diag(ls_1 ⊙ γ) · proj``), before the per-image scale."""
        return self._map.head_first(self.head_layers)

    def _layer_constants(self) -> Tensor:
        """``[B, Lh, E]``: each head layer's bias and its share of the head's constant, for the *whole layer*
        (split it by shares)."""
        s = site_share(self.num_layers)
        bias = self._map.head_bias(self.head_layers, self._rscale, self._wsum)
        cut = int(self.settings.get("cut_before", 0))
        if cut:  # layers before a block that drops its residual: their out-projection bias never arrives
            live = torch.tensor([layer >= cut for layer in self.head_layers], dtype=bias.dtype, device=bias.device)
            bias = bias * live[None, :, None]
        return bias + s * self._constant()[:, None]

    def _per_term_constants(self) -> Tensor:
        """``[B, Lh, E]`` per (head) or per (token, head) term: the layer constant over H (· N)."""
        split = self.num_heads * (self._source_tokens if self.spatial else 1)
        return self._layer_constants() / split

    # ---- joint-space terms --------------------------------------------------
    def head_terms(self) -> Tensor:
        """Per head (and token, if spatial) joint-space terms: ``[B, Lh, N, H, E]`` or ``[B, Lh, H, E]``.

        This materialises a large tensor for big models; prefer :meth:`project`.
        """
        if self.factored:
            t = self._map.spatial_heads(self.head_rows, self.head_values, self.head_layers, self._rscale)  # type: ignore[arg-type]
        else:
            t = self._map.heads(self.heads, self.head_layers, self._rscale)
        consts = self._per_term_constants()
        return t + (consts[:, :, None, None, :] if self.spatial else consts[:, :, None, :])

    def per_head(self) -> Tensor:
        """``[B, Lh, H, E]``: each head's direct effect (tokens summed)."""
        if self.factored:
            return self._map.heads(self._collapsed(), self.head_layers, self._rscale) \
                + self._layer_constants()[:, :, None] / self.num_heads
        t = self.head_terms()
        return t.sum(2) if self.spatial else t

    def _collapsed(self) -> Tensor:
        """``[B, R, Lh, H, dh]``: a factored spatial split summed over source tokens (the non-spatial values)."""
        return torch.einsum("brlhn,blnhj->brlhj", self.head_rows, self.head_values)

    def token_terms(self, layers: Iterable[int] | int | None = None) -> Tensor:
        """``[B, N, E]``: each source token's direct effect through the heads of ``layers``; for a tower without
        blocks (an opaque trunk: OpenAI's ResNets) through the pooling head, :meth:`pool_terms` summed over
        readouts."""
        if self.num_layers == 0 and layers is None:
            return self.pool_terms().sum(1)
        if not self.spatial:
            raise InvalidInputError("token terms need a spatial decomposition (decompose(..., spatial=True))")
        idx = head_positions(self.head_layers, layers, self.num_layers)
        chosen = [self.head_layers[i] for i in idx]
        if self.factored:
            t = self._map.spatial_heads(self.head_rows[:, :, idx], self.head_values[:, idx], chosen,  # type: ignore[index]
                                        self._rscale, sum_heads=True)  # [B, l, N, E]
        else:
            t = self._map.heads(self.heads[:, :, idx], chosen, self._rscale).sum(3)  # [B, l, N, E]
        consts = self._layer_constants()[:, idx].sum(1) / self._source_tokens  # [B, E]
        return t.sum(1) + consts[:, None, :]

    def attention_layer_terms(self) -> Tensor:
        """``[B, L, E]``: every attention layer's direct effect (heads and tokens summed)."""
        return self.to_joint(self.attn_out, site_share(self.num_layers))

    def mlp_terms(self) -> Tensor:
        """``[B, L + 1, E]``: the embedding term (index 0) then each layer's MLP."""
        both = torch.cat([self.embed_term[:, :, None], self.mlp_out], dim=2)
        return self.to_joint(both, site_share(self.num_layers))

    def nonlinear_term(self) -> Tensor:
        """``[B, E]``: the pooling head's lumped nonlinear part (SigLIP's MLP after its attention pooling; zeros
        for CLS and mean pooling)."""
        return self.nonlinear.to(self.dtype) * self.scale[:, None]

    @property
    def has_shift(self) -> bool:
        """Whether the head layers carry a sub-LayerNorm shift term each (EVA02)."""
        return int(self.shift.shape[2]) > 0

    def shift_terms(self) -> Tensor:
        """``[B, Lh, E]``: each head layer's sub-LayerNorm shift, ``W_O (β_s − γ_s μ/σ) + b_O`` at the tokens the
        head reads, through the frozen head (no share of its constant): with the layer's head terms it makes
        the layer's whole attention term. Zeros for towers without a sub-LN (their out-projection bias is spread
        over the head terms instead)."""
        if not self.has_shift:
            return self.embed_term.new_zeros(self.batch_size, len(self.head_layers), self.embedding.shape[-1])
        return self._map.residual(self.shift, self._rscale)

    def layer_terms(self) -> tuple[Tensor, list[str]]:
        """``([B, 2L+1 (+1), E], labels)``: embed, then per layer its attention and its MLP (and, for a head that
        is not affine, its nonlinear part last, labelled ``head.nonlinear``)."""
        att, mlp = self.attention_layer_terms(), self.mlp_terms()
        parts, labels = [mlp[:, 0]], ["embed"]
        for layer in range(self.num_layers):
            parts += [att[:, layer], mlp[:, layer + 1]]
            labels += [f"L{layer}.attn", f"L{layer}.mlp"]
        if not self.view.head.affine:
            parts.append(self.nonlinear_term())
            labels.append("head.nonlinear")
        return torch.stack(parts, 1), labels

    def source_layer_terms(self) -> Tensor:
        """``[B, L + 1, E]``: the embedding term (index 0), then each layer's attention and MLP together."""
        att, mlp = self.attention_layer_terms(), self.mlp_terms()
        return torch.cat([mlp[:, :1], att + mlp[:, 1:]], 1)

    def readout_terms(self) -> Tensor:
        """``[B, R, E]``: the embedding's affine part split by the head's readouts (for attention pooling: per
        pooling head), each readout with its share of the head's constant (``K / R`` each)."""
        first = self._map.first()
        second = self._map.second()
        x = self._readout_total()  # [B, R, D]
        y = torch.einsum("brd,rdk->brk", x * self._rscale[..., None], first)
        if second is not None:
            y = torch.einsum("brk,rke->bre", y, second)
        g, c = self._map.constants()
        rscale = self.readout.scale.to(self.dtype)
        own = c[None] - (rscale * self.readout.mean.to(self.dtype))[..., None] * g[None]  # [B, R, E]
        return y + (own + self._map.w.bias / self.num_readouts) * self.scale[:, None, None]

    def _readout_total(self) -> Tensor:
        """``[B, R, D]``: the whole last residual stream read out (every component summed)."""
        return self.embed_term + self.attn_out.sum(2) + self.mlp_out.sum(2)

    def pool_terms(self) -> Tensor:
        """``[B, R, N, E]``: per readout (pooling head) and token of the last residual stream, that token's
        contribution through the frozen head: ``a[r, n]·(γ ⊙ (x_n − μ_n)/σ_n + β)·M_r`` plus its share of the head's
        constant ``b`` (``a[r, n]/R``). With every other term (:meth:`nonlinear_term`) it sums to the embedding.
        For CLS pooling only the CLS token has a term (the decomposition reads nothing else)."""
        ro = self.readout
        x = self.final.to(self.dtype)  # [B, N, D]
        a = ro.pooling.to(self.dtype)
        t = ro.token_scale.to(self.dtype)[:, None] * ro.scale.to(self.dtype)[..., None]  # [B, R, N] ω·s
        m = ro.token_mean.to(self.dtype)
        first, second = self._map.first(), self._map.second()
        y = torch.einsum("brn,bnd,rdk->brnk", a * t, x, first)
        g, c = self._map.constants()
        if second is not None:
            y = torch.einsum("brnk,rke->brne", y, second)
        y = y - torch.einsum("brn,re->brne", a * t * m[:, None], g) + torch.einsum("brn,re->brne", a, c)
        y = y + a[..., None] * self._map.w.bias / self.num_readouts
        return y * self.scale[:, None, None, None]

    def reconstruct(self) -> Tensor:
        """``[B, E]``: the sum of every component (equals the model's embedding)."""
        total = self.mlp_terms().sum(1) + self.nonlinear_term()
        head_set = set(self.head_layers)
        other = [i for i in range(self.num_layers) if i not in head_set]
        if other:
            total = total + self.to_joint(self.attn_out[:, :, other], site_share(self.num_layers)).sum(1)
        if self.head_layers:
            ht = self.per_head() if self.factored else self.head_terms()
            total = total + ht.sum(dim=tuple(range(1, ht.dim() - 1)))
        if self.has_shift:
            total = total + self.shift_terms().sum(1)
        return total

    @property
    def tolerance(self) -> float:
        """The relative tolerance :meth:`check` uses (by the model's and the decomposition's dtypes)."""
        return check_tolerance(self.dtype, self.embedding.dtype, self.view.dtype)

    def relative_error(self) -> Tensor:
        """``[B]``: ``‖Σ parts − z‖ / ‖z‖`` per image."""
        target = self.embedding.to(self.dtype) * self.scale[:, None]
        return (self.reconstruct() - target).norm(dim=-1) / target.norm(dim=-1).clamp_min(1e-30)

    def check(self, rtol: float | None = None) -> float:
        """The largest relative error ``‖Σ parts − z‖ / ‖z‖``; raises ``AssertionError`` above ``rtol``.

        ``rtol`` defaults to :attr:`tolerance` (1e-5 in float32; see :data:`CHECK_TOLERANCE`).
        """
        tol = self.tolerance if rtol is None else rtol
        err = float(self.relative_error().max()) if self.batch_size else 0.0
        if not err <= tol:
            raise AssertionError(f"decomposition does not sum to the embedding: relative error {err:.3g} > {tol:g}")
        return err

    # ---- scores against text directions -------------------------------------
    def project(self, directions: Tensor | str | Sequence[str], labels: list[str] | None = None) -> ComponentScores:
        """Score every component against text ``directions`` ``[T, E]`` (or ``[E]``), or against texts.

        Pass normalised text embeddings (``model.encode_text(texts)``) or the texts themselves
        (embedded with the model's own text tower when the decomposition came from
        ``model.decompose``). Use :meth:`normalized` first to score against the unit-norm image
        embedding: then the scores of all components add up to the cosine similarity.
        """
        if isinstance(directions, str) or (isinstance(directions, Sequence) and not isinstance(directions, Tensor)):
            texts = [directions] if isinstance(directions, str) else list(directions)
            if self.model is None:
                raise InvalidInputError("this decomposition has no model to embed texts: pass text embeddings "
                                        "(model.encode_text(texts)) instead of texts")
            labels = labels or texts
            directions = text_directions(self.model, texts)
        d = directions.detach() if isinstance(directions, Tensor) else torch.as_tensor(directions)
        if d.dim() == 1:
            d = d[None]
        if d.dim() != 2 or d.shape[1] != self.embedding.shape[1]:
            raise InvalidInputError(
                f"directions must be [T, {self.embedding.shape[1]}] (the joint embedding size); got {tuple(d.shape)}"
            )
        dt = d.to(device=self.embed_term.device, dtype=self.dtype).t()  # [E, T]
        if self.factored:
            heads = self._map.spatial_heads(self.head_rows, self.head_values, self.head_layers, self._rscale,  # type: ignore[arg-type]
                                            directions=dt)
        else:
            heads = self._map.heads_against(self.heads, self.head_layers, self._rscale, dt)
        consts_t = self._per_term_constants() @ dt  # [B, Lh, T]
        heads = heads + (consts_t[:, :, None, None, :] if self.spatial else consts_t[:, :, None, :])
        mlp_all = self.mlp_terms() @ dt  # [B, L+1, T]
        attention = self.attention_layer_terms() @ dt  # [B, L, T]
        # for head layers, use the exact sum of their heads so that everything adds up consistently
        if self.head_layers:
            per_layer = heads.sum(dim=(2, 3)) if self.spatial else heads.sum(2)
            if self.has_shift:  # the sub-LN shift is part of its layer's attention term
                per_layer = per_layer + self.shift_terms() @ dt
            attention[:, list(self.head_layers)] = per_layer
        nonlinear = None if self.view.head.affine else self.nonlinear_term() @ dt
        pool = self.pool_terms() @ dt if self.num_layers == 0 else None  # an opaque trunk: the pool's split
        return ComponentScores(
            heads=heads, attention=attention, mlp=mlp_all[:, 1:], embed=mlp_all[:, 0],
            head_layers=self.head_layers, spatial=self.spatial, grid=self.grid, labels=list(labels or []),
            nonlinear=nonlinear, prefix=self.prefix, pool=pool,
        )

    # ---- saving and loading -------------------------------------------------
    def header(self) -> dict[str, Any]:
        """What :meth:`save` writes next to the tensors (JSON-serialisable)."""
        return {
            "format": FORMAT, "fingerprint": self.fingerprint or fingerprint_view(self.view),
            "model": getattr(self.model, "name", None), "family": getattr(self.model, "family", None),
            "source": self.view.source, "images": self.batch_size, "layers": self.num_layers,
            "heads": self.num_heads, "head_layers": list(self.head_layers), "spatial": self.spatial,
            "grid": list(self.grid), "dtype": str(self.dtype).replace("torch.", ""),
            "model_dtype": str(self.embedding.dtype).replace("torch.", ""), "settings": self.settings,
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a ``.safetensors`` file (tensors + the JSON :meth:`header`); never overwrites unless asked."""
        from safetensors.torch import save_file

        path = Path(path).expanduser()
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} already exists: pick another name, or pass overwrite=True")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.contiguous().cpu() for name, t in self._per_image().items()}
        tensors.update({f"readout.{f}": getattr(self.readout, f).contiguous().cpu() for f in _READOUT_FIELDS})
        save_file(tensors, str(path), metadata={"cliplens": json.dumps(self.header())})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: ImageTextModel) -> Decomposition:
        """Read a saved decomposition for ``model`` (an adapter or a view); refuses another model's file."""
        from safetensors import safe_open

        path = Path(path).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"no saved decomposition at {str(path)!r}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = json.loads((f.metadata() or {}).get("cliplens", "{}"))
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as e:
            raise InvalidInputError(f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e})") from e
        if header.get("format") == FORMAT_1 and not set(_TENSORS_1) - set(tensors):
            tensors = _from_format_1(tensors)
        elif header.get("format") not in (FORMAT, FORMAT_2) or set(_PER_IMAGE) - set(_OPTIONAL) - set(tensors) \
                or ("heads" not in tensors and not {"head_rows", "head_values"} <= set(tensors)):
            raise InvalidInputError(f"{str(path)!r} is not a cliplens decomposition (format {header.get('format')!r})")
        view = getattr(model, "vision", model)
        if not isinstance(view, VisionView):
            raise InvalidInputError(f"Decomposition.load needs the model it was made with, got {type(model).__name__}")
        fp = model.fingerprint() if hasattr(model, "fingerprint") else fingerprint_view(view)
        if header["fingerprint"] != fp:
            raise ModelLoadError(
                f"{str(path)!r} was made with another model (fingerprint {header['fingerprint']}, model "
                f"{header.get('model')!r}) than the one given ({fp}, {getattr(model, 'name', view.source)!r}); "
                "load it with the model it was made with"
            )
        device = view.device
        t = {k: v.to(device) for k, v in tensors.items()}
        readout = Readout(**{f: t.pop(f"readout.{f}") for f in _READOUT_FIELDS})
        return cls(view, **t, readout=readout, head_layers=tuple(header["head_layers"]), spatial=header["spatial"],
                   grid=tuple(header["grid"]), model=model if hasattr(model, "vision") else None,
                   fingerprint=header["fingerprint"], settings=header.get("settings", {}))


#: the per-image tensors (sliced and concatenated along images; saved); a decomposition holds ``heads`` or
#: its factors ``head_rows`` and ``head_values``
_PER_IMAGE = ("embed_term", "mlp_out", "attn_out", "heads", "head_rows", "head_values", "final", "nonlinear",
              "embedding", "scale", "shift")
#: per-image tensors a file may lack (written before they existed, or held in another form): filled in empty
_OPTIONAL = ("shift", "heads", "head_rows", "head_values")
_READOUT_FIELDS = ("pooling", "token_scale", "token_mean", "scale")
#: what files of the first format held (CLS pooling only; no readout axis)
FORMAT_1 = "cliplens.decomposition/1"
_TENSORS_1 = ("embed_term", "mlp_out", "attn_out", "heads", "mean", "std", "embedding", "scale")


def _from_format_1(t: dict[str, Tensor]) -> dict[str, Tensor]:
    """A file of the first format (CLS pooling, no readout axis) in today's terms: every value read out at CLS."""
    B = t["embed_term"].shape[0]
    one = torch.ones(B, 1, 1, dtype=t["mean"].dtype)
    return {"embed_term": t["embed_term"][:, None], "mlp_out": t["mlp_out"][:, None], "attn_out": t["attn_out"][:, None],
            "heads": t["heads"][:, None], "final": torch.full_like(t["embed_term"][:, None], float("nan")),
            "nonlinear": torch.zeros_like(t["embedding"]), "embedding": t["embedding"], "scale": t["scale"],
            "readout.pooling": one, "readout.token_scale": one[:, 0], "readout.token_mean": t["mean"][:, None],
            "readout.scale": (1 / t["std"])[:, None]}


def _readout_apply(r: Readout, fn: Callable[[Tensor], Tensor]) -> Readout:
    return Readout(**{f: fn(getattr(r, f)) for f in _READOUT_FIELDS})
