"""The toy world's generator: procedural scenes with exact ground truth, their captions, and the small CLIP
that reads them.

* :mod:`~cliplens.toyworld.scenes` – scene factors, sampling and rendering with exact masks;
* :mod:`~cliplens.toyworld.captions` – caption grammar, caption facts, zero-shot prompt sets, the bench's
  colour-shape vocabulary;
* :mod:`~cliplens.toyworld.tokenizer` – word-level tokenizer;
* :mod:`~cliplens.toyworld.model` – :class:`ToyCLIP` (standard pre-LN CLIP ViT image tower) and its shipped
  weights (``weights/``).

This package stands low in the house: it imports only :mod:`cliplens.core`, so models and data sets can build
on it. What is done with it (training, evaluation, the spurious split, the bench, the heads' factors) lives in
:mod:`cliplens.experiments`.
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
