"""Evaluation: metrics and protocols (:mod:`.segmentation`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliplens.lazy import lazy_exports

if TYPE_CHECKING:
    from cliplens.evaluation.segmentation import (
        ConfusionMatrix,
        average_precision,
        average_precision_np,
        foreground,
        iou,
        normalize_map,
        pixel_accuracy,
        score_map,
        upsample_map,
    )

#: name -> the module that defines it, imported on first use (see :mod:`cliplens.lazy`)
_LAZY = {
    "ConfusionMatrix": "cliplens.evaluation.segmentation",
    "average_precision": "cliplens.evaluation.segmentation",
    "average_precision_np": "cliplens.evaluation.segmentation",
    "foreground": "cliplens.evaluation.segmentation",
    "iou": "cliplens.evaluation.segmentation",
    "normalize_map": "cliplens.evaluation.segmentation",
    "pixel_accuracy": "cliplens.evaluation.segmentation",
    "score_map": "cliplens.evaluation.segmentation",
    "upsample_map": "cliplens.evaluation.segmentation",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "ConfusionMatrix", "average_precision", "average_precision_np", "foreground", "iou", "normalize_map", "pixel_accuracy",
    "score_map", "upsample_map",
]
