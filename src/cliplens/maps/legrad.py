"""LeGrad (Bousselham et al., ICCV 2025): the gradient of each layer's own image–text score w.r.t. its attention.

Per block ``l ≥ start_layer``: the block's output tokens are averaged (CLS and patches), passed through
``ln_post`` and the projection and L2-normalised into ``f_l``; ``s_l = f_l · t``; ``G_l = ReLU(∂s_l/∂A_l)``
(``A_l`` the block's attention probabilities, only ``s_l``'s own gradient); the layer's map is ``G_l``
averaged over heads and over every query row, at the patch columns; the maps are summed over layers.
``start_layer=-2`` (the last two blocks) is the official default; ``0`` aggregates every layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.forward import project_tokens
from cliplens.core.plan import resolve_layer_indices
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.gradients import grad_of, run_differentiable
from cliplens.maps.targets import TextEmbeddings

__all__ = ["LeGrad"]


@register_map("legrad")
class LeGrad(MapMethod):
    """LeGrad over the blocks from ``start_layer`` (see the module docs)."""

    def __init__(self, start_layer: int = -2) -> None:
        super().__init__(start_layer=int(start_layer))

    def raw(self, model: Any, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        view = model.vision
        L = view.num_layers
        start = resolve_layer_indices(self.params["start_layer"], L, "start layer")[0]
        layers = range(start, L)
        names = [f"blocks.{i}.attn.pattern" for i in layers] + [f"blocks.{i}.resid_post" for i in layers]
        directions = texts.directions
        with torch.no_grad():
            out = run_differentiable(model, pixels, f"blocks.{start}.resid_pre", names)
            total: Tensor | None = None
            for i in layers:
                pattern = out[f"blocks.{i}.attn.pattern"]
                f = F.normalize(project_tokens(view, out[f"blocks.{i}.resid_post"].mean(1)).float(), dim=-1)
                s = f @ directions.to(f).T  # [B, T]
                per_text = []
                for t in range(s.shape[1]):
                    (g,) = grad_of(s[:, t], [pattern], retain=True)
                    per_text.append(torch.relu(g.float()).mean(dim=(1, 2))[:, 1:])  # [B, N-1]
                m = torch.stack(per_text, 1)
                total = m if total is None else total + m
        assert total is not None
        return total.reshape(total.shape[0], total.shape[1], *out.grid)
