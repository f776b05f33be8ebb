"""The toy world: procedural scenes with exact ground truth and a small CLIP trained on them.

* :mod:`~cliplens.toyworld.scenes` – scene factors, sampling and rendering with exact masks;
* :mod:`~cliplens.toyworld.captions` – caption grammar, caption facts, zero-shot prompt sets;
* :mod:`~cliplens.toyworld.tokenizer` – word-level tokenizer;
* :mod:`~cliplens.toyworld.model` – :class:`ToyCLIP` (standard pre-LN CLIP ViT image tower);
* :mod:`~cliplens.toyworld.train` / :mod:`~cliplens.toyworld.evaluate` – training and metrics;
* :mod:`~cliplens.toyworld.spurious` – the "toy waterbirds" split.
"""

from __future__ import annotations

from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, load_toy_clip
from cliplens.toyworld.scenes import ObjectFactors, SceneFactors, render_scene, sample_scene
from cliplens.toyworld.tokenizer import ToyTokenizer

__all__ = [
    "ToyCLIP", "ToyCLIPConfig", "load_toy_clip", "ToyTokenizer", "SceneFactors", "ObjectFactors",
    "render_scene", "sample_scene",
]
