"""Shared builders and fixtures: random-weight models built offline (no downloads).

Towers have the *shapes* of real CLIPs (width, heads, patch size, input size, MLP ratio,
activation) with fewer blocks (``layers``), so parity and exactness are tested at real shapes
cheaply; a few tests use one full-depth model per family. Biases and LayerNorm affines are
perturbed so that their handling is tested (the libraries initialise them to 0 and 1).

Nothing here changes global torch state (default dtype, logging levels), except one thread per process when
the suite runs on several (pytest-xdist workers).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE_IMAGES = SHARED / "reference-data" / "images"

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs on two processes (pytest-xdist, see pyproject.toml): one torch thread each, so that the two
    # share the cores instead of contending for them
    torch.set_num_threads(1)

#: open_clip names of the real shapes
OC_NAMES = {"B-32": "ViT-B-32", "B-16": "ViT-B-16", "L-14": "ViT-L-14"}
#: transformers CLIPVisionConfig of the real shapes (OpenAI's use QuickGELU; B-16 here has exact GELU)
HF_SHAPES = {
    "B-32": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, patch_size=32, projection_dim=512,
                 hidden_act="quick_gelu"),
    "B-16": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, patch_size=16, projection_dim=512,
                 hidden_act="gelu"),
    "L-14": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, patch_size=14, projection_dim=768,
                 hidden_act="quick_gelu"),
}
HF_FULL_LAYERS = {"B-32": 12, "B-16": 12, "L-14": 24}


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("bias" in name or "norm" in name or "ln" in name):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


class _QuietRoot:
    """open_clip logs through the root logger; keep that quiet without touching global levels for long."""

    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)


def _cached_if_shallow(build):
    """Cache shallow towers (cheap, reused across a file); build full-depth ones (``layers=0``) afresh, so that
    they are freed after the test that uses them (the suite stays under 3 GB)."""
    cached = functools.lru_cache(maxsize=4)(build)

    @functools.wraps(build)
    def get(*args, **kwargs):
        return build(*args, **kwargs) if kwargs.get("layers", 2) == 0 else cached(*args, **kwargs)

    return get


@_cached_if_shallow
def oc_vit(shape: str = "B-16", *, layers: int = 2, image_size: int | None = None, quick_gelu: bool = False,
           layer_scale: bool = False, seed: int = 0):
    """An open_clip ``CLIP`` with the vision tower of ``ViT-{shape}`` and ``layers`` blocks (``layers=0``: the
    real depth), a tiny text tower, random weights. Cached: do not mutate it (``copy.deepcopy`` first)."""
    open_clip = pytest.importorskip("open_clip")
    cfg = copy.deepcopy(open_clip.get_model_config(OC_NAMES[shape]))
    vision = cfg["vision_cfg"]
    if layers:
        vision["layers"] = layers
    if image_size:
        vision["image_size"] = image_size
    if layer_scale:
        vision["ls_init_value"] = 0.5
    text = dict(context_length=16, vocab_size=49408, width=64, heads=2, layers=1)
    torch.manual_seed(seed)
    with _QuietRoot():
        model = open_clip.CLIP(cfg["embed_dim"], vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()
    if layer_scale:
        with torch.no_grad():
            for blk in model.visual.transformer.resblocks:
                blk.ls_1.gamma.uniform_(0.2, 2.0)
                blk.ls_2.gamma.uniform_(0.2, 2.0)
    return _perturb(model, seed)


@_cached_if_shallow
def hf_vit(shape: str = "B-32", *, layers: int = 2, image_size: int = 224, act: str | None = None, seed: int = 0):
    """A transformers ``CLIPVisionModelWithProjection`` with the shape of ``shape`` and ``layers`` blocks
    (``layers=0``: the real depth), random weights. Cached: do not mutate it."""
    transformers = pytest.importorskip("transformers")
    kw = dict(HF_SHAPES[shape])
    if act:
        kw["hidden_act"] = act
    kw["num_hidden_layers"] = layers or HF_FULL_LAYERS[shape]
    torch.manual_seed(seed)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(image_size=image_size, **kw))
    return _perturb(model.eval(), seed)


def tiny_open_clip(*, layer_scale: bool = False, quick_gelu: bool = False, image_size: int = 64, patch: int = 16,
                   width: int = 64, layers: int = 3, heads: int = 4, embed_dim: int = 32):
    """A tiny open_clip ``CLIP`` built from explicit configs (a fresh object each call)."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(1)
    vision_cfg = dict(image_size=image_size, patch_size=patch, width=width, layers=layers, head_width=width // heads,
                      ls_init_value=0.5 if layer_scale else None)
    text_cfg = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    with _QuietRoot():
        model = open_clip.CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu).eval()
    if layer_scale:
        with torch.no_grad():
            for blk in model.visual.transformer.resblocks:
                blk.ls_1.gamma.uniform_(0.2, 2.0)
                blk.ls_2.gamma.uniform_(0.2, 2.0)
    return _perturb(model, 1)


def open_clip_model(name: str, **kwargs):
    """A random-weight open_clip model by its real name (full size: use sparingly, a fresh object each call)."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    with _QuietRoot():
        return open_clip.create_model(name, pretrained=None, **kwargs).eval()


def pixels(batch: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |out - ref| / max ‖ref‖`` (the parity measure: ≤ 1e-5 in fp32)."""
    return (out.float() - ref.float()).abs().max().item() / ref.float().norm(dim=-1).max().item()


@pytest.fixture(scope="session", autouse=True)
def _text_cache_in_tmp(tmp_path_factory):
    """The text-embedding disk cache ($CLIPLENS_CACHE) of the whole run in a temporary folder, never the user's."""
    old = os.environ.get("CLIPLENS_CACHE")
    os.environ["CLIPLENS_CACHE"] = str(tmp_path_factory.mktemp("cliplens-cache"))
    yield
    if old is None:
        os.environ.pop("CLIPLENS_CACHE", None)
    else:
        os.environ["CLIPLENS_CACHE"] = old


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
