"""``evaluate_segmentation`` on a few toy scenes: metrics recomputed by hand (and with torchmetrics) from the
predictions it reports, the decision against the method's own maps, resuming after a crash or a limit, and
refusing folders that hold something else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.datasets import open_segmentation
from cliplens.errors import InvalidInputError
from cliplens.evaluation.protocol import PRESETS
from cliplens.evaluation.segeval import PROGRESS, RESULTS, evaluate_segmentation, read_results
from cliplens.maps import get_map

N = 4
METHOD = "maskclip"
#: the toy preset with a background threshold (so that the threshold's path runs too)
PROTOCOL = PRESETS["toy"].replace(prob_threshold=0.2)


class WithIgnore:
    """A toy segmentation set whose masks have ignored (255) pixels: the top rows and one column band."""

    def __init__(self, base, background="same"):
        self.base = base
        self.name = base.name
        self.preset = base.preset
        self.ids = base.ids
        self.class_names = list(base.class_names)
        self.background = base.background if background == "same" else background
        self.ignore_index = 255

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]

    def mask(self, i):
        m = np.array(self.base.mask(i), copy=True)
        m[:5] = 255
        m[:, 40:44] = 255
        return m

    def describe(self):
        return {**self.base.describe(), "ignore": "rows 0-4, columns 40-43"}


def _dataset(seed: int = 3) -> WithIgnore:
    return WithIgnore(open_segmentation(f"toy:n={N},seed={seed}"))


@pytest.fixture(scope="module")
def model():
    return cliplens.load("toy")


@pytest.fixture(scope="module")
def reference(model):
    """One uninterrupted run with each image's prediction."""
    preds = []
    result = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL,
                                   on_prediction=lambda i, s, gt, p: preds.append((i, gt.copy(), p.copy())))
    return result, preds


