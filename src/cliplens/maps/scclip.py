"""SC-CLIP (Bai et al., "Self-Calibrated CLIP for Training-Free Open-Vocabulary Segmentation", arXiv 2411.15869; its
method's three parts: resolving anomaly tokens, self-adjusting, multi-level fusion), as its code runs it.

Paper sections as numbered in its journal version (IEEE TIP 34, 2025; the arXiv text calls the last part
multi-level fusion): §III-B *Resolving the Anomaly Tokens* (Eq. 3: the 3×3 neighbour mean), §III-C *Self-Adjusting
for Semantic Coherence* (Eq. 4: the aggregation, Eq. 5: ``softmax(K Kᵀ) + softmax(Sim_mid)``), §III-D *Two-Pass
Strategy* (the fused features through the same block), with the settings of §IV-A (β = 0.4) and the choices of
§IV-C: about 5 % of the tokens anomalous (10 at 224 px), and the paper's 1-based layers 9 and 4 (pre- and
post-adjustment) and 4–10 (fusion), the code's 0-based 8, 3 and 3..9.

It follows ``clip/model.py`` (``VisionTransformer.forward``, ``custom_attn``, ``adaptively_aggregate``,
``mean_interpolation``, ``lof_pytorch``) and ``scclip_segmentor.py`` of github.com/SuleBai/SC-CLIP@0417ba9, with
``configs/base_config.py`` (ViT-B/16). Block indices are 0-based; ``x_l`` is the output of block ``l`` (all tokens),
``L`` the depth. Blocks ``0 .. L−2`` run unchanged; then, per image:

1. **Anomaly tokens.** The local outlier factor of each patch token of ``x_{L−2}`` (its ``n_neighbors = 30`` nearest
   patch tokens, :func:`local_outlier_factor`); the tokens above the ``1 − contamination`` (0.95) quantile of the
   image's scores are anomalous. Each is replaced by the mean of its (up to 8) grid neighbours that are not
   anomalous (kept when it has none; :func:`fill_outliers`), in ``x_{L−2}`` and in ``x_pre`` (``pre_adjust_layer``,
   8).
2. **Self-adjusting.** ``S = cos`` between the filled patch tokens of ``x_pre``; ``x`` (the filled patches of
   ``x_{L−2}``, without CLS) becomes ``Ŝ x`` with ``Ŝ`` = ``S`` zeroed below ``beta = 0.4``, rows divided by their sum
   + 1e-6 (:func:`aggregate`). The last block then runs reduced on ``x``: ``O(A v) + res_cls · cls`` with
   ``A`` the self-adjusting attention of ``S`` (:mod:`cliplens.core.attention.self_adjusting`, scale 3), no
   residual, no MLP, ``cls`` the CLS token of ``x_{L−2}`` and ``res_cls = 0.3``.
3. **Multi-level fusion.** ``F = Σ x_l`` over ``fusion_layers`` (3..9) goes through the same reduced block,
   ``+ res_cls · F[CLS]``. Both results are aggregated with ``S'`` (the cosine of the patch tokens of
   ``x_post``, ``post_adjust_layer = 3``, unfilled, zeroed below ``beta``), added, and read through ``ln_post`` and
   the projection; raw map = cosine with the texts.

Defaults are the official ViT-B/16 ones for a 12-block tower; a 24-block tower gets the ViT-L/14 ones of the
repository's first commit (74471da ``configs/base_config.py``: 16, 6, 8..18, ``res_cls = 0.1``); other depths scale
the 12-block layers (:func:`default_settings`). Positions for another grid: DINO's scale-factor rule
(``bicubic_dino``) as its ``interpolate_pos_encoding``. Its evaluation settings: ``segment-eval --preset sc-clip``.

The outlier rule: ``lof="code"`` (default) is the repository's ``lof_pytorch``: squared distances, and the
reachability distance uses the point's *own* k-distance, so its LRD is ``k / k-distance²``. That is not the LOF of
Breunig et al. the paper names: ``lof="breunig"`` is that one (equal to sklearn's ``LocalOutlierFactor``, which the
first commit left as a commented alternative, ``n_neighbors=30, contamination=0.05``, to the top-10-norm rule it
ran). On random ViT-B-16 weights the two pick different tokens (2–3 of 10 per image at 224 px); which the
paper's numbers used is not recorded.

Deviations, each invisible where the code runs (one image, a square grid of at least 31 patches):

* Batched: each image gets its own outliers and its own ``mean S`` (the code takes one over the batch, and its
  outlier search only works for one image).
* Grid positions are row-major ``(n // gw, n % gw)``; the code's ``(n // gh, n % gh)`` is the same on square
  grids and wrong (or out of range) on others.
* ``n_neighbors`` is capped at the number of patch tokens − 1 (as sklearn does; the code fails below 31 patches).
* Outlier scores are computed in float64 (float32 on MPS), similarities in float32 for half models.
* A tower without a CLS token (SigLIP's) has no CLS share to add: ``res_cls`` does nothing there.
* The code resizes the positional table only when the token count differs from the table's, so a grid of the same
  count but another shape (7 × 28 on a 14 × 14 table) gets the table unresized; here any other grid is resized.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention import AttentionContext, SelfAdjusting
from cliplens.core.forward import _out_proj, _qkv, project_tokens
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan, resolve_layer_indices
from cliplens.errors import InvalidInputError
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings
from cliplens.maps.token_similarity import patch_grid

__all__ = ["LOF_VARIANTS", "SCCLIP", "aggregate", "default_settings", "fill_outliers", "local_outlier_factor",
           "outlier_mask"]

#: ``"code"``: the repository's ``lof_pytorch``; ``"breunig"``: Breunig et al.'s LOF (sklearn's)
LOF_VARIANTS = ("code", "breunig")

#: the repository's settings per depth: ViT-B/16 (configs/base_config.py@0417ba9) and ViT-L/14 (@74471da)
_OFFICIAL = {12: (8, 3, (3, 10), 0.3), 24: (16, 6, (8, 19), 0.1)}


def default_settings(num_layers: int) -> dict[str, Any]:
    """``pre_adjust_layer``, ``post_adjust_layer``, ``fusion_layers`` and ``res_cls`` for an ``num_layers``-block
    tower: the repository's for 12 and 24 blocks; else the 12-block layers scaled by ``L / 12`` (Python's
    ``round``), kept before the last block, with ``res_cls = 0.3``."""
    L = num_layers
    if L < 2:
        raise InvalidInputError(f"SC-CLIP needs at least 2 blocks (it rebuilds the last from the earlier ones); this "
                                f"tower has {L}")
    if L in _OFFICIAL:
        pre, post, (lo, hi), res = _OFFICIAL[L]
    else:
        pre, post, lo, hi, res = (round(8 * L / 12), round(3 * L / 12), round(3 * L / 12), round(10 * L / 12), 0.3)
        pre, post, hi = min(pre, L - 2), min(post, L - 2), min(hi, L - 1)
        lo = min(lo, hi - 1)
    return {"pre_adjust_layer": pre, "post_adjust_layer": post, "fusion_layers": list(range(lo, hi)),
            "res_cls": res}


def _score_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64


def local_outlier_factor(x: Tensor, n_neighbors: int = 30, variant: str = "code") -> Tensor:
    """Local outlier factor ``[B, P]`` of each of the ``P`` points ``x`` ``[B, P, D]`` among the points of its own row.

    With ``N_k(p)`` the ``k`` nearest other points of ``p`` (``k = min(n_neighbors, P − 1)``), ``d`` the Euclidean
    distance and ``k-dist(o)`` the distance from ``o`` to its k-th neighbour:

    * ``"breunig"`` (Breunig et al. 2000; sklearn's ``LocalOutlierFactor``): ``reach(p, o) = max(d(p, o),
      k-dist(o))``, ``lrd(p) = 1 / (mean_{o ∈ N_k(p)} reach(p, o) + 1e-10)``, ``LOF(p) = mean_o lrd(o) / lrd(p)``;
    * ``"code"`` (SC-CLIP's ``lof_pytorch``): the same with squared distances and ``max(d², k-dist(p)²)`` (the point's
      own k-distance), ``lrd(p) = k / mean(...)``.
    """
    if variant not in LOF_VARIANTS:
        raise InvalidInputError(f"lof must be one of {', '.join(LOF_VARIANTS)}, got {variant!r}")
    B, P, _ = x.shape
    if P < 2:
        raise InvalidInputError(f"the local outlier factor needs at least 2 patch tokens, got {P}")
    k = max(1, min(int(n_neighbors), P - 1))
    x = x.to(_score_dtype(x))
    sq = x.pow(2).sum(-1)
    d2 = (sq[:, :, None] + sq[:, None, :] - 2.0 * torch.matmul(x, x.transpose(1, 2))).clamp_min(0.0)
    d2.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # a point is not its own neighbour
    near, idx = d2.topk(k, dim=-1, largest=False)  # [B, P, k], ascending
    if variant == "breunig":
        dist = near.sqrt()
        kdist = dist[..., -1]  # [B, P]
        reach = torch.maximum(dist, torch.gather(kdist, 1, idx.flatten(1)).view(B, P, k))
        lrd = 1.0 / (reach.mean(-1) + 1e-10)
    else:
        reach = torch.maximum(near, near[..., -1:])
        lrd = k / reach.mean(-1)
    neighbours = torch.gather(lrd, 1, idx.flatten(1)).view(B, P, k)
    return (neighbours / lrd[..., None]).mean(-1)


def outlier_mask(scores: Tensor, contamination: float = 0.05) -> Tensor:
    """``[B, P]`` bool: the scores above their row's ``1 − contamination`` quantile (linear interpolation)."""
    threshold = torch.quantile(scores, 1.0 - contamination, dim=-1, keepdim=True)
    return scores > threshold


