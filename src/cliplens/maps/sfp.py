"""SFP, the Self-adaptive Feature Purifier (Jin et al., ICCV 2025), CLIP only and training-free, as its code runs it.

Followed: ``SFP_ICCV/clip/model.py`` (``VisionTransformer.forward``, ``custom_attn``, ``sinkhorn_attn``,
``mean_interpolation``, ``adaptively_aggregate``) with the settings of ``SFP_ICCV/configs/base_config.py``
(Kimsure/SFP@2804f5b). The steps carry the names of the paper's three modules (its abstract's "self-adaptive
outlier mitigator", "semantic-aware attention enhancer" and "hierarchical attention integrator"); the paper has no
arXiv version and its section numbers could not be checked where this was written. With ``x_l`` the residual stream after block ``l`` (0-based, CLS first), ``L`` blocks, and
every setting at its default:

1. **Outlier mitigator.** The vanilla forward runs up to block ``L − 2``. From that block's attention, averaged over
   heads, a patch ``n`` is *salient* when ``5·res_cls·α(CLS → n) > α(n → n)`` (the original scales the CLS row by
   ``res_cls · 5`` in place before comparing); the ``outliers`` (10) salient patches with the largest
   ``α(CLS → n)`` are outliers (``outlier_rule="l2"``: the 10 patches of ``x_{L−2}`` with the largest norm, the
   original's ``pm='L2'``). ``purify(x)`` replaces each outlier's features by the mean of its non-outlier
   8-neighbours on the patch grid (0 when it has none).
2. **Similarities.** ``S_pre = cos(purify(x_8))`` and ``S_post = cos(x_3)`` between patches, each set to 0 where
   it is below ``threshold`` (0.4). ``agg(f, S) = (S / (rowsum(S) + 1e-6)) · f``.
3. **Semantic-aware attention enhancer** in the last block, on the patch tokens only:
   ``F = agg(O(P · v), S_post)`` for ``v`` (and q, k) from ``ln_1(agg(purify(x_{L−2}), S_pre))``, with the
   pattern ``P = (softmax(s q qᵀ) + softmax(s k kᵀ) + softmax(3·(S_pre − mean S_pre)⁺))/3`` (:mod:`cliplens.core.
   attention.semantic_enhancer`; ``⁺``: −∞ where negative), ``O`` the out-projection, plus
   ``res_cls · x_{L−2}[CLS]`` before ``agg``; no residual, no MLP.
4. **Hierarchical integrator.** ``Σ = Σ_{l=3..9} x_l`` (``fuse_start``, ``fuse_end``: the original's
   ``hidden_states[3:10]``); ``G = agg(O(softmax(3·(S_pre − mean S_pre)⁺) · v_Σ) + res_cls · Σ[CLS], S_post)``
   with ``v_Σ`` from ``ln_1`` of Σ's patches (the last block's weights).
5. The map: ``cos(ln_post(F + G) · proj, t)`` per patch.

Which blocks change: none of blocks ``0 .. L−2`` (they run as the model's own); the last block is replaced by
steps 3–4. Layers 8 (``similarity_layer``), 3 (``refine_layer``) and 3..9 are the original's absolute indices (the
same for ViT-B/16 and ViT-L/14); on towers of fewer than 11 blocks the defaults scale with the depth
(:func:`default_layers`); given ones must come before the last block. With a rotary embedding (EVA02), the patch
tokens keep their rotations in the last block. The positional table is resized at another grid with DINO's
scale-factor rule (``bicubic_dino``), as its ``interpolate_pos_encoding`` does.

The paper's text could not be read here (no section or equation numbers are cited): the formulas are the code's.
The paper speaks of outliers detected "at each layer"; the code detects them once, from block ``L − 2``, and purifies
the outputs of blocks 8 and ``L − 2`` only, which is what runs here. Checked against the repository's
``VisionTransformer`` on identical random weights (open_clip ViT-B-16 at 224 and at 448 from the 224 table, and a
small model at 96x96, and at 96x128 and 128x96 with the outlier cell fixed as below): ≤ 3e-15 relative in float64.

Deviations, each where the original cannot run or is wrong: it handles one image at a time (``mean(S_pre)``
and the outliers are per image here, over a batch); it locates an outlier at ``(i // gh, i % gh)`` for patch
``i``, the right cell only on square grids (elsewhere a wrong cell or an index error; here ``(i // gw, i % gw)``);
``purify=False`` crashes there (here ``outliers=0`` turns the mitigator off); an outlier with no kept neighbour
(small grids) has zero features, whose cosine is 0/0 there and makes the whole map NaN (here it is similar to
itself only, :func:`thresholded_cosine`); its ``pm='LOF'`` rule is not offered. Its settings per data set (logit
scale, background threshold, short side, area rule; 224/112 windows) are ``segment-eval --preset sfp``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention import AttentionContext, SemanticEnhancer
from cliplens.core.forward import _out_proj, _qkv, project_tokens
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.errors import InvalidInputError
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings
from cliplens.maps.token_similarity import patch_grid

__all__ = ["OUTLIER_RULES", "SFP", "aggregate", "default_layers", "purify"]

#: how outliers are found: "som" (CLS attention above self-attention, the original's default) or "l2" (norm)
OUTLIER_RULES = ("som", "l2")
#: the factor the original multiplies ``res_cls`` by when it scales the CLS attention row (``res_scale``)
_RES_SCALE = 5.0


def default_layers(num_layers: int) -> tuple[int, int, int, int]:
    """``(similarity_layer, refine_layer, fuse_start, fuse_end)``: the original's 8, 3, 3, 10 on a tower where they
    come before the last block (11 blocks or more: every CLIP ViT, which the original runs with the same indices), on
    a shallower one the same fractions of its depth (``round(8L/12)``, ``round(3L/12)``, ``round(10L/12)``), kept
    before the last block."""
    L = num_layers
    if L >= 11:
        return 8, 3, 3, 10
    top = max(L - 2, 0)
    start = min(round(3 * L / 12), top)
    return min(round(8 * L / 12), top), start, start, max(min(round(10 * L / 12), L - 1), start + 1)


def purify(feats: Tensor, outliers: Tensor, grid: tuple[int, int]) -> Tensor:
    """``feats`` ``[B, P, D]`` (patches, row-major) with each outlier (``outliers`` ``[B, P]`` bool) replaced by the
    mean of its non-outlier 8-neighbours (0 without any); the other patches unchanged."""
    B, P, D = feats.shape
    gh, gw = grid
    keep = (~outliers).to(feats.dtype).view(B, gh, gw, 1)
    kept = F.pad(feats.view(B, gh, gw, D) * keep, (0, 0, 1, 1, 1, 1))
    kpad = F.pad(keep, (0, 0, 1, 1, 1, 1))
    total = torch.zeros_like(feats.view(B, gh, gw, D))
    count = torch.zeros_like(keep)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            if dr == 1 and dc == 1:
                continue
            total += kept[:, dr:dr + gh, dc:dc + gw]
            count += kpad[:, dr:dr + gh, dc:dc + gw]
    mean = (total / count.clamp_min(1)).view(B, P, D)
    return torch.where(outliers[..., None], mean, feats)


def thresholded_cosine(feats: Tensor, threshold: float) -> Tensor:
    """``[B, P, P]`` cosine similarity between the patches of ``feats`` ``[B, P, D]``, 0 where below ``threshold``.

    A zero vector (an outlier none of whose neighbours is kept, after :func:`purify`) has similarity 0 with the
    others and 1 with itself: the original divides 0 by 0 there, and its whole map becomes NaN."""
    norm = feats.norm(dim=-1, keepdim=True)
    unit = feats / norm.clamp_min(torch.finfo(feats.dtype).tiny)
    sim = unit @ unit.transpose(1, 2)
    zero = norm[..., 0] == 0
    if zero.any():
        sim = sim + torch.diag_embed(zero.to(sim.dtype))
    return sim.masked_fill(sim < threshold, 0.0)


def aggregate(feats: Tensor, sim: Tensor) -> Tensor:
    """``(S / (rowsum(S) + 1e-6)) · feats``: each patch the similarity-weighted mean of the patches."""
    return (sim / (sim.sum(-1, keepdim=True) + 1e-6)) @ feats


@register_map("sfp")
class SFP(MapMethod):
    """SFP: outliers mitigated, the last block replaced by its similarity-guided attention over purified and fused
    layers (see the module docs)."""

    paper = ('Jin et al., "Feature Purification Matters: Suppressing Outlier Propagation for Training-Free '
             'Open-Vocabulary Semantic Segmentation" (ICCV 2025)')
    code = "github.com/Kimsure/SFP@2804f5b (SFP_ICCV/clip/model.py)"

    own_positional = "bicubic_dino"

    def __init__(self, outlier_rule: str = "som", outliers: int = 10, res_cls: float = 0.3, threshold: float = 0.4,
                 temperature: float = 3.0, similarity_layer: int | None = None, refine_layer: int | None = None,
                 fuse_start: int | None = None, fuse_end: int | None = None,
                 positional: str | None = "bicubic_dino") -> None:
        if outlier_rule not in OUTLIER_RULES:
            raise InvalidInputError(f"SFP's outlier_rule must be one of {', '.join(OUTLIER_RULES)}; got "
                                    f"{outlier_rule!r}")
        for name, value in (("outliers", outliers), ("similarity_layer", similarity_layer),
                            ("refine_layer", refine_layer), ("fuse_start", fuse_start), ("fuse_end", fuse_end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidInputError(f"SFP's {name} must be a whole number of at least 0, got {value!r}")
        if fuse_start is not None and fuse_end is not None and fuse_end <= fuse_start:
            raise InvalidInputError(f"SFP fuses the outputs of blocks fuse_start .. fuse_end - 1: fuse_end must be "
                                    f"above fuse_start, got {fuse_start} and {fuse_end}")
        if not temperature > 0:
            raise InvalidInputError(f"SFP's temperature must be positive, got {temperature}")
        super().__init__(outlier_rule=outlier_rule, outliers=outliers, res_cls=float(res_cls),
                         threshold=float(threshold), temperature=float(temperature),
                         similarity_layer=similarity_layer, refine_layer=refine_layer, fuse_start=fuse_start,
                         fuse_end=fuse_end, positional=positional)

    def layers(self, num_layers: int) -> tuple[int, int, int, int]:
        """``(similarity_layer, refine_layer, fuse_start, fuse_end)`` for an ``num_layers``-deep tower: those given,
        the rest by :func:`default_layers`. Raises :class:`InvalidInputError` when one is not before the last block."""
        given = [self.params[k] for k in ("similarity_layer", "refine_layer", "fuse_start", "fuse_end")]
        sim, ref, start, end = (d if g is None else g for g, d in zip(given, default_layers(num_layers), strict=True))
        end = max(end, start + 1)
        last = num_layers - 1
        bad = {k: v for k, v in (("similarity_layer", sim), ("refine_layer", ref), ("fuse_end - 1", end - 1))
               if v >= last}
        if bad:
            raise InvalidInputError(
                f"SFP reads the outputs of blocks before the last one (0..{last - 1} for this {num_layers}-layer "
                f"tower); got {', '.join(f'{k} = {v}' for k, v in bad.items())}: give smaller ones with --param")
        return sim, ref, start, end

    def unsupported(self, model: ImageTextModel) -> str | None:
        why = super().unsupported(model)
        if why:
            return why
        view = model.vision
        if view.num_prefix_tokens != 1:
            return ("the 'sfp' map reads the attention of the CLS token and adds the CLS token to every patch, and "
                    f"{getattr(view, 'source', '') or 'this model'} has no CLS token; pick a CLIP ViT (such as "
                    "ViT-B-16)")
        if view.num_layers < 2:
            return f"the 'sfp' map needs at least 2 transformer blocks; this tower has {view.num_layers}"
        try:
            self.layers(view.num_layers)
        except InvalidInputError as e:
            return str(e)
        return None

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        view = model.vision
        p = self.params
        probe = view.num_layers - 2
        sim_layer, refine_layer, start, end = self.layers(view.num_layers)
        fused = range(start, end)
        wanted = sorted({probe, sim_layer, refine_layer, *fused})
        seen: dict[str, Tensor] = {}

        def som(pattern: Tensor, name: str) -> None:  # the head-mean attention's CLS row and diagonal
            mean = pattern.mean(1)
            seen["cls"] = mean[:, 0, 1:]
            seen["self"] = mean.diagonal(dim1=-2, dim2=-1)[:, 1:]

        hooks = {f"blocks.{probe}.attn.pattern": som} if p["outlier_rule"] == "som" and p["outliers"] else {}
        plan = Plan().at(-1, attention="identity", residual=False, mlp=False)  # replaced below: keep it cheap
        out = model.run(pixels, plan=self.plan_for(plan), names=[f"blocks.{i}.resid_post" for i in wanted],
                        hooks=hooks)
        grid = out.grid
        states = {i: out[f"blocks.{i}.resid_post"] for i in wanted}
        work = torch.float32 if view.dtype in (torch.float16, torch.bfloat16) else view.dtype
        outliers = self._outliers(states[probe], seen, grid)

        x_probe = states[probe]
        pre = thresholded_cosine(purify(states[sim_layer][:, 1:].to(work), outliers, grid), p["threshold"])
        post = thresholded_cosine(states[refine_layer][:, 1:].to(work), p["threshold"])
        tokens = aggregate(purify(x_probe[:, 1:].to(work), outliers, grid), pre).to(view.dtype)

        last = view.blocks[-1]
        enhancer = SemanticEnhancer(temperature=p["temperature"]).use(pre)
        feats = self._attend(last, enhancer, tokens, grid) + p["res_cls"] * x_probe[:, :1]
        state = sum(states[i] for i in fused)
        guided = SemanticEnhancer(temperature=p["temperature"], correlative=False).use(pre)
        extra = self._attend(last, guided, state[:, 1:], grid) + p["res_cls"] * state[:, :1]
        feats = aggregate((feats + extra).to(work), post)  # agg(F, S) + agg(G, S) = agg(F + G, S): one matmul

        dense = project_tokens(view, feats.to(view.dtype))
        dense = F.normalize(dense.to(work), dim=-1)
        return patch_grid(dense @ texts.directions.to(dense).T, grid)

    def _outliers(self, x_probe: Tensor, seen: dict[str, Tensor], grid: tuple[int, int]) -> Tensor:
        """``[B, P]`` bool: the outlier patches (see the module docs)."""
        B, P = x_probe.shape[0], grid[0] * grid[1]
        k = min(self.params["outliers"], P)
        mask = torch.zeros(B, P, dtype=torch.bool, device=x_probe.device)
        if k == 0:
            return mask
        if self.params["outlier_rule"] == "som":
            cls = seen["cls"] * (self.params["res_cls"] * _RES_SCALE)
            score = cls.float().masked_fill(~(cls > seen["self"]), float("-inf"))
        else:
            score = x_probe[:, 1:].float().norm(dim=-1)
        values, idx = score.topk(k, dim=-1)
        mask.scatter_(1, idx, values > float("-inf"))
        return mask

    @staticmethod
    def _attend(blk: Any, strategy: SemanticEnhancer, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """``O(P · v)`` of block ``blk`` over ``tokens`` ``[B, P, D]`` (q, k, v from its ``ln_1``)."""
        h = blk.ln_1(tokens)
        if not strategy.params["correlative"]:  # the guidance alone reads the values only
            v = F.linear(h, blk.v_weight, blk.v_bias).view(*h.shape[:2], blk.num_heads, -1).transpose(1, 2)
            q = k = v
        else:
            pad = blk.rope.prefix if blk.rope is not None else 0  # a rotary embedding rotates the tokens after a prefix
            padded = torch.cat([h.new_zeros(h.shape[0], pad, h.shape[2]), h], dim=1) if pad else h
            q, k, v = (t[:, pad:].transpose(1, 2) for t in _qkv(blk, padded, *padded.shape[:2], grid))
        ctx = AttentionContext(layer=-1, block=blk, grid=grid, x=h)
        return _out_proj(blk, strategy.output(q, k, v, ctx).transpose(1, 2))
