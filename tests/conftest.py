"""Shared fixtures: small random-weight models built offline (no downloads)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE_IMAGES = SHARED / "reference-data" / "images"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@functools.cache
def open_clip_model(name: str, **kwargs):
    """A random-weight open_clip model (cached per process; do not mutate it in tests)."""
    open_clip = pytest.importorskip("open_clip")
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None, **kwargs).eval()
    return model


def tiny_open_clip(*, layer_scale: bool = False, quick_gelu: bool = False, image_size: int = 64, patch: int = 16,
                   width: int = 64, layers: int = 3, heads: int = 4, embed_dim: int = 32):
    """A tiny open_clip ``CLIP`` built from explicit configs (layer-scale randomised so it matters)."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(1)
    vision_cfg = dict(image_size=image_size, patch_size=patch, width=width, layers=layers, head_width=width // heads,
                      ls_init_value=0.5 if layer_scale else None)
    text_cfg = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    model = open_clip.CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu).eval()
    if layer_scale:
        with torch.no_grad():
            for blk in model.visual.transformer.resblocks:
                blk.ls_1.gamma.uniform_(0.2, 2.0)
                blk.ls_2.gamma.uniform_(0.2, 2.0)
    return model


def pixels(batch: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g)


@pytest.fixture(scope="session")
def random_toy_weights(tmp_path_factory) -> Path:
    """A small random-weight ToyCLIP saved as a .safetensors file (1-D parameters perturbed so
    biases and LayerNorm affines are not trivially 0/1). Load with ``cliplens.load("toy", pretrained=path)``."""
    from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, save_toy_clip
    from cliplens.toyworld.tokenizer import build_vocab

    torch.manual_seed(0)
    vocab = build_vocab()
    cfg = ToyCLIPConfig(width=64, layers=6, heads=4, embed_dim=32, text_width=32, text_layers=1, text_heads=2,
                        vocab_size=len(vocab), context_length=48)
    model = ToyCLIP(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("toy") / "toy-random.safetensors"
    save_toy_clip(model, str(path), vocab)
    return path


@pytest.fixture(scope="session")
def random_toy(random_toy_weights):
    """The random-weight ToyCLIP of :func:`random_toy_weights`, loaded through ``cliplens.load``."""
    import cliplens

    return cliplens.load("toy", pretrained=str(random_toy_weights))
