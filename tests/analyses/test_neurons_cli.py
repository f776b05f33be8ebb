"""``cliplens neurons STORE --layers …``: tables, JSON, files and atlas pages; readable refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cliplens
from cliplens.analyses.neurons import principal_components
from cliplens.datasets import open_dataset
from cliplens.store import StoreSettings, build_store
from tests.cli.conftest import one_line, run

SPEC = "toy:label=shape,n=16,seed=63"


@pytest.fixture(scope="module")
def store(tmp_path_factory, random_toy_weights):
    path = tmp_path_factory.mktemp("neurons-cli") / "store"
    build_store(cliplens.load("toy", pretrained=str(random_toy_weights)), open_dataset(SPEC), path,
                settings=StoreSettings(chunk_size=8, batch_size=8, neuron_layers=(2, 4)))
    return path


def test_json_files_and_atlas(store, tmp_path):
    out = tmp_path / "out"
    r = run("neurons", store, "--layers", "4,2", "--images", 12, "--top-k", 5, "--texts", 3, "--show", 2,
            "--pool", "toy", "--atlas", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["source"] == "store" and rep["images"] == 12 and set(rep["layers"]) == {"2", "4"}
    for k in ("2", "4"):
        lay = rep["layers"][k]
        assert list(lay["ablation"]) == ["baseline", "mean_ablated", "without_significant",
                                         "without_insignificant", "principal_components", "texts"]
        assert all(0.0 <= v <= 1.0 for v in lay["ablation"].values())
        peaks = [n["peak"] for n in lay["neurons"]]
        assert peaks == sorted(peaks, reverse=True) and len(peaks) == 256
        assert all(1 <= len(n["texts"]) <= 3 for n in lay["neurons"])
        eff = np.load(out / f"effects-L{k}.npy", mmap_mode="r")
        comp = principal_components(eff, layer=int(k), top_k=5)
        saved = np.load(out / f"components-L{k}.npz")
        assert np.allclose(saved["pcs"], comp.pcs) and eff.shape[0] == 12
        top = lay["neurons"][0]
        assert top["peak"] == pytest.approx(float(comp.norms[top["neuron"], -1]), rel=1e-6)
    assert (out / "ablation.png").exists() and (out / "neurons.json").exists()
    page = (out / "neurons-L04.html").read_text()
    first = rep["layers"]["4"]["neurons"][0]["neuron"]
    assert f"L4.N{first}" in page and "neuron-maps/" in page
    assert len(list((out / "neuron-maps").glob("L04.N*.png"))) >= 5


def test_tables(store, tmp_path):
    r = run("neurons", store, "--layers", "2", "--images", 8, "--top-k", 4, "--texts", 2, "--show", 3,
            "--pool", "toy", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    text = one_line(r.output)
    assert "layer 2: the 3 neurons with the largest second-order effects" in text
    assert "only the significant neurons mean-ablated" in text and "read from the store" in text


@pytest.mark.parametrize("layers, words", [("5", "no later attention head"), ("9", "does not exist"),
                                           ("two", "takes MLP layer indices")])
def test_refusals(store, tmp_path, layers, words):
    r = run("neurons", store, "--layers", layers, "--out", tmp_path / "x")
    assert r.exit_code == 2 and words in one_line(r.output) and "Traceback" not in r.output


def test_a_store_without_neuron_layers_reruns_the_model_on_its_data(tmp_path, random_toy_weights, store):
    plain = tmp_path / "plain"
    build_store(cliplens.load("toy", pretrained=str(random_toy_weights)), open_dataset(SPEC), plain,
                settings=StoreSettings(chunk_size=8, batch_size=8))
    r = run("neurons", plain, "--layers", "4", "--images", 6, "--top-k", 3, "--texts", 2, "--pool", "toy",
            "--data", SPEC, "--out", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["source"] == "forward"
    r2 = run("neurons", store, "--layers", "4", "--images", 6, "--top-k", 3, "--texts", 2, "--pool", "toy",
             "--out", tmp_path / "o2", "--json")
    assert r2.exit_code == 0 and json.loads(r2.stdout)["source"] == "store"
    a, b = np.load(tmp_path / "o" / "effects-L4.npy"), np.load(tmp_path / "o2" / "effects-L4.npy")
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()  # the same effects by both routes
    r = run("neurons", store, "--layers", "4", "--split", "test", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "describe the data set given with --data" in one_line(r.output)
