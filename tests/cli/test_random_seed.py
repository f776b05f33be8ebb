"""``--pretrained random`` draws its weights from ``--seed`` (default 0): the same command gives the same
numbers, and a store built with random weights is accepted by the analyses that reload its model."""

from __future__ import annotations

import json

import pytest

from cliplens.jsonio import read_json, write_json_atomic
from tests.cli.conftest import one_line, run

DATA = "toy:label=shape,n=8,seed=5"


def _decompose(image, tiny_vit, *more):
    r = run("decompose", image, "-m", tiny_vit, "-p", "random", "-t", "a dog", "--json", *more)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_the_same_command_gives_the_same_numbers(tiny_vit, image):
    a, b = _decompose(image, tiny_vit), _decompose(image, tiny_vit)
    assert a == b and a["seed"] == 0 and a["random_weights"] is True
    c = _decompose(image, tiny_vit, "--seed", "1")
    assert c["seed"] == 1 and c["results"] != a["results"]
    assert _decompose(image, tiny_vit, "--seed", "0") == a


def test_seed_help_says_what_it_is_for(tiny_vit):
    r = run("decompose", "--help")
    assert "--seed" in r.output and "Only meaningful with random weights" in one_line(r.output)


@pytest.fixture(scope="module")
def stores(tiny_vit, tmp_path_factory):
    """Two stores of the tiny ViT with random weights: the default seed, and --seed 2."""
    tmp = tmp_path_factory.mktemp("random-stores")
    out = {}
    for name, more in (("default", ()), ("seed2", ("--seed", "2"))):
        r = run("store", "build", DATA, "-m", tiny_vit, "-p", "random", *more, "--out", tmp / name)
        assert r.exit_code == 0, r.output
        out[name] = tmp / name
    return out


def test_a_random_weight_store_records_its_seed(stores):
    assert read_json(stores["default"] / "store.json")["model"]["seed"] == 0
    assert read_json(stores["seed2"] / "store.json")["model"]["seed"] == 2


@pytest.mark.parametrize("which", ["default", "seed2"])
def test_textspan_and_atlas_accept_a_random_weight_store(stores, which, tmp_path):
    store = stores[which]
    r = run("textspan", store, "--pool", "toy", "--last", "1", "--texts", "2", "--out", tmp_path / "ts", "--json")
    assert r.exit_code == 0, r.output
    r = run("atlas", store, "--pool", "toy", "--last", "1", "--texts", "2", "--images-per-text", "1",
            "--out", tmp_path / "atlas", "--json")
    assert r.exit_code == 0, r.output


def test_a_store_of_unseeded_random_weights_says_what_to_do(stores, tmp_path):
    """Stores built before the seed existed record none: their weights cannot be drawn again."""
    old = tmp_path / "old"
    old.mkdir()
    for p in stores["default"].iterdir():
        if p.is_file():
            (old / p.name).write_bytes(p.read_bytes())
    header = read_json(old / "store.json")
    header["model"].pop("seed")
    header["model"]["fingerprint"] = "0" * 32  # what a draw of another run would have
    write_json_atomic(old / "store.json", header)
    manifest = read_json(old / "manifest.json")
    manifest.pop("header")  # such stores were written before the manifest recorded the header's checksum
    write_json_atomic(old / "manifest.json", manifest)
    r = run("textspan", old, "--pool", "toy", "--last", "1", "--texts", "2", "--out", tmp_path / "ts")
    assert r.exit_code == 2 and "Traceback" not in r.output
    msg = one_line(r.stderr)
    assert "records no seed" in msg and "build the store again" in msg and "--model/--pretrained" not in msg
