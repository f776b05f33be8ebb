"""Random-weight second backbones built offline from transformers configs (no downloads): DINO (``ViTModel``),
DINOv2 and DINOv2 with registers, small by default, with perturbed biases and LayerNorm affines (the libraries
initialise them to 0 and 1) and eager attention (so that ``output_attentions`` works)."""

from __future__ import annotations

import functools

import pytest
import torch

#: the model types a test may ask for
KINDS = ("dinov2", "dinov2_reg", "dino")


@functools.lru_cache(maxsize=8)
def tiny_vfm(kind: str = "dinov2", *, width: int = 32, heads: int = 4, layers: int = 2, patch: int = 4,
             image_size: int = 16, registers: int = 4, seed: int = 0):
    """A random-weight transformers backbone of ``kind`` (see :data:`KINDS`), in eval mode."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    kw = dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * width,
              patch_size=patch, image_size=image_size, attn_implementation="eager")
    if kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    elif kind == "dinov2_reg":
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    elif kind == "dino":
        model = transformers.ViTModel(transformers.ViTConfig(**kw), add_pooling_layer=False)
    else:
        raise ValueError(kind)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "token" in name or "position" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def vfm_saved(folder, kind: str = "dinov2", **kw) -> str:
    """A backbone of ``kind`` (8-pixel patches, 64-pixel native input; ``kw``: other :func:`tiny_vfm` settings)
    written by ``save_pretrained`` to ``folder``; returns the folder as text (what ``--param vfm=...`` takes)."""
    tiny_vfm(kind, patch=8, image_size=64, seed=3, **kw).save_pretrained(folder)
    return str(folder)
