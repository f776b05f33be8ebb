"""``cliplens segment-eval``: map methods over a segmentation data set, end to end through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cliplens
from cliplens.datasets import open_segmentation
from cliplens.evaluation.protocol import protocol_for
from cliplens.evaluation.segeval import evaluate_segmentation
from tests.cli.conftest import one_line, run
from tests.datasets.conftest import ADE_SAMPLES, COCO_MINI, VOC_CROPS, link, need
from tests.datasets.mat_files import write_imagenet_seg_mat

TOY = "toy:n=5,seed=3"


def _json(r) -> dict:
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def toy_model():
    return cliplens.load("toy")


def test_toy_run_matches_the_library_and_writes_everything(tmp_path, toy_model):
    out = tmp_path / "run"
    d = _json(run("segment-eval", TOY, "--method", "maskclip", "--method", "surgery", "--out", out,
                  "--overlays", 2, "--json"))
    assert set(d["methods"]) == {"maskclip", "surgery"} and d["protocol"] == protocol_for("toy").to_dict()
    ds = open_segmentation(TOY)
    for name in ("maskclip", "surgery"):
        direct = evaluate_segmentation(toy_model, name, ds).to_dict()
        got = d["methods"][name]
        assert got["miou"] == pytest.approx(direct["miou"], abs=1e-9)
        assert got["pixel_accuracy"] == pytest.approx(direct["pixel_accuracy"], abs=1e-9)
        assert got["per_class_iou"] == pytest.approx(direct["per_class_iou"], abs=1e-9)
        assert got["images"] == 5
        assert json.loads((out / name / "results.json").read_text())["miou"] == got["miou"]
        overlays = sorted((out / name / "overlays").glob("*.png"))
        assert [p.name for p in overlays] == ["00000.png", "00001.png"]
        assert Image.open(overlays[0]).size[0] > 400  # three panels and a legend
    assert d["methods"]["maskclip"]["miou"] != d["methods"]["surgery"]["miou"]
    table = run("segment-eval", TOY, "--method", "maskclip", "--method", "surgery", "--out", out)
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())
    assert "mIoU %" in text and "IoU per class" in text and "protocol: fit whole 64 px, whole image" in text
    assert f"{d['methods']['surgery']['miou']:.1f}" in text


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    # the first run stops after 2 images (as a crash after its last save would); the same command resumes
    part = _json(run("segment-eval", TOY, "--method", "sclip", "--out", tmp_path / "a", "--limit", 2,
                     "--overlays", 0, "--json"))
    assert part["methods"]["sclip"]["images"] == 2
    progress = json.loads((tmp_path / "a" / "sclip" / "progress.json").read_text())
    assert progress["state"]["done"] == 2
    resumed = _json(run("segment-eval", TOY, "--method", "sclip", "--out", tmp_path / "a", "--overlays", 0, "--json"))
    whole = _json(run("segment-eval", TOY, "--method", "sclip", "--out", tmp_path / "b", "--overlays", 0, "--json"))
    r, w = resumed["methods"]["sclip"], whole["methods"]["sclip"]
    assert r["images"] == w["images"] == 5
    assert (r["miou"], r["pixel_accuracy"], r["per_class_iou"]) == (w["miou"], w["pixel_accuracy"], w["per_class_iou"])
    saved = json.loads((tmp_path / "a" / "sclip" / "progress.json").read_text())["state"]["confusion"]
    assert saved == json.loads((tmp_path / "b" / "sclip" / "progress.json").read_text())["state"]["confusion"]


def test_another_run_in_the_same_folder_is_refused_and_nothing_is_touched(tmp_path):
    out = tmp_path / "run"
    _json(run("segment-eval", TOY, "--method", "maskclip", "--out", out, "--limit", 2, "--json"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra in (["--size", 96], ["--logit-scale", 10], ["--whole", "--templates", "photo"]):
        r = run("segment-eval", TOY, "--method", "maskclip", "--out", out, *extra)
        assert r.exit_code != 0 and "Traceback" not in r.output
        assert "What differs" in r.output and "not resumed or overwritten" in " ".join(r.output.split())
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "other" / "maskclip").mkdir()
    (tmp_path / "other" / "maskclip" / "x.txt").write_text("mine too")
    r = run("segment-eval", TOY, "--method", "maskclip", "--out", tmp_path / "other")
    assert r.exit_code != 0 and "holds other files" in r.output
    assert (tmp_path / "other" / "maskclip" / "x.txt").read_text() == "mine too"


@pytest.mark.parametrize("args, message", [
    (["voc21"], "--data-root"),
    (["--dataset", "voc21"], "--data-root"),
    ([], "give the data set once"),
    ([TOY, "--dataset", "voc21"], "given twice"),
    ([TOY, "--method", "nope"], "is not a map method"),
    ([TOY, "--whole", "--window", 32], "leave out --window"),
    ([TOY, "--stride", 8], "--stride needs a window"),
    ([TOY, "--names", "/no/such/file.txt"], "is not a file"),
])
def test_mistakes_get_a_message_not_a_traceback(tmp_path, args, message):
    r = run("segment-eval", *args, "--out", tmp_path / "o")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert message in " ".join(r.output.split())


def test_protocol_options_reach_the_run(tmp_path):
    d = _json(run("segment-eval", TOY, "--method", "maskclip", "--out", tmp_path / "o", "--fit", "squash", "--size",
                  128, "--window", 64, "--logit-scale", 20, "--prob-threshold", 0.2, "--json", "--limit", 1))
    p = d["protocol"]
    assert (p["fit"], p["size"], p["window"], p["stride"], p["logit_scale"], p["prob_threshold"]) == \
        ("squash", 128, 64, 32, 20.0, 0.2)
    assert d["methods"]["maskclip"]["settings"]["protocol"] == p


def _voc_root(tmp: Path) -> Path:
    voc = tmp / "voc" / "VOCdevkit" / "VOC2012"
    ids = sorted(p.name[: -len("_image.png")] for p in need(VOC_CROPS).glob("*_image.png"))[:2]
    for i in ids:
        link(VOC_CROPS / f"{i}_image.png", voc / "JPEGImages" / f"{i}.png")
        link(VOC_CROPS / f"{i}_target.png", voc / "SegmentationClass" / f"{i}.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return tmp / "voc"


def test_real_voc_crops_with_the_voc21_preset(tmp_path, tiny_vit):
    root = _voc_root(tmp_path)
    d = _json(run("segment-eval", "--dataset", "voc21", "--data-root", root / "VOCdevkit", "-m", tiny_vit, "-p", "random", "--method",
                  "maskclip", "--out", tmp_path / "o", "--overlays", 1, "--json"))
    assert d["protocol"] == protocol_for("voc21").to_dict() and d["protocol"]["prob_threshold"] == 0.1
    r = d["methods"]["maskclip"]
    assert r["images"] == 2 and 0.0 <= r["miou"] <= 100.0
    queries = r["settings"]["queries"]
    assert queries[r["settings"]["classes"].index("tv monitor")][0] == "television monitor"
    assert len(queries[0]) > 10  # background: the stuff names
    assert (tmp_path / "o" / "maskclip" / "overlays" / "00000.png").is_file()
    assert d["random_weights"] is True and d["model"] == tiny_vit


def test_real_ade_samples_by_path(tmp_path, tiny_vit):
    root = need(ADE_SAMPLES)
    d = _json(run("segment-eval", str(root), "-m", tiny_vit, "-p", "random", "--method", "sclip", "--out",
                  tmp_path / "o", "--limit", 1, "--overlays", 0, "--json", "--names", "plain"))
    assert d["dataset"]["name"] == "ade20k" and len(d["dataset"]["class_names"]) == 150
    assert d["methods"]["sclip"]["images"] == 1


def _imagenet_seg_mat(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for h, w in ((60, 80), (64, 64)):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        gt = np.zeros((h, w), np.uint8)
        gt[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        rows.append((img, gt))
    folder.mkdir(parents=True, exist_ok=True)
    return write_imagenet_seg_mat(folder / "gtsegs_ijcv.mat", rows)


def test_imagenet_segmentation_in_both_modes(tmp_path):
    mat = _imagenet_seg_mat(tmp_path / "data")
    classes = tmp_path / "classes.txt"
    classes.write_text("a photo of a red circle\na photo of a blue square\na photo of a green star\n")
    res = {}
    for mode in ("original", "correct"):
        d = _json(run("segment-eval", "imagenet-seg", "--data-root", mat, "--method", "decomposition", "--mode", mode,
                      "--classes-file", classes, "--templates", "none", "--out", tmp_path / mode, "--json"))
        r = d["methods"]["decomposition"]
        assert r["images"] == 2 and r["settings"]["mode"] == mode and r["settings"]["classes"] == 3
        assert all(0.0 <= r[k] <= 100.0 for k in ("pixel_accuracy", "miou", "map"))
        res[mode] = r
    # the 80x60 image is centre-cropped: its mask differs between the modes, so the scores do
    assert res["original"]["pixel_accuracy"] != res["correct"]["pixel_accuracy"]
    table = run("segment-eval", "imagenet-seg", "--data-root", mat, "--method", "decomposition", "--mode", "correct",
                "--classes-file", classes, "--templates", "none", "--out", tmp_path / "correct")
    assert table.exit_code == 0 and "mAP %" in table.stdout and "mode correct" in table.stdout
    r = run("segment-eval", TOY, "--classes-file", classes, "--out", tmp_path / "x")
    assert r.exit_code != 0 and "--classes-file is for ImageNet-segmentation" in " ".join(r.output.split())


def _stop_when(proc, path: Path, sig: int, timeout: float = 120.0) -> None:
    """Send ``sig`` to the command running in ``proc`` as soon as ``path`` exists; wait for it to end."""
    import time

    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run did not get there in time"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=timeout)


def test_a_run_stopped_by_ctrl_c_and_by_sigterm_resumes_with_every_overlay(tmp_path):
    # the case: overlays from image 0, stopped before any periodic save (every 10 images), twice
    import signal
    import subprocess
    import sys

    spec, n = "toy:n=24,seed=3", 24  # enough images after the signal's file that the run cannot end first
    out = tmp_path / "a"
    args = [sys.executable, "-m", "cliplens", "segment-eval", spec, "--method", "maskclip", "--out", str(out),
            "--overlays", str(n), "--no-progress"]
    overlays = out / "maskclip" / "overlays"
    for sig, seen in ((signal.SIGINT, "00001.png"), (signal.SIGTERM, "00004.png")):
        # SIGINT back to its default in the child: a test worker (pytest-xdist) ignores it, and an ignored SIGINT is
        # inherited, so Python would not turn it into KeyboardInterrupt
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        _stop_when(proc, overlays / seen, sig)
        assert proc.returncode == 130, proc.stderr
        done = json.loads((out / "maskclip" / "progress.json").read_text())["state"]["done"]
        assert 0 < done < n
    resumed = _json(run("segment-eval", spec, "--method", "maskclip", "--out", out, "--overlays", n, "--json"))
    whole = _json(run("segment-eval", spec, "--method", "maskclip", "--out", tmp_path / "b", "--overlays", 0,
                      "--json"))
    r, w = resumed["methods"]["maskclip"], whole["methods"]["maskclip"]
    assert (r["images"], r["miou"], r["pixel_accuracy"], r["per_class_iou"]) == \
        (w["images"], w["miou"], w["pixel_accuracy"], w["per_class_iou"])
    saved = json.loads((out / "maskclip" / "progress.json").read_text())["state"]
    assert saved["confusion"] == json.loads((tmp_path / "b" / "maskclip" / "progress.json").read_text())["state"][
        "confusion"]
    names = [f"{i:05d}.png" for i in range(n)]
    assert sorted(p.name for p in overlays.iterdir()) == names  # every overlay, once, no stray file
    assert [Path(p).name for p in r["overlays"]] == names
    for p in overlays.iterdir():
        Image.open(p).verify()


def test_an_interrupted_command_says_how_to_resume(tmp_path, monkeypatch):
    import cliplens.report.maps as maps

    real = maps.save_evaluation_overlay
    calls = []

    def stop_at_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("cliplens.report.maps.save_evaluation_overlay", stop_at_third)
    r = run("segment-eval", TOY, "--method", "maskclip", "--out", tmp_path / "o", "--overlays", 5)
    assert r.exit_code == 130
    text = " ".join(r.output.split())
    assert "maskclip: 2 of 5 images done and saved in" in text and "run the same command to resume" in text
    monkeypatch.setattr("cliplens.report.maps.save_evaluation_overlay", real)
    d = _json(run("segment-eval", TOY, "--method", "maskclip", "--out", tmp_path / "o", "--overlays", 5, "--json"))
    assert d["methods"]["maskclip"]["images"] == 5
    assert sorted(p.name for p in (tmp_path / "o" / "maskclip" / "overlays").iterdir()) == \
        [f"{i:05d}.png" for i in range(5)]


def test_imagenet_segmentation_defaults_to_the_correct_mode_and_draws_overlays(tmp_path):
    mat = _imagenet_seg_mat(tmp_path / "data")
    classes = tmp_path / "classes.txt"
    classes.write_text("a photo of a red circle\na photo of a blue square\n")
    common = ["--method", "decomposition", "--classes-file", classes, "--templates", "none", "--json"]
    d = _json(run("segment-eval", "imagenet-seg", "--data-root", mat, *common, "--out", tmp_path / "default",
                  "--overlays", 1))
    r = d["methods"]["decomposition"]
    assert r["settings"]["mode"] == "correct" and d["protocol"]["mode"] == "correct"
    explicit = _json(run("segment-eval", "imagenet-seg", "--data-root", mat, *common, "--mode", "correct",
                         "--out", tmp_path / "correct", "--overlays", 0))["methods"]["decomposition"]
    assert (r["pixel_accuracy"], r["miou"], r["map"]) == \
        (explicit["pixel_accuracy"], explicit["miou"], explicit["map"])
    figures = sorted((tmp_path / "default" / "decomposition" / "overlays").glob("*.png"))
    assert [p.name for p in figures] == ["00000.png"] and [Path(p).name for p in r["overlays"]] == ["00000.png"]
    assert Image.open(figures[0]).size[0] > 400  # three panels
    assert not (tmp_path / "correct" / "decomposition" / "overlays").exists()
    help_text = " ".join(run("segment-eval", "--help").output.split())
    assert "[default: correct]" in help_text and "'original' only resizes the mask" in help_text


# ---- a folder holds one run, over one image set ------------------------------------------------------------------
def test_a_smaller_limit_in_a_folder_is_refused_and_a_new_run_can_be_asked_for(tmp_path):
    out = tmp_path / "run"
    four = _json(run("segment-eval", TOY, "--method", "maskclip", "--out", out, "--limit", 4, "--overlays", 0,
                     "--json"))
    assert four["methods"]["maskclip"]["images"] == 4
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = run("segment-eval", TOY, "--method", "maskclip", "--out", out, "--limit", 2, "--overlays", 0)
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "Traceback" not in r.output and "mIoU" not in r.output
    assert "over 4 images (the first 4), 4 done; this command asks for 2 images (the first 2)" in text
    assert "--new-run" in text
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # asked for: a fresh numbered run folder inside --out, with the 2 images asked
    two = run("segment-eval", TOY, "--method", "maskclip", "--out", out, "--limit", 2, "--overlays", 0, "--new-run")
    assert two.exit_code == 0, two.output
    assert "run-2" in " ".join(two.stderr.split()) and "maskclip: 2 images" not in two.stdout
    assert "toy: 2 images" in two.stdout and f"--out {out / 'run-2'}" in " ".join(two.stdout.split())
    assert json.loads((out / "run-2" / "maskclip" / "results.json").read_text())["images"] == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "run-2" not in p.parts} == before
    direct = evaluate_segmentation(cliplens.load("toy"), "maskclip", open_segmentation(TOY), limit=2).to_dict()
    assert json.loads((out / "run-2" / "maskclip" / "results.json").read_text())["miou"] == direct["miou"]


# ---- --method all and the text-independent methods --------------------------------------------------------------
def test_all_is_every_text_dependent_method_and_text_independent_ones_are_refused_here(tmp_path):
    from cliplens.cli.explain import resolve_methods
    from cliplens.maps import get_map, map_names

    every = resolve_methods("all")
    assert "raw-attention" not in every and "rollout" not in every and "surgery" in every
    assert every == [m for m in map_names(second_backbone=False) if get_map(m).text_dependent]
    assert resolve_methods("text-independent") == ["raw-attention", "rollout"]
    r = run("segment-eval", TOY, "--method", "rollout", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "rollout ignores the text" in " ".join(r.output.split())
    assert not (tmp_path / "o" / "rollout").exists()
    r = run("segment-eval", TOY, "--method", "text-independent", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "raw-attention, rollout ignore the text" in " ".join(r.output.split())


def test_text_independent_methods_run_on_imagenet_segmentation(tmp_path):
    mat = _imagenet_seg_mat(tmp_path / "data")
    classes = tmp_path / "classes.txt"
    classes.write_text("a photo of a red circle\na photo of a blue square\n")
    d = _json(run("segment-eval", "imagenet-seg", "--data-root", mat, "--method", "text-independent", "--templates",
                  "none", "--classes-file", classes, "--out", tmp_path / "o", "--overlays", 0, "--json"))
    assert set(d["methods"]) == {"raw-attention", "rollout"} and d["methods"]["rollout"]["images"] == 2


# ---- data sets as they ship --------------------------------------------------------------------------------------
def _generic(root: Path, sizes=((336, 501), (40, 30)), classes=("background", "thing", "other"),
             void: bool = True) -> Path:
    """A generic folder whose masks hold the class indices and, with ``void``, one more value."""
    rng = np.random.default_rng(1)
    for k, (h, w) in enumerate(sizes):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{k}.png")
        Image.fromarray(rng.integers(0, len(classes) + void, (h, w)).astype(np.uint8), mode="L").save(
            root / "masks" / f"{k}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_a_generic_folder_named_like_a_set_gets_the_folder_preset_and_typed_options(tmp_path, tiny_vit):
    root = _generic(tmp_path / "cityscapes")
    args = ["segment-eval", root, "-m", tiny_vit, "-p", "random", "--method", "maskclip", "--overlays", 0, "--json",
            "--names", "plain"]
    # masks hold 0..3 with three classes: 3 is refused until declared void; reduce_zero_label=false keeps 0..2
    r = run(*args, "--out", tmp_path / "a")
    assert r.exit_code == 2 and "void=" in " ".join(r.output.split())
    d = _json(run(*args, "--out", tmp_path / "b", "--option", "void=3", "--option", "reduce_zero_label=false"))
    assert d["protocol"] == protocol_for("folder", names="plain").to_dict() and d["protocol"]["size"] == 336
    assert d["dataset"]["reduce_zero_label"] is False and d["dataset"]["options"]["void"] == 3
    off = d["methods"]["maskclip"]
    # on: stored 0 is unlabelled and 1..3 are three classes
    on = _json(run(*args, "--out", tmp_path / "c", "--option", "reduce_zero_label=true", "--option",
                   "classes=thing|other|more"))["methods"]["maskclip"]
    assert on["settings"]["dataset"]["reduce_zero_label"] is True and on["per_class_iou"] != off["per_class_iou"]
    r = run(*args, "--out", tmp_path / "d", "--option", "reduce_zero_label=perhaps")
    assert r.exit_code == 2 and "reduce_zero_label='perhaps' is not true/false" in " ".join(r.output.split())
    # background=0 is taken (an index), and none turns the background off
    d = _json(run(*args, "--out", tmp_path / "e", "--option", "void=3", "--option", "background=none"))
    assert d["dataset"]["background"] is None and d["protocol"]["prob_threshold"] == 0.0


def test_an_odd_sized_image_seen_whole_is_fitted(tmp_path, tiny_vit):
    # 336x501 with patch 56 under the whole-image rule: refused before as "not a multiple of the patch size"
    root = _generic(tmp_path / "odd", sizes=((336, 501),), void=False)
    d = _json(run("segment-eval", root, "-m", tiny_vit, "-p", "random", "--method", "maskclip", "--whole", "--out",
                  tmp_path / "o", "--overlays", 1, "--json", "--names", "plain"))
    assert d["methods"]["maskclip"]["images"] == 1 and d["protocol"]["window"] is None
    assert (tmp_path / "o" / "maskclip" / "overlays" / "00000.png").is_file()


def test_split_none_reads_a_voc_export_without_split_files(tmp_path, tiny_vit):
    root = _voc_root(tmp_path)
    (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    args = ["segment-eval", "voc21", "--data-root", root, "-m", tiny_vit, "-p", "random", "--method", "maskclip",
            "--overlays", 0, "--json"]
    r = run(*args, "--out", tmp_path / "a")
    assert r.exit_code == 2 and "--split none" in " ".join(r.output.split())
    d = _json(run(*args, "--out", tmp_path / "b", "--split", "none"))
    assert d["dataset"]["split"] is None and d["methods"]["maskclip"]["images"] == 2


def test_coco_object_takes_its_own_class_list(tmp_path, tiny_vit):
    pytest.importorskip("pycocotools")
    d = _json(run("segment-eval", "coco-object", "--data-root", need(COCO_MINI), "-m", tiny_vit, "-p", "random",
                  "--method", "maskclip", "--limit", 1, "--overlays", 0, "--out", tmp_path / "o", "--json"))
    r = d["methods"]["maskclip"]
    assert r["images"] == 1 and len(r["settings"]["classes"]) == 81
    flat = [q for qs in r["settings"]["queries"] for q in qs]
    assert flat.count("bed") == 1 and len(flat) == len(set(flat))


def test_every_methods_folder_is_checked_before_any_work(tmp_path):
    out = tmp_path / "run"
    _json(run("segment-eval", TOY, "--method", "sclip", "--out", out, "--limit", 3, "--overlays", 0, "--json"))
    r = run("segment-eval", TOY, "--method", "maskclip", "--method", "sclip", "--out", out, "--limit", 2,
            "--overlays", 0)
    assert r.exit_code == 2 and "over 3 images" in " ".join(r.output.split())
    assert not (out / "maskclip").exists()  # refused before maskclip ran


def test_all_benchmarks_found_under_one_root_in_the_fields_column_order(tmp_path, tiny_vit):
    root = _voc_root(tmp_path)  # VOC2012 only: voc21 and voc20; the other six are not there
    out = tmp_path / "o"
    args = ["segment-eval", "--dataset", "all", "--data-root", root, "-m", tiny_vit, "-p", "random", "--method",
            "maskclip", "--out", out, "--overlays", 0]
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["column_order"] == ["voc21", "voc20", "mean"]
    got = d["miou"]["maskclip"]
    single = json.loads((out / "voc21" / "maskclip" / "results.json").read_text())["miou"]
    assert got["voc21"] == single and got["mean"] == pytest.approx((got["voc21"] + got["voc20"]) / 2)
    assert "context60 not found under" in one_line(r.output)
    r = run(*args)  # again: every set resumes at its end; the table in the field's order
    assert r.exit_code == 0, r.output
    text = one_line(r.output)
    table = text[text.rindex("mIoU % on the benchmarks found under"):]
    assert table.index("VOC21") < table.index("VOC20") < table.index("mean") < table.index("maskclip")
    r = run("segment-eval", "--dataset", "all", "-m", tiny_vit, "-p", "random")
    assert r.exit_code == 2 and "--data-root" in one_line(r.output)
