"""Mean-ablation from a store, without re-running the model.

Replacing a component ``c`` (an attention layer's output, one head's, an MLP's, the embedding term, or a
layer's CLS→CLS term) by its mean over the data set, in the joint space where the components add up to
the embedding (the pooling head's statistics and pooling weights frozen per image), changes image ``i``'s
embedding by (:mod:`cliplens.decomposition.algebra`, readouts ``r``)

    − Σ_r (ĉ_{r,i} − mean_j ĉ_{r,j}) ⊙ γ · M_r,   ĉ_{r,i} = s_{r,i} (c_{r,i} − share_c · m_{r,i}),

``share_c`` the component's share of the head's constant (:mod:`cliplens.decomposition.shares`). So an
ablation sums ``ĉ − mean ĉ`` over the ablated components in the residual space, per readout, and applies one
map; zero-shot predictions are the argmax over the store's classifier (the norm does not change it). A head's
lumped nonlinear part (SigLIP's MLP after the pooling attention) is kept as it was: this is the direct effect.
Labels come from the data set (the store), never from file order.

The paper's studies: :func:`layer_curve` (attention of layers 0..l cumulatively mean-ablated), all MLPs
with the embedding term, the CLS→CLS terms of every layer (CLS pooling); and any heads or layers a user names
(:class:`Ablation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.core.plan import resolve_layer_indices
from cliplens.decomposition.shares import site_share
from cliplens.errors import InvalidInputError
from cliplens.store.reader import Store

__all__ = ["Ablation", "AblationResult", "evaluate", "layer_curve", "parse_components", "standard_study"]


@dataclass(frozen=True)
class Ablation:
    """What to mean-ablate (layer indices may be negative; heads are ``(layer, head)`` pairs)."""

    attention: tuple[int, ...] = ()
    heads: tuple[tuple[int, int], ...] = ()
    mlps: tuple[int, ...] = ()
    embed: bool = False
    cls_to_cls: tuple[int, ...] = ()
    #: the pooling head's lumped nonlinear part (SigLIP's and PE-Core's MLP after the attention pooling), replaced
    #: by its data-set mean in the joint space
    pool_mlp: bool = False

    def resolved(self, L: int, H: int) -> Ablation:
        heads = []
        for layer, h in self.heads:
            if not (-L <= layer < L and 0 <= h < H):
                raise InvalidInputError(f"head L{layer}.H{h} does not exist: {L} layers (0..{L - 1}), {H} heads "
                                        f"(0..{H - 1})")
            heads.append((layer % L, h))
        att = tuple(resolve_layer_indices(self.attention, L)) if self.attention else ()
        overlap = sorted({(layer, h) for layer, h in heads if layer in att})
        if overlap:
            raise InvalidInputError(f"heads {', '.join(f'L{a}.H{b}' for a, b in overlap)} are in attention layers "
                                    "that are ablated whole")
        cls = tuple(resolve_layer_indices(self.cls_to_cls, L)) if self.cls_to_cls else ()
        twice = sorted(set(att) & set(cls))
        if twice:
            raise InvalidInputError(f"the CLS→CLS terms of layers {', '.join(f'L{i}' for i in twice)} are part of "
                                    "attention layers that are ablated whole (they would be counted twice)")
        return Ablation(att, tuple(sorted(set(heads))),
                        tuple(resolve_layer_indices(self.mlps, L)) if self.mlps else (), self.embed, cls,
                        self.pool_mlp)

    def describe(self) -> str:
        parts = []
        if self.attention:
            parts.append("attention " + ",".join(f"L{i}" for i in self.attention))
        if self.heads:
            parts.append("heads " + ",".join(f"L{a}.H{b}" for a, b in self.heads))
        if self.mlps:
            parts.append("MLPs " + ",".join(f"L{i}" for i in self.mlps))
        if self.embed:
            parts.append("embedding term")
        if self.cls_to_cls:
            parts.append("CLS→CLS " + ",".join(f"L{i}" for i in self.cls_to_cls))
        if self.pool_mlp:
            parts.append("the pooling head's MLP")
        return "; ".join(parts) or "nothing (the model as it is)"

    def is_empty(self) -> bool:
        return not (self.attention or self.heads or self.mlps or self.embed or self.cls_to_cls or self.pool_mlp)


@dataclass
class AblationResult:
    ablation: Ablation
    accuracy: float
    n: int
    predictions: np.ndarray = field(repr=False)
    group_accuracy: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ablated": self.ablation.describe(), "accuracy": self.accuracy, "n": self.n,
                **({"groups": self.group_accuracy} if self.group_accuracy else {})}


def parse_components(text: str) -> Ablation:
    """``"L10.H3,L11.H0"`` heads; ``"L3"`` a whole attention layer; ``"MLP4"``; ``"embed"``; ``"CLS5"``;
    ``"pool-mlp"`` the pooling head's lumped MLP."""
    att, heads, mlps, cls = [], [], [], []
    embed = pool_mlp = False
    for item in (t.strip() for t in text.split(",") if t.strip()):
        up = item.upper()
        try:
            if up == "EMBED":
                embed = True
            elif up in ("POOL-MLP", "POOLMLP"):
                pool_mlp = True
            elif up.startswith("MLP"):
                mlps.append(int(up[3:]))
            elif up.startswith("CLS"):
                cls.append(int(up[3:]))
            elif up.startswith("L") and ".H" in up:
                a, b = up[1:].split(".H")
                heads.append((int(a), int(b)))
            elif up.startswith("L"):
                att.append(int(up[1:]))
            else:
                raise ValueError
        except ValueError:
            raise InvalidInputError(f"cannot read component {item!r}: write heads as L10.H3, whole attention layers as "
                                    "L3, MLPs as MLP4, the embedding term as embed, CLS→CLS terms as CLS5, the "
                                    "pooling head's MLP as pool-mlp (layers and heads counted from 0; negative layers "
                                    "from the end)") from None
    return Ablation(tuple(att), tuple(heads), tuple(mlps), embed, tuple(cls), pool_mlp)


