"""The one writer rule, command by command (cliplens.report.files): a file the user names is refused if it
exists unless --overwrite, checked before any work, and written under a temporary name then renamed (a run that
fails leaves the user's file whole); a folder that is not empty gets a fresh run-N inside it; every default
output folder is in .gitignore; absurd numbers end in a clear message, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import click
import pytest

import cliplens
from cliplens.cli import LazyGroup, main
from cliplens.cli.common import FILE_RULE, FOLDER_RULE, OutputOption, max_threads
from cliplens.datasets import open_dataset
from cliplens.errors import OutputExistsError
from cliplens.report.files import claim_output, written_then_renamed
from cliplens.store import StoreSettings, build_store
from tests.cli.conftest import one_line, run, save_image

ROOT = Path(__file__).resolve().parents[2]
USERS = b"the user's own bytes: never to be lost"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> SimpleNamespace:
    """A small store of the embedded toy model, an image, a file where a folder is expected."""
    tmp = tmp_path_factory.mktemp("outputs")
    store = tmp / "store"
    build_store(cliplens.load("toy"), open_dataset("toy:n=12,seed=1"), store,
                settings=StoreSettings(chunk_size=12, batch_size=12))
    afile = tmp / "afile"
    afile.write_text("a file, not a folder")
    return SimpleNamespace(store=store, image=save_image(tmp / "img.png"), afile=afile)


def _fake_finetune(weights, out_dir, *, export=None, **kwargs):
    """Stands in for the 40-step fine-tune (about a minute): what it writes, where the command asks."""
    (Path(out_dir) / "summary.json").write_text("{}")
    if export:
        Path(export).write_bytes(b"new weights")
        Path(export).with_suffix(".json").write_text('{"new": true}')
    acc = {"groups": {"circle on striped": 1.0}, "average": 1.0, "worst": 1.0, "worst_group": "circle on striped",
           "gap": 0.0}
    return {"spurious": {"before": acc, "after": acc}}


def _failing_finetune(weights, out_dir, *, export=None, **kwargs):
    """A fine-tune that dies while writing its export (a full disk, a kill)."""
    Path(export).write_bytes(b"trunc")
    raise OSError(28, "No space left on device")


def _failing_plot(accs, baseline, path, **kwargs):
    Path(path).write_bytes(b"\x89PNG trunc")
    raise OSError(28, "No space left on device")


# command, option, how to run it with the file, the work that must not start before the file is checked
FILE_OUTPUTS = {
    "ablate --plot": ("--plot", lambda c, f: ["ablate", c.store, "--plot", f], ("cliplens.analyses.ablation",
                                                                                  "standard_study")),
    "toy eval --json-out": ("--json-out", lambda c, f: ["toy", "eval", "-n", "4", "--n-retrieval", "4",
                                                        "--threads", "1", "--json-out", f],
                            ("cliplens.experiments.evaluate", "evaluate")),
    "toy spurious --export": ("--export", lambda c, f: ["toy", "spurious", "--out", f.parent / "run", "--export",
                                                         f], ("cliplens.experiments.train", "finetune_spurious")),
}


def _forbid(monkeypatch, where: tuple[str, str]) -> None:
    def started(*args, **kwargs):
        raise AssertionError("the work started before the output file was checked")

    monkeypatch.setattr(".".join(where), started)


@pytest.mark.parametrize("name", list(FILE_OUTPUTS))
def test_an_existing_file_is_refused_before_any_work_and_left_as_it_was(name, ctx, tmp_path, monkeypatch):
    option, args, work = FILE_OUTPUTS[name]
    target = tmp_path / ("out.safetensors" if option == "--export" else "out.png")
    target.write_bytes(USERS)
    _forbid(monkeypatch, work)
    r = run(*args(ctx, target))
    assert r.exit_code == 2, r.output
    message = one_line(r.stderr)
    assert option in message and str(target) in message and "--overwrite" in message and "already exists" in message
    assert target.read_bytes() == USERS
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file left, no run folder


def test_a_sidecar_that_exists_is_refused_too(ctx, tmp_path, monkeypatch):
    sidecar = tmp_path / "w.json"
    sidecar.write_bytes(USERS)
    _forbid(monkeypatch, ("cliplens.experiments.train", "finetune_spurious"))
    r = run("toy", "spurious", "--out", tmp_path / "run", "--export", tmp_path / "w.safetensors")
    assert r.exit_code == 2 and str(sidecar) in one_line(r.stderr) and "--overwrite" in r.stderr
    assert sidecar.read_bytes() == USERS and not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("name", list(FILE_OUTPUTS))
def test_overwrite_replaces_the_file(name, ctx, tmp_path, monkeypatch):
    option, args, _ = FILE_OUTPUTS[name]
    target = tmp_path / ("out.safetensors" if option == "--export" else "out.png")
    target.write_bytes(USERS)
    if option == "--export":
        target.with_suffix(".json").write_bytes(USERS)
        monkeypatch.setattr("cliplens.experiments.train.finetune_spurious", _fake_finetune)
    r = run(*args(ctx, target), "--overwrite")
    assert r.exit_code == 0, r.output
    new = target.read_bytes()
    if option == "--plot":
        assert new.startswith(b"\x89PNG")
    elif option == "--json-out":
        assert json.loads(new)["n"] == 4
    else:
        assert new == b"new weights" and json.loads(target.with_suffix(".json").read_text()) == {"new": True}
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


@pytest.mark.parametrize("option", ["--plot", "--export"])
def test_a_run_that_fails_while_writing_leaves_the_users_file_whole(option, ctx, tmp_path, monkeypatch):
    target = tmp_path / ("w.safetensors" if option == "--export" else "curve.png")
    target.write_bytes(USERS)
    if option == "--plot":
        monkeypatch.setattr("cliplens.report.plotting.save_ablation_curve", _failing_plot)
        r = run("ablate", ctx.store, "--plot", target, "--overwrite")
    else:
        target.with_suffix(".json").write_bytes(USERS)
        monkeypatch.setattr("cliplens.experiments.train.finetune_spurious", _failing_finetune)
        r = run("toy", "spurious", "--out", tmp_path / "run", "--export", target, "--overwrite")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert target.read_bytes() == USERS
    if option == "--export":
        assert target.with_suffix(".json").read_bytes() == USERS
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_ablate_without_plot_numbers_its_own_file_in_the_store(ctx):
    first = ctx.store / "ablation-curve.png"
    first.write_bytes(USERS)
    try:
        r = run("ablate", ctx.store, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["plot"] == str(ctx.store / "ablation-curve-2.png")
        assert first.read_bytes() == USERS and (ctx.store / "ablation-curve-2.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        for p in ctx.store.glob("ablation-curve*.png"):
            p.unlink()


def test_plot_with_components_is_refused_rather_than_ignored(ctx, tmp_path):
    r = run("ablate", ctx.store, "--components", "L1", "--plot", tmp_path / "p.png")
    assert r.exit_code == 2 and "--plot" in r.stderr and "--components" in r.stderr
    assert not (tmp_path / "p.png").exists()


def test_claim_and_write_in_python(tmp_path):
    path = tmp_path / "sub" / "x.json"
    assert claim_output(path, overwrite=False, option="--json-out") == path and path.parent.is_dir()
    with written_then_renamed(path, overwrite=False, option="--json-out") as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".json" and tmp != path
        tmp.write_text("1")
    assert path.read_text() == "1"
    with pytest.raises(OutputExistsError, match="--overwrite"):
        claim_output(path, overwrite=False, option="--json-out")
    # a file that appeared while the work ran is not replaced either
    with pytest.raises(OutputExistsError, match="already exists"):
        with written_then_renamed(path, overwrite=False, option="--json-out") as tmp:
            tmp.write_text("2")
    assert path.read_text() == "1" and sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


# ---- folders: new or empty, else a fresh run-N inside; nothing there touched -------------------------------

FOLDER_OUTPUTS = {
    "report --out": lambda c, d: ["report", c.image, "-t", "a red circle", "--out", d],
    "explain --out": lambda c, d: ["explain", c.image, "-t", "a red circle", "--method", "decomposition", "--out", d],
    "segment --out": lambda c, d: ["segment", c.image, "-c", "red circle,blue square", "--templates", "none",
                                   "--out", d],
    "points --out": lambda c, d: ["points", c.image, "-t", "a red circle", "--out", d],
    "demo --out": lambda c, d: ["demo", "--out", d],
    "atlas --out": lambda c, d: ["atlas", c.store, "--last", "1", "--texts", "1", "--images-per-text", "1",
                                 "--out", d],
    "textspan --out": lambda c, d: ["textspan", c.store, "--last", "1", "--texts", "2", "--pool", "toy",
                                    "--out", d],
    "decompose --maps": lambda c, d: ["decompose", c.image, "-t", "a red circle", "--maps", d],
    "toy spurious --out": lambda c, d: ["toy", "spurious", "--out", d],
}


@pytest.mark.parametrize("name", list(FOLDER_OUTPUTS))
def test_a_folder_with_files_gets_a_fresh_run_folder(name, ctx, tmp_path, monkeypatch):
    monkeypatch.setattr("cliplens.experiments.train.finetune_spurious", _fake_finetune)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(USERS)
    (folder / "index.html").write_bytes(USERS)  # a name the commands write themselves
    r = run(*FOLDER_OUTPUTS[name](ctx, folder))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "notes.txt", "run-2"]
    assert (folder / "notes.txt").read_bytes() == USERS and (folder / "index.html").read_bytes() == USERS
    assert any((folder / "run-2").iterdir())


@pytest.mark.parametrize("name", list(FOLDER_OUTPUTS))
def test_a_folder_that_cannot_be_written_is_said_before_any_work(name, ctx, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("the work started before the output folder was checked")

    for where in ("cliplens.models.load", "cliplens.report.demo.load"):
        monkeypatch.setattr(where, started)
    monkeypatch.setattr("cliplens.experiments.train.finetune_spurious", started)
    r = run(*FOLDER_OUTPUTS[name](ctx, ctx.afile / "out"))
    assert r.exit_code == 2, r.output
    assert "cannot be created or written to" in one_line(r.stderr) and "bug" not in r.output


@pytest.mark.parametrize("name", ["report --out", "explain --out", "segment --out", "points --out",
                                  "decompose --maps", "textspan --out"])
def test_a_run_that_fails_before_writing_leaves_no_empty_folder(name, ctx, tmp_path, monkeypatch):
    def failed(*args, **kwargs):
        raise cliplens.errors.ModelLoadError("no such model here")

    monkeypatch.setattr("cliplens.models.load", failed)
    r = run(*FOLDER_OUTPUTS[name](ctx, tmp_path / "new" / "out"))
    assert r.exit_code == 2 and "no such model here" in r.stderr
    assert list(tmp_path.iterdir()) == []


# ---- every output option says its rule; every default output folder is in .gitignore ---------------------

#: options that name outputs with semantics of their own, owned elsewhere: a training run folder and its
#: export, a store (resumed when it is the same), a resumable evaluation run
OWN_SEMANTICS = {("toy train", "out_dir"), ("toy train", "export"), ("store build", "out_dir"),
                 ("segment-eval", "out_dir"), ("toy heads", "store_dir")}
OUTPUT_NAMES = {"out_dir", "plot", "json_out", "export", "maps_dir", "store_dir", "out"}


def _commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    commands = group.all_commands() if isinstance(group, LazyGroup) else group.commands
    for name, cmd in sorted(commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), cmd


def test_every_output_option_states_the_rule_and_files_come_with_overwrite():
    seen = {"file": 0, "folder": 0}
    for path, cmd in _commands():
        params = {p.name: p for p in cmd.params}
        for p in cmd.params:
            if isinstance(p, OutputOption):
                seen[p.kind] += 1
                assert (FILE_RULE if p.kind == "file" else FOLDER_RULE) in (p.help or ""), (path, p.name)
                if p.kind == "file":
                    assert "overwrite" in params, f"{path} writes {p.opts[0]} but has no --overwrite"
                    assert p.opts[0] in (params["overwrite"].help or ""), (path, p.opts[0])
            elif p.name in OUTPUT_NAMES:
                assert (path, p.name) in OWN_SEMANTICS, f"{path} {p.opts[0]}: declare it with output_option"
    assert seen["file"] >= 3 and seen["folder"] >= 9


def _default_outputs() -> dict[str, str]:
    """Every folder a command writes in the working directory when no path is given: option defaults that
    are paths to write (not inputs that must exist), and the fallbacks output options declare."""
    out = {}
    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, OutputOption) and p.fallback:
                out[f"{path} {p.opts[0]}"] = p.fallback
            if isinstance(p, click.Option) and isinstance(p.type, click.Path) and not p.type.exists \
                    and isinstance(p.default, (str, Path)):
                out[f"{path} {p.opts[0]}"] = str(p.default)
    return out


def test_every_default_output_folder_is_in_gitignore():
    defaults = _default_outputs()
    assert {"explain --out", "report --out", "segment-eval --out", "textspan --out", "points --out"} <= set(defaults)
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    missing = {k: v for k, v in defaults.items() if f"/{Path(v).parts[0]}/" not in ignored}
    assert not missing, f"add these default output folders to .gitignore (anchored: /NAME/): {missing}"


# ---- absurd numbers: one clear message, never a crash -----------------------------------------------------

def test_threads_beyond_reason_are_refused_with_what_to_pass(ctx):
    for args in (["textspan", ctx.store, "--pool", "toy"], ["toy", "eval", "-n", "4"], ["segment-eval", "toy:n=2"]):
        r = run(*args, "--threads", "100000")
        assert r.exit_code == 2, r.output
        message = one_line(r.stderr)
        assert "--threads" in message and f"pass 1 to {max_threads()}" in message and "CPU core" in message
    assert run("toy", "eval", "-n", "2", "--n-retrieval", "0", "--threads", str(max_threads()),
               "--json").exit_code == 0


@pytest.mark.parametrize("args", [
    ["explain", "{image}", "-t", "a", "--size", "100000", "--out", "{tmp}/e"],
    ["tags", "{image}", "-c", "a,b", "--top", "1000000000", "--batch-size", "1000000000"],
    ["decompose", "{image}", "-t", "a", "--top", "1000000000", "--batch-size", "1000000000", "--last", "99999"],
    ["retrieve", "{store}", "--query-index", str(2 ** 70)],
    ["retrieve", "{store}", "--query-index", "1", "--top", "1000000000", "--num-heads", "1000000000"],
    ["textspan", "{store}", "--texts", "1000000000", "--rank", "1000000000", "--pool", "toy", "--out", "{tmp}/t"],
    ["segment-eval", "toy:n=1", "--limit", "1000000000", "--overlays", "1000000000", "--out", "{tmp}/s",
     "--no-progress"],
    ["segment-eval", "toy:n=1", "--size", "100000", "--out", "{tmp}/s2"],
], ids=lambda a: " ".join(a[:1] + [x for x in a if x.startswith("--")][:2]))
def test_absurd_numbers_end_in_a_message_not_a_crash(args, ctx, tmp_path):
    r = run(*(a.format(image=ctx.image, store=ctx.store, tmp=tmp_path) for a in args))
    assert r.exit_code in (0, 2), r.output
    assert "Traceback" not in r.output and "bug" not in r.output
