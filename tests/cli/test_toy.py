"""``cliplens toy``: commands that take --threads leave the process's torch thread count as they found it."""

from __future__ import annotations

import pytest
import torch

from cliplens.cli.common import torch_threads
from tests.cli.conftest import run


@pytest.fixture()
def other_threads():
    """A thread count different from the current one (restored by the test's end in any case)."""
    before = torch.get_num_threads()
    yield before + 1
    torch.set_num_threads(before)


def test_torch_threads_restores_even_after_an_error(other_threads):
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(other_threads):
        assert torch.get_num_threads() == other_threads
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_eval_restores_threads(random_toy_weights, other_threads):
    before = torch.get_num_threads()
    r = run("toy", "eval", "--weights", random_toy_weights, "-n", "1", "--n-retrieval", "0",
            "--threads", other_threads)
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == before


def test_bench_restores_threads(toy_args, other_threads):
    before = torch.get_num_threads()
    r = run("toy", "bench", *toy_args, "-n", "1", "--method", "uniform", "--threads", other_threads, "--json")
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == before


def test_spurious_uses_and_restores_threads(random_toy_weights, other_threads, tmp_path, monkeypatch):
    seen = {}
    result = {"average": 0.5, "worst": 0.25, "worst_group": "g", "gap": 0.25, "groups": {"g": 0.25}}

    def fake_finetune(weights, out_dir, **kwargs):  # the real one fine-tunes for a while
        seen["threads"] = torch.get_num_threads()
        return {"spurious": {"before": result, "after": result}}

    monkeypatch.setattr("cliplens.experiments.train.finetune_spurious", fake_finetune)
    before = torch.get_num_threads()
    r = run("toy", "spurious", "--weights", random_toy_weights, "--out", tmp_path / "sp", "--threads", other_threads)
    assert r.exit_code == 0, r.output
    assert "before: average 50.0%" in r.stdout
    assert seen["threads"] == other_threads and torch.get_num_threads() == before


def test_heads_table_and_json(tmp_path):
    # the shipped toy-clip, 30 scenes, last layer: the table, the agreement line, and JSON with every head
    store = tmp_path / "st"
    r = run("toy", "heads", "-n", 30, "--seed", 3, "--last", 1, "--texts", 2, "--store", store)
    assert r.exit_code == 0, r.output
    assert "L5.H0" in r.stdout and "L5.H3" in r.stdout and "agreement:" in r.stdout
    j = run("toy", "heads", "-n", 30, "--seed", 3, "--last", 1, "--texts", 2, "--store", store, "--json")
    assert j.exit_code == 0, j.output
    import json

    d = json.loads(j.stdout)
    assert [h["name"] for h in d["heads"]] == [f"L5.H{h}" for h in range(4)]
    assert all(len(h["texts"]) == 2 and h["measured_factor"] in h["shares"] for h in d["heads"])
    assert d["agreement"] == sum(h["agrees"] for h in d["heads"]) / 4
    assert (store / "store.json").exists()  # the store was kept and reused by the second call


def test_heads_on_single_object_scenes():
    import json

    r = run("toy", "heads", "-n", 40, "--seed", 3, "--last", 2, "--texts", 2, "--objects", 1, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["settings"]["objects"] == 1
    assert all(h["shares"]["count"] == 0.0 for h in d["heads"])  # one object everywhere: count explains nothing


def test_heads_refuses_too_many_layers():
    r = run("toy", "heads", "-n", 20, "--last", 9)
    assert r.exit_code != 0 and "Traceback" not in r.output and "1..6" in r.output
