"""GradCAM (Selvaraju et al., 2017) on a ViT's tokens, for the image–text cosine.

Activations ``A`` ``[N, D]``: the ``ln_1`` output of block ``layer`` (the last by default) — the tokens entering
the last block's attention; the last block's own output tokens would give an all-zero map, since only CLS
reaches the embedding from there (the convention of pytorch-grad-cam for ViTs). For the score
``y = cos(embedding, t)``: ``α_c = mean over patches of ∂y/∂A[n, c]``, map ``= ReLU(Σ_c α_c A[n, c])`` per patch.

On a ResNet CLIP (no blocks) ``A`` is the trunk's last feature map (layer4's output, the classic GradCAM layer),
read where the attention pool takes it in; the pool's positional embedding is taken off ``A`` (it does not change
the gradient), and the mean token's gradient is passed on to the positions it averages (``∂y/∂f_p = ∂y/∂t_p +
∂y/∂t_0 / P``), so ``α`` is layer4's own gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cliplens.core.forward import positional_embedding_for
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import resolve_layer_indices
from cliplens.core.trunk import needs_blocks
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.gradients import grad_of, image_text_cosine, run_differentiable
from cliplens.maps.targets import TextEmbeddings

__all__ = ["GradCAM"]


@register_map("gradcam")
class GradCAM(MapMethod):
    """GradCAM on the ``ln_1`` output tokens of block ``layer`` (see the module docs)."""

    paper = 'Selvaraju et al., "Grad-CAM" (ICCV 2017)'
    code = 'github.com/jacobgil/pytorch-grad-cam'

    def __init__(self, layer: int = -1, positional: str | None = None) -> None:
        super().__init__(layer=int(layer), positional=positional)

    runs_without_blocks = True

    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        L = model.vision.num_layers
        k = model.vision.num_prefix_tokens
        if L == 0:  # a ResNet: the trunk's last feature map, as the pool reads it (positions taken off below)
            if self.params["layer"] != -1:
                needs_blocks("GradCAM at a chosen block", model.vision)
            name = "embed"
        else:
            name = f"blocks.{resolve_layer_indices(self.params['layer'], L)[0]}.ln_1"
        with torch.no_grad():
            out = run_differentiable(model, pixels, name, [name], plan=self.plan_for())
            acts = out[name]  # [B, N, D], the leaf
            feats = acts.detach().float()
            if L == 0:
                feats = feats - positional_embedding_for(model.vision, out.grid).float()
            scores = image_text_cosine(out.embedding, texts.directions)  # [B, T]
            maps = []
            for t in range(scores.shape[1]):
                (g,) = grad_of(scores[:, t], [acts], retain=t + 1 < scores.shape[1])
                g = g.float()
                if L == 0:  # the mean token is the mean of the positions: its gradient reaches each of them / P
                    g = g + g[:, :1] / (g.shape[1] - 1)
                alpha = g[:, k:].mean(1, keepdim=True)  # [B, 1, D] over the patches
                maps.append(torch.relu((alpha * feats[:, k:]).sum(-1)))  # [B, patches]
        cam = torch.stack(maps, 1)  # [B, T, N-1]
        return cam.reshape(cam.shape[0], cam.shape[1], *out.grid)
