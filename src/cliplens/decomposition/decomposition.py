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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cliplens.core.forward import run_vision
from cliplens.core.hooks import Hook, resolve_names
from cliplens.core.plan import Plan, resolve_layer_indices
from cliplens.core.view import VisionView, fingerprint_view
from cliplens.decomposition.scores import ComponentScores, head_positions
from cliplens.decomposition.shares import frozen_ln_project, num_sites, site_share
from cliplens.errors import InvalidInputError, ModelLoadError, OutputExistsError
from cliplens.text.encode import TextEncoder, text_directions

__all__ = ["CHECK_TOLERANCE", "Decomposition", "check_tolerance", "decompose", "resolve_layers"]

FORMAT = "cliplens.decomposition/1"

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


def resolve_layers(layers: Iterable[int] | int | None, num_layers: int) -> tuple[int, ...]:
    """``None`` → all layers; int ``k`` → the last ``k``; iterable → those (negatives count from the end)."""
    if layers is None:
        return tuple(range(num_layers))
    if isinstance(layers, bool):
        raise InvalidInputError(f"layers must be an int (the last k) or a list of layer indices, got {layers!r}")
    if isinstance(layers, int):
        if not 1 <= layers <= num_layers:
            raise InvalidInputError(
                f"last-k layers: k={layers}, but the tower has {num_layers} layers: pass 1..{num_layers}, or "
                "a list of layer indices"
            )
        return tuple(range(num_layers - layers, num_layers))
    return tuple(resolve_layer_indices(layers, num_layers))


@dataclass
class _Weights:
    """Detached weight-derived constants shared by a decomposition and its normalised/sliced copies."""

    view: VisionView
    dtype: torch.dtype
    head_layers: tuple[int, ...]
    maps: Tensor | None = None
    bias_terms: Tensor | None = None

    def gamma(self) -> Tensor:
        w = self.view.ln_post.weight
        return (torch.ones(self.view.width, device=self.view.device) if w is None else w.detach()).to(self.dtype)

    def beta(self) -> Tensor:
        b = self.view.ln_post.bias
        return (torch.zeros(self.view.width, device=self.view.device) if b is None else b.detach()).to(self.dtype)

    def proj(self) -> Tensor:
        p = self.view.proj
        return (torch.eye(self.view.width, device=self.view.device) if p is None else p.detach()).to(self.dtype)

    def head_maps(self) -> Tensor:
        """``[Lh, H, dh, E]``: head space → joint space, ``W_O^h · diag(ls_1 ⊙ γ) · proj`` (before ÷σ)."""
        if self.maps is None:
            gp = self.gamma()[:, None] * self.proj()  # [D, E]
            maps = []
            for layer in self.head_layers:
                blk = self.view.blocks[layer]
                w = blk.out_weight.detach().to(self.dtype)  # [D, H*dh]
                m = gp if blk.ls_1 is None else blk.ls_1.detach().to(self.dtype)[:, None] * gp
                maps.append((w.t() @ m).view(blk.num_heads, blk.head_dim, -1))
            self.maps = (torch.stack(maps) if maps
                         else gp.new_zeros(0, self.view.num_heads, self.view.head_dim, gp.shape[1]))
        return self.maps

    def out_bias_terms(self) -> Tensor:
        """``[Lh, E]``: each head layer's out-projection bias (with layer-scale) through ``γ · proj``."""
        if self.bias_terms is None:
            gp = self.gamma()[:, None] * self.proj()
            rows = []
            for layer in self.head_layers:
                blk = self.view.blocks[layer]
                bo = (torch.zeros(self.view.width, device=gp.device) if blk.out_bias is None
                      else blk.out_bias.detach()).to(self.dtype)
                if blk.ls_1 is not None:
                    bo = bo * blk.ls_1.detach().to(self.dtype)
                rows.append(bo @ gp)
            self.bias_terms = torch.stack(rows) if rows else gp.new_zeros(0, gp.shape[1])
        return self.bias_terms


