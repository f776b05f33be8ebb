"""A store checks itself: every file's checksum, readers that refuse a damaged store (naming the file and the
command that repairs it), a build that repairs it, ``store info --verify``; stores without checksums still open."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from cliplens.errors import InvalidInputError
from cliplens.store import Store, StoreSettings, build_store
from cliplens.store import writer as writer_module
from cliplens.store.integrity import (
    CHECKSUM,
    StoreDamagedError,
    StoreWriteError,
    check_layout,
    file_digest,
    verify_store,
)
from tests.cli.conftest import one_line, run
from tests.store.scenes import Scenes

SETTINGS = StoreSettings(chunk_size=8, batch_size=4, templates="none")
N = 20
CHUNK = "chunk-000001.safetensors"


@pytest.fixture(scope="module")
def good(random_toy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "s"
    build_store(random_toy, Scenes(N), out, settings=SETTINGS)
    return out


@pytest.fixture()
def copy(good, tmp_path) -> Path:
    out = tmp_path / "s"
    shutil.copytree(good, out)
    return out


def _same(a: Path, b: Path) -> None:
    sa, sb = Store(a), Store(b)
    assert sa.fields == sb.fields and sa.ids == sb.ids
    for name in sa.fields:
        np.testing.assert_array_equal(sa.field(name)[:], sb.field(name)[:], err_msg=name)
    for k, v in sa.projections.items():
        np.testing.assert_array_equal(v.numpy(), sb.projections[k].numpy(), err_msg=k)


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip(path: Path) -> None:
    """Change 4 bytes inside the data of ``path`` (a safetensors file), leaving its size and header intact."""
    layout = check_layout(path)
    at = layout.data_start + (layout.size - layout.data_start) // 2
    data = bytearray(path.read_bytes())
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    path.write_bytes(bytes(data))


def test_every_file_carries_its_checksum_and_the_manifest_records_sizes(good):
    manifest = json.loads((good / "manifest.json").read_text())
    for rec in [*manifest["chunks"], manifest["projections"]]:
        layout = check_layout(good / rec["file"])
        assert rec["bytes"] == layout.size == (good / rec["file"]).stat().st_size
        # computed from the tensors in memory before writing; equal to the checksum of the bytes on disk
        assert rec[CHECKSUM] == layout.checksum == file_digest(layout)
    assert manifest["header"][CHECKSUM] == hashlib.sha256((good / "store.json").read_bytes()).hexdigest()
    v = verify_store(good)
    assert v.ok and not v.unchecked
    assert v.checked == ["store.json", "projections.safetensors", *[f"chunk-00000{c}.safetensors" for c in range(3)]]


# (what is damaged, how, the file named, whether opening sees it without reading data)
CASES = [
    ("chunk truncated", lambda s: truncate(s / CHUNK), CHUNK, True),
    ("chunk bytes changed", lambda s: flip(s / CHUNK), CHUNK, False),
    ("projections truncated", lambda s: truncate(s / "projections.safetensors"), "projections.safetensors", True),
    ("projections bytes changed", lambda s: flip(s / "projections.safetensors"), "projections.safetensors", False),
    ("header truncated", lambda s: truncate(s / "store.json"), "store.json", True),
    ("manifest truncated", lambda s: truncate(s / "manifest.json"), "manifest.json", True),
]


@pytest.mark.parametrize("damage, file, seen_on_open", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_damage_is_refused_on_open_reported_by_verify_and_repaired_by_a_build(good, copy, random_toy, damage, file,
                                                                              seen_on_open):
    damage(copy)
    if seen_on_open:
        with pytest.raises(StoreDamagedError) as info:
            Store(copy)
        msg = str(info.value)
        assert file in msg and "cliplens store build" in msg and "--verify" in msg and "\n" not in msg
    else:  # opening reads no data; the checksum is checked by --verify and on resume
        Store(copy)
    v = verify_store(copy)
    assert [f for f, _ in v.damaged] == [file] and not v.ok
    with pytest.warns(UserWarning, match=f"{file} in {copy} was damaged"):
        res = build_store(random_toy, Scenes(N), copy, settings=SETTINGS)
    assert [r["file"] for r in res.repaired] == [file] and res.complete
    assert res.chunks_written == ([1] if file == CHUNK else [])
    assert verify_store(copy).ok
    _same(copy, good)


def test_a_chunk_in_the_wrong_place_is_caught(copy, random_toy):
    shutil.copy(copy / "chunk-000000.safetensors", copy / CHUNK)  # a valid file, in the wrong place
    with pytest.raises(StoreDamagedError, match=CHUNK):
        Store(copy)  # its size differs from the manifest's record
    with pytest.warns(UserWarning, match="holds chunk 0"):
        res = build_store(random_toy, Scenes(N), copy, settings=SETTINGS)
    assert res.repaired[0]["file"] == CHUNK and "holds chunk 0" in res.repaired[0]["reason"]


def test_a_missing_chunk_is_named(copy):
    (copy / CHUNK).unlink()
    with pytest.raises(StoreDamagedError, match=f"{CHUNK} — it is missing"):
        Store(copy)
    assert verify_store(copy).damaged == [(CHUNK, "it is missing")]


def test_a_manifest_that_parses_but_records_nonsense_is_damage_not_a_crash(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["chunks"][1]["bytes"] = "many"
    m["header"]["bytes"] = "some"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreDamagedError, match=f"{CHUNK} — the manifest's record of its size is malformed"):
        Store(copy)
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(StoreDamagedError, match="manifest.json — it cannot be read"):
        Store(copy)


def test_a_damaged_header_is_only_rewritten_for_the_same_store(copy, random_toy):
    truncate(copy / "store.json")
    with pytest.raises(InvalidInputError, match="store.json is damaged") as info:
        build_store(random_toy, Scenes(N + 1), copy, settings=SETTINGS)  # another data set: not rewritten
    assert "nothing was deleted" in str(info.value)
    with pytest.raises(StoreDamagedError):
        Store(copy)


def test_the_classifier_is_computed_once_per_store(random_toy, tmp_path, monkeypatch):
    calls = []
    real = writer_module.zero_shot_classifier

    def counting(*args, **kwargs):
        calls.append(kwargs.get("progress"))
        return real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "zero_shot_classifier", counting)
    out = tmp_path / "s"
    res = build_store(random_toy, Scenes(12), out, settings=SETTINGS)
    assert len(calls) == 1 and res.classifier_prompts == 7
    (out / "manifest.json").unlink()  # as a killed run leaves it
    (out / "chunk-000001.safetensors").unlink()
    res = build_store(random_toy, Scenes(12), out, settings=SETTINGS)
    assert len(calls) == 1 and res.classifier_prompts == 0 and res.chunks_written == [1]  # intact projections reused
    truncate(out / "projections.safetensors")
    with pytest.warns(UserWarning, match="projections.safetensors"):
        build_store(random_toy, Scenes(12), out, settings=SETTINGS)
    assert len(calls) == 2


def test_a_full_disk_is_a_message_and_the_finished_chunks_are_kept(random_toy, tmp_path, monkeypatch):
    from cliplens.store import integrity

    out = tmp_path / "s"
    real, written = integrity.save_file, []

    def full(tensors, path, metadata=None):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(integrity, "save_file", full)
    with pytest.raises(StoreWriteError, match="No space left on device") as info:
        build_store(random_toy, Scenes(12), out, settings=SETTINGS)
    assert "run the same command again" in str(info.value)
    assert not list(out.glob("*.tmp*")) and (out / "projections.safetensors").exists()


def test_a_store_damaged_before_the_manifest_is_never_reported_complete(random_toy, tmp_path, monkeypatch):
    real = writer_module._write_chunk

    def then_truncated(out, c, *args):
        real(out, c, *args)
        if c == 1:
            truncate(out / "chunk-000001.safetensors")  # as a disk that lost the end of the file

    monkeypatch.setattr(writer_module, "_write_chunk", then_truncated)
    with pytest.raises(StoreDamagedError, match="chunk-000001.safetensors is damaged"):
        build_store(random_toy, Scenes(12), tmp_path / "s", settings=SETTINGS)
    assert not (tmp_path / "s" / "manifest.json").exists()


def _strip_checksums(store: Path) -> None:
    """Make ``store`` look like one written before checksums: no checksum in any file, an old manifest and
    header."""
    for p in store.glob("*.safetensors"):
        with safe_open(str(p), framework="pt") as f:
            meta = {k: v for k, v in (f.metadata() or {}).items() if k not in (CHECKSUM, "header")}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        save_file(tensors, str(p), metadata=meta)
    m = json.loads((store / "manifest.json").read_text())
    m = {"complete": True, "images": m["images"], "skipped": m["skipped"],
         "chunks": [{k: c[k] for k in ("file", "start", "stop", "images", "rank")} for c in m["chunks"]]}
    (store / "manifest.json").write_text(json.dumps(m))
    h = json.loads((store / "store.json").read_text())
    for k in ("checksums", "command"):
        h.pop(k, None)
    (store / "store.json").write_text(json.dumps(h))


def test_a_store_without_checksums_opens_and_is_checked_as_far_as_it_can_be(good, copy, random_toy):
    _strip_checksums(copy)
    _same(copy, good)
    v = verify_store(copy)
    assert v.ok and not v.checked and len(v.unchecked) == 5
    r = run("store", "info", copy, "--verify")
    assert r.exit_code == 0 and "checksums absent in 5 file(s)" in one_line(r.stdout)
    truncate(copy / CHUNK)  # its structure still tells
    with pytest.raises(StoreDamagedError, match=CHUNK):
        Store(copy)
    assert [f for f, _ in verify_store(copy).damaged] == [CHUNK]
    res = build_store(random_toy, Scenes(N), copy, settings=SETTINGS)
    assert [r["file"] for r in res.repaired] == [CHUNK]
    _same(copy, good)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert [c[CHECKSUM] is not None for c in manifest["chunks"]] == [False, True, False]  # the new chunk has one


# ---- the command line ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_args(random_toy_weights) -> list[str]:
    return ["--model", "toy", "--pretrained", str(random_toy_weights)]


@pytest.fixture(scope="module")
def cli_store(toy_args, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "s"
    r = run("store", "build", "toy:label=shape,n=16,seed=4", *toy_args, "--out", out, "--chunk-size", "8",
            "--batch-size", "4")
    assert r.exit_code == 0, r.output
    return out


def test_the_command_line_names_the_damage_and_the_repair(cli_store, toy_args, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(cli_store, out)
    assert "7 classes × 1 template = 7 prompts" not in run("store", "info", out).stderr
    truncate(out / CHUNK)
    for args in (["ablate", out], ["textspan", out, "--pool", "toy"], ["store", "info", out]):
        r = run(*args)
        err = one_line(r.stderr)
        assert r.exit_code == 2 and "Traceback" not in r.output and CHUNK in err, (args, r.output)
        # the command that built it, with --out at the store's place
        built = (f"cliplens store build toy:label=shape,n=16,seed=4 --model toy --pretrained {toy_args[-1]} --out "
                 f"{out.absolute()} --chunk-size 8 --batch-size 4")
        assert built in err, err
    r = run("store", "info", out, "--verify")
    assert r.exit_code == 1 and f"damaged: {CHUNK}" in one_line(r.stdout)
    assert "repair: cliplens store build" in one_line(r.stdout)
    r = run("store", "info", out, "--verify", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["damaged"][0]["file"] == CHUNK
    r = run("store", "build", "toy:label=shape,n=16,seed=4", *toy_args, "--out", out, "--chunk-size", "8",
            "--batch-size", "4")
    assert r.exit_code == 0, r.output
    assert f"{CHUNK} in {out} was damaged" in one_line(r.stderr) and "truncated" in one_line(r.stderr)
    assert "prompts" not in r.stderr  # the classifier is not computed again
    r = run("store", "info", out, "--verify")
    assert r.exit_code == 0 and "every file intact" in r.stdout
    _same(out, cli_store)


def test_the_classifiers_prompt_count_is_said_before_a_build(toy_args, tmp_path):
    r = run("store", "build", "toy:label=shape,n=4,seed=4", *toy_args, "--out", tmp_path / "s", "--templates",
            "imagenet")
    assert r.exit_code == 0, r.output
    assert "7 classes × 80 templates = 560 prompts" in one_line(r.stderr)
    assert "prompts" not in r.stdout  # progress and notes go to stderr


def test_verify_refuses_what_is_no_store(tmp_path):
    r = run("store", "info", tmp_path, "--verify")
    assert r.exit_code == 2 and "is not a cliplens store" in one_line(r.stderr)
