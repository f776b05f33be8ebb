"""Segmentation metrics: maps against masks, the first seed paper's threshold protocol.

Per map: upsample bilinearly to the mask's size (``align_corners=False``), clip below 0, min-max
normalise, foreground = normalised map >= its mean. A constant map predicts every pixel; a map
with nothing above 0 predicts nothing (the original code divides by zero there and predicts
nothing too). IoU, pixel accuracy and average precision of the normalised map as a score for the
mask (scikit-learn's definition).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ConfusionMatrix", "average_precision", "average_precision_np", "foreground", "iou", "normalize_map", "pixel_accuracy",
    "score_map", "sklearn_average_precision", "upsample_map",
]

def upsample_map(m: Tensor, size: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` -> float64 ``[H, W]``: bilinear (``align_corners=False``) unless already that size."""
    m = m.detach().to("cpu", torch.float64)
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return m.numpy()


def normalize_map(m: np.ndarray, clip: bool = True) -> np.ndarray:
    """Clip below 0 (``clip``), then min-max to [0, 1]; a constant map becomes all zeros."""
    m = np.asarray(m, dtype=np.float64)
    if clip:
        m = np.maximum(m, 0.0)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 0.0 or not math.isfinite(hi - lo):
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


def foreground(normalized: np.ndarray, upsampled: np.ndarray | None = None, clip: bool = True) -> np.ndarray:
    """The threshold rule: foreground where the normalised map is >= its mean (a constant map:
    everywhere), except that a map with nothing above 0 (``upsampled``, with ``clip``) is foreground nowhere."""
    if clip and upsampled is not None and not (np.asarray(upsampled) > 0).any():
        return np.zeros(normalized.shape, dtype=bool)
    return normalized >= normalized.mean()


def iou(pred: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(pred, mask).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, mask).sum() / union)


def pixel_accuracy(pred: np.ndarray, mask: np.ndarray) -> float:
    return float((pred == mask).mean())


def average_precision_np(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision ``Σ_n (R_n − R_{n−1}) P_n`` over the distinct score thresholds
    (tied scores form one threshold), the definition of scikit-learn's ``average_precision_score``."""
    y = np.asarray(y_true, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in size: {y.shape} vs {s.shape}")
    positives = int(y.sum())
    if positives == 0:
        raise ValueError("average precision needs at least one positive pixel")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision(y_true: np.ndarray, scores: np.ndarray, *, use_sklearn: bool | None = None) -> float:
    """Average precision of ``scores`` for the bool labels ``y_true``.

    scikit-learn's ``average_precision_score`` when it is installed (``use_sklearn=None``), else
    :func:`average_precision_np` (same definition); ``use_sklearn`` forces one or the other.
    """
    if use_sklearn is not False:
        try:
            from sklearn.metrics import average_precision_score
        except ImportError:
            if use_sklearn:
                raise
        else:
            y = np.asarray(y_true, dtype=bool).ravel()
            if not y.any():
                raise ValueError("average precision needs at least one positive pixel")
            return float(average_precision_score(y, np.asarray(scores, dtype=np.float64).ravel()))
    return average_precision_np(y_true, scores)


def score_map(m: Tensor | np.ndarray, mask: np.ndarray, *, clip: bool = True,
              ap: Callable[[np.ndarray, np.ndarray], float] = average_precision_np) -> dict[str, Any]:
    """Score one map (any grid; upsampled to the mask's size) against one bool mask.

    Returns ``iou``, ``pixel_acc``, ``ap`` and the arrays ``map`` (upsampled, float64),
    ``normalized`` and ``pred`` (bool), plus the pooled counts the original protocol needs.
    """
    mask = np.asarray(mask, dtype=bool)
    t = torch.as_tensor(m) if isinstance(m, np.ndarray) else m
    up = upsample_map(t, mask.shape)
    norm = normalize_map(up, clip=clip)
    pred = foreground(norm, up, clip)
    return {
        "iou": iou(pred, mask), "pixel_acc": pixel_accuracy(pred, mask), "ap": ap(mask, norm),
        "map": up, "normalized": norm, "pred": pred,
        "inter_fg": int((pred & mask).sum()), "union_fg": int((pred | mask).sum()),
        "inter_bg": int((~pred & ~mask).sum()), "union_bg": int((~pred | ~mask).sum()),
    }


def sklearn_average_precision() -> Callable[[np.ndarray, np.ndarray], float] | None:
    try:
        from sklearn.metrics import average_precision_score
    except ImportError:
        return None

    def ap(y: np.ndarray, s: np.ndarray) -> float:
        return float(average_precision_score(np.asarray(y, bool).ravel(), np.asarray(s, np.float64).ravel()))

    return ap


class ConfusionMatrix:
    """Semantic-segmentation metrics from one confusion matrix accumulated over a whole data set.

    ``update(pred, gt)`` counts pixel pairs (``gt == ignore_index`` is skipped; predictions outside
    ``0..num_classes-1`` are counted as wrong). mIoU is the mean IoU over the classes that appear in the
    ground truth or in the predictions (a class absent from both has no IoU, as in mmseg's ``IoUMetric``;
    torchmetrics' ``MulticlassJaccardIndex(average="macro", ignore_index=255)`` agrees); pixel accuracy is
    correct pixels over counted pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)  # last column: invalid prediction

    def update(self, pred: Tensor | np.ndarray, gt: Tensor | np.ndarray) -> None:
        p = torch.as_tensor(pred).reshape(-1).long()
        g = torch.as_tensor(gt).reshape(-1).long()
        if p.shape != g.shape:
            raise ValueError(f"prediction and ground truth differ in size: {tuple(p.shape)} vs {tuple(g.shape)}")
        keep = g != self.ignore_index
        p, g = p[keep], g[keep]
        if g.numel() and (g.min() < 0 or g.max() >= self.num_classes):
            raise ValueError(f"ground-truth labels must be in 0..{self.num_classes - 1} or {self.ignore_index}")
        p = torch.where((p >= 0) & (p < self.num_classes), p, torch.full_like(p, self.num_classes))
        idx = g * (self.num_classes + 1) + p
        self.matrix += torch.bincount(idx, minlength=self.num_classes * (self.num_classes + 1)).view_as(self.matrix)

    @property
    def intersection(self) -> Tensor:
        return self.matrix[:, :-1].diagonal()

    @property
    def union(self) -> Tensor:
        gt = self.matrix.sum(1)
        pred = self.matrix[:, :-1].sum(0)
        return gt + pred - self.intersection

    def per_class_iou(self) -> Tensor:
        """``[C]`` IoU per class (NaN for a class absent from both ground truth and predictions)."""
        u = self.union.double()
        return torch.where(u > 0, self.intersection.double() / u.clamp_min(1), torch.full_like(u, math.nan))

    def miou(self) -> float:
        iou = self.per_class_iou()
        valid = ~torch.isnan(iou)
        return float(iou[valid].mean()) if valid.any() else math.nan

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.intersection.sum()) / total if total else math.nan
