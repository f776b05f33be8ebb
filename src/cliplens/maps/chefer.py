"""Chefer et al. (ICCV 2021), "Generic Attention-model Explainability", as their CLIP notebook applies it.

For the score ``y = logit_scale · cos(embedding, t)``: per block ``l ≥ start_layer``,
``Ē_l = mean_h ReLU(∂y/∂A_l ⊙ A_l)`` (``A_l`` the attention probabilities); ``R = I``, then for each of these
blocks in order ``R ← R + Ē_l R``; the map is ``R[CLS, patches]``. ``start_layer=0`` (every layer) is the
paper's rule and the default; the current CLIP notebook uses only the last layer (``start_layer=-1``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cliplens.core.plan import resolve_layer_indices
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.gradients import grad_of, image_text_cosine, run_differentiable
from cliplens.maps.targets import TextEmbeddings

__all__ = ["Chefer"]


@register_map("chefer")
class Chefer(MapMethod):
    """Relevance propagation through the attention layers (see the module docs)."""

    def __init__(self, start_layer: int = 0) -> None:
        super().__init__(start_layer=int(start_layer))

    def raw(self, model: Any, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        L = model.vision.num_layers
        start = resolve_layer_indices(self.params["start_layer"], L, "start layer")[0]
        names = [f"blocks.{i}.attn.pattern" for i in range(start, L)]
        with torch.no_grad():
            out = run_differentiable(model, pixels, f"blocks.{start}.resid_pre", names)
            patterns = [out[n] for n in names]  # [B, H, N, N] each, in the graph
            scores = model.logit_scale * image_text_cosine(out.embedding, texts.directions)
            rows = []
            for t in range(scores.shape[1]):
                grads = grad_of(scores[:, t], patterns, retain=t + 1 < scores.shape[1])
                R: Tensor | None = None
                for a, g in zip(patterns, grads, strict=True):
                    e = torch.relu(g.float() * a.detach().float()).mean(1)  # [B, N, N]
                    R = torch.eye(e.shape[-1], dtype=e.dtype, device=e.device) + e if R is None else R + e @ R
                assert R is not None
                rows.append(R[:, 0, 1:])
        rel = torch.stack(rows, 1)  # [B, T, N-1]
        return rel.reshape(rel.shape[0], rel.shape[1], *out.grid)
