"""The command line never runs code from a checkpoint: ``--pretrained FILE``, an open_clip folder,
``points --sam-checkpoint`` and ``toy train --resume`` refuse a pickle with a payload (exit 2, one paragraph, no
traceback, the payload's file never appears); ``--trust-checkpoint`` loads a legitimate one. ``toy train``
never replaces an earlier run or an export without ``--resume``/``--overwrite``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from cliplens.experiments.train import TrainConfig, load_training_state, train
from cliplens.toyworld.model import ToyCLIPConfig
from tests.cli.conftest import one_line, run
from tests.payload import save_payload

TINY_TOY = ["--steps", "2", "--batch-size", "4", "--width", "32", "--layers", "1", "--heads", "2", "--image-size",
            "32", "--embed-dim", "16", "--text-width", "32", "--text-layers", "1", "--workers", "0", "--threads", "1",
            "--eval-n", "0", "--no-progress", "--checkpoint-every", "1"]


def refused(r, target, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.stderr.count("error:") == 1
    message = r.stderr.split("error:", 1)[1].strip()
    assert "\n\n" not in message  # one paragraph
    for w in words:
        assert w in one_line(message), one_line(message)
    assert not target.exists()


@pytest.fixture(scope="module")
def vit_state(tiny_vit):
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(tiny_vit).state_dict()


def test_pretrained_file(tiny_vit, vit_state, image, tmp_path):
    target = tmp_path / "ran"
    evil = save_payload(tmp_path / "evil.pt", target, vit_state)
    r = run("decompose", image, "-m", tiny_vit, "-p", evil, "-t", "a dog")
    refused(r, target, "evil.pt", "stores more than tensors", "--trust-checkpoint")


def test_open_clip_folder(tiny_vit, vit_state, image, tmp_path):
    import open_clip

    target = tmp_path / "ran"
    folder = tmp_path / "oc"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config(tiny_vit)}))
    save_payload(folder / "open_clip_pytorch_model.bin", target, vit_state)
    for model in (str(folder), f"local-dir:{folder}"):
        r = run("decompose", image, "-m", model, "-t", "a dog")
        refused(r, target, "open_clip_pytorch_model.bin", "stores more than tensors", "--trust-checkpoint")
        assert len(r.stderr) < 900  # not PyTorch's pages of advice


def test_points_sam_checkpoint(tiny_vit, image, tmp_path):
    pytest.importorskip("segment_anything")
    target = tmp_path / "ran"
    evil = save_payload(tmp_path / "sam_vit_b.pth", target)
    r = run("points", image, "--text", "a dog", "-m", tiny_vit, "-p", "random", "--sam-checkpoint", evil,
            "--out", tmp_path / "out")
    refused(r, target, "sam_vit_b.pth", "SAM checkpoint", "stores more than tensors", "--trust-checkpoint")


# ---- toy train ---------------------------------------------------------------------------------------------

def test_resume_refuses_an_old_pickled_state(tmp_path):
    out = tmp_path / "run"
    target = tmp_path / "ran"
    save_payload(out / "checkpoint.pt", target)
    r = run("toy", "train", "--out", out, "--resume", *TINY_TOY)
    refused(r, target, "checkpoint.pt", "older cliplens", "--trust-checkpoint", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]  # nothing written, nothing deleted


def _cfg(**kw):
    model = ToyCLIPConfig(image_size=32, patch_size=8, width=32, layers=1, heads=2, embed_dim=16, text_width=32,
                          text_layers=1, text_heads=2, context_length=48)
    base = dict(seed=2, steps=4, batch_size=4, warmup=1, checkpoint_every=1, log_every=1, num_workers=0,
                threads=1, model=model)
    base.update(kw)
    return TrainConfig(**base)


def test_a_trusted_old_state_resumes_and_is_saved_as_safetensors(tmp_path):
    """An older cliplens's checkpoint.pt (a pickle of the same state), resumed with --trust-checkpoint, ends where
    the uninterrupted run ends."""
    whole = tmp_path / "whole"
    train(_cfg(), whole, progress=False)
    old = tmp_path / "old"
    train(_cfg(), old, progress=False, stop_after=2)
    state = load_training_state(old)
    torch.save(state, old / "checkpoint.pt")  # what cliplens < 0.2 wrote
    (old / "checkpoint.json").unlink()
    for p in old.glob("checkpoint-*.safetensors"):
        p.unlink()
    r = run("toy", "train", "--out", old, "--resume", *TINY_TOY)
    assert r.exit_code == 2 and "--trust-checkpoint" in one_line(r.output)
    r = run("toy", "train", "--out", old, "--resume", "--trust-checkpoint", *TINY_TOY)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps_done"] == 4  # the saved config (4 steps) wins over --steps 2
    a, b = load_training_state(whole), load_training_state(old)
    assert b["step"] == 4 and (old / "checkpoint.json").is_file()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_train_never_replaces_an_earlier_run_silently(tmp_path):
    out = tmp_path / "run"
    export = tmp_path / "w.safetensors"
    r = run("toy", "train", "--out", out, "--export", export, *TINY_TOY)
    assert r.exit_code == 0, r.output
    before = _files(out)
    assert {"checkpoint.json", "train_log.jsonl", "config.json", "summary.json"} <= set(before)
    r = run("toy", "train", "--out", out, *TINY_TOY)
    assert r.exit_code == 2 and "Traceback" not in r.output
    msg = one_line(r.stderr)
    assert "holds an earlier training run" in msg and "--resume" in msg and "--overwrite" in msg
    assert _files(out) == before
    # the export path is checked too, before any work
    r = run("toy", "train", "--out", tmp_path / "other", "--export", export, *TINY_TOY)
    assert r.exit_code == 2 and "--export" in r.stderr and "--overwrite" in one_line(r.stderr)
    assert not (tmp_path / "other" / "checkpoint.json").exists()
    # --overwrite replaces the run: a fresh log, not the old one appended to
    r = run("toy", "train", "--out", out, "--overwrite", "--seed", "1", *TINY_TOY)
    assert r.exit_code == 0, r.output
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [2] and json.loads((out / "config.json").read_text())["seed"] == 1  # not [2, 2]
    r = run("toy", "train", "--out", tmp_path / "other", "--export", export, "--overwrite", *TINY_TOY)
    assert r.exit_code == 0, r.output


def test_resume_without_a_state_over_an_earlier_run_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_log.jsonl").write_text('{"step": 1}\n')
    r = run("toy", "train", "--out", out, "--resume", *TINY_TOY)
    assert r.exit_code == 2 and "no training state to resume" in one_line(r.stderr)
    assert _files(out) == {"train_log.jsonl": b'{"step": 1}\n'}
    r = run("toy", "train", "--out", tmp_path / "new", "--resume", *TINY_TOY)  # nothing to resume: a new run
    assert r.exit_code == 0, r.output
