"""The CLIP ViTs users run (OpenAI ViT-B/32 and ViT-L/14@336px, MetaCLIP, MetaCLIP 2, DFN), built offline with
random weights at their real shapes, loaded the way users load them.

* open_clip names go through ``cliplens.load(name, pretrained="random")`` with open_clip's own config of that
  name, its vision tower cut to ``layers`` blocks and its text tower to one (``layers=None``: the real depth).
  Width, heads, patch size, input size, MLP ratio and activation stay as the name has them.
* transformers shapes go through ``cliplens.wrap`` of a ``CLIPModel`` / ``MetaClip2Model`` built from a config
  with the vision tower of the named Hub model (few blocks), a tiny text tower and an offline tokenizer.

Biases and LayerNorm affines are perturbed (the libraries initialise them to 0 and 1), as in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import cliplens
from cliplens.errors import RandomWeightsWarning
from tests.conftest import _perturb


def load_open_clip(name: str, layers: int | None = 2, *, as_name: str | None = None, seed: int = 0) -> Any:
    """``cliplens.load(as_name or name, pretrained="random")`` while open_clip's config of ``name`` has ``layers``
    vision blocks and one text block (``layers=None``: the config as it is). The config is restored after."""
    open_clip = pytest.importorskip("open_clip")
    from open_clip import factory

    cfg = open_clip.get_model_config(name)  # a copy
    assert cfg is not None, f"open_clip has no config {name!r}"
    with contextlib.ExitStack() as stack:
        if layers is not None:
            cfg["vision_cfg"]["layers"] = layers
            cfg["text_cfg"]["layers"] = 1
            mp = stack.enter_context(pytest.MonkeyPatch.context())
            mp.setitem(factory._MODEL_CONFIGS, name, cfg)
        stack.enter_context(pytest.warns(RandomWeightsWarning))
        model = cliplens.load(as_name or name, pretrained="random", seed=seed)
    _perturb(model.model, seed)
    return model


def load_transformers(cls: str, vision: dict[str, Any], embed_dim: int, *, layers: int = 2, seed: int = 0) -> Any:
    """``cliplens.wrap`` of a transformers ``cls`` (``"CLIPModel"`` or ``"MetaClip2Model"``) whose vision tower has
    ``vision`` (with ``layers`` blocks), a one-block text tower and the offline tokenizer of ``tests/models/test_hf``."""
    transformers = pytest.importorskip("transformers")
    from tests.models.test_hf import tiny_tokenizer

    tok = tiny_tokenizer()
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=len(tok), max_position_embeddings=16, projection_dim=embed_dim,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config_cls = {"CLIPModel": transformers.CLIPConfig, "MetaClip2Model": transformers.MetaClip2Config}[cls]
    config = config_cls(text_config=text, vision_config=dict(vision, num_hidden_layers=layers,
                                                             projection_dim=embed_dim), projection_dim=embed_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, cls)(config).eval()
    return cliplens.wrap(_perturb(model, seed), tokenizer=tok)


@dataclass(frozen=True)
class Shape:
    """One real shape: how it is built and what cliplens must read from it."""

    key: str  # the test id
    models: str  # the released models that have this shape
    family: str  # "open_clip" or "transformers"
    source: str  # the open_clip name, or the transformers class
    image: int
    patch: int
    width: int
    heads: int
    embed_dim: int
    activation: str
    layers: int | None = 2  # vision blocks (None: the real depth)
    depth: int = 2  # the vision blocks built
    mlp: int = 0  # transformers: the MLP width

    @property
    def grid(self) -> tuple[int, int]:
        return self.image // self.patch, self.image // self.patch

    def build(self) -> Any:
        if self.family == "open_clip":
            return load_open_clip(self.source, self.layers)
        vision = dict(image_size=self.image, patch_size=self.patch, hidden_size=self.width,
                      intermediate_size=self.mlp, num_attention_heads=self.heads, hidden_act=self.activation)
        return load_transformers(self.source, vision, self.embed_dim, layers=self.depth)


SHAPES = {s.key: s for s in (
    # open_clip's "ViT-B-32" built with random weights has exact GELU (the openai tag switches to QuickGELU)
    Shape("openai-B-32", "OpenAI ViT-B/32 (tag openai), LAION and DataComp B/32", "open_clip", "ViT-B-32",
          224, 32, 768, 12, 512, "gelu", layers=None, depth=12),
    Shape("metaclip-B-32", "MetaCLIP ViT-B/32 (metaclip_400m, metaclip_fullcc)", "open_clip", "ViT-B-32-quickgelu",
          224, 32, 768, 12, 512, "quick_gelu"),
    Shape("openai-L-14-336", "OpenAI ViT-L/14@336px (tag openai)", "open_clip", "ViT-L-14-336",
          336, 14, 1024, 16, 768, "gelu"),
    Shape("dfn-metaclip-H-14", "DFN5B and MetaCLIP ViT-H/14 (dfn5b, metaclip_fullcc)", "open_clip",
          "ViT-H-14-quickgelu", 224, 14, 1280, 16, 1024, "quick_gelu"),
    Shape("dfn-H-14-378", "DFN5B ViT-H/14 at 378 px (dfn5b)", "open_clip", "ViT-H-14-378-quickgelu",
          378, 14, 1280, 16, 1024, "quick_gelu"),
    Shape("hf-openai-L-14-336", "openai/clip-vit-large-patch14-336", "transformers", "CLIPModel",
          336, 14, 1024, 16, 768, "quick_gelu", mlp=4096),
    Shape("hf-openai-B-32", "openai/clip-vit-base-patch32, facebook/metaclip-b32-400m", "transformers", "CLIPModel",
          224, 32, 768, 12, 512, "quick_gelu", mlp=3072),
    Shape("hf-metaclip2-H-14", "facebook/metaclip-2-worldwide-huge-quickgelu", "transformers", "MetaClip2Model",
          224, 14, 1280, 16, 1024, "quick_gelu", mlp=5120),
)}
