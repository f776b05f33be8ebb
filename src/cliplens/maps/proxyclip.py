"""ProxyCLIP (Lan et al., ECCV 2024): CLIP's last-block values, mixed by a vision foundation model's attention.

Paper: "ProxyCLIP: Proxy Attention Improves CLIP for Open-Vocabulary Segmentation", its proxy attention
module, with the adaptive normalisation and masking (defaults of β and γ: the paper's Appendix B). Code followed: github.com/mc-lan/ProxyCLIP@e7b767f,
``open_clip/transformer.py`` (``VisionTransformer.forward``, ``custom_attn``, ``interpolate_pos_encoding``) and
``proxyclip_segmentor.py`` (``forward_feature``).

The second backbone (``vfm``, default DINO ViT-B/8, the repository's ``vfm_model='dino'``) sees the same crop,
re-normalised with ImageNet statistics; ``F`` are its last layer's normalised patch features (``C x M`` on its own
grid ``I x J``, e.g. 42 x 42 for a 336 crop at patch 8). With ``S = F̂ᵀ F̂`` (cosine similarities)::

    A = softmax(mask(γ · (S − β · mean(S))))      mask: entries below 0 become −∞ (the same A for every head)

CLIP's last block is replaced by ``O(A · resize(v))`` only (no residual, no MLP): ``v`` the block's values of the
patch tokens (from ``ln_1`` of its input; CLS dropped), resized bilinearly (``align_corners=False``) from CLIP's
grid to the backbone's, and ``O`` the out-projection. Every output token goes through ``ln_post`` and the
projection; the map is its cosine with each text, **on the backbone's grid**. Defaults as the repository runs
ViT-B/16: ``β = 1.2``, ``γ = 3.0``, and CLIP's positional table resized by DINO's scale-factor rule
(``bicubic_dino``) at other grids. Its evaluation (``segment-eval --preset proxyclip``) uses a short side of 336,
a 336 window, stride 112, logit scale 40, the 80 ImageNet templates.

Deviations, and why:

* ``mean(S)`` is each image's own mean; the repository takes the mean over the whole batch, which it always runs
  with one crop (so the two agree there, and a map does not depend on its batch-mates here).
* A row whose every entry is masked (possible only when ``β · mean(S) ≥ 1``) gives NaN in the repository; here
  that token keeps its own value (attends to itself).
* The repository reads CLIP's grid as ``(W // p, H // p)`` and the backbone's as ``(H // p, H // p)``: right
  for its square crops only. Here both are ``(H // p, W // p)``, so non-square inputs work.
* An input side that is not a multiple of the backbone's patch loses its remainder in the backbone (its patch
  convolution drops it); the repository pads each window to a multiple of 56 pixels instead, which its own
  settings (short side 336 or 448, windows 336 or 224) never need.
* The backbone runs in the CLIP model's dtype (the repository runs both in float16 on GPU). At another grid than
  its own it resizes its positional table as the repository's torch.hub models do (``vfm_positional="hub"``:
  DINO's scale factor ``(n + 0.1) / N``; see :mod:`cliplens.models.vfm`), which every 336 window needs (42 x 42
  patches of 8 from a 28 x 28 table); ``vfm_positional="transformers"`` is transformers' rule.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.forward import _out_proj, project_tokens
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import Plan
from cliplens.errors import InvalidInputError
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.targets import TextEmbeddings
from cliplens.models.vfm import VFM_POSITIONAL, VisionBackbone

__all__ = ["ProxyCLIP", "proxy_attention", "vfm_features"]


def proxy_attention(features: Tensor, beta: float, gamma: float) -> Tensor:
    """ProxyCLIP's attention ``[B, M, M]`` from backbone features ``[B, C, I, J]`` (``M = I·J``, row-major): the
    softmax over keys of ``γ (S − β mean(S))`` with negative entries masked, ``S`` the cosine similarities.

    Computed in float32 at least; a row with every entry masked attends to its own token only."""
    dt = torch.float64 if features.dtype == torch.float64 else torch.float32
    f = F.normalize(features.flatten(2).to(dt), dim=1)  # [B, C, M]
    s = f.transpose(1, 2) @ f
    logits = (s - beta * s.mean(dim=(1, 2), keepdim=True)) * gamma
    masked = logits < 0
    empty = masked.all(-1, keepdim=True)  # [B, M, 1]
    if bool(empty.any()):
        eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
        masked = masked & ~(empty & eye)
        logits = torch.where(empty & eye, torch.zeros_like(logits), logits)
    return logits.masked_fill(masked, float("-inf")).softmax(-1)


def vfm_features(backbone: VisionBackbone, model: ImageTextModel, pixels: Tensor, positional: str = "hub") -> Tensor:
    """The backbone's last-layer patch features ``[B, C, I, J]`` for CLIP-normalised ``pixels`` (re-normalised with
    the backbone's own statistics first; ``positional``: its rule at another grid)."""
    cfg = model.preprocess_config
    mean, std = (cfg.mean, cfg.std) if cfg.do_normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return backbone(backbone.normalize_from(pixels, mean, std), positional=positional).features


