"""Evaluation: metrics and protocols (:mod:`.segmentation`)."""

from __future__ import annotations

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

__all__ = [
    "ConfusionMatrix", "average_precision", "average_precision_np", "foreground", "iou", "normalize_map", "pixel_accuracy",
    "score_map", "upsample_map",
]
