"""Read-only views of a CLIP ViT image tower's weights.

A :class:`VisionView` names every tensor the functional forward needs
(patch embedding, class and positional embeddings, ``ln_pre``, each block's
``ln_1``/q/k/v/out-proj/``ln_2``/MLP/layer-scale, ``ln_post`` and the
projection). Adapters build it from a source model by *referencing* the
source's parameters (slices and transposes are views), so a view never copies
weights and always reflects the source model's current values.

Conventions (all weights follow ``torch.nn.functional.linear``: ``[out, in]``):

* ``D`` = width of the residual stream, ``H`` = heads, ``dh = D // H``,
  ``E`` = joint embedding dimension.
* ``proj`` is stored ``[D, E]`` so that ``embedding = ln_post(cls) @ proj``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Literal["gelu", "quick_gelu", "gelu_tanh", "relu"]


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
    raise ValueError(f"unknown activation {name!r}; expected gelu, quick_gelu, gelu_tanh or relu")


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


@dataclass(frozen=True)
class BlockView:
    """One pre-LayerNorm transformer block: ``x += ls_1*attn(ln_1(x)); x += ls_2*mlp(ln_2(x))``."""

    ln_1: LayerNormView
    q_weight: Tensor
    k_weight: Tensor
    v_weight: Tensor
    q_bias: Tensor | None
    k_bias: Tensor | None
    v_bias: Tensor | None
    out_weight: Tensor
    out_bias: Tensor | None
    ln_2: LayerNormView
    fc1_weight: Tensor
    fc1_bias: Tensor | None
    fc2_weight: Tensor
    fc2_bias: Tensor | None
    num_heads: int
    activation: str = "gelu"
    ls_1: Tensor | None = None
    ls_2: Tensor | None = None
    #: the fused ``[3D, D]`` q/k/v weight and ``[3D]`` bias when the source stores one
    #: (then the separate q/k/v fields are row slices of it); lets the forward use one matmul.
    qkv_weight: Tensor | None = None
    qkv_bias: Tensor | None = None

    @property
    def width(self) -> int:
        return int(self.out_weight.shape[0])

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


@dataclass(frozen=True)
class VisionView:
    """Everything the functional forward reads from a CLIP ViT image tower."""

    patch_weight: Tensor  # [D, C, ph, pw]
    patch_bias: Tensor | None  # [D]
    class_embedding: Tensor  # [D]
    positional_embedding: Tensor  # [1 + gh*gw, D]
    ln_pre: LayerNormView | None
    blocks: tuple[BlockView, ...]
    ln_post: LayerNormView
    proj: Tensor | None  # [D, E]
    image_size: tuple[int, int]  # native input size (h, w)
    #: free-form description of where the view came from (family, name)
    source: str = ""

    # ---- shapes -------------------------------------------------------------
    @property
    def patch_size(self) -> tuple[int, int]:
        return int(self.patch_weight.shape[2]), int(self.patch_weight.shape[3])

    @property
    def grid_size(self) -> tuple[int, int]:
        ph, pw = self.patch_size
        return self.image_size[0] // ph, self.image_size[1] // pw

    @property
    def width(self) -> int:
        return int(self.class_embedding.shape[0])

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def num_heads(self) -> int:
        return self.blocks[0].num_heads

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def embed_dim(self) -> int:
        return self.width if self.proj is None else int(self.proj.shape[1])

    @property
    def in_channels(self) -> int:
        return int(self.patch_weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.patch_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_weight.dtype

    def num_tokens(self, image_size: tuple[int, int] | None = None) -> int:
        """Tokens (CLS + patches) for an input of ``image_size`` (default: native)."""
        h, w = image_size or self.image_size
        ph, pw = self.patch_size
        return 1 + (h // ph) * (w // pw)

    def parameters(self) -> list[Tensor]:
        """Every tensor the view references (for storage-sharing checks)."""
        out: list[Tensor] = [self.patch_weight, self.class_embedding, self.positional_embedding]
        for ln in (self.ln_pre, self.ln_post):
            if ln is not None:
                out += [t for t in (ln.weight, ln.bias) if t is not None]
        if self.patch_bias is not None:
            out.append(self.patch_bias)
        if self.proj is not None:
            out.append(self.proj)
        for b in self.blocks:
            for t in (
                b.q_weight, b.k_weight, b.v_weight, b.q_bias, b.k_bias, b.v_bias,
                b.out_weight, b.out_bias, b.fc1_weight, b.fc1_bias, b.fc2_weight,
                b.fc2_bias, b.ls_1, b.ls_2, b.ln_1.weight, b.ln_1.bias, b.ln_2.weight,
                b.ln_2.bias,
            ):
                if t is not None:
                    out.append(t)
        return out


def fingerprint_tensors(tensors: list[Tensor], digest_size: int = 16) -> str:
    """A hex digest of the tensors' dtypes, shapes and bytes (in order)."""
    h = hashlib.blake2b(digest_size=digest_size)
    for t in tensors:
        t = t.detach()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint_view(view: VisionView) -> str:
    """A digest of every weight the forward reads and of the architecture's settings."""
    meta = [view.image_size, view.patch_size] + [(b.num_heads, b.activation) for b in view.blocks]
    meta += [(ln.eps, ln.compute_fp32) for ln in (view.ln_pre, view.ln_post) if ln is not None]
    h = hashlib.blake2b(repr(meta).encode(), digest_size=16)
    h.update(fingerprint_tensors(view.parameters()).encode())
    return h.hexdigest()
