"""Exact decomposition of a CLIP ViT image embedding into direct effects.

For a pre-LN ViT with CLS pooling,

    z = proj^T · LN_post(x_L[CLS]),   x_L = x_0 + Σ_l attn_l + Σ_l mlp_l,

and attention at the CLS query splits over heads h and source tokens m:

    attn_l[CLS] = Σ_h Σ_m ls_1 ⊙ W_O^h · α^{l,h}_{CLS,m} (W_V^h LN_1(x)_m + b_V^h)  +  ls_1 ⊙ b_O.

Freezing LN_post's mean μ and scale σ at their values in the real forward makes
z a sum of *components*, each mapped to the joint space by

    c  ↦  (γ ⊙ (c − s·μ) / σ + s·β) · proj

where ``s`` is the component's share of the mean and bias. Shares follow the
original paper's code: the 2L+1 *sites* (embedding term, L attention layers,
L MLPs) each get 1/(2L+1); within an attention layer a head gets 1/H of its
layer's share (and, per source token, 1/(H·N)); the out-projection bias is
split the same way over heads (and tokens). Shares make every reduction
consistent: summing the per-token terms of a head gives its per-head term,
summing heads gives the layer term, and summing everything gives ``z`` — to
float32 rounding (checked by :meth:`Decomposition.check`, tolerance 1e-5
relative).

Head outputs are kept in *head space* (``d_head`` per head) and carried to the
joint space by the precomputed matrix ``W_O^h · diag(ls_1 ⊙ γ) · proj`` divided
by the per-image σ; only the CLS query row of each attention pattern is ever
computed. ``project()`` scores every component against text directions
without materialising the ``[B, L, N, H, E]`` tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cliplens.forward import run_vision
from cliplens.models.view import VisionView

#: axis labels of the stored tensors
AXES = {
    "heads (spatial)": ("batch", "layer", "token", "head", "d_head"),
    "heads": ("batch", "layer", "head", "d_head"),
    "attention_terms (spatial)": ("batch", "layer", "token", "head", "embed"),
    "attention_terms": ("batch", "layer", "head", "embed"),
    "mlp_terms": ("batch", "site", "embed"),
}


def resolve_layers(layers: Iterable[int] | int | None, num_layers: int) -> tuple[int, ...]:
    """``None`` → all layers; int ``k`` → the last ``k``; iterable → those (negatives count from the end)."""
    if layers is None:
        return tuple(range(num_layers))
    if isinstance(layers, int):
        if not 0 <= layers <= num_layers:
            raise ValueError(f"last-k layers: k={layers} but the tower has {num_layers} layers")
        return tuple(range(num_layers - layers, num_layers))
    out = sorted({(i + num_layers) if i < 0 else i for i in layers})
    bad = [i for i in out if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"layer indices {bad} out of range for a {num_layers}-layer tower")
    return tuple(out)


@dataclass
class ComponentScores:
    """Scores ``component · text`` for every component of a :class:`Decomposition`.

    Axes: ``heads`` ``[B, Lh, N, H, T]`` (spatial) or ``[B, Lh, H, T]``, for the layers in
    ``head_layers``; ``attention`` ``[B, L, T]`` (every layer's total); ``mlp`` ``[B, L, T]``;
    ``embed`` ``[B, T]``. ``total`` = ``embed + Σ mlp + Σ attention`` = ``embedding · text``.
    """

    heads: Tensor
    attention: Tensor
    mlp: Tensor
    embed: Tensor
    head_layers: tuple[int, ...]
    spatial: bool
    grid: tuple[int, int]
    labels: list[str] = field(default_factory=list)

    @property
    def total(self) -> Tensor:
        return self.embed + self.mlp.sum(1) + self.attention.sum(1)

    def per_head(self) -> Tensor:
        """``[B, Lh, H, T]`` (tokens summed)."""
        return self.heads.sum(2) if self.spatial else self.heads

    def token_map(self, layers: Iterable[int] | None = None) -> Tensor:
        """``[B, T, gh, gw]``: per image token, summed over heads of ``layers`` (default: all head layers)."""
        if not self.spatial:
            raise ValueError("token maps need a spatial decomposition (decompose(..., spatial=True))")
        idx = self._layer_index(layers)
        t = self.heads[:, idx].sum(dim=(1, 3))[:, 1:]  # [B, N-1, T]
        B, _, T = t.shape
        return t.transpose(1, 2).reshape(B, T, *self.grid)

    def _layer_index(self, layers: Iterable[int] | None) -> list[int]:
        if layers is None:
            return list(range(len(self.head_layers)))
        pos = {layer: i for i, layer in enumerate(self.head_layers)}
        try:
            return [pos[layer] for layer in layers]
        except KeyError as e:
            raise ValueError(f"layer {e.args[0]} has no per-head terms; head layers are {self.head_layers}") from None


class Decomposition:
    """The image embedding as an exact sum of direct effects, with labelled axes.

    Build with :meth:`cliplens.models.base.CLIPAdapter.decompose` or :func:`decompose`.

    Stored (all at the CLS position, residual space unless said):
        ``embed_term`` ``[B, D]`` (x_0, the ``ln_pre`` output), ``mlp_out`` ``[B, L, D]``,
        ``attn_out`` ``[B, L, D]`` (each layer's whole attention output),
        ``heads`` head-space values ``[B, Lh, N, H, dh]`` (spatial) or ``[B, Lh, H, dh]``
        for ``head_layers``, ``mean``/``std`` ``[B]`` (frozen LN_post statistics) and
        ``embedding`` ``[B, E]`` (the model's own output in the same forward).

    Joint-space views (``[..., E]``) are computed on demand: :meth:`attention_terms`,
    :meth:`mlp_terms`, :meth:`head_terms`, :meth:`token_terms`, :meth:`layer_terms`,
    :meth:`reconstruct`; :meth:`project` scores everything against texts.
    """

    def __init__(
        self,
        view: VisionView,
        *,
        embed_term: Tensor,
        mlp_out: Tensor,
        attn_out: Tensor,
        heads: Tensor,
        head_layers: tuple[int, ...],
        spatial: bool,
        mean: Tensor,
        std: Tensor,
        embedding: Tensor,
        grid: tuple[int, int],
        scale: Tensor | None = None,
        text_encoder: Any = None,
    ) -> None:
        self.view = view
        #: the adapter whose text tower embeds texts given to :meth:`project` (set by ``model.decompose``)
        self.text_encoder = text_encoder
        self.embed_term = embed_term
        self.mlp_out = mlp_out
        self.attn_out = attn_out
        self.heads = heads
        self.head_layers = head_layers
        self.spatial = spatial
        self.mean = mean
        self.std = std
        self.embedding = embedding
        self.grid = grid
        self.dtype = embed_term.dtype
        #: per-image factor applied to every joint-space output (1, or 1/‖z‖ after normalized())
        self.scale = torch.ones_like(mean) if scale is None else scale
        self._maps: Tensor | None = None

    # ---- shapes and labels --------------------------------------------------
    @property
    def batch_size(self) -> int:
        return int(self.embed_term.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.mlp_out.shape[1])

    @property
    def num_heads(self) -> int:
        return self.view.num_heads

    @property
    def num_tokens(self) -> int:
        return int(self.heads.shape[2]) if self.spatial else 1 + self.grid[0] * self.grid[1]

    @property
    def num_sites(self) -> int:
        """2L+1: the embedding term, L attention layers and L MLPs share LN_post's mean and bias."""
        return 2 * self.num_layers + 1

    @property
    def axes(self) -> dict[str, tuple[str, ...]]:
        return {"heads": AXES["heads (spatial)" if self.spatial else "heads"]}

    def __repr__(self) -> str:
        return (
            f"Decomposition(batch={self.batch_size}, layers={self.num_layers}, heads={self.num_heads}, "
            f"tokens={self.num_tokens}, spatial={self.spatial}, head_layers={list(self.head_layers)})"
        )

    def normalized(self) -> Decomposition:
        """The same decomposition of the *unit-norm* embedding (every term divided by ‖z‖)."""
        norm = self.embedding.to(self.dtype).norm(dim=-1)
        return Decomposition(
            self.view, embed_term=self.embed_term, mlp_out=self.mlp_out, attn_out=self.attn_out,
            heads=self.heads, head_layers=self.head_layers, spatial=self.spatial, mean=self.mean,
            std=self.std, embedding=self.embedding, grid=self.grid, scale=self.scale / norm,
            text_encoder=self.text_encoder,
        )

    # ---- the frozen LayerNorm + projection ---------------------------------
    def _gamma(self) -> Tensor:
        w = self.view.ln_post.weight
        return torch.ones(self.view.width, dtype=self.dtype, device=self.mean.device) if w is None else w.to(self.dtype)

    def _beta(self) -> Tensor:
        b = self.view.ln_post.bias
        return torch.zeros(self.view.width, dtype=self.dtype, device=self.mean.device) if b is None else b.to(self.dtype)

    def _proj(self) -> Tensor:
        p = self.view.proj
        if p is None:
            return torch.eye(self.view.width, dtype=self.dtype, device=self.mean.device)
        return p.to(self.dtype)

    def to_joint(self, c: Tensor, share: float) -> Tensor:
        """Map residual-space terms ``[B, ..., D]`` that each carry ``share`` of μ and β to ``[B, ..., E]``."""
        B = c.shape[0]
        extra = (1,) * (c.dim() - 2)
        mu = self.mean.view(B, *extra, 1)
        sd = self.std.view(B, *extra, 1)
        y = (c - share * mu) * self._gamma() / sd + share * self._beta()
        return (y @ self._proj()) * self.scale.view(B, *extra, 1)

    def head_maps(self) -> Tensor:
        """``[Lh, H, dh, E]``: head space → joint space, ``W_O^h · diag(ls_1 ⊙ γ) · proj`` (before ÷σ)."""
        if self._maps is None:
            gp = self._gamma()[:, None] * self._proj()  # [D, E]
            maps = []
            for layer in self.head_layers:
                blk = self.view.blocks[layer]
                w = blk.out_weight.to(self.dtype)  # [D, H*dh]
                m = gp if blk.ls_1 is None else blk.ls_1.to(self.dtype)[:, None] * gp
                maps.append((w.t() @ m).view(blk.num_heads, blk.head_dim, -1))
            self._maps = torch.stack(maps) if maps else gp.new_zeros(0, self.num_heads, self.view.head_dim, gp.shape[1])
        return self._maps

    def _head_constants(self) -> Tensor:
        """``[B, Lh, E]``: each head layer's bias-and-mean part, for the *whole layer* (split it yourself)."""
        s = 1.0 / self.num_sites
        gp = self._gamma()[:, None] * self._proj()
        consts = []
        for layer in self.head_layers:
            blk = self.view.blocks[layer]
            b = blk.out_bias
            bo = torch.zeros(self.view.width, dtype=self.dtype, device=gp.device) if b is None else b.to(self.dtype)
            if blk.ls_1 is not None:
                bo = bo * blk.ls_1.to(self.dtype)
            consts.append(bo @ gp)
        c = torch.stack(consts) if consts else gp.new_zeros(0, gp.shape[1])  # [Lh, E]
        mu_part = self.mean[:, None] * s * (self._gamma() @ self._proj())[None]  # [B, E]
        out = (c[None] - mu_part[:, None]) / self.std[:, None, None] + s * (self._beta() @ self._proj())
        return out * self.scale[:, None, None]

    # ---- joint-space terms --------------------------------------------------
    def head_terms(self) -> Tensor:
        """Per head (and token, if spatial) joint-space terms: ``[B, Lh, N, H, E]`` or ``[B, Lh, H, E]``.

        This materialises a large tensor for big models; prefer :meth:`project`.
        """
        maps = self.head_maps()
        sd = (self.scale / self.std).to(self.dtype)
        consts = self._head_constants()  # [B, Lh, E]
        H = self.num_heads
        if self.spatial:
            N = self.heads.shape[2]
            t = torch.einsum("blnhd,lhde->blnhe", self.heads, maps) * sd.view(-1, 1, 1, 1, 1)
            return t + (consts / (H * N))[:, :, None, None, :]
        t = torch.einsum("blhd,lhde->blhe", self.heads, maps) * sd.view(-1, 1, 1, 1)
        return t + (consts / H)[:, :, None, :]

    def attention_terms(self) -> Tensor:
        """Alias of :meth:`head_terms` (``[B, Lh, N, H, E]`` when spatial)."""
        return self.head_terms()

    def per_head(self) -> Tensor:
        """``[B, Lh, H, E]``: each head's direct effect (tokens summed)."""
        t = self.head_terms()
        return t.sum(2) if self.spatial else t

    def token_terms(self, layers: Iterable[int] | None = None) -> Tensor:
        """``[B, N, E]``: each source token's direct effect through the heads of ``layers``."""
        if not self.spatial:
            raise ValueError("token terms need a spatial decomposition (decompose(..., spatial=True))")
        idx = self._head_index(layers)
        maps = self.head_maps()[idx]
        N = self.heads.shape[2]
        t = torch.einsum("blnhd,lhde->bne", self.heads[:, idx], maps) * (self.scale / self.std)[:, None, None]
        consts = self._head_constants()[:, idx].sum(1) / N  # [B, E]
        return t + consts[:, None, :]

    def attention_layer_terms(self) -> Tensor:
        """``[B, L, E]``: every attention layer's direct effect (heads and tokens summed)."""
        return self.to_joint(self.attn_out, 1.0 / self.num_sites)

    def mlp_terms(self) -> Tensor:
        """``[B, L + 1, E]``: the embedding term (index 0, ``ln_pre`` output) then each layer's MLP."""
        both = torch.cat([self.embed_term[:, None], self.mlp_out], dim=1)
        return self.to_joint(both, 1.0 / self.num_sites)

    def layer_terms(self) -> tuple[Tensor, list[str]]:
        """``([B, 2L+1, E], labels)``: embed, then per layer its attention and its MLP."""
        att, mlp = self.attention_layer_terms(), self.mlp_terms()
        parts, labels = [mlp[:, 0]], ["embed"]
        for layer in range(self.num_layers):
            parts += [att[:, layer], mlp[:, layer + 1]]
            labels += [f"L{layer}.attn", f"L{layer}.mlp"]
        return torch.stack(parts, 1), labels

    def reconstruct(self) -> Tensor:
        """``[B, E]``: the sum of every component (equals the model's embedding)."""
        total = self.mlp_terms().sum(1)
        head_set = set(self.head_layers)
        other = [i for i in range(self.num_layers) if i not in head_set]
        if other:
            total = total + self.to_joint(self.attn_out[:, other], 1.0 / self.num_sites).sum(1)
        if self.head_layers:
            ht = self.head_terms()
            total = total + ht.sum(dim=tuple(range(1, ht.dim() - 1)))
        return total

    def check(self, rtol: float = 1e-5) -> float:
        """Relative error ``max_b ‖Σ parts − z‖ / ‖z‖``; raises ``AssertionError`` above ``rtol``."""
        target = self.embedding.to(self.dtype) * self.scale[:, None]
        err = ((self.reconstruct() - target).norm(dim=-1) / target.norm(dim=-1).clamp_min(1e-30)).max().item()
        if err > rtol:
            raise AssertionError(f"decomposition does not sum to the embedding: relative error {err:.3g} > {rtol:g}")
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
            if self.text_encoder is None:
                raise ValueError("this decomposition has no text encoder: pass text embeddings "
                                 "(model.encode_text(texts)) instead of texts")
            from cliplens.text import text_directions

            labels = labels or texts
            directions = text_directions(self.text_encoder, texts)
        d = directions
        if d.dim() == 1:
            d = d[None]
        if d.dim() != 2 or d.shape[1] != self.embedding.shape[1]:
            raise ValueError(
                f"directions must be [T, {self.embedding.shape[1]}] (the joint embedding size); got {tuple(directions.shape)}"
            )
        d = d.to(device=self.mean.device, dtype=self.dtype)
        dt = d.t()  # [E, T]
        H = self.num_heads
        maps_t = torch.einsum("lhde,et->lhdt", self.head_maps(), dt)
        consts_t = self._head_constants() @ dt  # [B, Lh, T]
        sd = self.scale / self.std
        if self.spatial:
            N = self.heads.shape[2]
            heads = torch.einsum("blnhd,lhdt->blnht", self.heads, maps_t) * sd.view(-1, 1, 1, 1, 1)
            heads = heads + (consts_t / (H * N))[:, :, None, None, :]
        else:
            heads = torch.einsum("blhd,lhdt->blht", self.heads, maps_t) * sd.view(-1, 1, 1, 1)
            heads = heads + (consts_t / H)[:, :, None, :]
        mlp_all = self.mlp_terms() @ dt  # [B, L+1, T]
        attention = self.attention_layer_terms() @ dt  # [B, L, T]
        # for head layers, use the exact sum of their heads so that everything adds up consistently
        if self.head_layers:
            per_layer = heads.sum(dim=(2, 3)) if self.spatial else heads.sum(2)
            attention[:, list(self.head_layers)] = per_layer
        return ComponentScores(
            heads=heads, attention=attention, mlp=mlp_all[:, 1:], embed=mlp_all[:, 0],
            head_layers=self.head_layers, spatial=self.spatial, grid=self.grid, labels=list(labels or []),
        )

    def _head_index(self, layers: Iterable[int] | None) -> list[int]:
        if layers is None:
            return list(range(len(self.head_layers)))
        pos = {layer: i for i, layer in enumerate(self.head_layers)}
        layers = resolve_layers(list(layers), self.num_layers)
        missing = [layer for layer in layers if layer not in pos]
        if missing:
            raise ValueError(f"layers {missing} have no per-head terms; head layers are {list(self.head_layers)}")
        return [pos[layer] for layer in layers]


@torch.no_grad()
def decompose(
    view: VisionView,
    pixel_values: Tensor,
    *,
    spatial: bool = True,
    layers: Iterable[int] | int | None = None,
    dtype: torch.dtype | None = None,
) -> Decomposition:
    """Run the forward once and return the exact :class:`Decomposition` of its embedding.

    ``layers`` selects the layers whose attention is split per head (and per token when
    ``spatial``): ``None`` all, an int ``k`` the last ``k``, or explicit indices. Other layers
    keep one attention term each. ``dtype`` (default float32) is the precision of the stored
    terms and of every joint-space computation.
    """
    L = view.num_layers
    head_layers = resolve_layers(layers, L)
    dtype = dtype or torch.float32
    B = pixel_values.shape[0]
    ph, pw = view.patch_size
    grid = (pixel_values.shape[-2] // ph, pixel_values.shape[-1] // pw)
    N = 1 + grid[0] * grid[1]
    H, dh = view.num_heads, view.head_dim
    shape = (B, len(head_layers), N, H, dh) if spatial else (B, len(head_layers), H, dh)
    # written in place by observer hooks: no per-layer copies to stack afterwards
    heads = torch.empty(shape, dtype=dtype, device=view.device)
    slot = {layer: i for i, layer in enumerate(head_layers)}

    def keep(t: Tensor, name: str) -> None:
        i = slot[int(name.split(".")[1])]
        heads[:, i].copy_(t if spatial else t[:, 0])

    per_head = "attn.cls_contrib" if spatial else "attn.z"
    names = ["embed", "blocks.*.mlp_out", "blocks.*.attn_out", "pooled", "ln_post.mean", "ln_post.std"]
    out = run_vision(view, pixel_values, names=names, cls_only=True,
                     hooks={f"blocks.{i}.{per_head}": keep for i in head_layers})
    c = out.cache
    return Decomposition(
        view,
        embed_term=c["embed"].to(dtype),
        mlp_out=torch.stack([c[f"blocks.{i}.mlp_out"] for i in range(L)], 1).to(dtype),
        attn_out=torch.stack([c[f"blocks.{i}.attn_out"] for i in range(L)], 1).to(dtype),
        heads=heads,
        head_layers=head_layers,
        spatial=spatial,
        mean=c["ln_post.mean"].to(dtype),
        std=c["ln_post.std"].to(dtype),
        embedding=out.embedding,
        grid=out.grid,
    )
