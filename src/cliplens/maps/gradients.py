"""What the gradient methods share: autograd from one point of the forward on, and the image–text score.

The forward runs without autograd up to the tensor a method differentiates from; a hook there switches
gradients on and makes that tensor a leaf that requires them, so the graph (and its memory) covers only
the blocks after it, and the method works whether or not the model's weights require gradients. The
scores of different images in a batch do not interact, so one backward of a score summed over the batch
gives every image's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cliplens.core.model import ImageTextModel

__all__ = ["grad_of", "image_text_cosine", "start_autograd"]


def start_autograd(t: Tensor, name: str) -> Tensor:
    """A hook: from here on the forward is differentiable, with ``t`` as a leaf."""
    torch.set_grad_enabled(True)  # restored by the caller's ``torch.no_grad()`` block when it exits
    return t.detach().requires_grad_(True)


def image_text_cosine(embedding: Tensor, directions: Tensor) -> Tensor:
    """``[B, T]`` cosine similarity of the image embeddings and the unit-norm text directions."""
    return F.normalize(embedding.float(), dim=-1) @ directions.to(embedding.device, torch.float32).T


def grad_of(score: Tensor, inputs: Sequence[Tensor], *, retain: bool = True) -> tuple[Tensor, ...]:
    """``∂(score summed over the batch)/∂inputs``, keeping the graph for the next text (``retain``)."""
    return torch.autograd.grad(score.sum(), list(inputs), retain_graph=retain, allow_unused=False)


def run_differentiable(model: ImageTextModel, pixels: Tensor, start: str, names: Sequence[str],
                       hooks: dict[str, Callable[[Tensor, str], Tensor | None]] | None = None, plan: Any = None) -> Any:
    """``model.run`` (under ``plan``: a method's positional rule) with autograd from the tensor named ``start`` on
    (see the module docs). Call it inside ``torch.no_grad()``; gradients stay on until that block exits."""
    return model.run(pixels, plan=plan, names=list(names), hooks={**(hooks or {}), start: start_autograd})
