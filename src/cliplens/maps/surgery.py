"""CLIP Surgery (Li et al., "A Closer Look at the Explainability of CLIP"): clean similarity maps at
inference, without training.

**Architecture surgery** (``architecture=True``): a side path over the last ``blocks`` blocks (6 in the
original, whatever the depth). At the first of them it starts from the main stream's residual (that
block's input, CLS included); at each of them it adds v-v attention — ``softmax(d_head^-½ · v vᵀ) v``
per head, with q, k, v computed (with their biases) from the *main* stream's ``ln_1`` output — passed
through the block's out-projection (with its bias); it has no MLP. The main stream runs unchanged.
Tokens: CLS from the main stream, every other token from the side path, each through ``ln_post`` and
the projection (:meth:`Surgery.tokens`).

**Feature surgery** (``feature=``), on unit-norm token features ``f_n`` and unit-norm texts ``t_j``:

* ``"redundancy"`` (the original's default): ``p = softmax_j(temperature · f_CLS · t_j)`` per image
  (temperature 2, hard-coded there), ``w_j = p_j / mean_j p``, ``S_nj = w_j s_nj − mean_j (w_j s_nj)`` with
  ``s_nj = f_n · t_j`` — the same as building ``F_njc = f_nc t_jc w_j``, subtracting its mean over j and
  summing over c, without the ``[B, N, T, E]`` tensor. Works for any batch (the original's code only for
  one image). With a single text there is nothing to be redundant with: it falls back to ``"empty"``
  and warns; the maps' settings record ``feature`` (asked for) and ``feature_used`` (what was computed).
* ``"empty"``: ``S_nj = f_n · (t_j − t_empty)``, ``t_empty`` the empty prompt in the same ensemble (no
  weighting, no mean removal).
* ``"none"``: ``S_nj = s_nj``.

Maps are the patch tokens' scores on the token grid; the original normalises each map min–max and
upsamples bilinearly (the defaults of :class:`~cliplens.maps.base.MapMethod`). Other input sizes
interpolate the positional embedding bilinearly, as the original does (``positional="bicubic"`` for HF's
rule, the rest of cliplens's), without modifying the model (the original writes the resized table back into
the model, so that its later calls at the native size are wrong). The original's prompt
ensemble is ``Targets.classes(..., templates="surgery")`` (85 templates).

**ResNet CLIPs** (no blocks): architecture surgery happens in the attention pool, as the paper's ResNet variant
(v-v attention with L2-normalised values and scale 8/√d; ``resnet="released"`` for the authors' code, which
never runs that branch): :mod:`cliplens.maps.surgery_resnet`. ``blocks`` does not apply there.

**Beyond both papers** (:func:`surgery_parts`): the side path is the residual it started from plus a sum
of v-v head outputs, so with ``ln_post``'s statistics frozen per token each token's score splits exactly
over (layer, head) plus that start.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.attention import get_attention
from cliplens.core.heads.base import ln_stats
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan, SidePath
from cliplens.core.trunk import needs_blocks
from cliplens.decomposition.algebra import FrozenSubNorm, HeadWeights, JointMap
from cliplens.errors import InvalidInputError
from cliplens.maps.base import MapMethod, Maps, register_map
from cliplens.maps.choices import FEATURE_MODES
from cliplens.maps.surgery_resnet import RESNET_VARIANTS, resnet_surgery_tokens
from cliplens.maps.targets import TextEmbeddings
from cliplens.maps.token_similarity import patch_grid

__all__ = ["FEATURE_MODES", "Surgery", "SurgeryParts", "feature_surgery", "feature_used", "surgery_parts", "surgery_plan"]

SIDE = "surgery"


def surgery_plan(num_layers: int, blocks: int = 6, positional: str = "bilinear") -> Plan:
    """The plan of architecture surgery: a v-v side path over the last ``blocks`` blocks; positions resized
    ``positional``-ly for other grids (the original: bilinear)."""
    if not 1 <= blocks <= num_layers:
        raise InvalidInputError(f"CLIP Surgery's blocks must be between 1 and the model's depth ({num_layers}), "
                                f"got {blocks}")
    return Plan(positional=positional).side(range(num_layers - blocks, num_layers),
                       SidePath(SIDE, attention=get_attention("self-self", source="v")))


def feature_used(mode: str, texts: int) -> str:
    """The feature surgery computed for ``texts`` texts under ``mode``: ``"redundancy"`` falls back to ``"empty"``
    for one text (nothing to be redundant with)."""
    return "empty" if mode == "redundancy" and texts == 1 else mode


def feature_surgery(feats: Tensor, texts: Tensor, *, mode: str = "redundancy", empty: Tensor | None = None,
                    temperature: float | None = None) -> Tensor:
    """Scores ``[B, N, T]`` of unit-norm token features ``[B, N, E]`` (token 0 = CLS) against unit-norm texts
    ``[T, E]`` (see the module docs for the modes).

    ``empty`` (the empty prompt's direction ``[E]``) is what ``mode="empty"`` subtracts, and what
    ``"redundancy"`` with one text falls back to; ``temperature`` (default 2, the original's) weighs the texts in
    ``"redundancy"`` with two or more texts. An argument the mode would ignore is refused, not dropped: a
    redundancy score with ``empty=`` given is not the empty-prompt variant, which is ``mode="empty"``."""
    if mode not in FEATURE_MODES:
        raise InvalidInputError(f"feature surgery mode must be one of {', '.join(FEATURE_MODES)}; got {mode!r}")
    texts = texts.to(feats)
    used = feature_used(mode, texts.shape[0])
    if empty is not None and used != "empty":
        raise InvalidInputError(
            f"feature_surgery(mode={mode!r}) with {texts.shape[0]} texts ignores empty=: "
            + ("it removes what the texts share instead" if used == "redundancy" else "it scores the texts as they are")
            + "; for the empty-prompt variant (f · (t − t_empty)) pass mode='empty', or leave empty= out")
    if temperature is not None and used != "redundancy":
        raise InvalidInputError(
            f"feature_surgery(mode={mode!r}) with {texts.shape[0]} text(s) computes {used!r} scores, which ignore "
            "temperature= (it weighs two or more texts in mode 'redundancy'); leave temperature= out")
    if used == "empty":
        if empty is None:
            raise InvalidInputError(f"feature surgery mode {mode!r} with {texts.shape[0]} text(s) subtracts the empty "
                                    "prompt: pass its direction as empty= (Targets.empty_direction(model))")
        return feats @ (texts - empty.to(feats)).T
    s = feats @ texts.T
    if used == "none":
        return s
    p = torch.softmax((2.0 if temperature is None else temperature) * s[:, :1], dim=-1)  # [B, 1, T] from the CLS
    ws = (p / p.mean(-1, keepdim=True)) * s
    return ws - ws.mean(-1, keepdim=True)


@register_map("surgery")
class Surgery(MapMethod):
    """CLIP Surgery: architecture surgery over the last ``blocks`` blocks and feature surgery (see the module)."""

    paper = 'Li et al., "CLIP Surgery for Better Explainability with Enhancement in Open-Vocabulary Tasks" (Pattern Recognition 2025)'
    code = 'github.com/xmed-lab/CLIP_Surgery'

    own_positional = "bilinear"

    runs_without_blocks = True  # a ResNet: the attention-pool variant (cliplens.maps.surgery_resnet)

    def __init__(self, blocks: int = 6, architecture: bool = True, feature: str = "redundancy",
                 temperature: float = 2.0, positional: str | None = "bilinear", resnet: str = "paper") -> None:
        if feature not in FEATURE_MODES:
            raise InvalidInputError(f"feature must be one of {', '.join(FEATURE_MODES)}; got {feature!r}")
        if resnet not in RESNET_VARIANTS:
            raise InvalidInputError(f"resnet must be one of {', '.join(RESNET_VARIANTS)}; got {resnet!r}")
        super().__init__(blocks=blocks, architecture=architecture, feature=feature, temperature=temperature,
                         positional=positional, resnet=resnet)

    @property
    def needs_empty(self) -> bool:  # type: ignore[override]
        return self.params["feature"] != "none"

    @property
    def uses_all_targets(self) -> bool:  # type: ignore[override]
        return self.params["feature"] == "redundancy"

    def feature_used(self, texts: int) -> str:
        """The feature surgery computed for ``texts`` texts: ``"redundancy"`` falls back to ``"empty"`` for one."""
        return feature_used(self.params["feature"], texts)

    def __call__(self, model: ImageTextModel, images: Any, targets: Any, **kwargs: Any) -> Maps:
        maps = super().__call__(model, images, targets, **kwargs)
        settings: dict[str, Any] = {}
        for k, v in maps.settings.items():  # feature_used next to the feature asked for
            settings[k] = v
            if k == "feature":
                settings["feature_used"] = self.feature_used(len(maps.labels))
        maps.settings = settings
        return maps

    @torch.no_grad()
    def tokens(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, N, E]``: CLS from the main stream, the other tokens from the side path (or the main stream
        without architecture surgery), through ``ln_post`` and the projection; and the token grid."""
        if self.params["architecture"] and model.vision.num_layers == 0:  # a ResNet: surgery in the attention pool
            return resnet_surgery_tokens(model, pixels, positional=self.params["positional"],
                                         variant=self.params["resnet"])
        if not self.params["architecture"]:
            out = model.run(pixels, plan=Plan(positional=self.params["positional"]), names=["dense"])
            if model.vision.num_layers == 0:  # a ResNet: token 0 is the embedding, as with surgery
                return torch.cat([out.embedding[:, None], out.dense[:, 1:]], 1), out.grid
            return out.dense, out.grid
        plan = surgery_plan(model.vision.num_layers, self.params["blocks"], self.params["positional"])
        out = model.run(pixels, plan=plan, names=[f"side.{SIDE}.dense"])
        dense = out[f"side.{SIDE}.dense"]
        return torch.cat([out.embedding[:, None], dense[:, model.vision.num_prefix_tokens:]], 1), out.grid

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        tokens, grid = self.tokens(model, pixels)
        feats = F.normalize(tokens.float(), dim=-1)
        mode = self.params["feature"]
        if mode == "redundancy" and texts.directions.shape[0] == 1:
            warnings.warn("feature surgery removes what is redundant across texts, and one text has nothing to "
                          "compare with: using the empty-prompt variant (t − t_empty) instead", UserWarning,
                          stacklevel=4)
        used = self.feature_used(texts.directions.shape[0])
        scores = feature_surgery(feats, texts.directions, mode=mode, empty=texts.empty if used == "empty" else None,
                                 temperature=self.params["temperature"] if used == "redundancy" else None)
        return patch_grid(scores, grid)


class SurgeryParts:
    """Each token's Surgery score split over its parts: the residual the side path started from, and
    every (layer, head) of the surgical blocks.

    Attributes:
        parts: ``[B, T, P, gh, gw]``; ``parts.sum(2)`` is the raw Surgery map (before normalisation).
        labels: ``P`` names: ``"start"``, then ``"L{l}.H{h}"`` (layers and heads counted from 0).
    """

    def __init__(self, parts: Tensor, labels: list[str]) -> None:
        self.parts = parts
        self.labels = labels

    def per_head(self) -> Tensor:
        """``[B, T, P]``: each part's total over the patches."""
        return self.parts.sum(dim=(-2, -1))


@torch.no_grad()
def surgery_parts(model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings, *, blocks: int = 6,
                  feature: str = "redundancy", temperature: float = 2.0, positional: str = "bilinear") -> SurgeryParts:
    """The exact split of :class:`Surgery`'s raw maps over (layer, head) of the side path plus its start.

    With ``ln_post``'s mean and scale frozen per token (shares from :mod:`cliplens.decomposition.shares`:
    the start and each surgical layer get an equal share of μ and β, a layer's share split over its
    heads, the out-projection bias likewise), each token's feature is a sum of parts; the token's norm
    and the text weights ``w`` (from the main stream's CLS) are fixed, so feature surgery is linear in
    the parts, and the parts' scores sum to the map.
    """
    view = model.vision
    needs_blocks("CLIP Surgery's split over (layer, head)", view)
    if view.head.kind not in ("cls", "mean"):
        raise InvalidInputError(
            f"CLIP Surgery's split over heads is exact when each token's output is affine in the side path (CLS and "
            f"mean pooling: the LayerNorm and the projection); this model pools with {view.head.kind!r}, whose "
            "per-token output goes through a nonlinear MLP, so the parts would not sum to the map")
    L, H, dh = view.num_layers, view.num_heads, view.head_dim
    plan = surgery_plan(L, blocks, positional)
    first = L - blocks
    names = [f"blocks.{first}.resid_pre", f"blocks.{L - 1}.side.{SIDE}.resid_post", f"side.{SIDE}.dense"]
    names += [f"blocks.{i}.side.{SIDE}.attn.z" for i in range(first, L)]
    out = model.run(pixels, plan=plan, names=names)
    final = out[f"blocks.{L - 1}.side.{SIDE}.resid_post"].float()  # [B, N, D]
    B, N, D = final.shape
    # every token read out on its own (the dense output): per-token statistics frozen, one readout per token
    jm = JointMap(HeadWeights.from_view(view, torch.float32))
    mean, std = ln_stats(view.head.norm, final)
    scale, mean = (1 / std).reshape(B * N, 1), mean.reshape(B * N, 1)
    dense = out[f"side.{SIDE}.dense"].float()
    # the same features and weights as Surgery.raw: CLS from the main stream (it sets w), tokens from the side
    feats = torch.cat([out.embedding[:, None].float(), dense[:, 1:]], 1)
    norm = feats.norm(dim=-1, keepdim=True)  # [B, N, 1], frozen
    unit = feats / norm
    share = 1.0 / (1 + blocks)

    def to_joint(c: Tensor, part_share: float) -> Tensor:  # [B, N, ..., D] -> [B, N, ..., E]
        flat = c.reshape(B * N, 1, *c.shape[2:])
        return jm.component(flat, part_share, scale, mean).reshape(B, N, *c.shape[2:-1], -1)

    terms = [to_joint(out[f"blocks.{first}.resid_pre"].float()[:, :, None], share)]
    labels = ["start"]
    for i in range(first, L):
        z = out[f"blocks.{i}.side.{SIDE}.attn.z"].float()  # [B, N, H, dh]
        w_o = jm.w.out_weight[i].view(D, H, dh)  # [D, H, dh], layer-scale folded
        bias: Tensor = jm.w.out_bias[i] / H
        if view.blocks[i].attn_norm is not None:  # a sub-LN over the heads (EVA02), frozen at every token
            frozen = FrozenSubNorm.at(view.blocks[i], z)
            z = frozen.heads(z * frozen.inv_sd[..., None, None])
            bias = frozen.shift(torch.eye(N, dtype=z.dtype, device=z.device).expand(B, N, N))[:, :, None] / H
        per_head = torch.einsum("bnhd,ehd->bnhe", z, w_o) + bias  # [B, N, H, D]
        terms.append(to_joint(per_head, share / H))
        labels += [f"L{i}.H{h}" for h in range(H)]
    parts = torch.cat(terms, 2) / norm[..., None]  # [B, N, P, E]: unit-feature parts
    t = texts.directions.to(parts)
    if feature == "empty" or (feature == "redundancy" and t.shape[0] == 1):
        if texts.empty is None:
            raise InvalidInputError("feature surgery with the empty prompt needs its embedding (texts.empty)")
        scores = parts @ (t - texts.empty.to(parts)).T  # [B, N, P, T]
    elif feature == "none":
        scores = parts @ t.T
    elif feature == "redundancy":
        p = torch.softmax(temperature * (unit[:, :1] @ t.T), dim=-1)  # [B, 1, T]
        w = (p / p.mean(-1, keepdim=True))[:, :, None]  # [B, 1, 1, T]
        ws = w * (parts @ t.T)
        scores = ws - ws.mean(-1, keepdim=True)
    else:
        raise InvalidInputError(f"feature must be one of {', '.join(FEATURE_MODES)}; got {feature!r}")
    B, N, P, T = scores.shape
    grid = out.grid
    maps = scores[:, 1:].permute(0, 3, 2, 1).reshape(B, T, P, *grid)
    return SurgeryParts(maps, labels)
