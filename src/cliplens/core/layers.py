"""The elementwise pieces every tower is made of: activations and LayerNorm (as read-only views of weights).

Kept apart from :mod:`cliplens.core.view` so that the pooling heads (:mod:`cliplens.core.heads`), which the view
holds, can use them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Activation", "LayerNormView", "apply_activation", "apply_activation_"]

Activation = Literal["gelu", "quick_gelu", "gelu_tanh", "relu", "silu"]


def apply_activation(x: Tensor, name: str) -> Tensor:
    """Apply one of the MLP activations used by CLIP families."""
    if name == "gelu":
        return F.gelu(x)
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    raise ValueError(f"unknown activation {name!r}; expected gelu, quick_gelu, gelu_tanh, relu or silu")


def apply_activation_(x: Tensor, name: str) -> Tensor:
    """In-place variant of :func:`apply_activation` where one exists (saves a hidden-size buffer)."""
    if name == "gelu":
        return torch.ops.aten.gelu_(x)
    if name == "gelu_tanh":
        return torch.ops.aten.gelu_(x, approximate="tanh")
    if name == "relu":
        return x.relu_()
    return apply_activation(x, name)


@dataclass(frozen=True)
class LayerNormView:
    """A LayerNorm's affine parameters (either may be ``None``) and epsilon."""

    weight: Tensor | None
    bias: Tensor | None
    eps: float = 1e-5
    #: normalise in float32 and cast back (open_clip's ``LayerNormFp32``)
    compute_fp32: bool = False

    def __call__(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        if self.compute_fp32 and dtype != torch.float32:
            x = x.float()
        w, b = self.weight, self.bias
        if w is not None and w.dtype != x.dtype:
            w = w.to(x.dtype)
        if b is not None and b.dtype != x.dtype:
            b = b.to(x.dtype)
        return F.layer_norm(x, (x.shape[-1],), w, b, self.eps).to(dtype)
