"""The command line: decompose (tables, JSON, maps, folders, bad input) and models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cliplens.cli import main
from tests.cli.conftest import one_line, run, save_image


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
    assert (maps / "run-2" / "img0__a-red-circle.png").stat().st_size > 1000  # a folder not empty: a fresh run-N


def test_bad_image_and_skip_bad(toy_weights, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = run("decompose", images[0], str(bad), "-m", "toy", "-p", toy_weights, "-t", "a star")
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
    assert rn50["decomposable"] is True and "ResNet" in rn50["note"] and "pool only" in rn50["note"]


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


# ---- folders: a bad file stops the run after everything before it is written ------------------


@pytest.fixture()
def folder_with_bad_file(tmp_path):
    """a.png, b.png, c-broken.png (not an image), d.png."""
    folder = tmp_path / "photos"
    for i, stem in enumerate(["a", "b", "d"]):
        save_image(folder / f"{stem}.png", seed=i)
    (folder / "c-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


@pytest.mark.parametrize("batch_size", ["1", "8"])
def test_bad_file_in_folder_stops_after_writing_the_finished_results(toy_args, folder_with_bad_file, tmp_path,
                                                                     batch_size):
    maps = tmp_path / "maps"
    r = run("decompose", folder_with_bad_file, *toy_args, "-t", "a red circle", "--json", "--maps", maps,
            "--batch-size", batch_size)
    assert r.exit_code == 2 and "Traceback" not in r.output
    out = json.loads(r.stdout)
    assert [Path(x["image"]).name for x in out["results"]] == ["a.png", "b.png"]
    assert Path(out["stopped_at"]["image"]).name == "c-broken.png"
    assert sorted(p.name for p in maps.iterdir()) == ["a__a-red-circle.png", "b__a-red-circle.png"]
    message = one_line(r.stderr)
    assert "c-broken.png" in message and "the 2 images before it are done" in message and "--skip-bad" in message
    assert str(maps) in message

    r = run("decompose", folder_with_bad_file, *toy_args, "-t", "a red circle", "--batch-size", batch_size)
    assert r.exit_code == 2
    tables = r.stdout
    assert "a.png" in tables and "b.png" in tables and "d.png" not in tables and "cosine similarity" in tables
    assert "printed above" in one_line(r.stderr)


def test_skip_bad_goes_on_and_does_not_ask_for_itself(toy_args, folder_with_bad_file):
    r = run("decompose", folder_with_bad_file, *toy_args, "-t", "a red circle", "--json", "--skip-bad")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [Path(x["image"]).name for x in out["results"]] == ["a.png", "b.png", "d.png"]
    assert [Path(x["image"]).name for x in out["skipped"]] == ["c-broken.png"]
    assert "skipped" in r.stderr and "c-broken.png" in r.stderr and "--skip-bad" not in r.output


def test_skip_bad_with_nothing_left_is_an_error(toy_args, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    r = run("decompose", bad, *toy_args, "-t", "a star", "--skip-bad")
    assert r.exit_code == 2 and "no image could be loaded" in one_line(r.stderr) and "--skip-bad" not in r.output


def test_hidden_and_non_image_files_are_skipped_and_recursive_descends(toy_args, tmp_path):
    folder = tmp_path / "photos"
    save_image(folder / "a.png")
    save_image(folder / ".hidden.png")  # a readable image, skipped for being hidden
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not an image
    (folder / "notes.txt").write_text("not an image")
    save_image(folder / "sub" / "b.jpg")
    save_image(folder / ".cache" / "c.png")  # inside a hidden folder

    def names(*more):
        r = run("decompose", folder, *toy_args, "-t", "a star", "--json", *more)
        assert r.exit_code == 0, r.output
        return [str(Path(x["image"]).relative_to(folder)) for x in json.loads(r.stdout)["results"]]

    assert names() == ["a.png"]
    assert names("--recursive") == ["a.png", "sub/b.jpg"]


def test_max_pixels_refuses_and_overrides(toy_args, tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((1, 400), np.uint8)).save(wide)  # the toy's 64 px resize makes it 25600x64
    r = run("decompose", wide, *toy_args, "-t", "a star", "--max-pixels", "1000000")
    assert r.exit_code == 2
    message = one_line(r.stderr)
    assert "wide.png" in message and "400x1" in message and "--max-pixels" in message and "Traceback" not in message
    r = run("decompose", wide, *toy_args, "-t", "a star", "--max-pixels", "2000000", "--json")
    assert r.exit_code == 0, r.output


def test_relative_is_its_own_field_and_one_text_says_why_it_does_nothing(toy_args, image):
    r = run("decompose", image, *toy_args, "-t", "a red circle", "-t", "a blue square", "--relative", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    first = out["results"][0]["texts"][0]
    assert out["relative"] is True and {"similarity", "relative_score"} <= set(first)
    plain = json.loads(run("decompose", image, *toy_args, "-t", "a red circle", "-t", "a blue square",
                           "--json").stdout)["results"][0]["texts"][0]
    assert plain["similarity"] == pytest.approx(first["similarity"])  # still the cosine similarity
    assert "relative_score" not in plain
    r = run("decompose", image, *toy_args, "-t", "a red circle", "--relative", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["relative"] is False
    assert "--relative does nothing with one text" in one_line(r.stderr)
