"""The toy world: procedural scenes with exact ground truth and a small CLIP trained on them.

* :mod:`~cliplens.toyworld.scenes` – scene factors, sampling and rendering with exact masks;
* :mod:`~cliplens.toyworld.captions` – caption grammar, caption facts, zero-shot prompt sets;
* :mod:`~cliplens.toyworld.tokenizer` – word-level tokenizer;
* :mod:`~cliplens.toyworld.model` – :class:`ToyCLIP` (standard pre-LN CLIP ViT image tower);
* :mod:`~cliplens.toyworld.train` / :mod:`~cliplens.toyworld.evaluate` – training and metrics;
* :mod:`~cliplens.toyworld.spurious` – the "toy waterbirds" split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, load_toy_clip
    from cliplens.toyworld.scenes import ObjectFactors, SceneFactors, render_scene, sample_scene
    from cliplens.toyworld.tokenizer import ToyTokenizer

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "ObjectFactors": "cliplens.toyworld.scenes",
    "SceneFactors": "cliplens.toyworld.scenes",
    "ToyCLIP": "cliplens.toyworld.model",
    "ToyCLIPConfig": "cliplens.toyworld.model",
    "ToyTokenizer": "cliplens.toyworld.tokenizer",
    "load_toy_clip": "cliplens.toyworld.model",
    "render_scene": "cliplens.toyworld.scenes",
    "sample_scene": "cliplens.toyworld.scenes",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "ToyCLIP", "ToyCLIPConfig", "load_toy_clip", "ToyTokenizer", "SceneFactors", "ObjectFactors",
    "render_scene", "sample_scene",
]