def _confusion(preds, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    for _, gt, p in preds:
        keep = gt != 255
        np.add.at(cm, (gt[keep].astype(np.int64), p[keep].astype(np.int64)), 1)
    return cm


def _same_result(a, b) -> None:
    assert a.miou == b.miou and a.pixel_accuracy == b.pixel_accuracy and a.per_class_iou == b.per_class_iou
    assert torch.equal(a.confusion.matrix, b.confusion.matrix) and a.images == b.images


def test_metrics_match_a_hand_made_confusion_matrix(reference):
    result, preds = reference
    ds = _dataset()
    C = len(ds.class_names)
    assert [i for i, _, _ in preds] == list(range(N)) and result.images == N
    for i, gt, p in preds:
        np.testing.assert_array_equal(gt, ds.mask(i))
        assert p.shape == gt.shape and p.min() >= 0 and p.max() < C
    cm = _confusion(preds, C)
    assert cm.sum() == sum(int((gt != 255).sum()) for _, gt, _ in preds) < N * 64 * 64  # ignored pixels left out
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    miou = 100 * float(np.mean(tp[present] / union[present]))
    accuracy = 100 * float(tp.sum() / cm.sum())
    assert present.sum() >= 4 and 0 < miou < 100 and 0 < accuracy < 100  # a case with teeth
    assert abs(result.miou - miou) < 1e-9 and abs(result.pixel_accuracy - accuracy) < 1e-9
    for k, name in enumerate(ds.class_names):
        got = result.per_class_iou[name]
        if present[k]:
            assert got is not None and abs(got - 100 * tp[k] / union[k]) < 1e-9
        else:
            assert got is None
    np.testing.assert_array_equal(result.confusion.matrix[:, :C].numpy(), cm)
    assert int(result.confusion.matrix[:, C].sum()) == 0


def test_metrics_agree_with_torchmetrics(reference):
    tm = pytest.importorskip("torchmetrics.functional.classification")
    result, preds = reference
    C = len(_dataset().class_names)
    p = torch.from_numpy(np.concatenate([q.ravel() for _, _, q in preds]).astype(np.int64))
    t = torch.from_numpy(np.concatenate([g.ravel() for _, g, _ in preds]).astype(np.int64))
    miou = tm.multiclass_jaccard_index(p, t, num_classes=C, average="macro", ignore_index=255)
    acc = tm.multiclass_accuracy(p, t, num_classes=C, average="micro", ignore_index=255)
    assert result.miou == pytest.approx(100 * float(miou), rel=1e-5)
    assert result.pixel_accuracy == pytest.approx(100 * float(acc), rel=1e-5)
    per_class = tm.multiclass_jaccard_index(p, t, num_classes=C, average="none", ignore_index=255)
    for name, v in zip(_dataset().class_names, per_class.tolist(), strict=True):
        if result.per_class_iou[name] is not None:
            assert result.per_class_iou[name] == pytest.approx(100 * v, rel=1e-5, abs=1e-4)


def test_predictions_follow_the_protocol(model, reference):
    # image 0's labels recomputed from the method's own raw maps: softmax over the queries of 40 * score, the best
    # query's class, background where its probability is below 0.2
    _, preds = reference
    ds = _dataset()
    maps = get_map(METHOD)(model, [ds[0].image], list(ds.class_names), fit="whole", size=64, normalization="raw")
    raw = maps.images[0].raw.double()
    z = 40.0 * F.interpolate(raw[None], size=(64, 64), mode="bilinear", align_corners=False)[0].numpy()
    best = z.argmax(0)
    zs = np.sort(z, 0)
    prob = 1.0 / np.exp(z - zs[-1]).sum(0)
    want = np.where(prob < 0.2, 0, best)  # class k's only query is its name (names "plain")
    clear = (zs[-1] - zs[-2] > 1e-3) & (np.abs(prob - 0.2) > 1e-4)
    assert clear.mean() > 0.97
    assert (prob < 0.2).any() and ((prob >= 0.2) & (best != 0)).any()  # the threshold matters here
    np.testing.assert_array_equal(preds[0][2][clear], want[clear])


def test_resume_after_a_limit_and_after_a_crash(model, reference, tmp_path):
    ref, preds = reference
    C = len(_dataset().class_names)
    out = tmp_path / "run"
    calls = []

    def count(done, total):
        calls.append((done, total))

    # 1. the first image only (limit)
    first = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=1, on_image=count,
                                  on_prediction=lambda i, s, gt, p: f"overlay-{i}")
    assert calls == [(1, 1)] and first.images == 1 and read_results(out)["images"] == 1
    np.testing.assert_array_equal(first.confusion.matrix[:, :C].numpy(), _confusion(preds[:1], C))

    # 2. resumed without a limit, then a crash while image 2 is being handled (after image 1 was saved)
    class Crash(Exception):
        pass

    def crash_on_third(i, sample, gt, pred):
        if i == 2:
            raise Crash
        return f"overlay-{i}"

    calls.clear()
    with pytest.raises(Crash):
        evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, save_every=1, on_image=count,
                              on_prediction=crash_on_third)
    assert calls == [(2, N)]  # resumed after image 0
    saved = json.loads((out / PROGRESS).read_text())
    assert saved["state"]["done"] == 2
    np.testing.assert_array_equal(np.array(saved["state"]["confusion"])[:, :C], _confusion(preds[:2], C))

    # 3. resumed again: only the images not saved
    calls.clear()
    result = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, save_every=1,
                                   on_image=count, on_prediction=lambda i, s, gt, p: f"overlay-{i}")
    assert calls == [(3, N), (4, N)]
    _same_result(result, ref)
    assert result.overlays == [f"overlay-{i}" for i in range(N)]
    saved = json.loads((out / PROGRESS).read_text())
    assert saved["state"]["done"] == N and saved["state"]["confusion"] == ref.confusion.matrix.tolist()
    on_disk = read_results(out)
    assert on_disk == json.loads(json.dumps(result.to_dict()))
    assert on_disk["miou"] == ref.miou and on_disk["pixel_accuracy"] == ref.pixel_accuracy and on_disk["images"] == N

    # 4. a finished run: nothing left to do, the same result
    calls.clear()
    again = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, on_image=count)
    assert calls == []
    _same_result(again, ref)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_folder_with_another_run_is_refused_and_left_alone(model, tmp_path):
    out = tmp_path / "run"
    evaluate_segmentation(model, METHOD, _dataset(), out_dir=out, limit=1)  # protocol: the data set's preset
    before = _snapshot(out)
    assert set(before) == {PROGRESS, RESULTS}
    calls = []

    def attempt(**kwargs):
        with pytest.raises(InvalidInputError) as e:
            evaluate_segmentation(model, kwargs.pop("method", METHOD), kwargs.pop("dataset", _dataset()), out_dir=out,
                                  limit=1, on_image=lambda d, n: calls.append(d), **kwargs)
        return str(e.value)

    msg = attempt(method="sclip")
    assert "method" in msg and "maskclip" in msg and "sclip" in msg
    # the saved run used the default protocol, the toy preset: only the changed setting differs
    msg = attempt(protocol=PRESETS["toy"].replace(logit_scale=50.0))
    assert "protocol.logit_scale" in msg and "40.0" in msg and "50.0" in msg and msg.count("protocol.") == 1
    msg = attempt(protocol=PRESETS["toy"].replace(prob_threshold=0.3))
    assert "protocol.prob_threshold" in msg and msg.count("protocol.") == 1
    msg = attempt(dataset=_dataset(seed=4))
    assert "dataset" in msg
    assert calls == [] and _snapshot(out) == before


