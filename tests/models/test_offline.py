"""An unreachable Hub fails fast and quietly: one short look at the Hub, then the local cache only (no minutes of
retries, no retry lines on stderr); HF_HUB_OFFLINE never touches the network at all."""

from __future__ import annotations

import json
import socket
import time
import warnings

import pytest
import torch
from safetensors.torch import save_file

from cliplens.errors import ModelLoadError
from cliplens.models import hub

open_clip = pytest.importorskip("open_clip")

import cliplens  # noqa: E402

#: nothing listens here: a connection is refused at once (the Hub "cannot be reached")
DEAD_ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture()
def online_but_unreachable(monkeypatch):
    """HF_HUB_OFFLINE unset, and the Hub's address one where nothing answers."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", DEAD_ENDPOINT)
    monkeypatch.setattr(hub, "_probe_cache", {})


@pytest.mark.parametrize("name, pretrained", [("ViT-B-32", "openai"), ("hf-hub:timm/ViT-B-16-quickgelu", None),
                                              ("openai/clip-vit-base-patch16", None)])
def test_an_uncached_model_fails_fast_and_quietly(online_but_unreachable, capfd, tmp_path, name, pretrained):
    if "/" in name and not name.startswith("hf-hub:"):
        pytest.importorskip("transformers")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as e:
        cliplens.load(name, pretrained=pretrained, cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"{elapsed:.1f} s"
    msg = str(e.value)
    assert "cannot be reached" in msg and "not in the local cache" in msg and "\n" not in msg
    err = capfd.readouterr().err
    assert "Retrying" not in err and "thrown while requesting" not in err, err


def test_a_cached_model_loads_while_the_hub_is_unreachable(online_but_unreachable, monkeypatch, tmp_path):
    """The local cache is used at once (the libraries would otherwise retry before falling back to it)."""
    name = "cliplens-test-offline-vit"
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                           "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, name, {"cached": {"hf_hub": "cliplens-test/tiny-vit/"}})
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = open_clip.create_model(name, pretrained=None).state_dict()
    # the Hugging Face cache layout: refs/main names the snapshot that holds the file
    repo = tmp_path / "hub" / "models--cliplens-test--tiny-vit"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "open_clip_model.safetensors"))
    start = time.perf_counter()
    a = cliplens.load(name, pretrained="cached", cache_dir=tmp_path / "hub")
    assert time.perf_counter() - start < 10
    sd = a.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in state.items())


def test_hf_hub_offline_never_touches_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_probe_cache", {})
    tried = []

    def no_network(*args, **kwargs):
        tried.append(args)
        raise OSError("the network was touched")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name, pretrained in (("ViT-B-32", "openai"), ("hf-hub:timm/ViT-B-16-quickgelu", None)):
        with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set"):
            cliplens.load(name, pretrained=pretrained, cache_dir=tmp_path)
    assert tried == []


def test_the_look_at_the_hub_is_bounded_and_remembered(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", DEAD_ENDPOINT)
    monkeypatch.setattr(hub, "_probe_cache", {})
    start = time.perf_counter()
    assert hub.hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 3
    assert hub._probe_cache[DEAD_ENDPOINT][1] is False
