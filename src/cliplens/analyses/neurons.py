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

Following the paper's code (github.com/yossigandelsman/second_order_lens @ 1d4fe4d,
``prs_second_order_neurons_hook.py``, ``compute_pcas.py``, ``compute_ablations.py``,
``compute_sparse_decomposition.py``, ``decompose.py``, ``compute_segmentation.py``):

* **scaled effects**: the code multiplies each effect by ``100 / ‖z‖`` (``z`` the unnormalised embedding);
  :meth:`NeuronEffects.scaled` does that, and the principal components, ablations and descriptions use it;
* **first principal component** (:func:`principal_components`): centre each neuron's scaled effects by their
  mean over the data set, keep the ``top_k = 100`` images with the largest centred norm, take the first right
  singular vector of those rows (no second centring), oriented so that more than half of them project
  positively; the 100th-largest norm is the neuron's *significance threshold*;
* **sparse text description** (:func:`describe`): the pool's normalised text embeddings, centred by their
  mean over the pool, each *coordinate* divided by its norm over the pool (the code's ``axis=0``) and times 100;
  then orthogonal matching pursuit with ``components`` atoms (the code's default 32; its README command 128)
  on each principal component. The code's vocabulary is its 30,000 common words; cliplens uses any pool
  (``cliplens.analyses.pools``), whose size the result states. The solver is a batched OMP written here
  (checked against scikit-learn's ``orthogonal_mp``);
* **ablations** (:func:`ablation_study`): mean-ablation of a layer's second-order effects (replace each by its
  mean over the training images), of the significant neurons only, of the insignificant only, and
  reconstruction from the principal components (and from the text descriptions), with zero-shot accuracy;
* **segmentation** (:func:`neuron_maps`): the class predicted zero-shot, the ``top`` neurons (over the chosen
  layers) whose principal component points most along that class's embedding (largest ``|pc · w_c|``), and
  the mean of their post-activation values over the patch tokens.

Families: CLS-pooled ViTs (CLIP, OpenCLIP, EVA02, the toy model). EVA02's sub-LayerNorm over the heads is frozen
at the CLS token as the decomposition freezes it (its shift stays the layer's own term); SwiGLU's neurons are the
hidden units the output projection reads. Attention-pooled towers (SigLIP's MAP head) and mean pooling are
refused: the paper's effect reads the CLS row, and their pooling reads every token (a second-order path there
needs every later layer's full attention, not implemented). ResNets have no transformer MLPs: refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.core.heads.base import ln_stats
from cliplens.core.view import VisionView
from cliplens.decomposition.algebra import HeadWeights, JointMap
from cliplens.decomposition.shares import num_sites
from cliplens.errors import InvalidInputError

__all__ = ["COEFFICIENT", "NeuronComponents", "NeuronDescription", "NeuronEffects", "SecondOrder",
           "ablation_study", "check_neuron_layers", "describe", "neuron_maps", "omp", "principal_components",
           "second_order"]

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

    def _constants(self, k: int, per_layer: dict[int, dict[str, Tensor]], inv_post: Tensor, K: Tensor,
                   N: int) -> tuple[Tensor, Tensor]:
        """Each neuron's share of the constants ``[B, E]`` (summed over source tokens) and ``[B, N, E]``."""
        view, dt = self.view, self.dtype
        L, H = view.num_layers, view.num_heads
        Nn = self.width
        src = view.blocks[k]
        b2 = None if src.fc2_bias is None else src.fc2_bias.detach().to(dt)
        if b2 is not None and src.ls_2 is not None:
            b2 = b2 * src.ls_2.detach().to(dt)
        B = inv_post.shape[0]
        E = K.shape[-1]
        tok = K.new_zeros(B, N, E)
        for lat in range(k + 1, L):
            blk, p = view.blocks[lat], per_layer[lat]
            s1 = 1.0 / (num_sites(lat) * Nn)  # the neuron's share of ln_1's mean and bias (and of the biases after)
            g1 = torch.ones(view.width, dtype=dt, device=K.device) if blk.ln_1.weight is None else \
                blk.ln_1.weight.detach().to(dt)
            inv = p["inv_sd"][..., None]  # [B, N, 1]
            ln = -s1 * p["mu"][..., None] * inv * g1  # [B, N, D]
            if b2 is not None:
                ln = ln + (g1 * b2 / Nn) * inv
            if blk.ln_1.bias is not None:
                ln = ln + s1 * blk.ln_1.bias.detach().to(dt)
            v = self._values(lat, ln)  # [B, N, H, dh]
            if blk.v_bias is not None:
                vb = blk.v_bias.detach().to(dt).reshape(H, -1)
                if blk.attn_norm is not None and blk.attn_norm.weight is not None:
                    vb = vb * blk.attn_norm.weight.detach().to(dt).reshape(H, -1)
                v = v + s1 * vb
            v = v * p["alpha"].transpose(1, 2)[..., None]  # [B, N, H, dh] each source token at the CLS query
            first = self.map.head_first([lat])[0][:, 0]  # [H, dh, E]
            y = torch.einsum("bnhj,hje->bne", v, first) * p["f"][:, None, None]
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


# ---- over a data set: principal components, descriptions, ablations ------------------------------------------------
@dataclass
class NeuronComponents:
    """Per neuron of one layer: ``mean`` ``[n, E]`` of its scaled effects over the images, ``pcs`` ``[n, E]``
    the first principal component (unit, oriented), ``norms`` ``[n, top_k]`` the largest centred norms in
    increasing order (``threshold``: the smallest of them), ``explained`` ``[n]`` the share of the top images'
    variance (uncentred second moment) the component carries, and ``selectivity`` ``[n]`` the share of images
    whose centred norm exceeds the threshold."""

    layer: int
    neurons: np.ndarray
    mean: np.ndarray
    pcs: np.ndarray
    norms: np.ndarray
    explained: np.ndarray
    top_images: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> np.ndarray:
        return self.norms[:, 0]


def principal_components(effects: np.ndarray | Tensor, *, layer: int = -1, top_k: int = 100, chunk: int = 256,
                         neurons: Sequence[int] | None = None) -> NeuronComponents:
    """Each neuron's first principal component from its scaled effects ``[I, n, E]`` (a memory-mapped array
    works: neurons are read in chunks), by the paper's recipe (module docs)."""
    arr = effects
    n_img, n, E = arr.shape
    if n_img < 2:
        raise InvalidInputError("principal components need effects over at least 2 images")
    top = min(int(top_k), n_img)
    means, pcs, norms, expl, tops = [], [], [], [], []
    for s in range(0, n, chunk):
        e = torch.as_tensor(np.asarray(arr[:, s:s + chunk]), dtype=torch.float64).transpose(0, 1)  # [c, I, E]
        m = e.mean(1, keepdim=True)
        cen = e - m
        nr = cen.norm(dim=-1)  # [c, I]
        vals, order = nr.sort(dim=1)
        sel = order[:, -top:]  # the top images, increasing norm
        rows = torch.gather(cen, 1, sel[..., None].expand(-1, -1, E))  # [c, top, E]
        _, sv, vh = torch.linalg.svd(rows, full_matrices=False)
        pc = vh[:, 0]  # [c, E]
        positive = ((rows @ pc[..., None])[..., 0] > 0).sum(1)
        pc = torch.where((positive > top // 2)[:, None], pc, -pc)
        means.append(m[:, 0])
        pcs.append(pc)
        norms.append(vals[:, -top:])
        expl.append(sv[:, 0] ** 2 / (sv ** 2).sum(1).clamp_min(1e-300))
        tops.append(sel.flip(1))
    idx = np.arange(n) if neurons is None else np.asarray(neurons)
    return NeuronComponents(layer=layer, neurons=idx, mean=torch.cat(means).numpy(), pcs=torch.cat(pcs).numpy(),
                            norms=torch.cat(norms).numpy(), explained=torch.cat(expl).numpy(),
                            top_images=torch.cat(tops).numpy(), settings={"top_k": top, "images": n_img})


def omp(targets: Tensor, dictionary: Tensor, n_nonzero: int) -> Tensor:
    """Orthogonal matching pursuit, batched over targets: ``targets`` ``[n, E]``, ``dictionary`` ``[T, E]`` (atoms
    used as given, not renormalised: the atom chosen is the one with the largest ``|⟨atom, residual⟩|``, as
    scikit-learn's ``orthogonal_mp`` chooses) -> coefficients ``[n, T]`` with at most ``n_nonzero`` non-zeros;
    each step refits every chosen atom by least squares."""
    y = targets.to(torch.float64)
    Dm = dictionary.to(torch.float64)
    n, T = y.shape[0], Dm.shape[0]
    k = min(int(n_nonzero), T, Dm.shape[1])
    chosen = torch.zeros(n, 0, dtype=torch.long)
    resid = y.clone()
    coef = y.new_zeros(n, 0)
    taken = torch.zeros(n, T, dtype=torch.bool)
    rows = torch.arange(n)
    for _ in range(k):
        corr = (resid @ Dm.t()).abs().masked_fill(taken, -1.0)
        pick = corr.argmax(1)
        if bool((corr[rows, pick] <= 1e-12 * y.norm(dim=1).clamp_min(1e-300)).all()):
            break
        taken[rows, pick] = True
        chosen = torch.cat([chosen, pick[:, None]], 1)
        A = Dm[chosen].transpose(1, 2)  # [n, E, s]
        coef = torch.linalg.lstsq(A, y[..., None]).solution[..., 0]  # [n, s]
        resid = y - (A @ coef[..., None])[..., 0]
    out = y.new_zeros(n, T)
    if chosen.shape[1]:
        out.scatter_(1, chosen, coef)
    return out


@dataclass
class NeuronDescription:
    """A neuron's sparse text description: ``texts`` with their ``weights`` (largest |weight| first), and the
    cosine between its principal component and the description's reconstruction."""

    layer: int
    neuron: int
    texts: list[str]
    weights: list[float]
    cosine: float

    def line(self, n: int = 5) -> str:
        return " + ".join(f"{w:.2f} {t!r}" for t, w in zip(self.texts[:n], self.weights[:n], strict=True))


def text_dictionary(text_embeddings: Tensor, coefficient: float = COEFFICIENT) -> Tensor:
    """The paper's dictionary from normalised text embeddings ``[T, E]``: centred over the texts, each coordinate
    divided by its norm over the texts, times ``coefficient``."""
    t = torch.nn.functional.normalize(text_embeddings.to(torch.float64), dim=-1)
    t = t - t.mean(0, keepdim=True)
    return coefficient * t / t.norm(dim=0, keepdim=True).clamp_min(1e-300)


def describe(components: NeuronComponents, texts: Sequence[str], text_embeddings: Tensor, *,
             n_texts: int = 32, coefficient: float = COEFFICIENT) -> tuple[list[NeuronDescription], Tensor]:
    """Each neuron's principal component as a sparse combination of the pool's texts (OMP over the paper's
    dictionary, module docs). Returns the descriptions and the reconstructions ``[n, E]`` (coefficients times
    the dictionary), which :func:`ablation_study` can use."""
    if len(texts) != text_embeddings.shape[0]:
        raise InvalidInputError(f"{len(texts)} texts but {text_embeddings.shape[0]} text embeddings")
    Dm = text_dictionary(text_embeddings, coefficient)
    pcs = torch.as_tensor(components.pcs, dtype=torch.float64)
    coef = omp(pcs, Dm, n_texts)
    recon = coef @ Dm
    cos = torch.nn.functional.cosine_similarity(recon, pcs, dim=-1)
    out = []
    for i, neuron in enumerate(components.neurons):
        nz = torch.nonzero(coef[i]).reshape(-1)
        order = nz[coef[i, nz].abs().argsort(descending=True)]
        out.append(NeuronDescription(components.layer, int(neuron), [texts[j] for j in order.tolist()],
                                     [float(coef[i, j]) for j in order.tolist()], float(cos[i])))
    return out, recon


def ablation_study(effects: np.ndarray | Tensor, embeddings: Tensor, labels: Sequence[int] | Tensor,
                   classifier: Tensor, components: NeuronComponents, *, reconstructions: Tensor | None = None,
                   coefficient: float = COEFFICIENT) -> dict[str, float]:
    """Zero-shot accuracy (``[0, 1]``) of the scaled representation ``coefficient · z/‖z‖`` with one layer's
    second-order effects ``[I, n, E]`` (scaled) changed, as the paper's ``compute_ablations.py``:

    * ``baseline``: nothing changed;
    * ``mean_ablated``: every neuron's effect replaced by its mean (``components.mean``, over the training images);
    * ``without_significant`` / ``without_insignificant``: only the neurons whose centred effect's norm is above
      (resp. at or below) their significance threshold mean-ablated, per image;
    * ``principal_components``: every effect replaced by its mean plus its projection on the neuron's component;
    * ``texts`` (with ``reconstructions``, :func:`describe`): plus its dot product with the text reconstruction
      times that reconstruction (the code's evaluation, unnormalised).

    ``classifier`` ``[E, C]`` (or ``[C, E]``) holds the classes' text embeddings."""
    e = torch.as_tensor(np.asarray(effects), dtype=torch.float64)
    z = embeddings.to(torch.float64)
    W = classifier.to(torch.float64)
    if W.shape[0] != z.shape[1]:
        W = W.t()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if not (e.shape[0] == z.shape[0] == y.shape[0]):
        raise InvalidInputError(f"{e.shape[0]} images of effects, {z.shape[0]} embeddings and {y.shape[0]} labels: "
                                "they must be the same images")
    rep = coefficient * z / z.norm(dim=-1, keepdim=True)
    mean = torch.as_tensor(components.mean, dtype=torch.float64)
    pcs = torch.as_tensor(components.pcs, dtype=torch.float64)
    cen = e - mean
    ablated = rep - e.sum(1) + mean.sum(0)
    sig = cen.norm(dim=-1) > torch.as_tensor(components.threshold, dtype=torch.float64)  # [I, n]
    reps = {
        "baseline": rep,
        "mean_ablated": ablated,
        "without_significant": ablated + (cen * (~sig)[..., None]).sum(1),
        "without_insignificant": ablated + (cen * sig[..., None]).sum(1),
        "principal_components": ablated + (torch.einsum("ind,nd->in", cen, pcs)[..., None] * pcs).sum(1),
    }
    if reconstructions is not None:
        r = reconstructions.to(torch.float64)
        reps["texts"] = ablated + (torch.einsum("ind,nd->in", cen, r)[..., None] * r).sum(1)
    return {name: float(((v @ W).argmax(1) == y).double().mean()) for name, v in reps.items()}


@torch.no_grad()
def neuron_maps(model: Any, pixel_values: Tensor, components: Sequence[NeuronComponents], classifier: Tensor, *,
                top: int = 200, classes: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Neuron-based segmentation maps (the paper's §5.3, ``compute_segmentation.py``): for each image the class
    predicted zero-shot (or ``classes``), the ``top`` neurons of the given layers whose principal component has
    the largest ``|pc · w_c|``, and the mean of their post-activation values at each patch token.

    Returns ``(maps [B, gh, gw], classes [B])`` on the token grid (upsample and min–max normalise to display, as
    the paper does)."""
    from cliplens.core.forward import run_vision

    view = _view(model)
    if not components:
        raise InvalidInputError("neuron maps need the principal components of at least one layer")
    layers = check_neuron_layers(view, [c.layer for c in components])
    out = run_vision(view, pixel_values.to(device=view.device, dtype=view.dtype),
                     names=[f"blocks.{k}.mlp.hidden" for k in layers])
    W = classifier.to(torch.float64)
    if W.shape[0] != view.embed_dim:
        W = W.t()
    if classes is None:
        classes_t = (out.embedding.to(torch.float64) @ W).argmax(1)
    else:
        classes_t = torch.as_tensor(list(classes), dtype=torch.long)
    pcs = torch.cat([torch.as_tensor(c.pcs, dtype=torch.float64) for c in components])  # [Σn, E]
    owner = [(c.layer, int(n)) for c in components for n in c.neurons]
    scores = (pcs @ W).abs()  # [Σn, C]
    k_top = min(int(top), pcs.shape[0])
    prefix = view.num_prefix_tokens
    gh, gw = out.grid
    maps = []
    for b in range(pixel_values.shape[0]):
        chosen = scores[:, int(classes_t[b])].topk(k_top).indices.tolist()
        acts = torch.stack([out.cache[f"blocks.{owner[i][0]}.mlp.hidden"][b, prefix:, owner[i][1]] for i in chosen])
        maps.append(acts.to(torch.float64).mean(0).reshape(gh, gw))
    return torch.stack(maps), classes_t


def default_chunk(width: int, heads: int, embed_dim: int, budget_bytes: float = 2e9) -> int:
    """Neurons per chunk so that the weight products of one pair of layers stay under ``budget_bytes``."""
    return max(1, min(width, int(budget_bytes // (4 * heads * embed_dim))))
