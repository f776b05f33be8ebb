"""Segmentation metrics: average precision (against scikit-learn), the threshold protocol, upsampling."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliplens.evaluation.segmentation import average_precision, average_precision_np, score_map


def test_average_precision():
    y = np.array([1, 0, 1, 0], bool)
    assert average_precision_np(y, np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties form one threshold: a constant score has AP = the positive fraction
    assert average_precision_np(y, np.zeros(4)) == pytest.approx(0.5)
    assert average_precision_np(y, np.array([1.0, 0.5, 0.5, 0.0])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    mask = np.zeros((16, 16), bool)
    mask[3:9, 4:12] = True
    assert average_precision_np(mask, mask.astype(float)) == 1.0
    sc = score_map(torch.from_numpy(mask.astype(np.float32)), mask)
    assert sc["iou"] == 1.0 and sc["ap"] == 1.0 and sc["pixel_acc"] == 1.0
    with pytest.raises(ValueError):
        average_precision_np(np.zeros(4, bool), np.arange(4.0))


def test_average_precision_matches_sklearn():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    for trial in range(20):
        y = rng.random(500) < rng.uniform(0.05, 0.5)
        y[0] = True
        s = np.round(rng.random(500) + 0.8 * y, 1 if trial % 2 else 6)  # many ties on odd trials
        assert average_precision_np(y, s) == pytest.approx(average_precision(y, s, use_sklearn=True), abs=1e-12)



def test_average_precision_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    y = np.array([1, 0, 1, 0], bool)
    assert average_precision(y, np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    with pytest.raises(ImportError):
        average_precision(y, np.zeros(4), use_sklearn=True)


def test_grid_maps_are_upsampled_bilinearly():
    grid = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True
    sc = score_map(grid, mask, clip=False)
    want = F.interpolate(grid[None, None].double(), size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(sc["map"], want.numpy())
    norm = (sc["map"] - sc["map"].min()) / (sc["map"].max() - sc["map"].min())
    np.testing.assert_array_equal(sc["pred"], norm >= norm.mean())
    # edge cases: a constant map predicts everything, a map with nothing above 0 predicts nothing
    assert score_map(torch.full((2, 2), 0.3), mask)["pred"].all()
    neg = score_map(-1.0 - grid, mask)
    assert not neg["pred"].any() and neg["iou"] == 0.0 and neg["pixel_acc"] == 0.5
    assert score_map(-1.0 - grid, mask, clip=False)["pred"].any()



def test_confusion_matrix_against_torchmetrics_and_by_hand():
    from cliplens.evaluation.segmentation import ConfusionMatrix

    g = torch.Generator().manual_seed(0)
    C = 6
    cm = ConfusionMatrix(C)
    preds, gts = [], []
    for _ in range(4):
        gt = torch.randint(0, C - 1, (20, 30), generator=g)  # class C-1 never in the ground truth
        gt[torch.rand(20, 30, generator=g) < 0.1] = 255  # ignored pixels
        pred = torch.where(torch.rand(20, 30, generator=g) < 0.7, gt, torch.randint(0, C, (20, 30), generator=g))
        pred[gt == 255] = 3  # whatever is predicted on ignored pixels does not count
        cm.update(pred, gt)
        preds.append(pred)
        gts.append(gt)
    pred, gt = torch.stack(preds), torch.stack(gts)
    # by hand: per class intersection and union over the kept pixels of the whole data set
    keep = gt != 255
    ious = []
    for c in range(C):
        inter = ((pred == c) & (gt == c) & keep).sum().item()
        union = (((pred == c) | (gt == c)) & keep).sum().item()
        ious.append(inter / union if union else float("nan"))
    want = np.nanmean(ious)
    assert cm.miou() == pytest.approx(want, rel=1e-12)
    assert cm.pixel_accuracy() == pytest.approx(((pred == gt) & keep).sum().item() / keep.sum().item(), rel=1e-12)
    np.testing.assert_allclose(cm.per_class_iou().numpy(), ious)
    tm = pytest.importorskip("torchmetrics")
    jaccard = tm.classification.MulticlassJaccardIndex(num_classes=C, average="macro", ignore_index=255)
    assert cm.miou() == pytest.approx(float(jaccard(pred.flatten(), gt.flatten())), rel=1e-6)
    # a class absent from both ground truth and predictions has no IoU and is left out of the mean
    cm2 = ConfusionMatrix(4)
    cm2.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]))
    assert torch.isnan(cm2.per_class_iou()[2:]).all() and cm2.miou() == pytest.approx((2 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="ground-truth labels"):
        cm2.update(torch.tensor([0]), torch.tensor([7]))