class _Stats:
    """Per-store dataset means of each component's ``s·c`` (computed once, one pass, cached on the store)."""

    def __init__(self, store: Store) -> None:
        self.L, self.H, self.dh = store.shape["layers"], store.shape["heads"], store.shape["head_dim"]
        self.joint = store.joint_map(torch.float32)
        self.out_w32 = self.joint.w.out_weight  # [L, D, H·dh]
        self.out_b32 = self.joint.w.out_bias  # [L, D]
        self.cls = "cls_heads" in store.fields
        n = 0
        sums: dict[str, np.ndarray] = {}
        names = ["heads", "attn_out", "mlp_out", "embed_term", "scale", "mean", "wsum"] + (["cls_heads"] * self.cls)
        for blk in store.blocks(names, dtype=np.float64):
            r = blk["scale"]  # [n, R]
            vals = {"heads": blk["heads"] * r[:, :, None, None, None], "attn_out": blk["attn_out"] * r[:, :, None, None],
                    "mlp_out": blk["mlp_out"] * r[:, :, None, None], "embed_term": blk["embed_term"] * r[:, :, None],
                    "rw": r * blk["wsum"], "mr": blk["mean"] * r}
            if self.cls:
                vals["cls_heads"] = blk["cls_heads"] * r[:, :, None, None, None]
            for k, v in vals.items():
                sums[k] = sums.get(k, 0) + v.sum(0)
            n += len(r)
        self.means32 = {k: torch.from_numpy(np.asarray(v / n)).float() for k, v in sums.items()}
        self.n = n
        self.nonlinear_mean: Tensor | None = None
        if "nonlinear" in store.fields and n:
            total = sum(blk["nonlinear"].sum(0) for blk in store.blocks(["nonlinear"], dtype=np.float64))
            self.nonlinear_mean = torch.from_numpy(np.asarray(total / n)).float()

    @staticmethod
    def of(store: Store) -> _Stats:
        if "ablation_stats" not in store._cache:
            store._cache["ablation_stats"] = _Stats(store)
        return store._cache["ablation_stats"]


def _f32(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))  # a copy: memory-mapped rows are read-only


def _delta(blk: dict[str, np.ndarray], a: Ablation, st: _Stats, N: int) -> Tensor:
    """``Σ_c (ĉ_i − mean ĉ)`` over the ablated components, residual space per readout ``[n, R, D]`` (float32;
    the data set's means are accumulated in float64 once). Whole layers of one kind are summed before scaling
    (one pass)."""
    r = _f32(blk["scale"])  # [n, R]
    rw = r * _f32(blk["wsum"])
    mr = r * _f32(blk["mean"])
    n, R = r.shape
    D = st.out_w32.shape[1]
    delta = torch.zeros(n, R, D)
    shares = 0.0
    s = site_share(st.L)
    m = st.means32
    for name, layers in (("attn_out", a.attention), ("mlp_out", a.mlps)):
        if layers:
            x = _f32(blk[name][:, :, list(layers)]).sum(2)  # [n, R, D]
            delta += x * r[..., None] - m[name][:, list(layers)].sum(1)
            shares += s * len(layers)
    if a.embed:
        delta += _f32(blk["embed_term"]) * r[..., None] - m["embed_term"]
        shares += s
    by_layer: dict[int, list[int]] = {}
    for layer, h in a.heads:
        by_layer.setdefault(layer, []).append(h)
    for layer, hs in by_layer.items():  # heads: (s z − mean) W_O^h + (s w − mean s w) b/H
        z = _f32(blk["heads"][:, :, layer, hs])  # [n, R, h, dh]
        dz = (z * r[..., None, None] - m["heads"][:, layer, hs]).reshape(n, R, -1)
        w = st.out_w32[layer].view(D, st.H, st.dh)[:, hs].reshape(D, -1)  # [D, h·dh]
        delta += dz @ w.T + (rw - m["rw"])[..., None] * st.out_b32[layer] * (len(hs) / st.H)
        shares += s * len(hs) / st.H
    for layer in a.cls_to_cls:  # source token CLS through every head, and its 1/N of the bias
        z = _f32(blk["cls_heads"][:, :, layer]).reshape(n, 1, -1)
        dz = z * r[..., None] - m["cls_heads"][:, layer].reshape(1, -1)
        delta += dz @ st.out_w32[layer].T + (rw - m["rw"])[..., None] * st.out_b32[layer] / N
        shares += s / N
    return delta - shares * (mr - m["mr"])[..., None]


