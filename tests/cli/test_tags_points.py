"""The command line: ``tags`` (classes ranked per image) and ``points`` (point prompts for SAM, SAM's mask)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cliplens.cli import Group
from cliplens.cli import points as points_cli
from cliplens.cli import tags as tags_cli
from cliplens.maps.surgery import Surgery
from tests.cli.conftest import one_line, save_image


@pytest.fixture(scope="module")
def cli():
    """The two commands under cliplens's own group (errors -> one paragraph, exit code 2)."""
    group = Group("cliplens")
    for module in (tags_cli, points_cli):
        for command in module.COMMANDS:
            group.add_command(command)
    return group


@pytest.fixture()
def invoke(cli, tiny_vit):
    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args] + ["-m", tiny_vit, "-p", "random"],
                                  env={"COLUMNS": "250"})

    return run


@pytest.fixture()
def images(tmp_path):
    return [save_image(tmp_path / "a.png", 48, 64, seed=0), save_image(tmp_path / "b.png", 60, 40, seed=1)]


# ---- tags -------------------------------------------------------------------------------------------

def test_tags_tables(invoke, images):
    r = invoke("tags", *images, "--classes", "dog, cat,traffic light", "--top", "2")
    assert r.exit_code == 0, r.output
    out = one_line(r.output)
    assert "RANDOM WEIGHTS" in out and "meaningless" in out
    for img in images:
        assert img in out
    assert out.count("traffic light") + out.count("dog") + out.count("cat") == 4  # two rows per image
    assert "sum to 0" in out  # what a surgery score is


