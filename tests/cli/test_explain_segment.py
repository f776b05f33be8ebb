"""``cliplens explain`` and ``cliplens segment``: pictures, arrays and settings in a fresh folder, the same
numbers as the Python API, every text-dependent method with --method all, CLIP Surgery split by head,
and one clear paragraph for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cliplens.maps import get_map, map_names
from cliplens.maps.base import _REGISTRY, MapMethod, register_map
from cliplens.maps.token_similarity import TokenSimilarity
from cliplens.tasks.segment import segment
from tests.cli.conftest import one_line, run, save_image
from tests.conftest import REFERENCE_IMAGES

COCO = REFERENCE_IMAGES / "coco-mini" / "val2017"
WIDE, TALL = "000000161044.jpg", "000000000802.jpg"  # 640x229 and 424x640


def photo(name: str) -> str:
    if not (COCO / name).is_file():
        pytest.skip(f"reference photos not found in {COCO}")
    return str(COCO / name)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_explain_writes_pictures_maps_and_settings(toy_args, random_toy, tmp_path):
    images = [photo(WIDE), save_image(tmp_path / "in" / "small.png")]
    texts = ["a red circle", "a striped background"]
    out = tmp_path / "out"
    r = run("explain", *images, "-t", texts[0], "-t", texts[1], *toy_args, "--out", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    for stem in ("000000161044", "small"):
        assert f"{stem}__surgery__a-red-circle.png" in names and f"{stem}__surgery__a-striped-background.png" in names
        assert f"{stem}__surgery__all-texts.png" in names
    assert "maps.npz" in names and "settings.json" in names and str(out) in one_line(r.output)
    # each picture's heading (also the PNG's Title) names its image, its text and the method
    title = Image.open(out / "000000161044__surgery__a-red-circle.png").text["Title"].replace("\n", " ")
    assert WIDE in title and "'a red circle'" in title and "surgery" in title and "min–max" in title
    assert Image.open(out / "000000161044__surgery__a-red-circle.png").size[0] > 400
    # the arrays are the API's raw maps; settings.json says which image each is, and how they were made
    settings = json.loads((out / "settings.json").read_text())
    assert settings["texts"] == texts and settings["methods"]["surgery"]["fit"] == "whole"
    assert [im["image"] for im in settings["images"]] == images and settings["model"] == "toy"
    z = np.load(out / "maps.npz")
    want = get_map("surgery")(random_toy, images, texts)
    for i, im in enumerate(settings["images"]):
        np.testing.assert_allclose(z[im["arrays"]["surgery"]], want[i].raw.numpy(), rtol=1e-5, atol=1e-6)
        assert im["image_size"] == list(want[i].image_size) and im["box"] == list(want[i].box)
    assert list(z["texts"]) == texts
    # never overwritten: a second run goes to a fresh folder inside
    before = _files(out)
    r = run("explain", images[1], "-t", texts[0], *toy_args, "--out", out)
    assert r.exit_code == 0, r.output
    assert _files(out) == before and (out / "run-2" / "small__surgery__all-texts.png").is_file()
    assert "run-2" in one_line(r.output) and "nothing is overwritten" in one_line(r.output)


def test_one_text_with_surgery_says_it_uses_the_empty_prompt(toy_args, tmp_path):
    image = save_image(tmp_path / "img.png")
    r = run("explain", image, "-t", "a red circle", *toy_args, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if "empty" in line]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "one text" in lines[0] and "instead" in lines[0]
    # and the pictures say so too
    title = Image.open(tmp_path / "o" / "img__surgery__a-red-circle.png").text["Title"].replace("\n", " ")
    assert "one text" in title and "empty prompt" in title


def test_a_bad_image_stops_after_the_finished_ones_or_is_skipped(toy_args, tmp_path):
    first, last = save_image(tmp_path / "a.png"), save_image(tmp_path / "c.png", seed=1)
    bad = tmp_path / "b.jpg"
    bad.write_text("not an image")
    out = tmp_path / "o"
    r = run("explain", first, bad, last, "-t", "a red circle", "--batch-size", "1", *toy_args, "--out", out)
    assert r.exit_code == 2 and "b.jpg" in r.output and "--skip-bad" in one_line(r.output)
    assert "1 image before it is done" in one_line(r.output)
    done = json.loads((out / "settings.json").read_text())
    assert [im["image"] for im in done["images"]] == [first] and (out / "a__surgery__all-texts.png").is_file()
    r = run("explain", first, bad, last, "-t", "a red circle", "--skip-bad", *toy_args, "--out", out)
    assert r.exit_code == 0 and "skipped" in r.output
    done = json.loads((out / "run-2" / "settings.json").read_text())
    assert [im["image"] for im in done["images"]] == [first, last] and done["skipped"][0]["image"] == str(bad)
    assert sorted(k for k in np.load(out / "run-2" / "maps.npz") if k != "texts") == ["img0__surgery", "img1__surgery"]


@pytest.mark.parametrize("command", [["explain", "-t", "a red circle"], ["segment", "--classes", "red circle,star"]])
def test_a_bad_image_in_the_first_batch(command, toy_args, tmp_path):
    # the default batch holds all three: the image before the bad one is still done and saved
    first, last = save_image(tmp_path / "a.png"), save_image(tmp_path / "c.png", seed=1)
    bad = tmp_path / "b.jpg"
    bad.write_text("not an image")
    out = tmp_path / "o"
    r = run(command[0], first, bad, last, *command[1:], *toy_args, "--out", out)
    text = one_line(r.output)
    assert r.exit_code == 2 and "b.jpg" in text and "1 image before it is done" in text and "--skip-bad" in text
    done = json.loads((out / "settings.json").read_text())
    assert [im.get("image") for im in done["images"]] == [first]
    # nothing readable before it: nothing written, no empty folder left behind, and advice
    out2 = tmp_path / "o2"
    r = run(command[0], bad, first, *command[1:], *toy_args, "--out", out2)
    text = one_line(r.output)
    assert r.exit_code == 2 and "nothing was written" in text and "--skip-bad" in text and not out2.exists()


@pytest.fixture()
def extra_method():
    """A text-dependent method registered for this test only: --method all must pick it up."""

    @register_map("test-extra")
    class Extra(TokenSimilarity):
        pass

    yield "test-extra"
    _REGISTRY.pop("test-extra")


def test_method_all_runs_every_text_dependent_method(toy_args, tmp_path, extra_method):
    expected = sorted(n for n in map_names(second_backbone=False) if get_map(n).text_dependent)
    assert extra_method in expected and {"surgery", "decomposition", "naclip", "chefer"} <= set(expected)
    assert not {"uniform", "nothing", "gaussian", "raw-attention", "rollout"} & set(expected)
    # the methods with a second backbone (DINO, SAM) run by name only
    assert not {"proxyclip", "cass", "corrclip", "trident"} & set(expected)
    image = save_image(tmp_path / "img.png")
    out = tmp_path / "o"
    r = run("explain", image, "-t", "a red circle", "--method", "all", *toy_args, "--out", out)
    assert r.exit_code == 0, r.output
    settings = json.loads((out / "settings.json").read_text())
    assert sorted(settings["methods"]) == expected
    z = np.load(out / "maps.npz")
    assert sorted(k.split("__")[1] for k in z if k.startswith("img0__")) == expected
    for n in expected:
        assert (out / f"img__{n}__all-texts.png").is_file() and (out / f"img__{n}__a-red-circle.png").is_file()
    assert (out / "img__methods.png").is_file()
    assert all(isinstance(get_map(n), MapMethod) for n in expected)


@pytest.mark.parametrize("contrast", ["default", "others"])
def test_by_head_parts_sum_to_the_map(toy_args, tmp_path, contrast):
    # the default contrast with one text (feature surgery falls back to the empty prompt) on a small image;
    # the others contrast with two texts on a photo's centre crop
    if contrast == "default":
        image, texts, fit = save_image(tmp_path / "img.png"), ["a red circle"], "whole"
    else:
        image, texts, fit = photo(TALL), ["a red circle", "a blue square"], "crop"
    out = tmp_path / "o"
    args = [a for t in texts for a in ("-t", t)]
    r = run("explain", image, *args, "--by-head", "--contrast", contrast, "--fit", fit, *toy_args, "--out", out)
    assert r.exit_code == 0, r.output
    z = np.load(out / "maps.npz")
    parts, total = z["img0__surgery__parts"], z["img0__surgery"]
    labels = list(z["surgery_part_labels"])
    assert parts.shape[:2] == (len(texts), len(labels)) and labels[0] == "start" and labels[1] == "L0.H0"
    np.testing.assert_allclose(parts.sum(1), total, atol=1e-5 * np.abs(total).max())
    stem = Path(image).stem
    title = Image.open(out / f"{stem}__surgery__by-head__{'a-red-circle'}.png").text["Title"].replace("\n", " ")
    assert Path(image).name in title and "sum" in title and "'a red circle'" in title


@pytest.mark.parametrize("args, words", [
    (["--method", "decomposition", "--by-head"], ["--by-head", "--method surgery"]),
    (["--by-head", "--window", "64"], ["--by-head", "--window"]),
    (["--method", "nope"], ["nope", "surgery", "decomposition", "all"]),
    (["--contrast", "empty"], ["--contrast empty", "surgery"]),
    (["--contrast", "others", "--text", "A  red circle"], ["duplicate"]),
    (["--fit", "sideways"], ["--fit", "sideways"]),
])
def test_explain_bad_input(toy_args, tmp_path, args, words):
    image = save_image(tmp_path / "img.png")
    r = run("explain", image, "-t", "a red circle", *args, *toy_args, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert all(w in one_line(r.output) for w in words), r.output
    assert not (tmp_path / "o").exists()  # nothing written before the input is known to be good


def test_segment_labels_equal_the_api(toy_args, random_toy, tmp_path):
    images = [photo(TALL)]
    classes = ["a red circle", "a blue square", "a green triangle"]
    out = tmp_path / "o"
    r = run("segment", *images, "--classes", ",".join(classes[:2]), "-c", classes[2], "--background",
            "a striped background", "--templates", "photo", "--fit", "crop", *toy_args, "--out", out)
    assert r.exit_code == 0, r.output
    want = segment("surgery", random_toy, images, classes, background=["a striped background"], templates="photo",
                   fit="crop")
    settings = json.loads((out / "settings.json").read_text())
    for path, seg, rec in zip(images, want, settings["images"], strict=True):
        stem = Path(path).stem
        img = Image.open(out / f"{stem}__labels.png")
        photo_size = Image.open(path).size
        assert img.mode == "P" and img.size == photo_size and rec["size"] == list(photo_size)
        np.testing.assert_array_equal(np.asarray(img), seg.labels.numpy())
        assert (np.asarray(img) == 255).any()  # outside the centre crop: not seen
        assert (out / f"{stem}__segmentation.png").is_file() and (out / f"{stem}__class-maps.png").is_file()
        title = Image.open(out / f"{stem}__segmentation.png").text["Title"]
        assert Path(path).name in title
        # the classes found, with their area, printed per image
        line = next(ln for ln in one_line(r.output).split(path)[1:2])
        for c in seg.present():
            assert c in line
        assert [c["class"] for c in rec["classes"]] == seg.present()
        counts = torch.bincount(seg.labels.flatten(), minlength=256)
        seen = int(counts[:255].sum())
        assert [c["percent"] for c in rec["classes"]] == pytest.approx(
            [100 * int(counts[classes.index(c) + 1]) / seen for c in seg.present()])
    assert settings["labels"]["0"] == "background" and settings["labels"]["3"] == classes[2]
    assert settings["settings"]["fit"] == "crop" and settings["settings"]["background"] == ["a striped background"]


def test_segment_threshold_and_classes_file(toy_args, random_toy, tmp_path):
    image = save_image(tmp_path / "img.png", 40, 72)
    f = tmp_path / "classes.txt"
    f.write_text("# toy classes\na red circle\n\na blue square\n")
    out = tmp_path / "o"
    r = run("segment", image, "--classes-file", f, "--background", "", "--threshold", "0.5", "--logit-scale", "20",
            "--templates", "none", *toy_args, "--out", out)
    assert r.exit_code == 0, r.output
    want = segment("surgery", random_toy, [image], ["a red circle", "a blue square"], background=[], threshold=0.5,
                   logit_scale=20, templates=None)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "img__labels.png")), want.labels.numpy())
    s = json.loads((out / "settings.json").read_text())
    assert s["classes"] == ["a red circle", "a blue square"] and s["settings"]["threshold"] == 0.5


@pytest.mark.parametrize("args, words", [
    (["--classes", ", ,"], ["holds no class names"]),
    ([], ["give the classes", "--classes", "--class-list"]),
    (["--classes", "dog,grass,Dog"], ["'Dog' (--classes item 3) repeats --classes item 1"]),
    (["--classes", "dog,sky", "--background", "Sky"], ["'sky' is both a class and a background name"]),
    (["--classes", "dog", "--background", ""], ["--threshold"]),
    (["--classes", "dog", "--method", "uniform"], ["uniform", "ignores the text"]),
    (["--classes", "dog", "--threshold", "1.5"], ["--threshold", "1.5"]),
    (["--classes-file", "missing.txt"], ["missing.txt"]),
])
def test_segment_bad_input(toy_args, tmp_path, args, words):
    image = save_image(tmp_path / "img.png")
    r = run("segment", image, *args, *toy_args, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert all(w in one_line(r.output) for w in words), r.output
    assert not (tmp_path / "o").exists()


def test_surgery_switches_reach_the_method(toy_args, tmp_path):
    image = save_image(tmp_path / "img.png")
    r = run("explain", image, "-t", "a red circle", "-t", "a star", *toy_args, "--blocks", "3", "--feature", "empty",
            "--no-architecture", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "e" / "settings.json").read_text())["methods"]["surgery"]
    assert (got["blocks"], got["feature"], got["architecture"]) == (3, "empty", False)
    r = run("segment", image, "--classes", "red circle,star", *toy_args, "--feature", "none", "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert '"feature": "none"' in (tmp_path / "s" / "settings.json").read_text()
    r = run("explain", image, "-t", "a star", "-t", "a red circle", *toy_args, "--blocks", "99", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "between 1 and the model's depth (6)" in one_line(r.output)
