"""``cliplens textspan`` on a toy store: the table and the JSON report the share of each head's variance each
text's direction removes and the cumulative share, labelled as such; with no --pool the toy model's own pool is
used (no warning about words its tokenizer does not know), as atlas, retrieve and debias do."""

from __future__ import annotations

import json
import re

import pytest

from tests.cli.conftest import run, save_image


@pytest.fixture(scope="module")
def toy_store(random_toy_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("ts-cli") / "s"
    r = run("store", "build", "toy:label=shape,n=40,seed=3", "--model", "toy", "--pretrained", random_toy_weights,
            "--out", out, "--chunk-size", "16")
    assert r.exit_code == 0, r.output
    return out


def test_the_table_shows_the_share_removed_and_the_cumulative_share(toy_store, tmp_path):
    r = run("textspan", toy_store, "--last", "1", "--texts", "3", "--out", tmp_path / "ts")
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr  # the toy pool by default: every word is in the toy vocabulary
    d = json.loads((tmp_path / "ts" / "textspan.json").read_text())
    assert d["settings"]["pool"] == "toy" and len(d["heads"]) == 4
    assert "variance %" not in r.stdout and "removed %" in r.stdout and "cumulative %" in r.stdout
    tables = r.stdout.split("its 3 texts remove")[1:]  # one per head, in order
    assert len(tables) == len(d["heads"])
    for h, table in zip(d["heads"], tables, strict=True):
        title = f"{h['name']}: its 3 texts remove {100 * h['explained']:.1f} % of its variance"
        assert title in re.sub(r"\s+", " ", r.stdout)
        assert h["cumulative_share"][-1] == pytest.approx(sum(h["share_removed"]))
        for text, share, cum in zip(h["texts"], h["share_removed"], h["cumulative_share"], strict=True):
            row = re.search(rf"│ {re.escape(text)}\s+│\s+([\d.]+) │\s+([\d.]+) │", table)
            assert row is not None and row.groups() == (f"{100 * share:.2f}", f"{100 * cum:.2f}"), text


def test_every_command_computing_textspan_defaults_to_the_models_pool(toy_store, tmp_path):
    # retrieve chooses heads by text through TEXTSPAN computed there: the toy pool, no vocabulary warning
    query = save_image(tmp_path / "q.png", 64, 64)
    r = run("retrieve", toy_store, "--query", query, "--property", "colour", "--by", "text", "--json")
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr and "unknown" not in r.stderr
    r = run("textspan", toy_store, "--last", "1", "--texts", "2", "--pool", "general", "--out", tmp_path / "g")
    assert r.exit_code == 0 and "warning" in r.stderr  # what the default avoids: the general pool's words
