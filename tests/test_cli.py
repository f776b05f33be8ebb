"""The command line: decompose (tables, JSON, maps, bad input) and models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cliplens.cli import main


@pytest.fixture(scope="module")
def toy_weights(random_toy_weights):
    return str(random_toy_weights)


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(80, 64), (50, 90)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_decompose_json(toy_weights, images):
    r = CliRunner().invoke(main, ["decompose", *images, "-m", "toy", "-p", toy_weights, "-t", "a red circle",
                                  "-t", "a blue square", "--json", "--top", "3"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["exactness_relative_error"] < 1e-5
    assert [res["image"] for res in out["results"]] == images
    first = out["results"][0]["texts"][0]
    assert first["text"] == "a red circle"
    assert len(first["layers"]) == 3 and len(first["heads"]) == 3 and len(first["regions"]) == 3
    # heads and layers are ranked by score
    assert first["heads"][0]["score"] >= first["heads"][-1]["score"]
    assert all(len(r["box"]) == 4 for r in first["regions"])


def test_decompose_tables_and_maps_never_overwrite(toy_weights, images, tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    existing = maps / "img0__a-red-circle.png"
    existing.write_bytes(b"user file")
    r = CliRunner().invoke(main, ["decompose", images[0], "-m", "toy", "-p", toy_weights, "-t", "a red circle",
                                  "--maps", str(maps)])
    assert r.exit_code == 0, r.output
    assert "cosine similarity" in r.output and "top heads" in r.output
    assert existing.read_bytes() == b"user file"
    assert (maps / "img0__a-red-circle-2.png").stat().st_size > 1000


def test_bad_image_and_skip_bad(toy_weights, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = CliRunner().invoke(main, ["decompose", images[0], str(bad), "-m", "toy", "-p", toy_weights, "-t", "a star"])
    assert r.exit_code == 2
    assert "broken.jpg" in r.output and "--skip-bad" in r.output
    r = CliRunner().invoke(main, ["decompose", images[0], str(bad), "-m", "toy", "-p", toy_weights, "-t", "a star",
                                  "--skip-bad", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["skipped"][0]["image"] == str(bad) and "--skip-bad" not in out["skipped"][0]["error"]
    assert [x["image"] for x in out["results"]] == [images[0]] and "texts" in out["results"][0]


def test_empty_text_and_unknown_model(toy_weights, images):
    r = CliRunner().invoke(main, ["decompose", images[0], "-m", "toy", "-p", toy_weights, "-t", " "])
    assert r.exit_code == 2 and "empty" in r.output.lower()
    r = CliRunner().invoke(main, ["decompose", images[0], "-m", "ViT-B-23", "-t", "a dog"])
    assert r.exit_code == 2
    assert "ViT-B-32" in r.output  # a close match is suggested


def test_models_command():
    r = CliRunner().invoke(main, ["models", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    names = {row["name"] for row in rows}
    assert "toy" in names and "ViT-B-16" in names
    assert all(row["decomposable"] for row in rows)
    r = CliRunner().invoke(main, ["models", "--all", "--json", "--family", "open_clip"])
    rows = json.loads(r.stdout)
    rn50 = next(row for row in rows if row["name"] == "RN50")
    assert rn50["decomposable"] is False and "ResNet" in rn50["note"]


def test_folder_argument_expands_to_its_images(toy_weights, images, tmp_path):
    folder = tmp_path  # holds img0.png and img1.png from the fixture
    (folder / "notes.txt").write_text("not an image")
    r = CliRunner().invoke(main, ["decompose", str(folder), "-m", "toy", "-p", toy_weights, "-t", "a star", "--json"])
    assert r.exit_code == 0, r.output
    assert [res["image"] for res in json.loads(r.stdout)["results"]] == sorted(images)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["decompose", str(empty), "-m", "toy", "-p", toy_weights, "-t", "a star"])
    assert r.exit_code == 2 and "no image files" in r.output
