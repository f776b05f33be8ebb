"""``cliplens atlas`` end to end on a small store of the embedded toy model: TEXTSPAN computed on the fly or
read from a file, the data set reopened or given, a folder never overwritten, and clean errors."""

from __future__ import annotations

import json

import pytest

from tests.analyses.atlas_setup import SPEC, atlas_setup
from tests.cli.conftest import one_line, run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return atlas_setup(tmp_path_factory)


def test_textspan_on_the_fly_then_from_a_file_and_a_folder_never_overwritten(setup, tmp_path):
    out = tmp_path / "atlas"
    r = run("atlas", setup.store.path, "--out", out, "--last", "1", "--texts", "2", "--images-per-text", "2",
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["folder"] == str(out) and d["heads"] == ["L5.H0", "L5.H1", "L5.H2", "L5.H3"] and d["layers"] == [5]
    assert d["map_source"] == {"5": "store"}
    assert sorted(p.name for p in out.iterdir()) == ["atlas.json", "images", "index.html", "layer-05.html", "maps"]
    data = json.loads((out / "atlas.json").read_text())
    assert data["info"]["textspan"]["pool"] == "toy"  # the default pool for a store of the toy model
    assert all(len(h["texts"]) == 2 and len(h["texts"][0]["top"]) == 2 for h in data["heads"])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # TEXTSPAN results read from a file, the data set given: into the same folder, which is not overwritten
    setup.spans.write(tmp_path / "ts")
    r = run("atlas", setup.store.path, "--textspan", tmp_path / "ts" / "textspan.json", "--data", SPEC, "--out", out,
            "--images-per-text", "1")
    assert r.exit_code == 0, r.output
    text = one_line(r.output)
    assert "not empty: writing to the fresh folder" in text and f"open {out / 'run-2' / 'index.html'}" in text
    assert "atlas of 8 heads in layers 4, 5: 3 pages" in text
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "run-2" not in p.parts} == before
    data = json.loads((out / "run-2" / "atlas.json").read_text())
    assert [h["name"] for h in data["heads"]] == [h.name for h in setup.spans.heads]
    assert data["map_source"] == {"4": "model", "5": "store"}


def test_mistakes_are_clean_errors(setup, tmp_path):
    store = setup.store.path

    def fails(*args: object, match: str) -> None:
        r = run("atlas", *args)
        assert r.exit_code == 2, r.output
        assert match in one_line(r.output) and "Traceback" not in r.output

    fails(tmp_path / "nothing", "--out", tmp_path / "a", match="is not a cliplens store")
    (tmp_path / "bad.json").write_text("{}")
    fails(store, "--textspan", tmp_path / "bad.json", "--out", tmp_path / "a", match="is not a TEXTSPAN result")
    setup.spans.write(tmp_path / "ts")
    d = json.loads((tmp_path / "ts" / "textspan.json").read_text())
    d["heads"][0]["layer"] = 9
    (tmp_path / "alien.json").write_text(json.dumps(d))
    fails(store, "--textspan", tmp_path / "alien.json", "--out", tmp_path / "a",
          match="heads that the store's model does not have (L9.H0")
    fails(store, "--textspan", tmp_path / "ts", "--pool", "general", match="only apply when TEXTSPAN is computed now")
    fails(store, "--data", SPEC.replace("seed=5", "seed=6"), "--out", tmp_path / "a",
          match="is not the one the store was made from")
    (tmp_path / "file").write_text("mine")
    fails(store, "--textspan", tmp_path / "ts", "--out", tmp_path / "file", match="is a file, not a folder")
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "a").exists()
