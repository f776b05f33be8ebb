"""Tables readable at 80 columns and in a pipe (click's runner is not a terminal, as a pipe is not): every value
whole (no "…"), no line wider than the console, the same numbers as --json; and progress bars on stderr only,
so that stdout stays clean."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from rich.console import Console

import cliplens
from cliplens.cli import main
from cliplens.cli.tables import Column, print_table
from cliplens.datasets import open_dataset
from cliplens.progress import progress_bar
from cliplens.store import StoreSettings, build_store
from tests.cli.conftest import save_image

SPEC = "toy:label=shape,shapes=circle|square,bg_kind=striped|dotted,sizes=small,n=24,seed=3"
METHODS = ["surgery", "decomposition", "gem", "maskclip", "sclip", "naclip", "token-similarity"]


def run(*args: object, columns: str | None = "80", terminal: bool = False):
    """``cliplens ARGS`` with COLUMNS as given (``None``: unset, as in a pipe); ``terminal``: rich believes
    stdout and stderr are terminals (so that progress bars draw)."""
    env = {"COLUMNS": columns, "LINES": None, "TTY_COMPATIBLE": "1" if terminal else None}
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("tables")
    store = tmp / "store"
    build_store(cliplens.load("toy-spurious"), open_dataset(SPEC), store,
                settings=StoreSettings(chunk_size=24, batch_size=24))
    images = [save_image(tmp / f"img{i}.png", seed=i) for i in range(2)]
    return SimpleNamespace(tmp=tmp, store=store, images=images)


def _rows(text: str) -> list[list[str]]:
    """The body rows of the tables in ``text``, as lists of stripped cells (a wrapped row gives more rows)."""
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in text.splitlines()
            if line.lstrip().startswith("│")]


def _check_layout(text: str, width: int = 80) -> None:
    assert "…" not in text, text
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide


# ---- the helper -----------------------------------------------------------------------------------------

def _render(columns, rows, width=80, **kwargs) -> str:
    con = Console(file=io.StringIO(), width=width, highlight=False)
    print_table(con, columns, rows, **kwargs)
    return con.file.getvalue()


def test_a_wide_grid_of_numbers_is_split_into_parts_that_repeat_the_key():
    methods = [f"method-number-{i}" for i in range(9)]
    rows = [[f"class {c}", *(f"{c * 10 + i + 0.5:.1f}" for i in range(9))] for c in range(5)]
    text = _render(["class", *(Column(m, number=True) for m in methods)], rows, title="IoU per class")
    _check_layout(text)
    assert re.findall(r"\(part \d of (\d)\)", text) and "IoU per class (part 1 of" in text
    cells = {(r[0], v) for r in _rows(text) for v in r[1:] if v}
    for row in rows:
        for value in row[1:]:
            assert (row[0], value) in cells  # each number whole, in the row of its class
    for m in methods:
        assert m in text


def test_a_table_that_fits_is_one_table_and_texts_wrap_between_words():
    text = _render(["text", Column("variance %", number=True)],
                   [("a picture of an object on the left of a long caption " * 2, "12.34")], title="L5.H0")
    _check_layout(text)
    assert "part" not in text and "12.34" in text and "caption" in text


def test_a_wide_table_of_texts_becomes_records():
    rows = [(f"laion/CLIP-ViT-bigG-14-laion2B-39B-b160k-{i}", "transformers", "tag_" * 8, "yes",
             "a long note " * 6) for i in range(3)]
    text = _render(["name", "family", "pretrained", "decomposable", "note"], rows, title="models")
    _check_layout(text)
    for r in rows:
        assert f"\n{r[0]}\n" in text  # the key whole, on its own line
    assert "  family: transformers" in text


def test_markup_in_values_is_shown_as_it_is():
    text = _render(["class", Column("n", number=True)], [("[bold]red[/bold] circle", "1")])
    assert "[bold]red[/bold] circle" in text


# ---- the commands --------------------------------------------------------------------------------------

def test_segment_eval_tables_show_the_json_numbers_whole(ctx):
    out = ctx.tmp / "se"
    args = ["segment-eval", "toy:n=2", *(a for m in METHODS for a in ("--method", m)), "--out", out, "--no-progress"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    text = r.stdout
    _check_layout(text)
    d = json.loads(run(*args, "--json").stdout)["methods"]
    rows = _rows(text)
    for m, res in d.items():  # the methods table: mIoU and pixel accuracy in the method's row
        assert [m, f"{res['miou']:.1f}", f"{res['pixel_accuracy']:.1f}"] in rows
    per_class = {}  # class -> every value in its rows, over the parts
    for row in rows:
        per_class.setdefault(row[0], []).extend(row[1:])
    checked = 0
    for m, res in d.items():
        for c, v in res["per_class_iou"].items():
            if v is not None:
                assert f"{v:.1f}" in per_class[c], (m, c, v)
                checked += 1
    assert checked >= 2 * len(METHODS)


@pytest.fixture(scope="module")
def long_ids(ctx):
    """A store of an image folder whose ids are as long as ImageNet's (class folder / file name, 38 characters)."""
    folder = ctx.tmp / "photos"
    for i in range(8):
        save_image(folder / ("n0144076" + str(i % 2)) / f"ILSVRC2012_val_{i:08d}.JPEG", seed=i)
    build_store(cliplens.load("toy"), open_dataset(str(folder)), ctx.tmp / "long-ids",
                settings=StoreSettings(chunk_size=8, batch_size=8))
    return ctx.tmp / "long-ids"


