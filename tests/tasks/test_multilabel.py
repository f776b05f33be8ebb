"""Multi-label recognition: surgery and global scores from their formulas, mAP against a hand computation and
scikit-learn, COCO presence labels against the JSON, and the whole path on real COCO images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cliplens.errors import InvalidInputError
from cliplens.maps.inputs import fit_images
from cliplens.maps.targets import Targets
from cliplens.tasks.multilabel import coco_presence, mean_average_precision, multilabel_scores, score_classes
from tests.tasks.conftest import COCO_IMAGES, COCO_INSTANCES, needs_coco

CLASSES = ["dog", "cat", "red car", "tree", "person"]


def _images(n=3, size=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def _direct(oc_model, images, templates="photo"):
    """Cosines from the source open_clip model itself (its encode_image), on the same fitted pixels."""
    fitted, _ = fit_images(oc_model, images, fit="squash")
    px = torch.stack([f.pixels for f in fitted])
    with torch.no_grad():
        img = F.normalize(oc_model.model.encode_image(px).float(), dim=-1)
    t = Targets.classes(CLASSES, templates=templates).embed(oc_model).directions
    return img @ t.T


def test_surgery_scores_match_the_formula(oc_model):
    images = _images()
    s = _direct(oc_model, images)
    # CLIP Surgery on the global token, by hand: p = softmax(2 s), w = p / mean p, S = w s - mean_j(w s)
    p = torch.softmax(2 * s, dim=-1)
    ws = p / p.mean(-1, keepdim=True) * s
    expected = ws - ws.mean(-1, keepdim=True)
    got = multilabel_scores(oc_model, images, CLASSES, templates="photo", fit="squash")
    assert got.shape == (3, len(CLASSES))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.zeros(3), atol=1e-6, rtol=0)  # relative to the classes


def test_global_scores_are_cosines(oc_model):
    images = _images()
    got = multilabel_scores(oc_model, images, CLASSES, method="global", templates="photo", fit="squash")
    torch.testing.assert_close(got, _direct(oc_model, images), atol=1e-6, rtol=1e-5)


def test_batches_and_sizes_do_not_change_scores(oc_model):
    images = _images(2, (64, 64)) + _images(2, (48, 96), seed=1) + _images(1, (64, 64), seed=2)  # two input sizes
    together = score_classes(oc_model, images, CLASSES, templates="photo", batch_size=8)
    alone = torch.cat([multilabel_scores(oc_model, [im], CLASSES, templates="photo") for im in images])
    torch.testing.assert_close(together.scores, alone, atol=1e-6, rtol=1e-5)
    in_twos = multilabel_scores(oc_model, images, CLASSES, templates="photo", batch_size=2)
    torch.testing.assert_close(in_twos, alone, atol=1e-6, rtol=1e-5)
    ranked = together.ranked(0)
    assert [c for c, _ in ranked] == [CLASSES[i] for i in together.scores[0].argsort(descending=True)]
    assert together.ranked(0, 2) == ranked[:2]
    assert together.settings["method"] == "surgery" and "sum to 0" in together.settings["score"]


def test_skip_bad(oc_model, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    _images(1)[0].save(good)
    res = score_classes(oc_model, [str(good), str(bad)], CLASSES, templates="photo", skip_bad=True)
    assert res.sources == [str(good)] and res.scores.shape == (1, len(CLASSES))
    assert [s for s, _ in res.skipped] == [str(bad)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=[]), "no classes"),
    (dict(classes="dog,cat"), "list of class names"),
    (dict(classes=["dog", "Dog "]), "duplicate"),
    (dict(classes=CLASSES, method="patch"), "method must be one of"),
    (dict(classes=CLASSES, fit="stretch"), "fit must be one of"),
    (dict(classes=CLASSES, templates="nope"), "unknown template set"),
])
def test_bad_arguments(oc_model, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        score_classes(oc_model, _images(1), **kwargs)


def test_one_class_with_global(oc_model):
    assert multilabel_scores(oc_model, _images(1), ["dog"], method="global").shape == (1, 1)


# ---- mAP ------------------------------------------------------------------------------------------

def _ap_by_hand(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision without ties: the mean, over the positives, of the precision at each positive's rank."""
    order = np.argsort(-scores)
    hits = positive[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def test_map_matches_hand_and_sklearn():
    from sklearn.metrics import average_precision_score

    scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.3, 0.6, 0.25], [0.1, 0.2, 0.4], [0.5, 0.35, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
    res = mean_average_precision(torch.tensor(scores), torch.tensor(labels), classes=["a", "b", "c"])
    # class a: ranks 1 (pos), 2 (neg), 3 (pos: 0.5), 4 (pos: 0.3) -> (1 + 2/3 + 3/4) / 3
    assert _ap_by_hand(scores[:, 0], labels[:, 0]) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    for c in range(2):
        assert float(res.per_class[c]) == pytest.approx(_ap_by_hand(scores[:, c], labels[:, c]), abs=1e-12)
        assert float(res.per_class[c]) == pytest.approx(average_precision_score(labels[:, c], scores[:, c]))
    assert np.isnan(float(res.per_class[2])) and res.excluded == [2] and res.evaluated == 2
    assert res.map == pytest.approx((_ap_by_hand(scores[:, 0], labels[:, 0]) + _ap_by_hand(scores[:, 1], labels[:, 1])) / 2)
    assert "2 of 3 classes" in res.note and "excluded" in res.note and "c" in res.note.split("excluded")[1]
    m, per_class = res  # unpacks as (mAP, per-class AP)
    assert m == res.map and per_class is res.per_class


def test_map_with_ties_matches_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (30, 6)).astype(float)  # many ties
    labels = rng.random((30, 6)) < 0.3
    res = mean_average_precision(scores, labels.astype(int))
    expected = [average_precision_score(labels[:, c], scores[:, c]) for c in range(6) if labels[:, c].any()]
    assert res.map == pytest.approx(np.mean(expected))
    assert res.note.startswith("mAP over the 6 of 6 classes") and not res.excluded