def evaluate(store: Store, ablation: Ablation | None = None, *, classifier: Tensor | None = None,
             groups: str | None = None) -> AblationResult:
    """Zero-shot accuracy of the store's images with ``ablation`` mean-ablated (``groups``: an attribute to
    report the accuracy of each value of, e.g. Waterbirds' ``"group"``). The ablated embedding is the stored one
    minus the readouts' residual-space change mapped to the joint space, in float32."""
    a = (ablation or Ablation()).resolved(store.shape["layers"], store.shape["heads"])
    st = _Stats.of(store)
    if a.pool_mlp and st.nonlinear_mean is None:
        raise InvalidInputError("the pooling head of this store's model is affine (it pools with "
                                f"{store.header.get('pooling', {}).get('kind', '?')!r}): there is no lumped MLP to "
                                "ablate; pool-mlp applies to attention-pooled models (SigLIP, PE-Core)")
    if a.cls_to_cls and not st.cls:
        raise InvalidInputError("CLS→CLS terms exist for CLS pooling only: this store's model pools "
                                f"with {store.header.get('pooling', {}).get('kind', '?')!r}")
    W = (store.classifier if classifier is None else classifier).float()  # [C, E]
    E = st.joint.w.readout_out.shape[-1]
    if W.shape[1] != E:
        raise InvalidInputError(f"the classifier has dimension {W.shape[1]}, the store's embeddings {E}")
    fields = ["embedding", "mean", "scale", "wsum"] + [f for f, used in (
        ("attn_out", a.attention), ("mlp_out", a.mlps), ("embed_term", a.embed), ("heads", a.heads),
        ("cls_heads", a.cls_to_cls), ("nonlinear", a.pool_mlp)) if used]
    N = store.shape["tokens"]
    preds = []
    for blk in store.blocks(fields, dtype=None):
        emb = _f32(blk["embedding"])
        if not a.is_empty():
            d = _delta(blk, a, st, N)
            emb -= st.joint.residual(d, torch.ones(d.shape[:2]))
            if a.pool_mlp:
                emb -= _f32(blk["nonlinear"]) - st.nonlinear_mean
        preds.append((emb @ W.T).argmax(1).numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    labels = store.labels
    keep = labels >= 0
    acc = float((pred[keep] == labels[keep]).mean()) if keep.any() else float("nan")
    by_group: dict[str, float] = {}
    if groups is not None:
        values = np.array([str(v) for v in store.attributes(groups)])
        for g in sorted(set(values)):
            sel = keep & (values == g)
            by_group[g] = float((pred[sel] == labels[sel]).mean())
    return AblationResult(a, acc, int(keep.sum()), pred, by_group)


def layer_curve(store: Store, **kwargs: Any) -> list[AblationResult]:
    """Accuracy with the attention of layers 0..l mean-ablated, for every l (the paper's curve)."""
    L = store.shape["layers"]
    return [evaluate(store, Ablation(attention=tuple(range(layer + 1))), **kwargs) for layer in range(L)]


def standard_study(store: Store, **kwargs: Any) -> dict[str, Any]:
    """The paper's mean-ablation study: the model as it is, the layer curve, all MLPs with the embedding
    term, and every layer's CLS→CLS term (``None`` for a model that does not pool at the CLS token)."""
    L = store.shape["layers"]
    return {
        "baseline": evaluate(store, **kwargs),
        "curve": layer_curve(store, **kwargs),
        "mlps_and_embed": evaluate(store, Ablation(mlps=tuple(range(L)), embed=True), **kwargs),
        "cls_to_cls": evaluate(store, Ablation(cls_to_cls=tuple(range(L))), **kwargs)
        if "cls_heads" in store.fields else None,
    }
