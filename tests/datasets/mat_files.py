"""ImageNet-segmentation's ``gtsegs_ijcv.mat`` written the original's way (a struct ``value`` with N x 1 cells
``img`` and ``gt``, each ``gt`` a 1 x 1 cell holding the mask), as MATLAB v5 with scipy, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def imagenet_seg_cells(rows) -> tuple[np.ndarray, np.ndarray]:
    """``(img, gt)`` object arrays of ``rows`` = ``[(image [H, W, 3] uint8, mask [H, W]), ...]``."""
    imgs = np.empty((len(rows), 1), dtype=object)
    gts = np.empty((len(rows), 1), dtype=object)
    for k, (img, gt) in enumerate(rows):
        imgs[k, 0] = img
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = gt
        gts[k, 0] = cell
    return imgs, gts


def write_imagenet_seg_mat(path: Path, rows) -> Path:
    savemat = pytest.importorskip("scipy.io").savemat
    imgs, gts = imagenet_seg_cells(rows)
    savemat(path, {"value": {"img": imgs, "gt": gts}})
    return path
