"""An opaque trunk: a part of the image tower before the pooling head that cliplens runs but does not decompose.

OpenAI's ResNet CLIPs (``RN50``, ``RN101``, ``RN50x4``, …) have no transformer blocks: a convolutional trunk
(BatchNorm, ReLU after each residual add — nonlinear everywhere) turns the pixels into a feature map, and an
attention pool reads it. A :class:`~cliplens.core.view.VisionView` with a ``trunk`` has zero blocks: the trunk
replaces the patch embedding, its tokens (plus the positional embedding) are the whole residual stream, and the
decomposition's embedding term is the trunk's output per token — split only by the pooling head
(:mod:`cliplens.core.heads`), never back into the convolutions. Every method that needs transformer blocks refuses
such a view with :func:`needs_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from cliplens.errors import UnsupportedArchitectureError

__all__ = ["Trunk", "blocks_message", "needs_blocks"]


@dataclass(frozen=True)
class Trunk:
    """``fn(pixels [B, C, H, W]) -> tokens [B, prefix + (H/stride)·(W/stride), width]`` (row-major positions after
    ``prefix`` leading tokens), run as the source computes it (references to its modules, no copies).

    Attributes:
        fn: the trunk's forward (it adds no positional embedding: the view's is added after it).
        stride: the total downsampling (pixels per token side; 32 for OpenAI's ResNets).
        width: the channels of its tokens.
        prefix: leading tokens before the positions (1 for the ResNet pool's mean token).
        tensors: every tensor the trunk reads (fingerprints, storage checks).
        description: one line for results and errors (what it is and that it is not decomposed).
    """

    fn: Callable[[Tensor], Tensor]
    stride: int
    width: int
    prefix: int = 0
    tensors: Sequence[Tensor] = field(default=(), repr=False)
    description: str = "an opaque trunk (not decomposed)"

    def __call__(self, pixels: Tensor) -> Tensor:
        return self.fn(pixels)


def blocks_message(what: str, view: object) -> str | None:
    """The paragraph saying that ``what`` needs transformer blocks ``view`` lacks (an opaque trunk), or ``None``
    when ``view`` has blocks."""
    trunk = getattr(view, "trunk", None)
    if trunk is None and getattr(view, "blocks", (1,)):
        return None
    source = getattr(view, "source", "") or "this model"
    desc = trunk.description if trunk is not None else "no transformer blocks"
    return (
        f"{what} needs the attention blocks of a ViT image tower, and {source} has none: its image tower is "
        f"{desc}. On this model cliplens decomposes the pooling head only (per pool head × position + the mean "
        "token: decompose, pool_terms) and runs the maps that read the pool or the trunk's output (decomposition, "
        "token-similarity, MaskCLIP, CLIP Surgery's ResNet variant, GradCAM, raw-attention of the pool, the "
        "baselines); pick a ViT model (such as ViT-B-16) for this one.")


def needs_blocks(what: str, view: object) -> None:
    """Raise :func:`blocks_message` as one readable paragraph when ``view`` has no transformer blocks (an opaque
    trunk) and ``what`` needs them."""
    why = blocks_message(what, view)
    if why is not None:
        raise UnsupportedArchitectureError(why)