def test_tags_json_from_a_file(invoke, images, tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("# animals\ndog\n\n  cat  \n# things\ntraffic   light\nbench\n")
    r = invoke("tags", *images, "--classes-file", f, "--method", "global", "--templates", "photo", "--top", "3",
               "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["random_weights"] is True and out["weights"] == "random"
    assert out["classes"] == ["dog", "cat", "traffic light", "bench"] and out["method"] == "global"
    assert [res["image"] for res in out["results"]] == images
    for res in out["results"]:
        ranked = [x["score"] for x in res["ranked"]]
        assert len(ranked) == 3 and ranked == sorted(ranked, reverse=True)
        assert sorted(res["scores"].values(), reverse=True)[:3] == ranked
        assert all(-1.0 <= s <= 1.0 for s in res["scores"].values())  # cosines


@pytest.mark.parametrize("args, match", [
    ([], "--classes a,b,c, --classes-file FILE (one per line) or --class-list NAME"),
    (["--classes", "dog,Dog"], "repeats --classes item 1"),
    (["--class-list", "cocoa"], "no built-in class list 'cocoa'"),
    (["--classes", "dog,,cat"], "item 2 is empty"),
    (["--classes", " , "], "holds no class names"),
    (["--classes-file", "missing.txt"], "does not exist"),
])
def test_tags_refuses(invoke, images, args, match):
    r = invoke("tags", images[0], *args)
    assert r.exit_code == 2, r.output
    assert match in one_line(r.output)


def test_tags_classes_file_problems(invoke, images, tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("# nothing but comments\n\n")
    r = invoke("tags", images[0], "--classes-file", f)
    assert r.exit_code == 2 and "holds no class names" in one_line(r.output)
    f.write_text("dog\ncat\n# x\n  DOG \n")
    r = invoke("tags", images[0], "--classes-file", f)
    assert r.exit_code == 2 and f"'DOG' (--classes-file {str(f)!r} line 4) repeats --classes-file {str(f)!r} line 1" \
        in one_line(r.output)


def test_tags_class_lists_combine_in_order(invoke, images, tmp_path):
    from cliplens.datasets.coco import COCO_OBJECT_CLASSES

    f = tmp_path / "more.txt"
    f.write_text("zebra crossing\n")
    r = invoke("tags", images[0], "--classes", "sky", "--classes-file", f, "--class-list", "coco",
               "--method", "global", "--templates", "none", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["classes"] == ["sky", "zebra crossing", *COCO_OBJECT_CLASSES[1:]]
    r = invoke("tags", images[0], "--classes", "Dog", "--class-list", "coco")
    assert r.exit_code == 2 and "'dog' (--class-list coco) repeats --classes item 1" in one_line(r.output)


def test_tags_bad_image(invoke, images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    r = invoke("tags", images[0], str(bad), images[1], "--classes", "dog,cat")
    assert r.exit_code == 2
    out = one_line(r.output)
    assert images[0] in out and "bad.jpg" in out and "--skip-bad" in out
    assert images[0] in r.stdout and images[1] not in r.stdout  # results stop at the bad image
    r = invoke("tags", images[0], str(bad), images[1], "--classes", "dog,cat", "--skip-bad", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [x["image"] for x in out["results"]] == [images[0], images[1]]
    assert out["skipped"][0]["image"] == str(bad)


# ---- points -----------------------------------------------------------------------------------------

def test_points_text(invoke, images):
    r = invoke("points", images[0], "--text", "a dog")
    assert r.exit_code == 0, r.output
    out = one_line(r.output)
    assert "RANDOM WEIGHTS" in out and "positive points (x, y)" in out and "negative points (x, y)" in out


def test_points_json(invoke, images):
    r = invoke("points", images[0], "--text", "a dog", "--threshold", "0.5", "--fit", "squash", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["random_weights"] is True and out["text"] == "a dog" and out["image_size"] == [48, 64]
    assert out["threshold"] == 0.5 and out["settings"]["fit"] == "squash" and out["settings"]["feature"] == "empty"
    assert len(out["points"]) == len(out["labels"]) > 0 and out["labels"].count(1) == out["labels"].count(0)
    assert out["points"] == out["positives"] + out["negatives"]
    assert all(0 <= x < 64 and 0 <= y < 48 for x, y in out["points"])
    assert out["sam"] is None and out["files"] == []


def test_points_none(invoke, images, monkeypatch):
    def constant(self, model, pixels, texts):
        return torch.full((pixels.shape[0], texts.directions.shape[0], 4, 5), 0.25)

    monkeypatch.setattr(Surgery, "raw", constant)
    r = invoke("points", images[0], "--text", "a dog")
    assert r.exit_code == 0, r.output
    assert "no points: the map is constant" in one_line(r.output)
    r = invoke("points", images[0], "--text", "a dog", "--json")
    out = json.loads(r.stdout)
    assert out["points"] == [] and "constant" in out["message"]


def test_points_refuses(invoke, images, tmp_path, monkeypatch):
    r = invoke("points", images[0], "--text", "a dog", "--threshold", "1.5")
    assert r.exit_code == 2 and "1.5" in r.output
    r = invoke("points", images[0], "--text", "a dog", "--fit", "crop")
    assert r.exit_code == 2 and "crop" in r.output
    r = invoke("points", images[0], "--text", "a dog", "--blocks", "9")
    assert r.exit_code == 2 and "has 2 layers" in one_line(r.output)
    pytest.importorskip("segment_anything")
    r = invoke("points", images[0], "--text", "a dog", "--sam-checkpoint", tmp_path / "sam.pth")
    assert r.exit_code == 2 and "does not exist" in one_line(r.output)
    assert not (tmp_path / "cliplens-points").exists()
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # as if it were not installed
    r = invoke("points", images[0], "--text", "a dog", "--sam-checkpoint", tmp_path / "sam.pth")
    assert r.exit_code == 2 and "pip install segment-anything" in one_line(r.output)


def test_points_with_sam_writes_a_fresh_folder(invoke, images, tmp_path, monkeypatch):
    pytest.importorskip("segment_anything")
    from tests.tasks.sam_helpers import random_sam

    checkpoint = tmp_path / "sam_vit_b.pth"
    checkpoint.write_bytes(b"stands for a checkpoint; load_sam is replaced below")
    asked = []

    def fake_load_sam(path, model_type="vit_b", device="cpu", **_):
        asked.append((str(path), model_type))
        return random_sam()

    monkeypatch.setattr("cliplens.tasks.points.load_sam", fake_load_sam)
    out_dir = tmp_path / "out"
    r = invoke("points", images[0], "--text", "a dog", "--sam-checkpoint", checkpoint, "--out", out_dir, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert asked == [(str(checkpoint), "vit_b")]
    assert out["sam"]["type"] == "vit_b" and len(out["sam"]["scores"]) == 3
    assert out["sam"]["scores"] == sorted(out["sam"]["scores"], reverse=True)
    mask_path, figure = (p for p in out["files"])
    assert mask_path.endswith("a-dog__mask.png") and figure.endswith("a-dog__points.png")
    mask = np.asarray(Image.open(mask_path))
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}  # at the image's size
    assert Image.open(figure).size[0] > 100
    # again: the folder is not empty, so a fresh run-2 inside it; nothing overwritten
    before = {p: p.read_bytes() for p in out_dir.iterdir()}
    r = invoke("points", images[0], "--text", "a dog", "--out", out_dir)
    assert r.exit_code == 0, r.output
    assert "run-2" in one_line(r.output) and (out_dir / "run-2" / "a-dog__points.png").is_file()
    assert all(p.read_bytes() == b for p, b in before.items())


def test_points_figure_without_sam(invoke, images, tmp_path):
    r = invoke("points", images[1], "--text", "a dog", "--out", tmp_path / "fig")
    assert r.exit_code == 0, r.output
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["a-dog__points.png"]
