"""Every command on a model without a CLS token: a random toy CLIP with SigLIP's attention pooling (MAP head) and
sigmoid scores, loaded by path as users load their own toy weights. Each command must run to its end (or refuse
with one paragraph where the method needs a CLS token)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli.conftest import one_line, run
from tests.conftest import SHARED

SPEC = "toy:label=shape,shapes=circle|square,bg_kind=striped|dotted,sizes=small,n=24,seed=3"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from cliplens.toyworld.model import ToyCLIP, ToyCLIPConfig, save_toy_clip
    from cliplens.toyworld.tokenizer import build_vocab

    torch.manual_seed(0)
    vocab = build_vocab()
    cfg = ToyCLIPConfig(width=64, layers=6, heads=4, embed_dim=32, text_width=32, text_layers=1, text_heads=2,
                        vocab_size=len(vocab), context_length=48, pool="map", loss="sigmoid", name="toy-siglip-test")
    model = ToyCLIP(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("pooled") / "toy-map.safetensors"
    save_toy_clip(model, str(path), vocab)
    return ["-m", "toy", "-p", str(path)]


@pytest.fixture(scope="module")
def image():
    found = sorted((SHARED / "reference-data").rglob("*.jpg"))
    if not found:
        pytest.skip(f"no reference photo in {SHARED / 'reference-data'} (the shared reference images are not on this "
                    "machine)")
    return found[0]


def test_decompose_explain_segment_tags_points_report(weights, image, tmp_path):
    r = run("decompose", image, *weights, "-t", "a red circle", "-t", "a blue square", "--json")
    assert r.exit_code == 0, r.output
    r = run("explain", image, *weights, "-t", "a red circle", "--method", "all", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "e").rglob("*.png"))
    r = run("explain", image, *weights, "-t", "a red circle", "--method", "chefer", "--out", tmp_path / "c")
    assert r.exit_code == 2 and "no CLS token" in one_line(r.output)
    r = run("segment", image, *weights, "--classes", "circle", "--classes", "square", "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    r = run("tags", image, *weights, "--classes", "red circle,blue square", "--json")
    assert r.exit_code == 0, r.output
    r = run("points", image, *weights, "--text", "red circle", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    r = run("report", image, *weights, "-t", "a red circle", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "r").rglob("*.html"))


def test_store_and_every_analysis(weights, tmp_path):
    store = tmp_path / "store"
    r = run("store", "build", SPEC, *weights, "--out", store, "--chunk-size", "12", "--batch-size", "12")
    assert r.exit_code == 0, r.output
    r = run("store", "info", store, "--verify")
    assert r.exit_code == 0, r.output
    r = run("ablate", store, "--json")
    assert r.exit_code == 0, r.output
    r = run("textspan", store, "--last", "1", "--texts", "3", "--out", tmp_path / "ts")
    assert r.exit_code == 0, r.output
    r = run("atlas", store, "--out", tmp_path / "atlas", "--last", "1", "--texts", "2", "--images-per-text", "2",
            "--data", SPEC)
    assert r.exit_code == 0, r.output
    r = run("retrieve", store, "--query-index", "3", "--heads", "L5.H0,L5.H1", "--top", "3", "--json")
    assert r.exit_code == 0, r.output
    r = run("debias", store, "--spurious", "bg_kind", "--heads", "L5.H2", "--random-sets", "0", "--json")
    assert r.exit_code == 0, r.output
    json.loads(r.stdout)


def test_segment_eval_on_toy_scenes(weights, tmp_path):
    r = run("segment-eval", "toy:n=3,seed=3", *weights, "--method", "surgery", "--method", "legrad", "--out",
            tmp_path / "o", "--json")
    assert r.exit_code == 0, r.output