@register_map("proxyclip")
class ProxyCLIP(MapMethod):
    """ProxyCLIP's proxy attention in CLIP's last block, from a second backbone (see the module docs).

    ``vfm``: the second backbone, a name (``"dino_vitb8"``, ``"dinov2_vitb14_reg"``, ``"facebook/dinov2-base"``, a folder; see
    :mod:`cliplens.models.vfm`) or, from Python, a loaded transformers model."""

    paper = 'Lan et al., "ProxyCLIP: Proxy Attention Improves CLIP for Open-Vocabulary Segmentation" (ECCV 2024)'
    code = "github.com/mc-lan/ProxyCLIP@e7b767f"

    own_positional = "bicubic_dino"
    second_backbone = True

    def __init__(self, vfm: Any = "dino_vitb8", beta: float = 1.2, gamma: float = 3.0,
                 positional: str | None = "bicubic_dino", vfm_positional: str = "hub") -> None:
        if isinstance(vfm, str) and not vfm.strip():
            raise InvalidInputError("ProxyCLIP's vfm must name a vision backbone, e.g. 'dino_vitb8'")
        if float(gamma) <= 0:
            raise InvalidInputError(f"ProxyCLIP's gamma must be positive, got {gamma}")
        if vfm_positional not in VFM_POSITIONAL:
            raise InvalidInputError(f"ProxyCLIP's vfm_positional must be one of {', '.join(VFM_POSITIONAL)}; got "
                                    f"{vfm_positional!r}")
        super().__init__(vfm=vfm, beta=float(beta), gamma=float(gamma), positional=positional,
                         vfm_positional=vfm_positional)

    def tokens(self, model: ImageTextModel, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, M, E]`` every output token (on the backbone's grid) through ``ln_post`` and the projection, and
        that grid."""
        view = model.vision
        last = view.num_layers - 1
        feats = vfm_features(self.backbone(model), model, pixels, self.params["vfm_positional"])
        attn = proxy_attention(feats, self.params["beta"], self.params["gamma"])
        grid = self._vfm_grid(model, pixels)
        # the last block's values; its attention is not needed (identity: cheap), nor its residual or MLP
        plan = Plan().at(-1, attention="identity", residual=False, mlp=False)
        out = model.run(pixels, plan=self.plan_for(plan), names=[f"blocks.{last}.attn.v"])
        v = out[f"blocks.{last}.attn.v"]  # [B, N, H, dh]
        B, _, H, dh = v.shape
        gh, gw = out.grid
        v = v[:, v.shape[1] - gh * gw:].reshape(B, gh, gw, H * dh).permute(0, 3, 1, 2)
        v = F.interpolate(v, size=grid, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        z = torch.bmm(attn.to(v.dtype), v).view(B, -1, H, dh)
        return project_tokens(view, _out_proj(view.blocks[last], z)), grid

    def _vfm_grid(self, model: ImageTextModel, pixels: Tensor) -> tuple[int, int]:
        return self.backbone(model).grid(*pixels.shape[-2:])

    @torch.no_grad()
    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        tokens, grid = self.tokens(model, pixels)
        feats = F.normalize(tokens.float() if tokens.dtype != torch.float64 else tokens, dim=-1)
        scores = feats @ texts.directions.to(feats).T  # [B, M, T]
        return scores.transpose(1, 2).reshape(scores.shape[0], scores.shape[2], *grid)