def test_a_folder_with_unrelated_files_is_refused(model, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="holds other files"):
        evaluate_segmentation(model, METHOD, _dataset(), out_dir=out, limit=1)
    assert _snapshot(out) == {"notes.txt": b"keep me"}
    (out / "notes.txt").unlink()
    (out / PROGRESS).write_text("{ not json")
    with pytest.raises(InvalidInputError, match="is not readable progress"):
        evaluate_segmentation(model, METHOD, _dataset(), out_dir=out, limit=1)
    assert _snapshot(out) == {PROGRESS: b"{ not json"}


def test_progress_that_is_not_an_object_is_refused(model, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / PROGRESS).write_text("[]")
    with pytest.raises(InvalidInputError):
        evaluate_segmentation(model, METHOD, _dataset(), out_dir=out, limit=1)


def test_refusals_before_any_work(model):
    calls = []
    with pytest.raises(InvalidInputError, match="needs a data set with a background class"):
        evaluate_segmentation(model, METHOD, WithIgnore(open_segmentation("toy:n=2"), background=None),
                              protocol=PRESETS["toy"].replace(prob_threshold=0.1), on_image=lambda d, n: calls.append(d))
    with pytest.raises(InvalidInputError, match="no images"):
        evaluate_segmentation(model, METHOD, _dataset(), limit=0, on_image=lambda d, n: calls.append(d))
    assert calls == []


# ---- interrupted runs ------------------------------------------------------------------------------------------
LONG = 6  # images of the interrupted runs


def _long() -> WithIgnore:
    return WithIgnore(open_segmentation(f"toy:n={LONG},seed=3"))


@pytest.fixture(scope="module")
def long_reference(model):
    return evaluate_segmentation(model, METHOD, _long(), protocol=PROTOCOL)


class Stop(Exception):
    pass


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_ctrl_c_mid_run_with_overlays_resumes_to_the_uninterrupted_result(model, long_reference, tmp_path):
    # overlays from image 0 (as the command writes them) and Ctrl-C after image 3, before any periodic save
    out = tmp_path / "run"
    seen = []

    def overlay(i, sample, gt, pred):
        path = out / "overlays" / f"{i:05d}.png"
        _write(path, f"overlay of image {i}")
        return str(path)

    def stop_after_image_3(done, total):
        seen.append(done)
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_segmentation(model, METHOD, _long(), protocol=PROTOCOL, out_dir=out, on_prediction=overlay,
                              on_image=stop_after_image_3)
    assert seen == [1, 2, 3, 4]
    saved = json.loads((out / PROGRESS).read_text())["state"]
    assert saved["done"] == 4  # saved on the way out: nothing finished is lost
    seen.clear()
    result = evaluate_segmentation(model, METHOD, _long(), protocol=PROTOCOL, out_dir=out, on_prediction=overlay,
                                   on_image=lambda d, n: seen.append(d))
    assert seen == [5, 6]  # only the images not done
    _same_result(result, long_reference)
    assert result.overlays == [str(out / "overlays" / f"{i:05d}.png") for i in range(LONG)]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"{i:05d}.png" for i in range(LONG)]