def fill_outliers(tokens: Tensor, outliers: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch ``tokens`` ``[B, P, D]`` (row-major on ``grid``) with each outlier (``[B, P]`` bool) replaced by the mean
    of its up to 8 grid neighbours that are not outliers; an outlier with none is kept."""
    B, P, D = tokens.shape
    gh, gw = grid
    keep = (~outliers).to(tokens.dtype)
    kernel = torch.ones(3, 3, dtype=tokens.dtype, device=tokens.device)
    kernel[1, 1] = 0
    fmap = (tokens * keep[..., None]).transpose(1, 2).reshape(B, D, gh, gw)
    sums = F.conv2d(fmap, kernel.expand(D, 1, 3, 3), padding=1, groups=D)
    counts = F.conv2d(keep.view(B, 1, gh, gw), kernel.view(1, 1, 3, 3), padding=1)
    means = (sums / counts.clamp_min(1)).flatten(2).transpose(1, 2)  # [B, P, D]
    replace = outliers & (counts.flatten(1) > 0)
    return torch.where(replace[..., None], means, tokens)


def cosine_similarity(tokens: Tensor) -> Tensor:
    """``[B, P, P]`` cosine similarity between the tokens ``[B, P, D]`` (float32 for half inputs)."""
    t = tokens.float() if tokens.dtype in (torch.float16, torch.bfloat16) else tokens
    t = t / t.norm(dim=-1, keepdim=True)
    return torch.matmul(t, t.transpose(1, 2))


def aggregate(tokens: Tensor, similarity: Tensor, beta: float) -> Tensor:
    """``Ŝ · tokens`` with ``Ŝ`` the ``similarity`` ``[B, P, P]`` zeroed below ``beta``, each row divided by its sum
    + 1e-6 (the repository's ``adaptively_aggregate``)."""
    s = similarity.masked_fill(similarity < beta, 0.0)
    s = s / (s.sum(-1, keepdim=True) + 1e-6)
    return torch.matmul(s.to(tokens.dtype), tokens)


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(f"SC-CLIP's {name} must be an integer of at least {low}, got {value!r}")
    return int(value)


def _layers(value: Any) -> Any:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, Iterable) and not isinstance(value, str):
        return [v for v in value]
    raise InvalidInputError(f"SC-CLIP's layers must be block indices (an int or a list of ints), got {value!r}")


@register_map("sc-clip")
class SCCLIP(MapMethod):
    """SC-CLIP: LOF anomaly tokens filled, a self-adjusting reduced last block, multi-level fusion (see the module
    docs). Layers and ``res_cls`` left at None take the repository's for the tower's depth (12 blocks: 8, 3, 3..9,
    0.3)."""

    paper = ('Bai et al., "Self-Calibrated CLIP for Training-Free Open-Vocabulary Segmentation" (arXiv 2411.15869, '
             '2024)')
    code = "github.com/SuleBai/SC-CLIP@0417ba9"

    own_positional = "bicubic_dino"

    def __init__(self, pre_adjust_layer: int | None = None, post_adjust_layer: int | None = None,
                 fusion_layers: list[int] | None = None, res_cls: float | None = None, beta: float = 0.4,
                 attention_scale: float = 3.0, n_neighbors: int = 30, contamination: float = 0.05,
                 lof: str = "code", positional: str | None = "bicubic_dino") -> None:
        if lof not in LOF_VARIANTS:
            raise InvalidInputError(f"SC-CLIP's lof must be one of {', '.join(LOF_VARIANTS)} ('code': the repository's "
                                    f"lof_pytorch; 'breunig': the LOF of Breunig et al., sklearn's); got {lof!r}")
        if not isinstance(contamination, (int, float)) or isinstance(contamination, bool) \
                or not 0.0 < contamination <= 0.5:
            raise InvalidInputError(f"SC-CLIP's contamination (the share of patch tokens taken as anomalous) must be "
                                    f"in (0, 0.5], got {contamination!r}")
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not -1.0 <= beta < 1.0:
            raise InvalidInputError(f"SC-CLIP's beta (the cosine below which similarities are dropped) must be in "
                                    f"[-1, 1), got {beta!r}")
        if not isinstance(attention_scale, (int, float)) or isinstance(attention_scale, bool) \
                or not attention_scale > 0:
            raise InvalidInputError(f"SC-CLIP's attention_scale must be a positive number, got {attention_scale!r}")
        if res_cls is not None and (isinstance(res_cls, bool) or not isinstance(res_cls, (int, float))):
            raise InvalidInputError(f"SC-CLIP's res_cls must be a number (or none: the depth's default), got "
                                    f"{res_cls!r}")
        for name, value in (("pre_adjust_layer", pre_adjust_layer), ("post_adjust_layer", post_adjust_layer)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidInputError(f"SC-CLIP's {name} must be a block index (an integer), got {value!r}")
        super().__init__(pre_adjust_layer=pre_adjust_layer, post_adjust_layer=post_adjust_layer,
                         fusion_layers=_layers(fusion_layers), res_cls=None if res_cls is None else float(res_cls),
                         beta=float(beta), attention_scale=float(attention_scale),
                         n_neighbors=_int("n_neighbors", n_neighbors, 1), contamination=float(contamination),
                         lof=lof, positional=positional)

    def settings(self, num_layers: int) -> dict[str, Any]:
        """The layers and ``res_cls`` used on an ``num_layers``-block tower (the given ones, else
        :func:`default_settings`), checked: every layer must come before the last block."""
        L = num_layers
        out = default_settings(L)
        p = self.params
        last = L - 1
        for name in ("pre_adjust_layer", "post_adjust_layer", "fusion_layers"):
            if p[name] is None:
                continue
            layers = resolve_layer_indices(p[name], L, f"SC-CLIP's {name}")
            if not layers:
                raise InvalidInputError(f"SC-CLIP's {name} is empty: give at least one block index")
            if max(layers) >= last:
                raise InvalidInputError(f"SC-CLIP's {name} must come before the last block ({last}: SC-CLIP rebuilds "
                                        f"it); got {p[name]!r}")
            out[name] = layers if name == "fusion_layers" else layers[0]
        if p["res_cls"] is not None:
            out["res_cls"] = p["res_cls"]
        return out

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        view = model.vision
        L = view.num_layers
        cfg = self.settings(L)
        p = self.params
        pre, post, fusion = cfg["pre_adjust_layer"], cfg["post_adjust_layer"], cfg["fusion_layers"]
        wanted = sorted({L - 2, pre, post, *fusion})
        # blocks 0..L-2 as the model runs them; the last block is SC-CLIP's own (below): skip its MLP there
        plan = Plan().at(-1, attention="identity", mlp=False)
        out = model.run(pixels, plan=self.plan_for(plan), names=[f"blocks.{i}.resid_post" for i in wanted])
        res = {i: out[f"blocks.{i}.resid_post"] for i in wanted}
        grid = out.grid
        last = res[L - 2]  # [B, N, D], the prefix (CLS) first
        B = last.shape[0]
        c = last.shape[1] - grid[0] * grid[1]  # 1 (CLS) or 0 (a tower without one: no CLS share to add)

        if last.shape[1] - c > 2:
            outliers = outlier_mask(local_outlier_factor(last[:, c:], p["n_neighbors"], p["lof"]), p["contamination"])
        else:  # one or two patches: nothing to compare them with
            outliers = torch.zeros(B, last.shape[1] - c, dtype=torch.bool, device=last.device)
        mid = cosine_similarity(fill_outliers(res[pre][:, c:], outliers, grid))  # S, [B, P, P]
        main = aggregate(fill_outliers(last[:, c:], outliers, grid), mid, p["beta"])
        fused = sum(res[i] for i in fusion)  # [B, N, D]

        # the reduced last block on each stream (one after the other: the attention is [B, H, P, P]), each with its
        # own prefix (CLS) tokens, + res_cls times its CLS
        blk = view.blocks[L - 1]
        strategy = SelfAdjusting(scale=p["attention_scale"]).use(mid)
        total = torch.zeros_like(main)
        for stream in (torch.cat([last[:, :c], main], dim=1), fused):
            h = blk.ln_1(stream)
            q, k, v = _qkv(blk, h, B, stream.shape[1], grid)
            ctx = AttentionContext(layer=L - 1, block=blk, grid=grid, x=h)
            z = strategy.output(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), ctx).transpose(1, 2)
            total += _out_proj(blk, z)[:, c:]
            if c:
                total += cfg["res_cls"] * stream[:, :1]
        after = cosine_similarity(res[post][:, c:])
        final = aggregate(total, after, p["beta"])

        feats = project_tokens(view, final)
        feats = F.normalize(feats.float() if feats.dtype in (torch.float16, torch.bfloat16) else feats, dim=-1)
        return patch_grid(feats @ texts.directions.to(feats).T, grid)
