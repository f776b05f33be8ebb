"""The values evaluation options take, in a module that imports nothing: the command line lists them in
``--help`` without loading the evaluation code (which needs torch). Each is re-exported where it is used."""

from __future__ import annotations

__all__ = ["IMAGENET_SEG_DEFAULT_MODE", "IMAGENET_SEG_MODES", "PRESET_NAMES"]

#: how ImageNet-segmentation masks meet the model's input (:mod:`cliplens.evaluation.imagenet_seg`): "correct"
#: gives them the image's own resize and crop (aligned masks); "original" reproduces the papers' code
IMAGENET_SEG_MODES: tuple[str, ...] = ("original", "correct")
IMAGENET_SEG_DEFAULT_MODE = "correct"

#: the method presets cliplens ships (``segment-eval --preset``; :mod:`cliplens.evaluation.method_presets`)
PRESET_NAMES = ("naclip", "sclip", "clearclip", "resclip", "sfp", "sc-clip", "cliper", "corrclip", "proxyclip",
                "cass", "trident", "maskclip")