@pytest.mark.parametrize("scores, labels, match", [
    (np.zeros((3, 2)), np.zeros((3, 3), bool), "same shape"),
    (np.zeros(3), np.zeros(3, bool), r"\[B, C\]"),
    (np.zeros((3, 2)), np.full((3, 2), 2), "boolean"),
    (np.zeros((3, 2)), np.zeros((3, 2), bool), "no class has a positive"),
    (np.full((2, 1), np.nan), np.ones((2, 1), bool), "NaN"),
])
def test_map_refuses(scores, labels, match):
    with pytest.raises(InvalidInputError, match=match):
        mean_average_precision(scores, labels)


# ---- COCO -----------------------------------------------------------------------------------------

def test_coco_presence_on_the_real_annotations():
    needs_coco()
    paths, names, labels = coco_presence(COCO_INSTANCES, COCO_IMAGES)
    data = json.loads(COCO_INSTANCES.read_text())
    assert names == [c["name"] for c in data["categories"]] and len(names) == 80
    assert labels.dtype == torch.bool and labels.shape == (len(data["images"]), 80)
    assert [p.rsplit("/", 1)[-1] for p in paths] == [im["file_name"] for im in data["images"]]
    cat_name = {c["id"]: c["name"] for c in data["categories"]}
    for i in (0, 7, len(paths) - 1):
        image_id = data["images"][i]["id"]
        expected = {cat_name[a["category_id"]] for a in data["annotations"] if a["image_id"] == image_id}
        assert expected and {names[j] for j in torch.nonzero(labels[i]).flatten().tolist()} == expected


def test_coco_presence_small_file(tmp_path):
    (tmp_path / "img").mkdir()
    for f in ("a.jpg", "b.jpg"):
        (tmp_path / "img" / f).write_bytes(b"x")
    data = {"images": [{"id": 5, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}, {"id": 2, "file_name": "c.jpg"}],
            "categories": [{"id": 7, "name": "zebra"}, {"id": 1, "name": "ant"}],
            "annotations": [{"image_id": 9, "category_id": 1}, {"image_id": 9, "category_id": 1},
                            {"image_id": 2, "category_id": 7}]}
    js = tmp_path / "instances.json"
    js.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="1 of the 3 images"):
        coco_presence(js, tmp_path / "img")
    paths, names, labels = coco_presence(js, tmp_path / "img", skip_missing=True)
    assert names == ["zebra", "ant"]  # the file's order, not the ids'
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a.jpg", "b.jpg"]
    assert labels.tolist() == [[False, False], [False, True]]  # a.jpg has no annotation: all zero
    (tmp_path / "captions.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(InvalidInputError, match="not a COCO instances file"):
        coco_presence(tmp_path / "captions.json", tmp_path / "img")
    with pytest.raises(InvalidInputError, match="cannot read"):
        coco_presence(tmp_path / "missing.json", tmp_path / "img")


def test_end_to_end_on_coco(oc_model):
    """Plumbing and shapes on four real images with random weights (the numbers mean nothing)."""
    needs_coco()
    paths, names, labels = coco_presence(COCO_INSTANCES, COCO_IMAGES)
    res = score_classes(oc_model, paths[:4], names, templates="photo")  # 80 classes, whole images
    assert res.scores.shape == (4, 80) and torch.isfinite(res.scores).all()
    assert res.sources == paths[:4]
    result = mean_average_precision(res.scores, labels[:4], classes=names)
    assert 0.0 < result.map <= 1.0
    assert result.evaluated == int(labels[:4].any(0).sum()) and len(result.excluded) == 80 - result.evaluated
    assert all(names[i] in result.note or "more" in result.note for i in result.excluded[:20])