def test_retrieve_shows_every_id_whole(long_ids):
    args = ["retrieve", long_ids, "--query-index", "4", "--heads", "L4.H2,L5.H1", "--top", "6"]
    d = json.loads(run(*args, "--json").stdout)
    r = run(*args)
    assert r.exit_code == 0, r.output
    _check_layout(r.stdout)
    cells = {c for row in _rows(r.stdout) for c in row}
    ids = [n["id"] for lst in d["neighbours"].values() for n in lst]
    assert len(ids) == 12 and min(map(len, ids)) == 38 and all(i in cells for i in ids)
    assert all(f"{n['similarity']:.3f}" in cells for lst in d["neighbours"].values() for n in lst)


TABLES = {
    "models": lambda c: ["models"],
    "decompose": lambda c: ["decompose", c.images[0], "-t", "a red circle on a striped background", "-t", "a square"],
    "tags": lambda c: ["tags", *c.images, "-c", "red circle,blue square,green triangle on a dotted background"],
    "ablate": lambda c: ["ablate", c.store, "--plot", c.tmp / "ablate.png", "--overwrite"],
    "textspan": lambda c: ["textspan", c.store, "--last", "2", "--texts", "4", "--pool", "toy", "--out",
                           c.tmp / "ts"],
    "retrieve": lambda c: ["retrieve", c.store, "--query-index", "1", "--property", "background", "--top", "5"],
    "debias": lambda c: ["debias", c.store, "--spurious", "bg_kind", "--random-sets", "2"],
    "toy eval": lambda c: ["toy", "eval", "-n", "4", "--n-retrieval", "4", "--threads", "1"],
    "toy bench": lambda c: ["toy", "bench", "-n", "2", "--method", "surgery", "--method", "decomposition"],
    "toy heads": lambda c: ["toy", "heads", "-n", "10", "--last", "1", "--texts", "3"],
}


@pytest.mark.parametrize("name", list(TABLES))
def test_every_table_fits_a_pipe_with_values_whole(name, ctx):
    args = TABLES[name](ctx)
    r = run(*args, columns=None)  # a pipe: rich assumes 80 columns
    assert r.exit_code == 0, r.output
    _check_layout(r.stdout)
    assert _rows(r.stdout) or name == "models"  # models may print records
    if "--json" not in args:  # and the same command gives JSON
        j = run(*args, "--json") if name != "ablate" else run(*args[:-3], "--json", "--plot", ctx.tmp / "a2.png")
        assert j.exit_code == 0, j.output
        json.loads(j.stdout)


# ---- progress on stderr, stdout clean ---------------------------------------------------------------------

def test_every_progress_bar_is_built_on_stderr():
    from cliplens.cli.common import progress
    from cliplens.text.encode import progress_bar as text_bar

    bars = [progress_bar(), progress(True), text_bar(True, 3, "texts")]
    bars[-1].stop()
    assert all(b.console.stderr for b in bars)


@pytest.mark.parametrize("args", [
    ["toy", "bench", "-n", "3", "--method", "surgery"],
    ["tags", "{images}", "-c", "red circle,blue square", "--batch-size", "1"],
    ["decompose", "{images}", "-t", "a red circle", "--batch-size", "1"],
    ["textspan", "{store}", "--last", "1", "--texts", "2", "--pool", "toy", "--out", "{tmp}/tsp"],
], ids=lambda a: " ".join(a[:2]))
def test_stdout_stays_clean_while_the_bar_draws_on_stderr(args, ctx):
    def expand(a):
        return ctx.images if a == "{images}" else [a.format(store=ctx.store, tmp=ctx.tmp)]

    argv = [x for a in args for x in expand(a)]
    r = run(*argv, terminal=True)
    assert r.exit_code == 0, r.output
    assert re.search(r"\d+/\d+", r.stderr), r.stderr  # the bar's done/total
    assert not re.search(r"\b\d+/\d+\b", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", r.stdout).replace("L5.H", ""))
    j = run(*argv, "--json", terminal=True)
    assert j.exit_code == 0, j.output
    json.loads(j.stdout)


def test_toy_training_draws_its_bar_on_stderr(tmp_path):
    r = run("toy", "train", "--out", tmp_path / "run", "--steps", "2", "--batch-size", "4", "--width", "32",
            "--layers", "1", "--heads", "2", "--image-size", "32", "--embed-dim", "16", "--text-width", "32",
            "--text-layers", "1", "--workers", "0", "--threads", "1", "--eval-n", "0", "--decay-start", "1",
            terminal=True)
    assert r.exit_code == 0, r.output
    assert "train" in r.stderr and re.search(r"\d/2", r.stderr)
    assert json.loads(r.stdout)["steps_done"] == 2  # stdout: the summary alone


def test_store_builder_draws_its_bar_on_stderr(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    build_store(cliplens.load("toy"), open_dataset("toy:n=4,seed=1"), tmp_path / "s",
                settings=StoreSettings(chunk_size=4, batch_size=4), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "store (1 chunks to do)" in err
