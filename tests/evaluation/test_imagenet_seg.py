"""The ImageNet-segmentation protocol on a tiny ``gtsegs_ijcv.mat``: the mask transform of both modes, and the
pooled metrics recomputed from each image's foreground prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cliplens
import cliplens.evaluation.imagenet_seg as imagenet_seg
from cliplens.datasets import open_segmentation
from cliplens.errors import InvalidInputError
from cliplens.evaluation.imagenet_seg import evaluate_imagenet_seg, transform_mask
from cliplens.maps import get_map
from cliplens.maps.inputs import fit_images
from cliplens.maps.targets import Targets
from tests.datasets.mat_files import write_imagenet_seg_mat

CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]
SIZE = (64, 64)  # the toy model's input


def _disk(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1).astype(np.uint8)


def _rows() -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask): a square one first, then two non-square ones (wide and tall)."""
    rows = []
    for (h, w), colour, (cy, cx, ry, rx) in (
        ((48, 48), (40, 200, 40), (0.5, 0.45, 0.3, 0.25)),
        ((60, 80), (220, 30, 30), (0.45, 0.62, 0.3, 0.22)),
        ((90, 50), (30, 30, 220), (0.4, 0.5, 0.18, 0.35)),
    ):
        mask = _disk(h, w, cy * h, cx * w, ry * h, rx * w)
        image = np.full((h, w, 3), 110, np.uint8)
        image[mask == 1] = colour
        rows.append((image, mask))
    return rows


@pytest.fixture(scope="module")
def model():
    return cliplens.load("toy")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagenet-seg")
    write_imagenet_seg_mat(folder / "gtsegs_ijcv.mat", _rows())
    ds = open_segmentation(folder)
    assert ds.layout == "imagenet-seg" and len(ds) == 3
    return ds


def _box(model, mask: np.ndarray):
    return model.preprocess_config.input_box(*mask.shape)


def _seen_mask(model, mask: np.ndarray) -> np.ndarray:
    """What the model sees of the mask: the mask drawn as an image, through the model's own resize and crop."""
    image = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    fitted, _ = fit_images(model, [image], fit="crop")
    cfg = model.preprocess_config
    grey = fitted[0].pixels[0].numpy() * cfg.std[0] + cfg.mean[0]
    return grey > 0.5