def test_progress_is_written_before_any_work(model, tmp_path):
    # stopped while the very first image is read: the folder is already this run's, and resumes
    class StopAtFirst(WithIgnore):
        def __getitem__(self, i):
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        evaluate_segmentation(model, METHOD, StopAtFirst(open_segmentation(f"toy:n={N},seed=3")), protocol=PROTOCOL,
                              out_dir=out)
    saved = json.loads((out / PROGRESS).read_text())
    assert saved["state"]["done"] == 0 and saved["settings"]["method"]["method"] == METHOD
    result = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=1)
    assert result.images == 1


def test_an_error_mid_run_keeps_the_images_done(model, long_reference, tmp_path):
    class BadMaskAt4(WithIgnore):
        def mask(self, i):
            m = super().mask(i)
            return m[:-1] if i == 4 and self.bad else m

    out = tmp_path / "run"
    ds = BadMaskAt4(open_segmentation(f"toy:n={LONG},seed=3"))
    ds.bad = True
    with pytest.raises(InvalidInputError, match="masks must match their images"):
        evaluate_segmentation(model, METHOD, ds, protocol=PROTOCOL, out_dir=out)
    assert json.loads((out / PROGRESS).read_text())["state"]["done"] == 4
    ds.bad = False  # the data fixed (the same description): the run resumes at image 4
    seen = []
    result = evaluate_segmentation(model, METHOD, ds, protocol=PROTOCOL, out_dir=out, on_image=lambda d, n: seen.append(d))
    assert seen == [5, 6]
    _same_result(result, long_reference)


def test_overlays_of_a_redone_image_replace_the_runs_own_and_never_a_users(model, long_reference, tmp_path):
    out = tmp_path / "run"
    drawn = []

    def draw(path, i, sample, gt, pred):
        drawn.append(i)
        path.write_text(f"overlay of image {i}, labels {int(pred.sum())}")
        if i == 2 and len(drawn) == 3:
            raise KeyboardInterrupt  # while image 2's overlay is being written

    with pytest.raises(KeyboardInterrupt):
        evaluate_segmentation(model, METHOD, _long(), protocol=PROTOCOL, out_dir=out, overlays=5, draw_overlay=draw)
    saved = json.loads((out / PROGRESS).read_text())["state"]
    assert saved["done"] == 2 and saved["drawing"] == "overlays/00002.png"
    # nothing half-written under an overlay's name, no temporary file left
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["00000.png", "00001.png"]
    # as if the interrupt had come after image 2's overlay got its name: that file is the run's own
    (out / "overlays" / "00002.png").write_text("half an overlay")
    (out / "overlays" / "00004.png").write_text("a user's file")  # not the run's
    with pytest.warns(UserWarning, match="00004.png was not written by this run"):
        result = evaluate_segmentation(model, METHOD, _long(), protocol=PROTOCOL, out_dir=out, overlays=5,
                                       draw_overlay=draw)
    _same_result(result, long_reference)
    assert drawn == [0, 1, 2, 2, 3, 4]
    folder = out / "overlays"
    assert (folder / "00002.png").read_text().startswith("overlay of image 2")
    assert (folder / "00004.png").read_text() == "a user's file"
    assert (folder / "00004-2.png").read_text().startswith("overlay of image 4")
    assert result.overlays == [str(folder / n) for n in ("00000.png", "00001.png", "00002.png", "00003.png",
                                                         "00004-2.png")]
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png", "00003.png",
                                                        "00004-2.png", "00004.png"]
    assert "drawing" not in json.loads((out / PROGRESS).read_text())["state"]


def test_overlays_need_a_folder(model):
    with pytest.raises(InvalidInputError, match="pass out_dir"):
        evaluate_segmentation(model, METHOD, _dataset(), overlays=1, draw_overlay=lambda *a: None)


