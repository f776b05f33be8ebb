"""The shipped toy-clip weights: loadable, small, the right architecture, and actually trained."""

import json
from importlib import resources

from cliplens.experiments.evaluate import zero_shot
from cliplens.toyworld.model import DEFAULT_WEIGHTS, load_toy_clip
from cliplens.toyworld.tokenizer import build_vocab


def _weights_dir():
    return resources.files("cliplens.toyworld") / "weights"


def test_shipped_files_exist_and_are_small():
    d = _weights_dir()
    total = 0
    for f in d.iterdir():
        if f.name.endswith(".safetensors"):
            total += len(f.read_bytes())
    assert (d / DEFAULT_WEIGHTS).is_file()
    assert total <= 20 * 1024 * 1024
    side = json.loads((d / DEFAULT_WEIGHTS.replace(".safetensors", ".json")).read_text())
    for key in ("command", "seed", "steps_done", "wall_s", "metrics"):
        assert key in side["training"], key


def test_load_default_and_architecture():
    model, tok = load_toy_clip()
    c = model.config
    assert c.layers >= 6 and c.heads >= 4
    assert tok.vocab == build_vocab()  # the grammar and the shipped vocabulary agree
    v = model.vision_view()
    assert v.num_layers == c.layers and v.image_size == (c.image_size, c.image_size)
    assert v.source == f"toy:{c.name}"


def test_shipped_model_is_trained():
    model, tok = load_toy_clip()
    r = zero_shot(model, tok, "colour", n=48, seed=99)
    assert r["accuracy"] >= 0.9
    r = zero_shot(model, tok, "shape", n=56, seed=99)
    assert r["accuracy"] >= 0.6


def test_shipped_spurious_model_has_a_group_gap():
    from cliplens.experiments.spurious import group_accuracies

    p = _weights_dir() / "toy-clip-spurious.safetensors"
    with resources.as_file(p) as path:
        model, tok = load_toy_clip(path)
    r = group_accuracies(model, tok, n=80, seed=4321)
    assert r["gap"] > 0.15 and r["worst"] < 0.7
    base, tok = load_toy_clip()
    assert group_accuracies(base, tok, n=40, seed=4321)["worst"] > 0.9


def test_shipped_toy_siglip_pools_with_a_probe_and_is_trained():
    import torch

    import cliplens

    m = cliplens.load("toy-siglip")
    v = m.vision
    assert v.head.kind == "map" and v.num_prefix_tokens == 0 and m.score_kind == "sigmoid" and m.logit_bias < 0
    side = json.loads((_weights_dir() / "toy-siglip.json").read_text())
    assert side["config"]["pool"] == "map" and side["config"]["loss"] == "sigmoid"
    assert "--loss sigmoid" in side["training"]["command"]
    r = zero_shot(m.model, m.tokenizer, "colour", n=48, seed=99)
    assert r["accuracy"] >= 0.9
    x = m.preprocess([torch.rand(3, 64, 64), torch.rand(3, 64, 64)])
    assert m.decompose(x).check() <= 1e-5
