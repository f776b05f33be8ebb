"""Misuse of the command line: every mistake ends in one paragraph naming what was wrong and what to
do, with exit code 2 and never a traceback."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.conftest import one_line, run, save_image


class NotATensor:
    """Pickled into a checkpoint, it makes torch.load(weights_only=True) refuse the file."""


@dataclass(frozen=True)
class Files:
    img: str
    wide: str
    afile: str
    garbage_pt: str
    garbage_st: str
    pickle_pt: str
    truncated_pt: str
    toy: str
    vit: str
    tmp: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory, random_toy_weights, tiny_vit) -> Files:
    import open_clip

    tmp = tmp_path_factory.mktemp("probes")
    wide = tmp / "wide.png"
    Image.fromarray(np.zeros((1, 40000), np.uint8)).save(wide)  # 40000x1: a few hundred bytes
    afile = tmp / "afile"
    afile.write_text("a file, not a folder")
    rng = np.random.default_rng(0)
    (tmp / "garbage.pt").write_bytes(rng.bytes(1000))
    (tmp / "garbage.safetensors").write_bytes(rng.bytes(1000))
    state = open_clip.create_model(tiny_vit).state_dict()
    torch.save({"state_dict": state, "extra": NotATensor()}, tmp / "pickle.pt")
    torch.save({"state_dict": state}, tmp / "good.pt")
    good = (tmp / "good.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(good[: len(good) // 2])
    return Files(img=save_image(tmp / "img.png"), wide=str(wide), afile=str(afile),
                 garbage_pt=str(tmp / "garbage.pt"), garbage_st=str(tmp / "garbage.safetensors"),
                 pickle_pt=str(tmp / "pickle.pt"), truncated_pt=str(tmp / "truncated.pt"),
                 toy=str(random_toy_weights), vit=tiny_vit, tmp=tmp)


def decompose(f: Files, *more: str) -> list[str]:
    return ["decompose", f.img, "-m", "toy", "-p", f.toy, "-t", "a red circle", *more]


def vit(f: Files, pretrained: str, *more: str) -> list[str]:
    return ["decompose", f.img, "-m", f.vit, "-p", pretrained, "-t", "a dog", *more]


#: name -> (arguments, words the message must contain)
PROBES = {
    # weights: never random by accident
    "open_clip name without --pretrained lists its tags": (
        lambda f: ["decompose", f.img, "-m", "ViT-B-32", "-t", "a dog"],
        ["ViT-B-32 needs weights", "--pretrained", "laion2b_s34b_b79k", "openai", "'random'"]),
    "open_clip name without tags and without --pretrained": (
        lambda f: ["decompose", f.img, "-m", f.vit, "-t", "a dog"],
        ["needs weights", "open_clip has no pretrained weights", "'random'"]),
    "unknown pretrained tag": (
        lambda f: ["decompose", f.img, "-m", "ViT-B-32", "-p", "laion2b", "-t", "a dog"],
        ["has no pretrained tag 'laion2b'", "Did you mean", "laion2b_s34b_b79k"]),
    "unknown model": (
        lambda f: ["decompose", f.img, "-m", "ViT-B-23", "-t", "a dog"], ["Unknown model 'ViT-B-23'", "ViT-B-32"]),
    # numbers out of range
    "--last 0": (lambda f: decompose(f, "--last", "0"), ["'--last'", "0 is not in the range x>=1"]),
    "--last negative": (lambda f: decompose(f, "--last", "-3"), ["'--last'", "-3 is not in the range x>=1"]),
    "--last deeper than the model": (
        lambda f: decompose(f, "--last", "7"), ["--last 7", "toy has 6 layers", "pass 1..6"]),
    # --layers K meant the last K: refused, naming both spellings (never read as another layer)
    "--layers K, the old form": (
        lambda f: decompose(f, "--layers", "3"), ["'--layers'", "ambiguous", "--last 3", "--layers 3,"]),
    "--layers out of range": (lambda f: decompose(f, "--layers", "-9"), ["--layers -9", "out of range"]),
    "--layers not numbers": (lambda f: decompose(f, "--layers", "a,b"), ["'--layers'", "indices separated by commas"]),
    "--top 0": (lambda f: decompose(f, "--top", "0"), ["'--top'", "0 is not in the range x>=1", "--help"]),
    "--batch-size 0": (lambda f: decompose(f, "--batch-size", "0"), ["'--batch-size'", "x>=1"]),
    "--max-pixels 0": (lambda f: decompose(f, "--max-pixels", "0"), ["'--max-pixels'", "x>=1"]),
    # devices
    "--device gpu0": (lambda f: decompose(f, "--device", "gpu0"), ["--device 'gpu0'", "did you mean cuda:0?"]),
    "--device tpu": (lambda f: decompose(f, "--device", "tpu"), ["not a device name", "cpu, cuda, cuda:N or mps"]),
    # checkpoints
    "corrupt .pt for an open_clip architecture": (
        lambda f: vit(f, f.garbage_pt), ["garbage.pt", "not a valid PyTorch checkpoint", "Check the file"]),
    "corrupt .safetensors for an open_clip architecture": (
        lambda f: vit(f, f.garbage_st), ["garbage.safetensors", "not a valid .safetensors file"]),
    "truncated .pt for an open_clip architecture": (
        lambda f: vit(f, f.truncated_pt), ["truncated.pt", "truncated or corrupt"]),
    "pickle that needs weights_only=False": (
        lambda f: vit(f, f.pickle_pt), ["pickle.pt", "weights_only=False", "--trust-checkpoint"]),
    "missing checkpoint file": (
        lambda f: vit(f, str(f.tmp / "nowhere.pt")), ["Checkpoint file not found", "nowhere.pt"]),
    "corrupt .pt for the toy model": (
        lambda f: ["decompose", f.img, "-m", "toy", "-p", f.garbage_pt, "-t", "a star"],
        ["garbage.pt", "not a valid .safetensors file", "written by 'cliplens toy train'"]),
    "corrupt .safetensors for the toy model": (
        lambda f: ["decompose", f.img, "-m", "toy", "-p", f.garbage_st, "-t", "a star"],
        ["garbage.safetensors", "not a valid .safetensors file"]),
    # output folders and files
    "--maps is a file": (lambda f: decompose(f, "--maps", f.afile), ["--maps", "afile' is a file, not a folder"]),
    "--maps inside a file": (
        lambda f: decompose(f, "--maps", f"{f.afile}/maps"), ["--maps", "cannot be created or written to"]),
    "demo --out inside a file": (
        lambda f: ["demo", "--out", f"{f.afile}/demo", "-p", f.toy], ["--out", "cannot be created or written to"]),
    "toy train --export inside a file": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--export", f"{f.afile}/w.safetensors"],
        ["--export", "its folder", "is a file, not a folder"]),
    "toy eval --json-out inside a file": (
        lambda f: ["toy", "eval", "--weights", f.toy, "--json-out", f"{f.afile}/m.json"],
        ["--json-out", "its folder", "is a file, not a folder"]),
    # seeds
    "demo --seed -5": (lambda f: ["demo", "--seed", "-5"], ["'--seed'", "-5 is not in the range x>=0"]),
    "toy train --seed -1": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--seed", "-1"], ["'--seed'", "x>=0"]),
    "toy eval --seed -1": (lambda f: ["toy", "eval", "--seed", "-1"], ["'--seed'", "x>=0"]),
    "toy spurious --seed -1": (
        lambda f: ["toy", "spurious", "--out", str(f.tmp / "sp"), "--seed", "-1"], ["'--seed'", "x>=0"]),
    "toy bench --seed -1": (lambda f: ["toy", "bench", "--seed", "-1"], ["'--seed'", "x>=0"]),
    # images
    "40000x1 image (shortest-side resize to 224)": (
        lambda f: ["decompose", f.wide, "-m", f.vit, "-p", "random", "-t", "a dog"],
        ["wide.png", "40000x1", "over the limit", "--max-pixels"]),
    "missing image": (
        lambda f: ["decompose", str(f.tmp / "nope.png"), "-m", "toy", "-p", f.toy, "-t", "a star"],
        ["nope.png", "no such file", "--skip-bad"]),
    "--max-pixels below one million": (
        lambda f: ["decompose", f.img, "-m", "toy", "-p", f.toy, "-t", "a star", "--max-pixels", "1000"],
        ["over the limit of 1,000 pixels", "--max-pixels"]),
    "points: unreadable image": (
        lambda f: ["points", f.garbage_st, "-m", "toy", "-p", f.toy, "-t", "a star"],
        ["garbage.safetensors", "Nothing was done", "readable image file"]),
    "report --last 0": (
        lambda f: ["report", f.img, "-m", "toy", "-p", f.toy, "-t", "a star", "--last", "0"], ["'--last'", "x>=1"]),
    "report --last 999": (
        lambda f: ["report", f.img, "-m", "toy", "-p", f.toy, "-t", "a star", "--last", "999"],
        ["--last 999", "has 6 layers", "1..6"]),
    "empty --text": (
        lambda f: ["decompose", f.img, "-m", "toy", "-p", f.toy, "-t", "  "], ["empty or whitespace only"]),
    "missing --text": (lambda f: ["decompose", f.img], ["Missing option '--text'"]),
    # toy commands
    "toy train --steps 0": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--steps", "0"], ["'--steps'", "x>=1"]),
    "toy train --batch-size 0": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--batch-size", "0"], ["'--batch-size'", "x>=2"]),
    "toy train --count-weights not numbers": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--count-weights", "a,b,c,d"],
        ["'--count-weights'", "'a,b,c,d' is not four comma-separated weights", "0.25,0.25,0.25,0.25"]),
    "toy train --count-weights two numbers": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--count-weights", "1,2"], ["'1,2' is not four"]),
    "toy train --count-weights negative": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--count-weights", "-1,1,1,1"], ["0 or more"]),
    "toy train --width not divisible by --heads": (
        lambda f: ["toy", "train", "--out", str(f.tmp / "run"), "--width", "100", "--heads", "3"],
        ["--width 100", "3 attention heads"]),
    "toy bench -n 0": (lambda f: ["toy", "bench", "-n", "0"], ["'-n'", "x>=1"]),
    "toy bench --threads 0": (lambda f: ["toy", "bench", "--threads", "0"], ["'--threads'", "pass 1 to"]),
    "toy bench unknown --method": (
        lambda f: ["toy", "bench", "--method", "nope"], ["unknown map method(s) nope", "decomposition"]),
    "toy eval -n 0": (lambda f: ["toy", "eval", "-n", "0"], ["'-n'", "x>=1"]),
    "toy eval corrupt --weights": (
        lambda f: ["toy", "eval", "--weights", f.garbage_st], ["garbage.safetensors", "not a valid .safetensors"]),
    "toy spurious corrupt --weights": (
        lambda f: ["toy", "spurious", "--out", str(f.tmp / "sp"), "--weights", f.garbage_st],
        ["garbage.safetensors", "not a valid .safetensors"]),
    "toy spurious --steps 0": (
        lambda f: ["toy", "spurious", "--out", str(f.tmp / "sp"), "--steps", "0"], ["'--steps'", "x>=1"]),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_misuse_ends_in_one_paragraph(name, files):
    args, words = PROBES[name]
    r = run(*args(files))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "bug" not in r.output
    assert r.stderr.count("error:") == 1
    message = r.stderr.split("error:", 1)[1]
    assert "\n\n" not in message.strip()  # one paragraph
    for word in words:
        assert word in one_line(message), f"{word!r} not in {one_line(message)!r}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu(files):
    r = run(*decompose(files, "--device", "cuda"))
    assert r.exit_code == 2 and "no CUDA GPU is available" in one_line(r.output) and "--device cpu" in r.output


def test_trusted_pickle_loads(files):
    r = run(*vit(files, files.pickle_pt, "--trust-checkpoint", "--json"))
    assert r.exit_code == 0, r.output


def test_uncached_siglip_fails_quickly_even_online(files, monkeypatch):
    """With HF_HUB_OFFLINE unset a network attempt would retry for many seconds: the unreachable Hub is noticed
    once, and an uncached SigLIP id fails with one readable paragraph naming it."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for model in ("google/siglip-base-patch16-224", "hf-hub:timm/ViT-B-16-SigLIP",
                  "open_clip:hf-hub:timm/ViT-B-16-SigLIP", "hf:google/siglip2-base-patch16-224"):
        start = time.perf_counter()
        r = run("decompose", files.img, "-m", model, "-t", "a dog")
        assert r.exit_code == 2 and "ViT-B-16-SigLIP" in one_line(r.output).replace("siglip-base-patch16-224", \
            "ViT-B-16-SigLIP").replace("siglip2-base-patch16-224", "ViT-B-16-SigLIP"), r.output
        assert "Traceback" not in r.output
        assert time.perf_counter() - start < 5, model
    assert "HF_HUB_OFFLINE" not in os.environ


def test_list_methods_names_every_method_and_what_it_reads():
    from cliplens.maps.base import map_class, map_names

    r = run("explain", "--list-methods")
    assert r.exit_code == 0, r.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in r.output.splitlines() if line.startswith("│")]
    rows = {c[0]: " ".join(c[1:]) for c in cells if c and c[0] in map_names()}
    assert set(rows) == set(map_names())
    for name, line in rows.items():
        cls = map_class(name)
        want = "baseline" if cls.baseline else "text and image" if cls.text_dependent else "image only"
        assert want in line, line