# ---- the mask transform -----------------------------------------------------------------------------------------
def test_transform_mask_exact_on_integer_geometry(model):
    # a 32x64 image: resized to 64x128 and cropped to columns 32..96, i.e. original columns 16..48, each pixel
    # doubled; here every nearest-neighbour convention agrees, so the naive index maps are exact
    rng = np.random.default_rng(0)
    mask = (rng.random((32, 64)) < 0.4).astype(np.uint8)
    box = _box(model, mask)
    assert box == (0.0, 16.0, 32.0, 48.0)
    r, c = np.arange(64), np.arange(64)
    original = mask[np.ix_(r // 2, c)]  # the whole image squashed to 64x64
    correct = mask[np.ix_(r // 2, 16 + c // 2)]  # the crop the model sees
    got_o = transform_mask(mask, box, SIZE, "original")
    got_c = transform_mask(mask, box, SIZE, "correct")
    assert got_o.dtype == np.int64 and got_o.shape == SIZE and got_c.shape == SIZE
    np.testing.assert_array_equal(got_o, original)
    np.testing.assert_array_equal(got_c, correct)
    assert (got_o != got_c).any()


@pytest.mark.parametrize("row", [0, 1, 2])
def test_correct_mode_is_aligned_with_what_the_model_sees(model, row):
    _, mask = _rows()[row]
    box = _box(model, mask)
    seen = _seen_mask(model, mask)
    correct = transform_mask(mask, box, SIZE, "correct") == 1
    original = transform_mask(mask, box, SIZE, "original") == 1
    off_correct, off_original = (correct != seen).mean(), (original != seen).mean()
    assert off_correct < 0.04  # at most a pixel along the edges
    if mask.shape[0] == mask.shape[1]:
        np.testing.assert_array_equal(correct, original)  # a square image: nothing is cropped
    else:
        assert off_original > 0.05 and off_original > 3 * off_correct  # the original's mask is misplaced


def test_modes_agree_on_square_images(model):
    for h in (48, 64, 100):
        mask = _disk(h, h, 0.4 * h, 0.55 * h, 0.3 * h, 0.2 * h)
        box = _box(model, mask)
        np.testing.assert_array_equal(transform_mask(mask, box, SIZE, "original"),
                                      transform_mask(mask, box, SIZE, "correct"))


@pytest.mark.parametrize("row", [1, 2])
def test_original_mode_is_pil_nearest(row):
    from PIL import Image

    _, mask = _rows()[row]
    want = np.asarray(Image.fromarray(mask).resize(SIZE[::-1], Image.NEAREST))
    got = transform_mask(mask, (0.0, 0.0, *map(float, mask.shape)), SIZE, "original")
    assert (got != want).sum() <= 8  # a few pixels of slack: floating-point ties between conventions


@pytest.mark.parametrize("row", [1, 2])
def test_correct_mode_is_the_images_own_resize_and_crop(model, row):
    from PIL import Image

    _, mask = _rows()[row]
    cfg = model.preprocess_config
    rh, rw = cfg.resize_output_size(*mask.shape)
    top, left = cfg.crop_window(rh, rw)
    want = np.asarray(Image.fromarray(mask).resize((rw, rh), Image.NEAREST))[top:top + SIZE[0], left:left + SIZE[1]]
    got = transform_mask(mask, _box(model, mask), SIZE, "correct")
    assert (got != want).sum() <= 8  # a few pixels of slack: floating-point ties between conventions


def test_invalid_mode_is_refused(model, dataset):
    with pytest.raises(InvalidInputError, match="mode must be one of original, correct"):
        transform_mask(np.zeros((4, 4), np.uint8), (0.0, 0.0, 4.0, 4.0), SIZE, "bogus")
    with pytest.raises(InvalidInputError, match="mode must be one of original, correct"):
        evaluate_imagenet_seg(model, "maskclip", dataset, mode="bogus", class_names=CLASSES, templates="none")


# ---- the evaluation ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(model, dataset, tmp_path_factory):
    """Both modes, with each image's map, mask and foreground as score_map saw them."""
    out = {}
    real = imagenet_seg.score_map

    def spy_into(seen):
        def spy(m, mask, **kwargs):
            s = real(m, mask, **kwargs)
            seen.append({"raw": torch.as_tensor(m).clone(), "mask": np.array(mask, copy=True),
                         "pred": s["pred"].copy(), "norm": s["normalized"].copy()})
            return s

        return spy

    with pytest.MonkeyPatch.context() as mp:
        for mode in ("original", "correct"):
            seen: list[dict] = []
            mp.setattr(imagenet_seg, "score_map", spy_into(seen))
            folder = tmp_path_factory.mktemp(f"run-{mode}")
            result = evaluate_imagenet_seg(model, "maskclip", dataset, mode=mode, class_names=CLASSES,
                                           templates="none", out_dir=folder)
            out[mode] = (result, seen, folder)
    return out


@pytest.mark.parametrize("mode", ["original", "correct"])
def test_metrics_from_the_per_image_foregrounds(runs, dataset, model, mode):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    result, seen, folder = runs[mode]
    assert result["images"] == 3 and len(seen) == 3 and result["settings"]["mode"] == mode
    correct = pixels = 0
    inter = {"fg": 0, "bg": 0}
    union = {"fg": 0, "bg": 0}
    aps = []
    for i, s in enumerate(seen):
        mask, pred, norm = s["mask"], s["pred"], s["norm"]
        # the mask compared is the image's mask through this mode's transform
        gt = dataset.mask(i)
        np.testing.assert_array_equal(mask, transform_mask(gt, _box(model, gt), SIZE, mode) == 1)
        assert mask.shape == pred.shape == SIZE and 0 < pred.sum() < pred.size
        correct += int((pred == mask).sum())
        pixels += mask.size
        inter["fg"] += int((pred & mask).sum())
        union["fg"] += int((pred | mask).sum())
        inter["bg"] += int((~pred & ~mask).sum())
        union["bg"] += int((~pred | ~mask).sum())
        y = np.concatenate([~mask.ravel(), mask.ravel()])
        aps.append(sklearn_metrics.average_precision_score(y, np.concatenate([1 - norm.ravel(), norm.ravel()])))
    iou_fg, iou_bg = inter["fg"] / union["fg"], inter["bg"] / union["bg"]
    assert abs(result["pixel_accuracy"] - 100 * correct / pixels) < 1e-9
    assert abs(result["miou"] - 100 * (iou_fg + iou_bg) / 2) < 1e-9
    assert abs(result["iou"]["foreground"] - 100 * iou_fg) < 1e-9
    assert abs(result["iou"]["background"] - 100 * iou_bg) < 1e-9
    assert abs(result["map"] - 100 * float(np.mean(aps))) < 1e-9
    assert 0 < result["miou"] < 100
    assert json.loads((folder / "results.json").read_text()) == json.loads(json.dumps(result))


def test_map_is_the_zero_shot_class_map(runs, dataset, model):
    # image 2: the class explained is the model's zero-shot prediction; its map is the method's raw map
    _, seen, _ = runs["correct"]
    image = dataset[2].image
    fitted, _ = fit_images(model, [image], fit="crop")
    with torch.no_grad():
        emb = F.normalize(model.encode_image(fitted[0].pixels[None]).float(), dim=-1)
    texts = Targets.texts(CLASSES).embed(model).directions.float()
    pred = int((emb @ texts.T).argmax())
    want = get_map("maskclip")(model, [image], [CLASSES[pred]], fit="crop", normalization="raw").images[0].raw[0]
    torch.testing.assert_close(seen[2]["raw"].float(), want, rtol=1e-5, atol=1e-6)


def test_modes_differ_only_on_non_square_images(runs):
    (r_o, seen_o, _), (r_c, seen_c, _) = runs["original"], runs["correct"]
    for a, b in zip(seen_o, seen_c, strict=True):
        torch.testing.assert_close(a["raw"], b["raw"])  # the same maps and foregrounds: only the masks differ
        np.testing.assert_array_equal(a["pred"], b["pred"])
    np.testing.assert_array_equal(seen_o[0]["mask"], seen_c[0]["mask"])  # the square image

    def scores(s):
        m, p = s["mask"], s["pred"]
        return (p == m).mean(), (p & m).sum() / (p | m).sum()

    assert scores(seen_o[0]) == scores(seen_c[0])
    for k in (1, 2):  # the non-square ones
        assert (seen_o[k]["mask"] != seen_c[k]["mask"]).mean() > 0.05
        assert scores(seen_o[k]) != scores(seen_c[k])
    assert r_o["pixel_accuracy"] != r_c["pixel_accuracy"] and r_o["miou"] != r_c["miou"]


# ---- defaults, interruptions, overlays -----------------------------------------------------------------------
def test_the_default_mode_is_correct(runs, model, dataset, tmp_path):
    import inspect

    assert inspect.signature(evaluate_imagenet_seg).parameters["mode"].default == "correct"
    result = evaluate_imagenet_seg(model, "maskclip", dataset, class_names=CLASSES, templates="none")
    want = runs["correct"][0]
    assert result["settings"]["mode"] == "correct"
    assert {k: result[k] for k in ("pixel_accuracy", "miou", "map", "iou")} == \
        {k: want[k] for k in ("pixel_accuracy", "miou", "map", "iou")}


def test_ctrl_c_mid_run_resumes_to_the_uninterrupted_result(runs, model, dataset, tmp_path):
    out = tmp_path / "run"
    seen = []

    def stop_after_image_1(done, total):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_imagenet_seg(model, "maskclip", dataset, mode="correct", class_names=CLASSES, templates="none",
                              out_dir=out, on_image=stop_after_image_1)
    assert json.loads((out / "progress.json").read_text())["state"]["done"] == 2  # saved on the way out
    seen.clear()
    result = evaluate_imagenet_seg(model, "maskclip", dataset, mode="correct", class_names=CLASSES,
                                   templates="none", out_dir=out, on_image=lambda d, n: seen.append(d))
    assert seen == [3]  # only the image not done
    want = runs["correct"][0]
    for k in ("pixel_accuracy", "miou", "map", "iou", "images"):
        assert result[k] == want[k], k


def test_progress_is_written_before_any_work(model, dataset, tmp_path):
    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):
        evaluate_imagenet_seg(model, "maskclip", dataset, class_names=CLASSES, templates="none", out_dir=out,
                              limit=1, save_every=10, on_image=stop)
    assert json.loads((out / "progress.json").read_text())["settings"]["mode"] == "correct"


def test_overlays_show_what_was_compared(model, dataset, tmp_path):
    out = tmp_path / "run"
    views = {}

    def draw(path, i, sample, view):
        views[i] = view
        path.write_bytes(b"png")

    result = evaluate_imagenet_seg(model, "maskclip", dataset, mode="original", class_names=CLASSES,
                                   templates="none", out_dir=out, overlays=2, draw_overlay=draw)
    assert sorted(views) == [0, 1]
    assert result["overlays"] == [str(out / "overlays" / f"{i:05d}.png") for i in range(2)]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["00000.png", "00001.png"]
    v = views[1]
    gt = dataset.mask(1)
    np.testing.assert_array_equal(v["mask"], transform_mask(gt, _box(model, gt), SIZE, "original"))
    assert v["image"].shape == (*SIZE, 3) and 0.0 <= v["image"].min() and v["image"].max() <= 1.0
    assert v["map"].shape == SIZE and v["foreground"].shape == SIZE and v["mode"] == "original"
    np.testing.assert_array_equal(v["foreground"], v["map"] >= v["map"].mean())
    assert v["class"] in CLASSES
    with pytest.raises(InvalidInputError, match="pass out_dir"):
        evaluate_imagenet_seg(model, "maskclip", dataset, class_names=CLASSES, templates="none", overlays=1,
                              draw_overlay=draw)


def test_a_folder_holds_one_image_set(model, dataset, tmp_path):
    out = tmp_path / "run"
    kw = dict(class_names=CLASSES, templates="none", out_dir=out)
    two = evaluate_imagenet_seg(model, "maskclip", dataset, limit=2, **kw)
    assert two["images"] == 2 and two["settings"]["image_set"]["count"] == 2
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    seen = []
    with pytest.raises(InvalidInputError, match=r"over 2 images \(the first 2\), 2 done; this command asks for 1 "
                                                r"image \(the first 1\)"):
        evaluate_imagenet_seg(model, "maskclip", dataset, limit=1, on_image=lambda d, n: seen.append(d), **kw)
    assert seen == [] and {p.name: p.read_bytes() for p in out.iterdir()} == before
    whole = evaluate_imagenet_seg(model, "maskclip", dataset, on_image=lambda d, n: seen.append(d), **kw)
    direct = evaluate_imagenet_seg(model, "maskclip", dataset, class_names=CLASSES, templates="none")
    assert seen == [3] and whole["images"] == 3
    for k in ("pixel_accuracy", "miou", "map", "iou"):
        assert whole[k] == direct[k], k


def test_the_default_classes_are_the_1000_imagenet_names(model, dataset):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the toy model knows none of ImageNet's words
        r = evaluate_imagenet_seg(model, "maskclip", dataset, templates="none", limit=1)
    assert r["settings"]["classes"] == 998 and r["images"] == 1  # "missile" and "sunglasses" are two classes each