# ---- the image set a folder holds -------------------------------------------------------------------------------
def test_a_folder_holds_one_image_set_smaller_is_refused_larger_extends(model, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    three = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=3)
    assert three.images == 3 and three.settings["image_set"]["count"] == 3 and three.settings["image_set"]["limit"] == 3
    assert read_results(out)["settings"]["image_set"] == three.settings["image_set"]
    before = _snapshot(out)
    calls = []
    # fewer images than the run has done: refused, never reported as the earlier run's 3
    with pytest.raises(InvalidInputError) as e:
        evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=2,
                              on_image=lambda d, n: calls.append(d))
    msg = str(e.value)
    assert "over 3 images (the first 3), 3 done" in msg and "asks for 2 images (the first 2)" in msg
    assert "--new-run" in msg and "--out" in msg and "\n" not in msg
    assert calls == [] and _snapshot(out) == before
    # the same set again: nothing to do, the same result
    again = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=3,
                                  on_image=lambda d, n: calls.append(d))
    assert calls == [] and again.images == 3 and again.miou == three.miou
    # a larger set begins with the images done: the run is extended, and equals an uninterrupted run
    whole = evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out,
                                  on_image=lambda d, n: calls.append(d))
    assert calls == [N] and whole.settings["image_set"] == {**whole.settings["image_set"], "count": N, "limit": None}
    _same_result(whole, ref)
    saved = json.loads((out / PROGRESS).read_text())
    assert saved["settings"]["image_set"]["count"] == N and read_results(out)["images"] == N


def test_images_done_that_do_not_begin_the_set_asked_are_refused(model, tmp_path):
    out = tmp_path / "run"
    evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=2)
    before = _snapshot(out)

    class Reordered(WithIgnore):  # the same data set (same record) listing its images in another order
        def __init__(self, base):
            super().__init__(base)
            self.ids = list(reversed(base.ids))

    with pytest.raises(InvalidInputError, match="are not the first 2 of the images asked"):
        evaluate_segmentation(model, METHOD, Reordered(open_segmentation(f"toy:n={N},seed=3")), protocol=PROTOCOL,
                              out_dir=out, limit=2)
    assert _snapshot(out) == before
    # progress of an older cliplens (no image set recorded): the same count resumes, another is refused
    saved = json.loads((out / PROGRESS).read_text())
    del saved["settings"]["image_set"], saved["state"]["done_ids_sha256"]
    (out / PROGRESS).write_text(json.dumps(saved))
    assert evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=2).images == 2
    saved = json.loads((out / PROGRESS).read_text())
    del saved["settings"]["image_set"], saved["state"]["done_ids_sha256"]
    (out / PROGRESS).write_text(json.dumps(saved))
    with pytest.raises(InvalidInputError, match="recorded 2 images and not which"):
        evaluate_segmentation(model, METHOD, _dataset(), protocol=PROTOCOL, out_dir=out, limit=3)


def test_the_preset_is_the_layouts_not_the_name(model, tmp_path):
    ds = _dataset()
    ds.name = "cityscapes"  # a name says nothing about the protocol
    r = evaluate_segmentation(model, METHOD, ds, limit=1)
    assert r.settings["protocol"] == PRESETS["toy"].to_dict()


def test_text_independent_methods_are_refused(model):
    for name in ("raw-attention", "rollout", "uniform"):
        with pytest.raises(InvalidInputError, match="ignores the text: every class would get the same map"):
            evaluate_segmentation(model, name, _dataset(), limit=1)


def test_the_methods_own_label_step_is_applied(model, reference):
    """A method's correct_labels (CorrCLIP's map correction) runs on each image's labels before they are counted."""
    from cliplens.maps.maskclip import MaskCLIP

    class Shifted(MaskCLIP):
        def correct_labels(self, maps, labels):
            assert tuple(labels.shape) == maps.image_size
            return torch.where(labels == 255, labels, (labels + 1) % 4)

    _, want = reference
    got = []
    evaluate_segmentation(model, Shifted(), _dataset(), protocol=PROTOCOL,
                          on_prediction=lambda i, s, gt, p: got.append(p.copy()))
    assert len(got) == len(want) == N
    for (_, _, p), q in zip(want, got, strict=True):
        np.testing.assert_array_equal(q, np.where(p == 255, p, (p + 1) % 4))