class Decomposition:
    """The image embedding as an exact sum of direct effects, with labelled axes.

    Build with :meth:`cliplens.models.CLIPAdapter.decompose` or :func:`decompose`.

    Stored (all at the CLS position, residual space unless said):
        ``embed_term`` ``[B, D]`` (x_0, the ``ln_pre`` output), ``mlp_out`` ``[B, L, D]``,
        ``attn_out`` ``[B, L, D]`` (each layer's whole attention output),
        ``heads`` head-space values ``[B, Lh, N, H, dh]`` (spatial) or ``[B, Lh, H, dh]``
        for ``head_layers``, ``mean``/``std`` ``[B]`` (frozen LN_post statistics) and
        ``embedding`` ``[B, E]`` (the model's own output in the same forward).

    Joint-space views (``[..., E]``) are computed on demand: :meth:`head_terms`, :meth:`mlp_terms`,
    :meth:`token_terms`, :meth:`attention_layer_terms`, :meth:`layer_terms`, :meth:`reconstruct`;
    :meth:`project` scores everything against texts. Nothing here carries autograd history.
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
        model: TextEncoder | None = None,
        fingerprint: str | None = None,
        settings: Mapping[str, Any] | None = None,
        _weights: _Weights | None = None,
    ) -> None:
        self.view = view
        #: the model whose text tower embeds texts given to :meth:`project` (set by ``model.decompose``)
        self.model = model
        self.embed_term = embed_term.detach()
        self.mlp_out = mlp_out.detach()
        self.attn_out = attn_out.detach()
        self.heads = heads.detach()
        self.head_layers = tuple(int(i) for i in head_layers)
        self.spatial = bool(spatial)
        self.mean = mean.detach()
        self.std = std.detach()
        self.embedding = embedding.detach()
        self.grid = (int(grid[0]), int(grid[1]))
        self.dtype = self.embed_term.dtype
        #: per-image factor applied to every joint-space output (1, or 1/‖z‖ after normalized())
        self.scale = torch.ones_like(self.mean) if scale is None else scale.detach()
        #: digest of the model's weights and preprocessing (see CLIPAdapter.fingerprint)
        self.fingerprint = fingerprint
        #: how it was made (plan, hooks, input size, …): recorded by save()
        self.settings: dict[str, Any] = dict(settings or {})
        self._w = _weights or _Weights(view, self.dtype, self.head_layers)

    # ---- shapes and labels --------------------------------------------------
    @property
    def batch_size(self) -> int:
        return int(self.embed_term.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    @property
    def num_layers(self) -> int:
        return int(self.mlp_out.shape[1])

    @property
    def num_heads(self) -> int:
        return self.view.num_heads

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid[0] * self.grid[1]

    @property
    def num_sites(self) -> int:
        """2L+1: the embedding term, L attention layers and L MLPs share LN_post's mean and bias."""
        return num_sites(self.num_layers)

    @property
    def normalized_form(self) -> bool:
        """Whether this is the decomposition of the unit-norm embedding (see :meth:`normalized`)."""
        return bool(self.settings.get("normalized", False))

    def __repr__(self) -> str:
        return (
            f"Decomposition(batch={self.batch_size}, layers={self.num_layers}, heads={self.num_heads}, "
            f"tokens={self.num_tokens}, spatial={self.spatial}, head_layers={list(self.head_layers)}, "
            f"dtype={str(self.dtype).replace('torch.', '')}{', normalized' if self.normalized_form else ''})"
        )

    def _replace(self, **changes: Any) -> Decomposition:
        kw: dict[str, Any] = dict(
            embed_term=self.embed_term, mlp_out=self.mlp_out, attn_out=self.attn_out, heads=self.heads,
            head_layers=self.head_layers, spatial=self.spatial, mean=self.mean, std=self.std,
            embedding=self.embedding, grid=self.grid, scale=self.scale, model=self.model,
            fingerprint=self.fingerprint, settings=self.settings, _weights=self._w,
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
            index = torch.as_tensor(index, device=self.mean.device)
            if index.dtype == torch.bool:
                index = index.nonzero().flatten()
            index = index.long()
            if index.numel() and not (-self.batch_size <= int(index.min()) and int(index.max()) < self.batch_size):
                raise InvalidInputError(f"image indices out of range for {self.batch_size} images")

        def take(t: Tensor) -> Tensor:
            return t[index]

        return self._replace(embed_term=take(self.embed_term), mlp_out=take(self.mlp_out),
                             attn_out=take(self.attn_out), heads=take(self.heads), mean=take(self.mean),
                             std=take(self.std), embedding=take(self.embedding), scale=take(self.scale))

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

        def cat(name: str) -> Tensor:
            return torch.cat([getattr(d, name) for d in parts], 0)

        return first._replace(embed_term=cat("embed_term"), mlp_out=cat("mlp_out"), attn_out=cat("attn_out"),
                              heads=cat("heads"), mean=cat("mean"), std=cat("std"), embedding=cat("embedding"),
                              scale=cat("scale"))

    # ---- the frozen LayerNorm + projection ---------------------------------
    def to_joint(self, c: Tensor, share: float) -> Tensor:
        """Map residual-space terms ``[B, ..., D]`` that each carry ``share`` of μ and β to ``[B, ..., E]``."""
        y = frozen_ln_project(c, share, self.mean, self.std, self._w.gamma(), self._w.beta(), self._w.proj())
        return y * self.scale.view(-1, *(1,) * (c.dim() - 1))

    def head_maps(self) -> Tensor:
        """``[Lh, H, dh, E]``: head space → joint space, ``W_O^h · diag(ls_1 ⊙ γ) · proj`` (before ÷σ)."""
        return self._w.head_maps()

    def _layer_constants(self) -> Tensor:
        """``[B, Lh, E]``: each head layer's bias-and-mean part, for the *whole layer* (split it by shares)."""
        s = site_share(self.num_layers)
        w = self._w
        mu_part = self.mean[:, None] * s * (w.gamma() @ w.proj())[None]  # [B, E]
        bias = w.out_bias_terms()
        cut = int(self.settings.get("cut_before", 0))
        if cut:  # layers before a block that drops its residual: their out-projection bias never arrives
            live = torch.tensor([layer >= cut for layer in self.head_layers], dtype=bias.dtype, device=bias.device)
            bias = bias * live[:, None]
        out = (bias[None] - mu_part[:, None]) / self.std[:, None, None] + s * (w.beta() @ w.proj())
        return out * self.scale[:, None, None]

    def _per_term_constants(self) -> Tensor:
        """``[B, Lh, E]`` per (head) or per (token, head) term: the layer constant over H (· N)."""
        split = self.num_heads * (self.num_tokens if self.spatial else 1)
        return self._layer_constants() / split

    # ---- joint-space terms --------------------------------------------------
    def head_terms(self) -> Tensor:
        """Per head (and token, if spatial) joint-space terms: ``[B, Lh, N, H, E]`` or ``[B, Lh, H, E]``.

        This materialises a large tensor for big models; prefer :meth:`project`.
        """
        sd = self.scale / self.std
        consts = self._per_term_constants()
        if self.spatial:
            t = torch.einsum("blnhd,lhde->blnhe", self.heads, self.head_maps()) * sd.view(-1, 1, 1, 1, 1)
            return t + consts[:, :, None, None, :]
        t = torch.einsum("blhd,lhde->blhe", self.heads, self.head_maps()) * sd.view(-1, 1, 1, 1)
        return t + consts[:, :, None, :]

    def per_head(self) -> Tensor:
        """``[B, Lh, H, E]``: each head's direct effect (tokens summed)."""
        t = self.head_terms()
        return t.sum(2) if self.spatial else t

    def token_terms(self, layers: Iterable[int] | int | None = None) -> Tensor:
        """``[B, N, E]``: each source token's direct effect through the heads of ``layers``."""
        if not self.spatial:
            raise InvalidInputError("token terms need a spatial decomposition (decompose(..., spatial=True))")
        idx = head_positions(self.head_layers, layers, self.num_layers)
        t = torch.einsum("blnhd,lhde->bne", self.heads[:, idx], self.head_maps()[idx])
        t = t * (self.scale / self.std)[:, None, None]
        consts = self._layer_constants()[:, idx].sum(1) / self.num_tokens  # [B, E]
        return t + consts[:, None, :]

    def attention_layer_terms(self) -> Tensor:
        """``[B, L, E]``: every attention layer's direct effect (heads and tokens summed)."""
        return self.to_joint(self.attn_out, site_share(self.num_layers))

    def mlp_terms(self) -> Tensor:
        """``[B, L + 1, E]``: the embedding term (index 0, ``ln_pre`` output) then each layer's MLP."""
        both = torch.cat([self.embed_term[:, None], self.mlp_out], dim=1)
        return self.to_joint(both, site_share(self.num_layers))

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
            total = total + self.to_joint(self.attn_out[:, other], site_share(self.num_layers)).sum(1)
        if self.head_layers:
            ht = self.head_terms()
            total = total + ht.sum(dim=tuple(range(1, ht.dim() - 1)))
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
        dt = d.to(device=self.mean.device, dtype=self.dtype).t()  # [E, T]
        maps_t = torch.einsum("lhde,et->lhdt", self.head_maps(), dt)
        consts_t = self._per_term_constants() @ dt  # [B, Lh, T]
        sd = self.scale / self.std
        if self.spatial:
            heads = torch.einsum("blnhd,lhdt->blnht", self.heads, maps_t) * sd.view(-1, 1, 1, 1, 1)
            heads = heads + consts_t[:, :, None, None, :]
        else:
            heads = torch.einsum("blhd,lhdt->blht", self.heads, maps_t) * sd.view(-1, 1, 1, 1)
            heads = heads + consts_t[:, :, None, :]
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
        tensors = {name: getattr(self, name).contiguous().cpu() for name in _TENSORS}
        save_file(tensors, str(path), metadata={"cliplens": json.dumps(self.header())})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any) -> Decomposition:
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
        if header.get("format") != FORMAT or set(_TENSORS) - set(tensors):
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
        return cls(view, **t, head_layers=tuple(header["head_layers"]), spatial=header["spatial"],
                   grid=tuple(header["grid"]), model=model if hasattr(model, "vision") else None,
                   fingerprint=header["fingerprint"], settings=header.get("settings", {}))


