"""Adapter for open_clip models (``open_clip.CLIP`` and ``CustomTextCLIP``).

Only ViT image towers built from open_clip's own ``VisionTransformer`` with
default residual blocks and CLS-token pooling decompose exactly; anything else
(ResNet ``ModifiedResNet``, timm towers, attentional pooling, average pooling,
NormFormer-style custom blocks) raises :class:`UnsupportedArchitectureError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cliplens.errors import MissingDependencyError, UnsupportedArchitectureError
from cliplens.models.base import CLIPAdapter
from cliplens.models.view import BlockView, LayerNormView, VisionView


def require_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            "open_clip is not installed. Install it with: pip install 'cliplens[open_clip]' "
            "(or pip install open_clip_torch)."
        ) from e
    return open_clip


def _ln(module: nn.Module | None) -> LayerNormView | None:
    if module is None or isinstance(module, nn.Identity):
        return None
    if not isinstance(module, nn.LayerNorm):
        raise UnsupportedArchitectureError(
            f"open_clip tower uses a {type(module).__name__} where a LayerNorm was expected; "
            "cliplens decomposes LayerNorm ViTs only."
        )
    fp32 = type(module).__name__ == "LayerNormFp32"
    return LayerNormView(module.weight, module.bias, float(module.eps), compute_fp32=fp32)


def _activation(module: nn.Module) -> str:
    cls = type(module).__name__
    if cls == "QuickGELU":
        return "quick_gelu"
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise UnsupportedArchitectureError(f"unsupported MLP activation {cls} in open_clip tower")


def _layer_scale(module: nn.Module) -> Tensor | None:
    if isinstance(module, nn.Identity):
        return None
    gamma = getattr(module, "gamma", None)
    if gamma is None:
        raise UnsupportedArchitectureError(f"unknown layer-scale module {type(module).__name__}")
    return gamma


def _block_view(block: nn.Module, index: int) -> BlockView:
    if type(block).__name__ != "ResidualAttentionBlock" or not isinstance(
        getattr(block, "attn", None), nn.MultiheadAttention
    ):
        raise UnsupportedArchitectureError(
            f"block {index} is a {type(block).__name__}; cliplens decomposes open_clip's default "
            "ResidualAttentionBlock (nn.MultiheadAttention) only, not custom/NormFormer blocks."
        )
    attn: nn.MultiheadAttention = block.attn
    if attn.in_proj_weight is None:
        raise UnsupportedArchitectureError("attention with separate q/k/v dims is not supported")
    d = attn.embed_dim
    w, b = attn.in_proj_weight, attn.in_proj_bias
    return BlockView(
        ln_1=_ln(block.ln_1),  # type: ignore[arg-type]
        q_weight=w[:d], k_weight=w[d : 2 * d], v_weight=w[2 * d :],
        q_bias=None if b is None else b[:d],
        k_bias=None if b is None else b[d : 2 * d],
        v_bias=None if b is None else b[2 * d :],
        out_weight=attn.out_proj.weight, out_bias=attn.out_proj.bias,
        ln_2=_ln(block.ln_2),  # type: ignore[arg-type]
        fc1_weight=block.mlp.c_fc.weight, fc1_bias=block.mlp.c_fc.bias,
        fc2_weight=block.mlp.c_proj.weight, fc2_bias=block.mlp.c_proj.bias,
        num_heads=attn.num_heads,
        activation=_activation(block.mlp.gelu),
        ls_1=_layer_scale(block.ls_1), ls_2=_layer_scale(block.ls_2),
        qkv_weight=w, qkv_bias=b,
    )


def vision_view_from_open_clip(model: nn.Module, name: str = "") -> VisionView:
    """Build a :class:`VisionView` over an open_clip model's image tower (no copies)."""
    visual = getattr(model, "visual", model)
    kind = type(visual).__name__
    if kind == "ModifiedResNet":
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} is a ResNet CLIP (ModifiedResNet image tower). The decomposition "
            "into heads and tokens needs a ViT image tower; pick a ViT model such as ViT-B-16."
        )
    if kind != "VisionTransformer":
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} has a {kind} image tower; cliplens decomposes open_clip "
            "VisionTransformer towers (ViT-*) only."
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} pools with attentional pooling (CoCa-style); only CLS-token "
            "pooling decomposes exactly."
        )
    if getattr(visual, "pool_type", "tok") != "tok":
        raise UnsupportedArchitectureError(
            f"{name or 'this model'} pools with pool_type={visual.pool_type!r}; only CLS-token "
            "('tok') pooling is supported."
        )
    blocks = tuple(_block_view(b, i) for i, b in enumerate(visual.transformer.resblocks))
    ln_post = _ln(visual.ln_post)
    if ln_post is None:
        raise UnsupportedArchitectureError("open_clip tower without ln_post is not supported")
    conv = visual.conv1
    return VisionView(
        patch_weight=conv.weight,
        patch_bias=conv.bias,
        class_embedding=visual.class_embedding,
        positional_embedding=visual.positional_embedding,
        ln_pre=_ln(visual.ln_pre),
        blocks=blocks,
        ln_post=ln_post,
        proj=visual.proj,
        image_size=tuple(int(s) for s in visual.image_size),  # type: ignore[arg-type]
        source=f"open_clip:{name}",
    )


class OpenCLIPAdapter(CLIPAdapter):
    """An open_clip model seen through cliplens. Build with :func:`cliplens.load` or :func:`cliplens.wrap`."""

    family = "open_clip"

    def __init__(self, model: nn.Module, name: str, tokenizer: Any = None, preprocess: Any = None) -> None:
        super().__init__(model, name)
        open_clip = require_open_clip()
        if tokenizer is None:
            try:
                tokenizer = open_clip.get_tokenizer(name) if name else open_clip.get_tokenizer("ViT-B-32")
            except Exception:  # unknown/offline name: the standard CLIP BPE tokenizer
                tokenizer = open_clip.get_tokenizer("ViT-B-32")
        self.tokenizer = tokenizer
        self.source_preprocess = preprocess
        model.eval()
        self.vision  # validate the architecture eagerly  # noqa: B018

    def _build_vision_view(self) -> VisionView:
        return vision_view_from_open_clip(self.model, self.name)

    @property
    def preprocess_config(self):  # type: ignore[override]
        from cliplens.images import PreprocessConfig

        return PreprocessConfig.from_open_clip(self.model)

    @property
    def context_length(self) -> int:
        n = getattr(self.tokenizer, "context_length", None) or getattr(self.model, "context_length", None)
        return int(n or 77)

    def _tokenize(self, texts: Sequence[str]) -> Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    def _count_tokens(self, texts: Sequence[str]) -> list[int]:
        tok = self.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):  # SimpleTokenizer
            return [len(tok.encode(t)) + 2 for t in texts]
        inner = getattr(tok, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
        if inner is not None:
            return [len(inner(t, truncation=False)["input_ids"]) for t in texts]
        return [0 for _ in texts]

    def _encode_tokens(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens)

    @torch.no_grad()
    def source_encode_image(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode_image(pixel_values, normalize=False)
