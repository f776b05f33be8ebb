"""Second-order effects of MLP neurons (Gandelsman, Efros, Steinhardt, *Interpreting the Second-Order Effects of
Neurons in CLIP*, ICLR 2025, arXiv 2406.04341, §3).

A neuron ``n`` of the MLP of layer ``k`` writes ``u_{n,m} = a_{n,m} · w_n`` (its post-activation value at token
``m`` times its row of the output projection, layer-scale included) into the residual stream. Its *second-order
effect* is what reaches the output through every **later attention head** (not through later MLPs, not
directly), with every nonlinearity frozen at the real forward: each later layer ``l``'s ``ln_1`` at its per-token
statistics, the attention patterns as they were (only the CLS query's row is read, as the CLS token is what the
pooling head reads), ``ln_post`` at the CLS token's statistics:

    φ_n = Σ_{l>k} Σ_h Σ_m  J( W_O^h · α^{l,h}_{0,m} · (W_V^h · LN1_l(u_{n,m}) + b_V^h share) + b_O share )

with ``J`` the frozen pooling head (:class:`~cliplens.decomposition.algebra.JointMap`). Each neuron carries a
share of every constant it passes (the output projection's bias ``1/N_n``, ``ln_1``'s mean and bias
``1/((2l+1)·N_n)``, the value and out-projection biases likewise, ``ln_post``'s mean and bias
``1/((2L+1)·H·(2l+1)·N_n)`` per head): the shares of the paper's code, nested in cliplens's own rule
(:mod:`cliplens.decomposition.shares`), so that **the effects of a layer's neurons plus those of every other
component of the residual sum to the decomposition's head terms** exactly (the test checks it).

Computation: the effect factorises into a weight-only part and per-image numbers,

    φ_{b,n} = Σ_l (1/σ_post,b) Σ_h ( Σ_m a_{b,m,n} α^{l,h}_{b,0,m} / σ^l_{b,m} ) · V^{k,l}_{n,h}  +  C_b,

``V^{k,l}_{n,h} = J_lin(W_O^h W_V^h (γ_1^l ⊙ w_n))`` (``[N_n, H, E]`` per pair of layers, computed once per
:class:`SecondOrder` and reused for every batch), ``C_b`` the constants' shares (equal for every neuron of a
layer). One forward per batch, then einsums: no loop over neurons; neurons are taken in chunks to bound memory.

Follows ``prs_second_order_neurons_hook.py`` of the paper's code (github.com/yossigandelsman/second_order_lens
@ 1d4fe4d): equal to it to 1e-15 in float64 on identical random weights (a scratch transcription of its formulas),
without its ``100/‖z‖`` factor (:meth:`NeuronEffects.scaled` applies it).

Families: CLS-pooled ViTs (CLIP, OpenCLIP, EVA02, the toy model). EVA02's sub-LayerNorm over the heads is frozen
at the CLS token as the decomposition freezes it (its shift stays the layer's own term); SwiGLU's neurons are the
hidden units the output projection reads. Attention-pooled towers (SigLIP's MAP head) and mean pooling are
refused: the paper's effect reads the CLS row, and their pooling reads every token (a second-order path there
needs every later layer's full attention, not implemented). ResNets have no transformer MLPs: refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cliplens.core.heads.base import ln_stats
from cliplens.core.view import VisionView
from cliplens.decomposition.algebra import HeadWeights, JointMap
from cliplens.decomposition.shares import num_sites
from cliplens.errors import InvalidInputError

__all__ = ["COEFFICIENT", "NeuronEffects", "SecondOrder", "check_neuron_layers", "second_order"]

#: the paper's code scales each effect by this over the embedding's norm
COEFFICIENT = 100.0


def _view(model: Any) -> VisionView:
    return model if isinstance(model, VisionView) else model.vision


def check_neuron_layers(view: VisionView, layers: Iterable[int]) -> tuple[int, ...]:
    """The source layers as non-negative indices, or a readable refusal (family, range, no later layer)."""
    L = view.num_layers
    if L == 0:
        raise InvalidInputError("second-order effects of neurons need a transformer tower: this model's image tower "
                                "is a convolutional trunk (a ResNet), which has no MLP neurons followed by attention "
                                "heads; use a ViT")
    if view.head.kind != "cls":
        raise InvalidInputError(
            f"second-order effects of neurons are defined (and implemented) for CLS-pooled towers, where only the "
            f"CLS token's attention row reaches the output; this tower pools with a {view.head.kind!r} head that "
            "reads every token (SigLIP's attention-pooling probe, or mean pooling), which the paper does not cover: "
            "use a CLIP, OpenCLIP or EVA02 ViT")
    out = []
    for i in layers:
        j = int(i) + L if int(i) < 0 else int(i)
        if not 0 <= j < L:
            raise InvalidInputError(f"layer {i} does not exist: the tower has layers 0..{L - 1}")
        if j == L - 1:
            raise InvalidInputError(f"layer {j} is the last: its neurons have no later attention head, so no "
                                    f"second-order effect; choose layers 0..{L - 2}")
        out.append(j)
    if not out:
        raise InvalidInputError("no layers given: name the MLP layers whose neurons to analyse, e.g. --layers 8,9,10")
    return tuple(sorted(set(out)))


@dataclass
class NeuronEffects:
    """The second-order effects of the neurons of one MLP layer over a batch of images.

    ``effects`` ``[B, n, E]`` (joint space, unscaled: they sum with the rest to the decomposition), ``norms``
    ``[B]`` the embeddings' norms ``‖z‖``, ``neurons`` the neurons' indices, ``tokens`` ``[B, n, N, E]`` per
    source token when asked (CLS first).
    """

    layer: int
    neurons: Tensor
    effects: Tensor
    norms: Tensor
    tokens: Tensor | None = None

    def scaled(self, coefficient: float = COEFFICIENT) -> Tensor:
        """``coefficient · φ / ‖z‖`` ``[B, n, E]``: the paper's normalisation."""
        return self.effects * (coefficient / self.norms)[:, None, None]