_TENSORS = ("embed_term", "mlp_out", "attn_out", "heads", "mean", "std", "embedding", "scale")


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
    dtype: torch.dtype | None = None,
    plan: Plan | None = None,
    hooks: Mapping[str, Hook] | None = None,
) -> Decomposition:
    """Run the forward once and return the exact :class:`Decomposition` of its embedding.

    ``layers`` selects the layers whose attention is split per head (and per token when
    ``spatial``): ``None`` all, an int ``k`` the last ``k``, or explicit indices (negatives count
    from the end). Other layers keep one attention term each. ``dtype`` (default float32) is the
    precision of the stored terms and of every joint-space computation. ``plan`` and ``hooks`` run
    the forward with other attention or edits (see :func:`cliplens.core.forward.run_vision`); the
    decomposition is that forward's, and it raises if the hooks broke the additive structure
    (e.g. replacing ``resid_post``).
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

    blocks = (plan or Plan()).resolve(L)
    user: dict[str, Hook] = {}
    for pattern, fn in (hooks or {}).items():
        for n in resolve_names([pattern], L, blocks):
            user[n] = fn
    tap = "attn.cls_contrib" if spatial else "attn.z"
    all_hooks = dict(user)
    for i in head_layers:
        name = f"blocks.{i}.{tap}"
        all_hooks[name] = _compose(user.get(name), keep)
    names = ["embed", "blocks.*.mlp_out", "blocks.*.attn_out", "pooled", "ln_post.mean", "ln_post.std"]
    with torch.no_grad():
        out = run_vision(view, pixel_values, plan=plan, names=names, cls_only=True, hooks=all_hooks)
    c = out.cache
    embed_term = c["embed"].to(dtype)
    mlp_out = torch.stack([c[f"blocks.{i}.mlp_out"] for i in range(L)], 1).to(dtype)
    attn_out = torch.stack([c[f"blocks.{i}.attn_out"] for i in range(L)], 1).to(dtype)
    # a block without its residual connection cuts every earlier site off the embedding: their terms are 0
    cut = max((i for i, b in enumerate(blocks) if not b.residual), default=-1)
    if cut >= 0:
        embed_term.zero_()
        mlp_out[:, :cut] = 0
        attn_out[:, :cut] = 0
        for layer, i in slot.items():
            if layer < cut:
                heads[:, i] = 0
    settings: dict[str, Any] = {"input_size": list(pixel_values.shape[-2:])}
    if plan is not None and not plan.is_vanilla(L):
        settings["plan"] = plan.describe(L)
    if cut > 0:
        settings["cut_before"] = cut
    if hooks:
        settings["hooks"] = sorted(user)
    dec = Decomposition(
        view, embed_term=embed_term, mlp_out=mlp_out, attn_out=attn_out, heads=heads, head_layers=head_layers,
        spatial=spatial, mean=c["ln_post.mean"].to(dtype), std=c["ln_post.std"].to(dtype), embedding=out.embedding,
        grid=out.grid, settings=settings,
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
