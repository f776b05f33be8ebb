"""Random weights only when asked for (``--pretrained random``), and then every output says so."""

from __future__ import annotations

import json

from PIL import Image

from tests.cli.conftest import one_line, run


def test_tables_say_random(tiny_vit, image):
    r = run("decompose", image, image, "-m", tiny_vit, "-p", "random", "-t", "a dog", "-t", "a cat")
    assert r.exit_code == 0, r.output
    out = one_line(r.stdout)
    assert "weights: random" in out and "meaningless" in out
    assert out.count("RANDOM WEIGHTS (scores mean nothing)") == 1 + 4  # the header and each image x text table
    assert "RANDOM weights" in one_line(r.stderr)  # the warning


def test_json_says_random(tiny_vit, image):
    r = run("decompose", image, "-m", tiny_vit, "-p", "random", "-t", "a dog", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["random_weights"] is True and out["weights"] == "random"


def test_json_of_real_weights_says_not_random(toy_args, image):
    out = json.loads(run("decompose", image, *toy_args, "-t", "a star", "--json").stdout)
    assert out["random_weights"] is False


def test_map_figures_say_random(tiny_vit, image, tmp_path):
    maps = tmp_path / "maps"
    r = run("decompose", image, "-m", tiny_vit, "-p", "random", "-t", "a dog", "--maps", maps)
    assert r.exit_code == 0, r.output
    assert [p.name for p in maps.glob("*.png")] == ["img__a-dog.png"]
    # the red RANDOM WEIGHTS line above the heading (tests/report/test_random_weights.py) is in the PNG's title
    assert "RANDOM WEIGHTS" in Image.open(maps / "img__a-dog.png").text["Title"]


def test_bench_says_random(tiny_vit):
    r = run("toy", "bench", "-m", tiny_vit, "-p", "random", "-n", "1", "--method", "uniform", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["random_weights"] is True and out["weights"] == "random"
    r = run("toy", "bench", "-m", tiny_vit, "-p", "random", "-n", "1", "--method", "uniform")
    assert r.exit_code == 0, r.output
    assert "RANDOM WEIGHTS" in one_line(r.stdout)
