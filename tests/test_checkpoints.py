"""The one safe loader (cliplens.checkpoints): tensors only unless trusted, one-paragraph errors, and no other
``torch.load`` in the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import cliplens
from cliplens.checkpoints import CheckpointError, check_pickle, load_checkpoint, load_state_dict
from tests.payload import save_full_pickle, save_payload

SRC = Path(cliplens.__file__).resolve().parent


def _one_paragraph(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text.strip() and "Traceback" not in text
    return text


def test_the_payload_runs_when_trusted(tmp_path):
    """The payload is real: a trusted load creates the file (so the other tests' missing file means refused)."""
    target = tmp_path / "ran"
    ckpt = save_payload(tmp_path / "evil.pt", target)
    load_checkpoint(ckpt, what="a test checkpoint", trust=True)
    assert target.exists()


def test_a_payload_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "ran"
    ckpt = save_payload(tmp_path / "evil.pt", target)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt, what="a test checkpoint")
    msg = _one_paragraph(e.value)
    assert "stores more than tensors" in msg and "--trust-checkpoint" in msg and "pathlib" in msg
    with pytest.raises(CheckpointError):
        check_pickle(ckpt, what="a test checkpoint")
    with pytest.raises(CheckpointError):
        load_state_dict(ckpt, what="a test checkpoint")
    assert not target.exists()


def test_a_legacy_format_payload_is_refused(tmp_path):
    target = tmp_path / "ran"
    ckpt = tmp_path / "old.pt"
    from tests.payload import CreatesFile

    torch.save({"p": CreatesFile(target)}, ckpt, _use_new_zipfile_serialization=False)
    for read in (load_checkpoint, check_pickle):
        with pytest.raises(CheckpointError, match="stores more than tensors"):
            read(ckpt, what="a test checkpoint")
    assert not target.exists()


def test_a_legitimate_full_pickle_needs_trust(tmp_path):
    state = {"w": torch.arange(3.0)}
    ckpt = save_full_pickle(tmp_path / "train.pt", state)
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_state_dict(ckpt, what="a test checkpoint")
    sd = load_state_dict(ckpt, what="a test checkpoint", trust=True)
    assert sd.keys() == {"w"} and torch.equal(sd["w"], state["w"])
    check_pickle(ckpt, what="a test checkpoint", trust=True)  # nothing to check when trusted


def test_plain_weights_load_without_trust(tmp_path):
    sd = {"module.a": torch.ones(2), "module.b": torch.zeros(1)}
    torch.save(sd, tmp_path / "w.pt")
    save_file({"a": torch.ones(2)}, str(tmp_path / "w.safetensors"))
    assert load_state_dict(tmp_path / "w.pt", what="w").keys() == {"a", "b"}  # DataParallel prefix removed
    assert load_state_dict(tmp_path / "w.safetensors", what="w").keys() == {"a"}
    check_pickle(tmp_path / "w.pt", what="w")


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "not weights", "bad safetensors"])
def test_damaged_and_foreign_files_are_one_paragraph(tmp_path, kind):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, good)
    path = tmp_path / ("bad.safetensors" if kind == "bad safetensors" else "bad.pt")
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "text":
        path.write_text("hello world, not a checkpoint")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not weights":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError) as e:
        load_state_dict(path, what="a test checkpoint", expected="a file of test weights")
    msg = _one_paragraph(e.value)
    assert str(path) in msg
    expected = {"truncated": "truncated or corrupt", "text": "not a valid PyTorch checkpoint",
                "empty": "not a valid PyTorch checkpoint", "not weights": "holds no model weights",
                "bad safetensors": "not a valid .safetensors file"}[kind]
    assert expected in msg and "a file of test weights" in msg


def test_torch_load_is_called_only_by_the_safe_loader():
    """Every ``torch.load(...)`` call in the package is the safe loader's, with ``weights_only=not trust``."""
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            f = node.func if isinstance(node, ast.Call) else None
            if isinstance(f, ast.Attribute) and f.attr == "load" and ast.unparse(f.value) == "torch":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.relative_to(SRC).as_posix(), kw.get("weights_only")))
    assert calls == [("checkpoints.py", "not trust")]
