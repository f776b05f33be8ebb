"""GradCAM (Selvaraju et al., 2017) on a ViT's tokens, for the image–text cosine.

Activations ``A`` ``[N, D]``: the ``ln_1`` output of block ``layer`` (the last by default) — the tokens entering
the last block's attention; the last block's own output tokens would give an all-zero map, since only CLS
reaches the embedding from there (the convention of pytorch-grad-cam for ViTs). For the score
``y = cos(embedding, t)``: ``α_c = mean over patches of ∂y/∂A[n, c]``, map ``= ReLU(Σ_c α_c A[n, c])`` per patch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cliplens.core.plan import resolve_layer_indices
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.gradients import grad_of, image_text_cosine, run_differentiable
from cliplens.maps.targets import TextEmbeddings

__all__ = ["GradCAM"]


@register_map("gradcam")
class GradCAM(MapMethod):
    """GradCAM on the ``ln_1`` output tokens of block ``layer`` (see the module docs)."""

    def __init__(self, layer: int = -1) -> None:
        super().__init__(layer=int(layer))

    def raw(self, model: Any, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        L = model.vision.num_layers
        layer = resolve_layer_indices(self.params["layer"], L)[0]
        name = f"blocks.{layer}.ln_1"
        k = model.vision.num_prefix_tokens
        with torch.no_grad():
            out = run_differentiable(model, pixels, name, [name])
            acts = out[name]  # [B, N, D], the leaf
            scores = image_text_cosine(out.embedding, texts.directions)  # [B, T]
            maps = []
            for t in range(scores.shape[1]):
                (g,) = grad_of(scores[:, t], [acts], retain=t + 1 < scores.shape[1])
                alpha = g[:, k:].float().mean(1, keepdim=True)  # [B, 1, D] over the patches
                maps.append(torch.relu((alpha * acts[:, k:].detach().float()).sum(-1)))  # [B, patches]
        cam = torch.stack(maps, 1)  # [B, T, N-1]
        return cam.reshape(cam.shape[0], cam.shape[1], *out.grid)
