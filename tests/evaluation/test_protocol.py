"""The segmentation protocol: presets, query names, settings validation, and the per-pixel decision
(:func:`predict_labels`) against a naive numpy implementation of the documented rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cliplens.datasets.coco import COCO_OBJECT_CLASSES
from cliplens.datasets.voc import VOC20_CLASSES, VOC_CLASSES
from cliplens.errors import InvalidInputError
from cliplens.evaluation.protocol import (
    FIELD_NAMES,
    PRESETS,
    SegProtocol,
    class_queries,
    predict_labels,
    protocol_for,
)
from cliplens.maps.base import ImageMaps
from cliplens.maps.targets import Targets

#: the class names of the data sets FIELD_NAMES speaks of
DATASET_CLASSES = {"voc21": VOC_CLASSES, "voc20": VOC20_CLASSES, "coco-object": COCO_OBJECT_CLASSES}

STUFF = ["sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk", "bed",
         "building", "cloud", "lamp", "door", "window", "wardrobe", "ceiling", "shelf", "curtain", "stair", "floor",
         "hill", "rail", "fence"]
PERSON = ["person", "person in shirt", "person in jeans", "person in dress", "person in sweater", "person in skirt",
          "person in jacket"]
TV = ["television monitor", "tv monitor", "monitor", "television", "screen"]


# ---- query names ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", sorted(FIELD_NAMES))
def test_field_names_name_classes_of_their_data_set(dataset):
    # a key that is no class name of the set would silently never apply
    assert dataset in DATASET_CLASSES, f"FIELD_NAMES has {dataset!r}, which this test does not know"
    classes = DATASET_CLASSES[dataset]
    unknown = sorted(set(FIELD_NAMES[dataset]) - set(classes))
    assert not unknown, f"{dataset}: {unknown} are not class names of the data set"
    for name, queries in FIELD_NAMES[dataset].items():
        assert [q.strip() for q in queries.split(",") if q.strip()], f"{dataset}/{name}: no query names"
    assert dataset in PRESETS


def test_field_names_overrides_take_effect():
    # every override changes what class_queries returns for that class (otherwise it is dead)
    for dataset, over in FIELD_NAMES.items():
        queries = dict(zip(DATASET_CLASSES[dataset], class_queries(DATASET_CLASSES[dataset], "field", dataset),
                           strict=True))
        for name in over:
            assert queries[name] != [name], f"{dataset}/{name}: the field's names are not used"


def test_class_queries_voc21_field():
    got = class_queries(VOC_CLASSES, "field", "voc21")
    assert len(got) == 21
    special = {"background": STUFF, "tv monitor": TV, "person": PERSON, "boat": ["ship"],
               "dining table": ["table"], "potted plant": ["pottedplant"]}
    want = [special.get(c, [c]) for c in VOC_CLASSES]
    assert got == want
    assert len(got[0]) == 26 and len(got[VOC_CLASSES.index("tv monitor")]) == 5


def test_class_queries_voc20_and_coco_object():
    got20 = class_queries(VOC20_CLASSES, "field", "voc20")
    assert got20[VOC20_CLASSES.index("tv monitor")] == TV
    assert got20[VOC20_CLASSES.index("aeroplane")] == ["aeroplane"]
    assert all(STUFF[0] not in qs for qs in got20)  # no background in voc20
    coco = class_queries(COCO_OBJECT_CLASSES, "field", "coco-object")
    # "bed" is a COCO class: the background's stuff words leave it to that class (each query names one class)
    assert "bed" in STUFF and coco[0] == [w for w in STUFF if w != "bed"]
    assert coco[COCO_OBJECT_CLASSES.index("bed")] == ["bed"]
    flat = [q for qs in coco for q in qs]
    assert len(flat) == len(set(flat))
    Targets.classes(flat, templates="imagenet", contrast="none")  # what segment-eval builds: no duplicate refused
    assert coco[COCO_OBJECT_CLASSES.index("person")] == [*PERSON, "body"]
    others = [c for c in COCO_OBJECT_CLASSES if c not in ("background", "person")]
    assert [coco[COCO_OBJECT_CLASSES.index(c)] for c in others] == [[c] for c in others]


def test_class_queries_plain_and_unknown_data_set():
    names = ["background", "tv monitor", "cat"]
    assert class_queries(names, "plain", "voc21") == [["background"], ["tv monitor"], ["cat"]]
    # "field" for a data set without field names (or none): the class names
    assert class_queries(names, "field", "ade20k") == [["background"], ["tv monitor"], ["cat"]]
    assert class_queries(names, "field", None) == [["background"], ["tv monitor"], ["cat"]]


def test_class_queries_names_file(tmp_path):
    f = tmp_path / "names.txt"
    # a BOM, blank lines, stray spaces and trailing commas are tolerated
    f.write_text("\ufeffbg, sky ,wall\n\n   cat  \ndog, puppy,\n\n", encoding="utf-8")
    assert class_queries(["background", "cat", "dog"], str(f)) == [["bg", "sky", "wall"], ["cat"], ["dog", "puppy"]]
    with pytest.raises(InvalidInputError, match=r"has 3 non-empty lines but the data set has 4 classes"):
        class_queries(["background", "cat", "dog", "bird"], str(f))
    with pytest.raises(InvalidInputError, match=r"has 3 non-empty lines but the data set has 2 classes"):
        class_queries(["background", "cat"], str(f))
    with pytest.raises(InvalidInputError, match="is not a file"):
        class_queries(["background"], str(tmp_path / "missing.txt"))


# ---- presets and settings ---------------------------------------------------------------------------------------
def test_presets_and_protocol_for():
    assert protocol_for("voc21").prob_threshold == 0.1
    for name in ("context60", "coco-object"):  # the other sets with a background class
        assert protocol_for(name).prob_threshold == 0.1
    for name in ("voc20", "context59", "coco-stuff", "cityscapes", "ade20k"):
        assert protocol_for(name).prob_threshold == 0.0
    assert protocol_for("cityscapes").size == 560
    assert protocol_for("voc21").size == 336
    default = protocol_for("voc21")
    assert (default.fit, default.window, default.stride, default.logit_scale, default.templates, default.names) == (
        "short", 224, 112, 40.0, "imagenet", "field")
    # overrides; None values are ignored
    assert protocol_for("voc21", size=None, prob_threshold=None, window=None) == PRESETS["voc21"]
    p = protocol_for("voc21", size=448, logit_scale=None)
    assert p.size == 448 and p.prob_threshold == 0.1 and p.logit_scale == 40.0
    assert protocol_for("cityscapes", prob_threshold=0.2) == SegProtocol(size=560, prob_threshold=0.2)
    # unknown or no data set: the defaults
    assert protocol_for("not-a-set") == SegProtocol()
    assert protocol_for(None) == SegProtocol()
    toy = protocol_for("toy")
    assert (toy.fit, toy.size, toy.window, toy.stride, toy.templates, toy.names) == ("whole", 64, None, None, "none",
                                                                                     "plain")
    assert SegProtocol(**p.to_dict()) == p


@pytest.mark.parametrize("bad", [
    dict(fit="bogus"), dict(size=0), dict(size=-5), dict(window=224, stride=None), dict(window=None, stride=112),
    dict(window=224, stride=0), dict(window=224, stride=225), dict(window=224, stride=-1), dict(prob_threshold=-0.01),
    dict(prob_threshold=1.5), dict(prob_threshold=math.nan), dict(logit_scale=0.0), dict(logit_scale=-40.0),
    dict(templates="bogus"),
])
def test_invalid_protocol_values_are_refused(bad):
    with pytest.raises(InvalidInputError):
        SegProtocol(**bad)
    if None not in bad.values():  # replace() validates too (it ignores None values)
        with pytest.raises(InvalidInputError):
            SegProtocol().replace(**bad)


def test_valid_protocol_edges():
    SegProtocol(prob_threshold=0.0)
    SegProtocol(prob_threshold=1.0)
    SegProtocol(window=224, stride=224)
    SegProtocol(window=None, stride=None)
    for fit in ("whole", "squash", "crop", "short"):
        assert SegProtocol(fit=fit).fit == fit


@pytest.mark.parametrize("scale", [math.nan, math.inf])
def test_non_finite_logit_scale_is_refused(scale):
    with pytest.raises(InvalidInputError):
        SegProtocol(logit_scale=scale)


# ---- the per-pixel decision -------------------------------------------------------------------------------------
def _bilinear(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of ``[..., h, w]`` (align_corners=False: pixel centres, edge clamped), float64."""

    def weights(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    a = np.asarray(a, np.float64)
    y0, y1, ly = weights(a.shape[-2], out_h)
    x0, x1, lx = weights(a.shape[-1], out_w)
    rows = a[..., y0, :] * (1 - ly)[:, None] + a[..., y1, :] * ly[:, None]
    return rows[..., x0] * (1 - lx) + rows[..., x1] * lx


def _on_original(raw: np.ndarray, box, image_size) -> np.ndarray:
    """Maps over the model input -> over the original image: resized into the (rounded) box, NaN outside."""
    h0, w0 = image_size
    top, left, bottom, right = box
    bh, bw = max(1, round(bottom - top)), max(1, round(right - left))
    up = _bilinear(raw, bh, bw)
    out = np.full((raw.shape[0], h0, w0), np.nan)
    t0, l0 = round(top), round(left)
    for y in range(h0):
        for x in range(w0):
            if 0 <= y - t0 < bh and 0 <= x - l0 < bw:
                out[:, y, x] = up[:, y - t0, x - l0]
    return out


def _naive_labels(raw, box, image_size, owner, scale, threshold, background):
    """Per pixel: softmax over all queries of scale * score; the best query's class; below the threshold the
    background; unseen pixels 255. Also returns the top-2 logit gap and the best probability."""
    z = scale * _on_original(raw, box, image_size)  # [T, H0, W0]
    h0, w0 = image_size
    labels = np.empty((h0, w0), np.int64)
    gap = np.full((h0, w0), np.inf)
    prob = np.ones((h0, w0))
    best_q = np.full((h0, w0), -1)
    for y in range(h0):
        for x in range(w0):
            v = z[:, y, x]
            if np.isnan(v).any():
                labels[y, x] = 255
                continue
            q = int(np.argmax(v))
            e = np.exp(v - v[q])
            p = e / e.sum()
            s = np.sort(v)
            gap[y, x] = s[-1] - s[-2]
            prob[y, x] = p[q]
            best_q[y, x] = q
            labels[y, x] = owner[q]
            if threshold > 0 and p[q] < threshold:
                labels[y, x] = background
    return labels, gap, prob, best_q


def _maps(raw: np.ndarray, box, image_size) -> ImageMaps:
    return ImageMaps(torch.tensor(raw, dtype=torch.float32), (64, 64), image_size, box, "<test>", "raw")


@pytest.mark.parametrize("box", [(3.0, 5.0, 15.0, 21.0),  # inside the image: a border the model did not see
                                 (-2.0, 0.0, 10.0, 26.0),  # beyond the top (padding), short of the bottom
                                 (0.0, 0.0, 20.0, 26.0)])  # the whole image
def test_predict_labels_matches_naive(box):
    rng = np.random.default_rng(7)
    T, image_size, background, threshold, scale = 37, (20, 26), 0, 0.3, 40.0  # 37 queries: three chunks of 16
    owner = [0, 0, 0] + rng.integers(1, 6, T - 3).tolist()  # several queries per class
    raw = rng.normal(0.0, 0.06, (T, 3, 4)).astype(np.float32).astype(np.float64)
    got = predict_labels(_maps(raw, box, image_size), owner, logit_scale=scale, prob_threshold=threshold,
                         background=background)
    assert got.dtype == torch.int64 and tuple(got.shape) == image_size
    want, gap, prob, best_q = _naive_labels(raw, box, image_size, owner, scale, threshold, background)
    # float32 vs float64: leave out pixels whose decision is within rounding of a tie or of the threshold
    clear = (gap > 1e-3) & (np.abs(prob - threshold) > 1e-4)
    assert clear.mean() > 0.97
    np.testing.assert_array_equal(got.numpy()[clear], want[clear])
    seen = want != 255
    # the case has teeth: thresholded pixels, kept pixels, winners from a later chunk, unseen pixels where expected
    assert ((prob < threshold) & seen).sum() >= 5 and ((prob >= threshold) & seen & (want != 0)).sum() >= 5
    assert (best_q[seen] >= 16).sum() >= 5
    unseen_expected = box != (0.0, 0.0, 20.0, 26.0)
    assert (~seen).any() == unseen_expected
    np.testing.assert_array_equal(got.numpy() == 255, ~seen)  # exactly the unseen pixels are 255
    # without a threshold: the best query's class everywhere it saw
    got0 = predict_labels(_maps(raw, box, image_size), owner, logit_scale=scale, prob_threshold=0.0, background=None)
    want0, *_ = _naive_labels(raw, box, image_size, owner, scale, 0.0, background)
    clear0 = gap > 1e-3
    np.testing.assert_array_equal(got0.numpy()[clear0], want0[clear0])


def test_best_query_decides_not_the_class_sum():
    # p = softmax(40 * s) = [0.3, 0.3, 0.4]; queries 0 and 1 belong to class 1 (sum 0.6), query 2 to class 2
    p = np.array([0.3, 0.3, 0.4])
    s = np.log(p) / 40.0
    raw = np.broadcast_to(s[:, None, None], (3, 2, 2)).copy()
    maps = _maps(raw, (0.0, 0.0, 4.0, 4.0), (4, 4))

    def labels(threshold, owner=(1, 1, 2)):
        return predict_labels(maps, list(owner), logit_scale=40.0, prob_threshold=threshold, background=0).numpy()

    assert (labels(0.0) == 2).all()  # the best query's class, not the class with the largest summed probability
    assert (labels(0.35) == 2).all()  # 0.4 >= 0.35
    assert (labels(0.5) == 0).all()  # 0.4 < 0.5: background (a summed 0.6 would have kept class 1)
    assert (labels(0.0, owner=(3, 2, 3)) == 3).all()  # a class owning the best of several of its queries
    assert (labels(0.39) == 2).all() and (labels(0.41) == 0).all()


def test_predict_labels_refuses_mismatched_inputs():
    maps = _maps(np.zeros((3, 2, 2)), (0.0, 0.0, 4.0, 4.0), (4, 4))
    with pytest.raises(InvalidInputError, match="3 maps but 2 query classes"):
        predict_labels(maps, [0, 1], logit_scale=40.0, prob_threshold=0.0, background=0)
    with pytest.raises(InvalidInputError, match="needs a background class"):
        predict_labels(maps, [0, 1, 1], logit_scale=40.0, prob_threshold=0.1, background=None)


def test_predict_labels_on_a_real_cropped_map():
    # the toy model's own maps of a non-square image with the model's crop: the sides it did not see are 255
    import cliplens
    from cliplens.maps import get_map

    model = cliplens.load("toy")
    rng = np.random.default_rng(0)
    image = np.full((24, 40, 3), 128, np.uint8)
    image[6:18, 14:26] = (220, 30, 30)
    image[:, :3] = rng.integers(0, 255, (24, 3, 3))
    texts = ["background", "red square", "blue circle", "green star", "red circle"]
    maps = get_map("maskclip")(model, [image], texts, fit="crop", normalization="raw")
    item = maps.images[0]
    assert item.box[1] > 0 and item.box[3] < 40  # the crop left columns out
    owner = [0, 1, 2, 3, 1]
    got = predict_labels(item, owner, logit_scale=40.0, prob_threshold=0.25, background=0).numpy()
    want, gap, prob, _ = _naive_labels(item.raw.double().numpy(), item.box, item.image_size, owner, 40.0, 0.25, 0)
    clear = (gap > 1e-3) & (np.abs(prob - 0.25) > 1e-4)
    assert clear.mean() > 0.97
    np.testing.assert_array_equal(got[clear], want[clear])
    left, right = round(item.box[1]), round(item.box[3])
    assert (got[:, :left] == 255).all() and (got[:, right:] == 255).all() and (got[:, left:right] != 255).all()


def test_each_query_names_one_class(tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("sky, cloud, Sky\nroad, street\ncar, cloud\n")
    with pytest.raises(InvalidInputError, match=r"the query 'cloud' names two classes, 'a' and 'c' \(lines 1 and 3 of"):
        class_queries(["a", "b", "c"], str(f))
    f.write_text("sky, cloud, Sky\nroad,  street , road\ncar\n")
    assert class_queries(["a", "b", "c"], str(f)) == [["sky", "cloud"], ["road", "street"], ["car"]]
    with pytest.raises(InvalidInputError, match="have the same name"):
        class_queries(["cat", "Cat "], "plain")
