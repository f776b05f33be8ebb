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

import torch
from torch import Tensor

from cliplens.core.heads import ClsHead, PoolHead
from cliplens.core.layers import Activation, LayerNormView, apply_activation, apply_activation_
from cliplens.core.rope import Rotary
from cliplens.core.trunk import Trunk

__all__ = ["Activation", "BlockView", "LayerNormView", "VisionView", "apply_activation", "apply_activation_",
           "fingerprint_tensors", "fingerprint_view"]


@dataclass(frozen=True)
class BlockView:
    """One pre-LayerNorm transformer block: ``x += ls_1*attn(ln_1(x)); x += ls_2*mlp(ln_2(x))``.

    Optional parts (EVA02, PE-Core; all ``None`` for a CLIP ViT): ``rope`` rotates q and k of the patch tokens;
    ``attn_norm`` is a LayerNorm over the concatenated heads before the out-projection (EVA02's sub-LN);
    ``gate_weight``/``gate_bias`` make the MLP a gated one, ``act(gate·h) ⊙ (fc1·h)`` (SwiGLU with ``silu``);
    ``mlp_norm`` is a LayerNorm on the MLP's hidden vector before ``fc2``.
    """

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
    rope: Rotary | None = None
    attn_norm: LayerNormView | None = None
    gate_weight: Tensor | None = None
    gate_bias: Tensor | None = None
    mlp_norm: LayerNormView | None = None

    @property
    def extras(self) -> tuple[Tensor, ...]:
        """The optional parts' tensors (empty for a CLIP ViT block)."""
        lns = [ln for ln in (self.attn_norm, self.mlp_norm) if ln is not None]
        return tuple(t for t in (self.gate_weight, self.gate_bias, *(x for ln in lns for x in (ln.weight, ln.bias)))
                     if t is not None)

    def extras_meta(self) -> tuple:
        """The optional parts' settings (for the fingerprint; empty for a CLIP ViT block)."""
        out: list = []
        if self.rope is not None:
            out.append(("rope", self.rope.prefix, self.rope.half, self.rope.describe))
        for name, ln in (("attn_norm", self.attn_norm), ("mlp_norm", self.mlp_norm)):
            if ln is not None:
                out.append((name, ln.eps, ln.compute_fp32))
        if self.gate_weight is not None:
            out.append(("gated",))
        return tuple(out)

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
    class_embedding: Tensor | None  # [D]; None: no CLS token (SigLIP)
    positional_embedding: Tensor  # [1 + gh*gw, D] ([gh*gw, D] without a CLS token)
    ln_pre: LayerNormView | None
    blocks: tuple[BlockView, ...]
    ln_post: LayerNormView | None  # the CLS head's LayerNorm (None when ``head`` is given)
    proj: Tensor | None  # [D, E]
    image_size: tuple[int, int]  # native input size (h, w)
    #: free-form description of where the view came from (family, name)
    source: str = ""
    #: the pooling head (:mod:`cliplens.core.heads`); default: CLS pooling through ``ln_post`` and ``proj``
    head: PoolHead = None  # type: ignore[assignment]
    #: an opaque trunk (:mod:`cliplens.core.trunk`; OpenAI's ResNets) that replaces the patch embedding; the view
    #: then has zero blocks, ``patch_weight`` is the trunk's first weight (device, dtype, input channels)
    trunk: Trunk | None = None
    #: the model's own rule for resizing its positional table to another grid (``Plan.positional`` overrides it;
    #: see :data:`cliplens.core.plan.POSITIONAL_MODES`)
    positional: str = "bicubic"

    def __post_init__(self) -> None:
        if self.head is None:
            if self.ln_post is None:
                raise ValueError("a VisionView needs ln_post (CLS pooling) or a pooling head")
            object.__setattr__(self, "head", ClsHead(self.ln_post, self.proj))

    # ---- shapes -------------------------------------------------------------
    @property
    def patch_size(self) -> tuple[int, int]:
        if self.trunk is not None:
            return self.trunk.stride, self.trunk.stride
        return int(self.patch_weight.shape[2]), int(self.patch_weight.shape[3])

    @property
    def grid_size(self) -> tuple[int, int]:
        ph, pw = self.patch_size
        return self.image_size[0] // ph, self.image_size[1] // pw

    @property
    def width(self) -> int:
        return self.trunk.width if self.trunk is not None else int(self.patch_weight.shape[0])

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: 1 (the CLS token; a trunk's leading tokens, such as the ResNet pool's mean
        token) or 0 (towers without one, such as SigLIP's)."""
        if self.trunk is not None:
            return self.trunk.prefix
        return 0 if self.class_embedding is None else 1

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def num_heads(self) -> int:
        """Attention heads per block (0 for a view without blocks: an opaque trunk)."""
        return self.blocks[0].num_heads if self.blocks else 0

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads if self.blocks else 0

    @property
    def embed_dim(self) -> int:
        return self.head.embed_dim

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
        """Tokens (CLS, when there is one, + patches) for an input of ``image_size`` (default: native)."""
        h, w = image_size or self.image_size
        ph, pw = self.patch_size
        return self.num_prefix_tokens + (h // ph) * (w // pw)

    def parameters(self) -> list[Tensor]:
        """Every tensor the view references (for storage-sharing checks)."""
        # the order of the CLS-pooled towers is the order fingerprints were first taken in: keep it
        out: list[Tensor] = [self.patch_weight] + ([self.class_embedding] if self.class_embedding is not None
                                                   else []) + [self.positional_embedding]
        for ln in (self.ln_pre, self.ln_post):
            if ln is not None:
                out += [t for t in (ln.weight, ln.bias) if t is not None]
        if self.patch_bias is not None:
            out.append(self.patch_bias)
        if self.proj is not None:
            out.append(self.proj)
        out += [t for t in self.head.parameters() if not any(t is o for o in out)]
        if self.trunk is not None:
            out += [t for t in self.trunk.tensors if not any(t is o for o in out)]
        for b in self.blocks:
            for t in (
                b.q_weight, b.k_weight, b.v_weight, b.q_bias, b.k_bias, b.v_bias,
                b.out_weight, b.out_bias, b.fc1_weight, b.fc1_bias, b.fc2_weight,
                b.fc2_bias, b.ls_1, b.ls_2, b.ln_1.weight, b.ln_1.bias, b.ln_2.weight,
                b.ln_2.bias,
            ):
                if t is not None:
                    out.append(t)
            out += list(b.extras)
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
    meta += [m for b in view.blocks if (m := b.extras_meta())]
    meta += [(ln.eps, ln.compute_fp32) for ln in (view.ln_pre, view.ln_post) if ln is not None]
    if view.head.kind != "cls":
        meta += view.head.meta()
    if view.trunk is not None:
        meta += [view.trunk.description, view.trunk.stride, view.trunk.prefix]
    h = hashlib.blake2b(repr(meta).encode(), digest_size=16)
    h.update(fingerprint_tensors(view.parameters()).encode())
    return h.hexdigest()
