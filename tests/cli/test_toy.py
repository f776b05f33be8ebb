"""``cliplens toy``: commands that take --threads leave the process's torch thread count as they found it."""

from __future__ import annotations

import pytest
import torch

import cliplens.cli.toy as toy_cli
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

    monkeypatch.setattr(toy_cli, "finetune_spurious", fake_finetune)
    before = torch.get_num_threads()
    r = run("toy", "spurious", "--weights", random_toy_weights, "--out", tmp_path / "sp", "--threads", other_threads)
    assert r.exit_code == 0, r.output
    assert "before: average 50.0%" in r.stdout
    assert seen["threads"] == other_threads and torch.get_num_threads() == before
