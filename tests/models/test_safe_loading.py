"""Every way cliplens reads a checkpoint refuses a pickle carrying code: the payload (it would create a file)
never runs, the message is one paragraph; with ``trust_checkpoint`` a legitimate full pickle still loads."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from cliplens.errors import ModelLoadError
from tests.payload import CreatesFile, save_full_pickle, save_payload

open_clip = pytest.importorskip("open_clip")

import cliplens  # noqa: E402

TINY = "cliplens-test-safe-vit"
_CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                           "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("oc_config")
    (d / f"{TINY}.json").write_text(json.dumps(_CONFIG))
    open_clip.add_model_config(d)


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(TINY, pretrained=None).state_dict()


def _refused(call, target, *words):
    with pytest.raises(ModelLoadError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg.strip(), msg
    for w in ("stores more than tensors", "--trust-checkpoint", *words):
        assert w in msg, msg
    assert not target.exists()
    return msg


def _same(model, state):
    sd = model.state_dict()
    return all(torch.equal(sd[k], v) for k, v in state.items())


def test_open_clip_checkpoint_file(tmp_path, state):
    target = tmp_path / "ran"
    evil = save_payload(tmp_path / "evil.pt", target, state)
    _refused(lambda: cliplens.load(TINY, pretrained=evil), target, "evil.pt")
    _refused(lambda: cliplens.load(f"open_clip:{TINY}", pretrained=str(evil)), target)
    # a legitimate training checkpoint that pickles its arguments: refused, then loaded on trust
    legit = save_full_pickle(tmp_path / "train.pt", state)
    _refused(lambda: cliplens.load(TINY, pretrained=legit), target, "argparse.Namespace")
    a = cliplens.load(TINY, pretrained=legit, trust_checkpoint=True)
    assert _same(a.model, state) and a.weights == str(legit)


def _oc_folder(folder, weights_name="open_clip_pytorch_model.bin"):
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": _CONFIG}))
    return folder / weights_name


def test_open_clip_local_dir(tmp_path, state):
    target = tmp_path / "ran"
    folder = tmp_path / "oc"
    save_payload(_oc_folder(folder), target, state)
    for name in (str(folder), f"local-dir:{folder}"):
        msg = _refused(lambda n=name: cliplens.load(n), target, "open_clip_pytorch_model.bin")
        assert "Weights only load failed" not in msg and len(msg) < 700  # not PyTorch's own pages
    legit = tmp_path / "legit"
    save_full_pickle(_oc_folder(legit), state)
    _refused(lambda: cliplens.load(legit), target)
    assert _same(cliplens.load(legit, trust_checkpoint=True).model, state)
    assert _same(cliplens.load(f"local-dir:{legit}", trust_checkpoint=True).model, state)
    plain = tmp_path / "plain"
    save_file({k: v.contiguous() for k, v in state.items()}, str(_oc_folder(plain, "open_clip_model.safetensors")))
    assert _same(cliplens.load(plain).model, state)


def test_transformers_folder_with_pickled_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16, projection_dim=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16, projection_dim=16), projection_dim=16)
    model = transformers.CLIPModel(cfg).eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = tmp_path / "hf"
    cfg.save_pretrained(folder)
    torch.save(sd, folder / "pytorch_model.bin")
    assert _same(cliplens.load(folder).model, sd)  # tensors only: loads as before
    target = tmp_path / "ran"
    torch.save({**sd, "payload": CreatesFile(target)}, folder / "pytorch_model.bin")
    _refused(lambda: cliplens.load(folder), target, "pytorch_model.bin")
    _refused(lambda: cliplens.load(f"hf:{folder}"), target)


def test_toy_weights_path(tmp_path):
    target = tmp_path / "ran"
    evil = save_payload(tmp_path / "toy.pt", target)
    with pytest.raises(ModelLoadError, match="not a valid .safetensors file") as e:
        cliplens.load("toy", pretrained=evil)
    assert "\n" not in str(e.value) and not target.exists()


@pytest.fixture()
def tiny_sam(monkeypatch):
    """SAM's registry builds a tiny SAM for 'vit_b' (the real one is 90M parameters)."""
    sa = pytest.importorskip("segment_anything")
    from segment_anything.build_sam import _build_sam

    def build(checkpoint=None):
        assert checkpoint is None  # cliplens reads the file itself
        torch.manual_seed(0)
        return _build_sam(encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=1,
                          encoder_global_attn_indexes=[0], checkpoint=None)

    monkeypatch.setitem(sa.sam_model_registry, "vit_b", build)
    return build


def test_sam_checkpoint(tmp_path, tiny_sam):
    from cliplens.tasks.points import load_sam

    sd = tiny_sam().state_dict()
    target = tmp_path / "ran"
    evil = save_payload(tmp_path / "sam.pth", target, sd)
    _refused(lambda: load_sam(evil, "vit_b"), target, "SAM checkpoint")
    legit = save_full_pickle(tmp_path / "sam_legit.pth", sd)
    _refused(lambda: load_sam(legit, "vit_b"), target)
    assert _same(load_sam(legit, "vit_b", trust_checkpoint=True), sd)
    plain = tmp_path / "sam_plain.pth"
    torch.save(sd, plain)  # what SAM's own checkpoints are: a dict of tensors
    assert _same(load_sam(plain, "vit_b"), sd)
