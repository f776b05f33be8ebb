"""LeGrad (Bousselham et al., ICCV 2025): the gradient of each layer's own image–text score w.r.t. its attention.

Per block ``l ≥ start_layer``: the block's output tokens are averaged (CLS and patches), passed through
``ln_post`` and the projection and L2-normalised into ``f_l``; ``s_l = f_l · t``; ``G_l = ReLU(∂s_l/∂A_l)``
(``A_l`` the block's attention probabilities, only ``s_l``'s own gradient); the layer's map is ``G_l``
averaged over heads and over every query row, at the patch columns; the maps are summed over layers.
``start_layer=-2`` (the last two blocks) is the official default; ``0`` aggregates every layer.

**Attention-pooled towers** (SigLIP's MAP head): the official ``compute_legrad_siglip`` (github.com/WalBouss/LeGrad,
``legrad/wrapper.py`` at a9edb03) pools each block's output tokens through the head's attention pooling (the
probe attention, out-projection and MLP; *without* the tower's final LayerNorm, as that code does), scores
``s_l = normalize(pooled_l) · t``, and takes ``G_l = ReLU(∂s_l/∂α_l)`` with ``α_l`` the *probe's* attention over
the tokens, averaged over the pooling heads; the layers' maps are summed. With ``correction`` (its default) the
same map for the empty prompt is min-max normalised and the text's map is set to 0 wherever it exceeds 0.8.
CLS-pooled towers ignore ``correction`` (the official CLIP path has none).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.forward import project_tokens
from cliplens.core.model import ImageTextModel
from cliplens.core.plan import resolve_layer_indices
from cliplens.maps.base import MapMethod, register_map
from cliplens.maps.gradients import grad_of, run_differentiable
from cliplens.maps.targets import TextEmbeddings

__all__ = ["LeGrad"]


@register_map("legrad")
class LeGrad(MapMethod):
    """LeGrad over the blocks from ``start_layer`` (see the module docs)."""

    paper = 'Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature Formation Sensitivity" (ICCV 2025)'
    code = 'github.com/WalBouss/LeGrad@a9edb03'

    own_positional = "bicubic_antialias"

    def __init__(self, start_layer: int = -2, correction: bool = True,
                 positional: str | None = "bicubic_antialias") -> None:
        super().__init__(start_layer=int(start_layer), correction=bool(correction), positional=positional)

    @property
    def needs_empty(self) -> bool:  # type: ignore[override]
        return bool(self.params["correction"])

    def raw(self, model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings) -> Tensor:
        view = model.vision
        L = view.num_layers
        start = resolve_layer_indices(self.params["start_layer"], L, "start layer")[0]
        layers = range(start, L)
        if view.head.kind == "map":
            return _pooled_legrad(model, pixels, texts, layers, self.params["correction"], plan=self.plan_for())
        names = [f"blocks.{i}.attn.pattern" for i in layers] + [f"blocks.{i}.resid_post" for i in layers]
        directions = texts.directions
        k = view.num_prefix_tokens
        with torch.no_grad():
            out = run_differentiable(model, pixels, f"blocks.{start}.resid_pre", names, plan=self.plan_for())
            total: Tensor | None = None
            for i in layers:
                pattern = out[f"blocks.{i}.attn.pattern"]
                f = F.normalize(project_tokens(view, out[f"blocks.{i}.resid_post"].mean(1)).float(), dim=-1)
                s = f @ directions.to(f).T  # [B, T]
                per_text = []
                for t in range(s.shape[1]):
                    (g,) = grad_of(s[:, t], [pattern], retain=True)
                    per_text.append(torch.relu(g.float()).mean(dim=(1, 2))[:, k:])  # [B, patches]
                m = torch.stack(per_text, 1)
                total = m if total is None else total + m
        assert total is not None
        return total.reshape(total.shape[0], total.shape[1], *out.grid)


def _pool_gradients(head: Any, tokens: Tensor, directions: Tensor) -> Tensor:
    """``[B, T, N]`` ``mean_h ReLU(∂ s_t/∂α)`` for the MAP head's probe attention ``α`` over ``tokens``."""
    with torch.enable_grad():
        alpha = head.pattern(tokens).detach().requires_grad_(True)  # [B, Hp, N]
        s = F.normalize(head.finish(head.pool(tokens, alpha)).float(), dim=-1) @ directions.to(torch.float32).T
        maps = []
        for t in range(s.shape[1]):
            (g,) = grad_of(s[:, t], [alpha], retain=t + 1 < s.shape[1])
            maps.append(torch.relu(g.float()).mean(1))  # [B, N]
    return torch.stack(maps, 1)


def _minmax(m: Tensor) -> Tensor:
    lo, hi = m.amin(dim=-1, keepdim=True), m.amax(dim=-1, keepdim=True)
    return (m - lo) / (hi - lo).clamp_min(1e-12)


@torch.no_grad()
def _pooled_legrad(model: ImageTextModel, pixels: Tensor, texts: TextEmbeddings, layers: range, correction: bool,
                   plan: Any = None) -> Tensor:
    """LeGrad for an attention-pooled tower (see the module docs)."""
    head = model.vision.head
    out = model.run(pixels, plan=plan, names=[f"blocks.{i}.resid_post" for i in layers])
    total: Tensor | None = None
    empty: Tensor | None = None
    for i in layers:
        tokens = out[f"blocks.{i}.resid_post"]
        m = _pool_gradients(head, tokens, texts.directions)
        total = m if total is None else total + m
        if correction:
            if texts.empty is None:
                raise ValueError("LeGrad's correction needs the empty prompt's direction (texts.empty)")
            e = _pool_gradients(head, tokens, texts.empty.reshape(1, -1))
            empty = e if empty is None else empty + e
    assert total is not None
    if empty is not None:
        total = total.masked_fill(_minmax(empty) > 0.8, 0.0)
    k = total.shape[-1] - out.grid[0] * out.grid[1]
    return total[..., k:].reshape(total.shape[0], total.shape[1], *out.grid)