class SecondOrder:
    """The second-order lens of one model for chosen MLP layers: weight-only products computed once, then
    :meth:`__call__` per batch of images.

    ``chunk`` neurons are processed at a time (memory ``∝ chunk · H · E`` per later layer); ``dtype`` is the
    precision of every computation (float32 by default; float64 for checks).
    """

    def __init__(self, model: Any, layers: Iterable[int], *, chunk: int = 1024, dtype: torch.dtype | None = None,
                 neurons: Sequence[int] | Tensor | None = None) -> None:
        self.view = _view(model)
        self.layers = check_neuron_layers(self.view, layers)
        self.dtype = dtype or torch.float32
        self.chunk = max(1, int(chunk))
        width = int(self.view.blocks[0].fc2_weight.shape[1])
        sel = torch.arange(width) if neurons is None else torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        if sel.numel() == 0 or int(sel.min()) < 0 or int(sel.max()) >= width:
            raise InvalidInputError(f"neurons must be indices in 0..{width - 1} (the MLP's hidden width)")
        self.neurons = sel
        self.width = width
        self.map = JointMap(HeadWeights.from_view(self.view, self.dtype))
        self._V: dict[tuple[int, int, int], Tensor] = {}

    # ---- weight-only parts --------------------------------------------------------------------------------
    def _write(self, k: int, idx: Tensor) -> Tensor:
        """``[n, D]`` the neurons' output rows ``w_n`` (layer-scale folded)."""
        blk = self.view.blocks[k]
        w = blk.fc2_weight.detach()[:, idx.to(blk.fc2_weight.device)].t().to(self.dtype)
        return w if blk.ls_2 is None else w * blk.ls_2.detach().to(self.dtype)

    def _values(self, lat: int, x: Tensor) -> Tensor:
        """Residual-space vectors ``[..., D]`` (already LayerNormed) through layer ``l``'s value maps ->
        ``[..., H, dh]`` (no bias), times the sub-LN's ``γ_s`` where the block has one."""
        blk = self.view.blocks[lat]
        v = x @ blk.v_weight.detach().to(self.dtype).t()
        v = v.reshape(*x.shape[:-1], blk.num_heads, blk.head_dim)
        if blk.attn_norm is not None and blk.attn_norm.weight is not None:
            v = v * blk.attn_norm.weight.detach().to(self.dtype).reshape(blk.num_heads, -1)
        return v

    def weight_part(self, k: int, lat: int, start: int) -> Tensor:
        """``V^{k,l}`` ``[n, H, E]`` for the chunk of neurons starting at ``start``: ``J_lin(W_O^h W_V^h (γ_1 ⊙
        w_n))`` without the per-image factors ``1/σ``."""
        key = (k, lat, start)
        if key not in self._V:
            idx = self.neurons[start:start + self.chunk]
            g = self.view.blocks[lat].ln_1.weight
            w = self._write(k, idx)
            if g is not None:
                w = w * g.detach().to(self.dtype)
            head_space = self._values(lat, w)  # [n, H, dh]
            first = self.map.head_first([lat])[0][:, 0]  # [H, dh, E] (CLS pooling: one readout, in = identity)
            self._V[key] = torch.einsum("nhj,hje->nhe", head_space, first)
        return self._V[key]

    # ---- per batch ----------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The forward's tensors the effects need (``final`` and, per layer, hook names of
        :mod:`cliplens.core.hooks`)."""
        first = min(self.layers)
        names = ["final"] + [f"blocks.{k}.mlp.hidden" for k in self.layers]
        for lat in range(first + 1, self.view.num_layers):
            names += [f"blocks.{lat}.resid_pre", f"blocks.{lat}.attn.cls_pattern"]
            if self.view.blocks[lat].attn_norm is not None:
                names.append(f"blocks.{lat}.attn.z")
        return names

    @property
    def later(self) -> tuple[int, ...]:
        """The later layers whose heads carry the effects of at least one source layer."""
        return tuple(range(min(self.layers) + 1, self.view.num_layers))

    def _per_layer(self, cache: dict[str, Tensor]) -> tuple[dict[int, dict[str, Tensor]], Tensor, Tensor]:
        """Per later layer: ``ln_1``'s statistics, the CLS rows, the sub-LN's ``1/σ`` at CLS; ``1/σ_post`` and
        ``K`` (the pooling head's constant) per image."""
        view, dt = self.view, self.dtype
        final = cache["final"]
        final = final[:, 0] if final.dim() == 3 else final
        mean_p, sd_p = ln_stats(view.head.norm, final)
        inv_post = (1 / sd_p).to(dt)  # [B]
        K = self.map.total_constant(inv_post[:, None], mean_p.to(dt)[:, None])  # [B, E]
        per_layer: dict[int, dict[str, Tensor]] = {}
        for lat in self.later:
            blk = view.blocks[lat]
            mu, sd = ln_stats(blk.ln_1, cache[f"blocks.{lat}.resid_pre"].to(dt))  # [B, N]
            zs = torch.ones_like(inv_post)
            if blk.attn_norm is not None:
                zc = cache[f"blocks.{lat}.attn.z"][:, 0].to(dt)  # [B, H, dh] at CLS
                zs = 1 / ln_stats(blk.attn_norm, zc.reshape(zc.shape[0], -1))[1]
            per_layer[lat] = {"mu": mu, "inv_sd": 1 / sd, "alpha": cache[f"blocks.{lat}.attn.cls_pattern"].to(dt),
                              "f": inv_post * zs}
        return per_layer, inv_post, K

    def factors(self, cache: dict[str, Tensor]) -> dict[int, tuple[Tensor, Tensor]]:
        """From one forward's recorded :meth:`names`: per source layer ``(weights [B, Nn, Lp, H], const [B, E])``,
        the per-image numbers the effects are linear in (``Lp`` the :attr:`later` layers; zero for layers not
        after the source): ``φ_{b,n} = Σ_{l,h} weights[b,n,l,h] · V^{k,l}_{n,h} + const[b]``. This is what a store
        built with neuron layers keeps per image (:func:`cliplens.store.writer.image_terms`)."""
        per_layer, inv_post, K = self._per_layer(cache)
        later = self.later
        out = {}
        for k in self.layers:
            a = cache[f"blocks.{k}.mlp.hidden"].to(self.dtype)  # [B, N, Nn]
            w = a.new_zeros(a.shape[0], a.shape[2], len(later), self.view.num_heads)
            for j, lat in enumerate(later):
                if lat <= k:
                    continue
                p = per_layer[lat]
                r = p["alpha"] * p["inv_sd"][:, None]  # [B, H, N]
                w[:, :, j] = torch.einsum("bmn,bhm->bnh", a, r) * p["f"][:, None, None]
            out[k] = (w, self._constants(k, per_layer, inv_post, K, a.shape[1])[0])
        return out

    def effects_from(self, k: int, weights: Tensor, const: Tensor, norms: Tensor) -> NeuronEffects:
        """:class:`NeuronEffects` of source layer ``k`` (of :attr:`neurons`) from :meth:`factors`' numbers (computed
        now, or read back from a store)."""
        later = self.later
        weights = weights.to(self.dtype)
        pieces = []
        for start in range(0, self.neurons.numel(), self.chunk):
            idx = self.neurons[start:start + self.chunk].to(weights.device)
            wn = weights[:, idx]  # [B, n, Lp, H]
            eff = const.to(self.dtype)[:, None].expand(wn.shape[0], idx.numel(), -1).clone()
            for j, lat in enumerate(later):
                if lat > k:
                    eff += torch.einsum("bnh,nhe->bne", wn[:, :, j], self.weight_part(k, lat, start))
            pieces.append(eff)
        return NeuronEffects(layer=k, neurons=self.neurons.clone(), effects=torch.cat(pieces, 1),
                             norms=norms.to(self.dtype))

    @torch.no_grad()
    def __call__(self, pixel_values: Tensor, *, per_token: bool = False) -> dict[int, NeuronEffects]:
        """Run the forward once on ``pixel_values`` ``[B, C, H, W]`` and return each layer's
        :class:`NeuronEffects` (``per_token``: also each source token's effect, ``[B, n, N, E]`` — large)."""
        from cliplens.core.forward import run_vision

        view = self.view
        out = run_vision(view, pixel_values.to(device=view.device, dtype=view.dtype), names=self.names())
        norms = out.embedding.to(self.dtype).norm(dim=-1)
        if not per_token:
            return {k: self.effects_from(k, w, c, norms) for k, (w, c) in self.factors(out.cache).items()}
        c = out.cache
        per_layer, inv_post, K = self._per_layer(c)
        result = {}
        for k in self.layers:
            a = c[f"blocks.{k}.mlp.hidden"].to(self.dtype)  # [B, N, Nn]
            pieces, token_pieces = [], []
            const, const_tok = self._constants(k, per_layer, inv_post, K, a.shape[1])
            for start in range(0, self.neurons.numel(), self.chunk):
                idx = self.neurons[start:start + self.chunk].to(a.device)
                an = a[:, :, idx]  # [B, N, n]
                tok = const_tok[:, None].expand(an.shape[0], idx.numel(), -1, -1).clone()
                for lat in range(k + 1, view.num_layers):
                    p = per_layer[lat]
                    r = p["alpha"] * p["inv_sd"][:, None]  # [B, H, N]
                    # [B, n, N, E] = f · a[b,m,n] Σ_h r[b,h,m] V[n,h,e]
                    t = torch.einsum("bhm,nhe->bnme", r, self.weight_part(k, lat, start))
                    tok += p["f"][:, None, None, None] * t * an.transpose(1, 2)[..., None]
                pieces.append(tok.sum(2))
                token_pieces.append(tok)
            result[k] = NeuronEffects(layer=k, neurons=self.neurons.clone(), effects=torch.cat(pieces, 1),
                                      norms=norms, tokens=torch.cat(token_pieces, 1))
        return result

    def _constant_maps(self, k: int, lat: int) -> tuple[Tensor, Tensor, Tensor]:
        """Weight-only ``[H, E]`` maps of the constants at layer ``lat`` for source layer ``k``: through head ``h``'s
        value, out-projection and the pooling head, ``γ_1`` (times each token's ``-s·μ/σ``), ``γ_1 ⊙ b_fc2`` (times
        ``1/(N_n σ)``) and ``β_1 + b_V`` (times ``s``)."""
        key = (k, lat, -1)
        if key not in self._V:
            view, dt = self.view, self.dtype
            blk, src = view.blocks[lat], view.blocks[k]
            H = blk.num_heads
            ones = torch.ones(view.width, dtype=dt, device=view.device)
            g1 = ones if blk.ln_1.weight is None else blk.ln_1.weight.detach().to(dt)
            b2 = torch.zeros_like(ones) if src.fc2_bias is None else src.fc2_bias.detach().to(dt)
            if src.ls_2 is not None:
                b2 = b2 * src.ls_2.detach().to(dt)
            beta = torch.zeros_like(ones) if blk.ln_1.bias is None else blk.ln_1.bias.detach().to(dt)
            heads = self._values(lat, torch.stack([g1, g1 * b2, beta]))  # [3, H, dh]
            if blk.v_bias is not None:
                vb = blk.v_bias.detach().to(dt).reshape(H, -1)
                if blk.attn_norm is not None and blk.attn_norm.weight is not None:
                    vb = vb * blk.attn_norm.weight.detach().to(dt).reshape(H, -1)
                heads[2] = heads[2] + vb
            first = self.map.head_first([lat])[0][:, 0]  # [H, dh, E]
            maps = torch.einsum("chj,hje->che", heads, first)
            self._V[key] = maps  # type: ignore[assignment]
        m = self._V[key]
        return m[0], m[1], m[2]

    def _constants(self, k: int, per_layer: dict[int, dict[str, Tensor]], inv_post: Tensor, K: Tensor,
                   N: int) -> tuple[Tensor, Tensor]:
        """Each neuron's share of the constants ``[B, E]`` (summed over source tokens) and ``[B, N, E]``: its share
        ``s`` of ``ln_1``'s mean and bias and of the value bias, ``1/N_n`` of ``b_fc2`` (carried by the frozen
        LayerNorm and the CLS row at each token), ``s/H`` of the out-projection bias per head and ``s/((2L+1)·H)``
        of the pooling head's constant per head, those two split equally over the source tokens."""
        view = self.view
        L = view.num_layers
        Nn = self.width
        tok = K.new_zeros(K.shape[0], N, K.shape[-1])
        for lat in range(k + 1, L):
            p = per_layer[lat]
            s1 = 1.0 / (num_sites(lat) * Nn)  # the neuron's share of ln_1's mean and bias (and of the biases after)
            m_g, m_b2, m_beta = self._constant_maps(k, lat)  # [H, E]
            c_g = -s1 * p["mu"] * p["inv_sd"]  # [B, N]
            c_b2 = p["inv_sd"] / Nn
            a = p["alpha"]  # [B, H, N]
            y = (torch.einsum("bhn,he->bne", a * c_g[:, None], m_g) + torch.einsum("bhn,he->bne", a * c_b2[:, None], m_b2)
                 + s1 * torch.einsum("bhn,he->bne", a, m_beta)) * p["f"][:, None, None]
            ob = self.map.w.out_bias[lat] @ self.map.first()[0]  # [E]: out bias (ls, γ folded), zero under a sub-LN
            y = y + (s1 / N) * inv_post[:, None, None] * ob
            y = y + (s1 / (num_sites(L) * N)) * K[:, None]
            tok = tok + y
        return tok.sum(1), tok


def second_order(model: Any, pixel_values: Tensor, layers: Iterable[int], *, neurons: Sequence[int] | None = None,
                 per_token: bool = False, chunk: int = 1024, dtype: torch.dtype | None = None
                 ) -> dict[int, NeuronEffects]:
    """The second-order effects of the MLP neurons of ``layers`` for one batch of preprocessed images
    (see the module docs). ``model``: an adapter (``cliplens.load``/``wrap``) or its ``VisionView``.

    Returns ``{layer: NeuronEffects}``; for many batches build one :class:`SecondOrder` and call it per batch
    (its weight products are reused).
    """
    return SecondOrder(model, layers, chunk=chunk, dtype=dtype, neurons=neurons)(pixel_values, per_token=per_token)
