import json

import torch
from click.testing import CliRunner

from cliplens.cli.toy import toy
from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, save_toy_clip
from cliplens.toyworld.tokenizer import ToyTokenizer


def test_toy_group_has_commands():
    assert {"train", "eval"} <= set(toy.commands)


def test_eval_command_on_tiny_weights(tmp_path):
    torch.manual_seed(0)
    tok = ToyTokenizer(context_length=48)
    m = ToyCLIP(ToyCLIPConfig(image_size=32, width=32, layers=1, heads=2, embed_dim=16, text_width=32,
                              text_layers=1, text_heads=2, context_length=48, vocab_size=len(tok)))
    p = tmp_path / "tiny.safetensors"
    save_toy_clip(m, str(p), tok.vocab)
    out = tmp_path / "m.json"
    r = CliRunner().invoke(toy, ["eval", "--weights", str(p), "-n", "8", "--n-retrieval", "8",
                                 "--threads", "1", "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    assert "a photo of a red shape" in r.output and "colour" in r.output
    assert json.loads(out.read_text())["n"] == 8


def test_train_command_tiny(tmp_path):
    r = CliRunner().invoke(toy, [
        "train", "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4", "--width", "32",
        "--layers", "1", "--heads", "2", "--image-size", "32", "--embed-dim", "16", "--text-width", "32",
        "--text-layers", "1", "--workers", "0", "--threads", "1", "--eval-n", "4", "--no-progress",
        "--decay-start", "1", "--export", str(tmp_path / "w.safetensors"),
    ])
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "w.json").read_text())
    assert side["training"]["steps_done"] == 2
    assert side["training"]["train_config"]["decay_start"] == 1
    assert side["training"]["metrics"]["n"] == 4 and "colour" in side["training"]["metrics"]
    assert side["config"]["width"] == 32 and side["training"]["seed"] == 0
