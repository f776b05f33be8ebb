"""A Decomposition is data: save/load with a fingerprint, concatenation, slicing, normalised copies that
keep their caches, and a tolerance that fits the dtype."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.decomposition import CHECK_TOLERANCE, Decomposition
from cliplens.errors import InvalidInputError, ModelLoadError, OutputExistsError
from tests.conftest import oc_vit, pixels, tiny_open_clip

TENSORS = ("embed_term", "mlp_out", "attn_out", "heads", "final", "nonlinear", "embedding", "scale")
READOUT = ("pooling", "token_scale", "token_mean", "scale")


def _same(a: Decomposition, b: Decomposition) -> None:
    for name in TENSORS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0, msg=name)
    for name in READOUT:
        torch.testing.assert_close(getattr(a.readout, name), getattr(b.readout, name), rtol=0, atol=0, msg=name)
    assert (a.head_layers, a.spatial, a.grid, a.dtype) == (b.head_layers, b.spatial, b.grid, b.dtype)


def test_save_and_load_round_trip(tmp_path, random_toy):
    model = random_toy
    x = pixels(3, 64)
    dec = model.decompose(x, layers=[-2, -1])
    path = dec.save(tmp_path / "dec")
    assert path.name == "dec.safetensors"
    back = Decomposition.load(path, model)
    _same(back, dec)
    assert back.fingerprint == model.fingerprint() and back.header()["model"] == model.name
    torch.testing.assert_close(back.project(["a red circle"]).total, dec.project(["a red circle"]).total)
    norm = dec.normalized()
    _same(Decomposition.load(norm.save(tmp_path / "norm.safetensors"), model), norm)
    assert Decomposition.load(tmp_path / "norm.safetensors", model).normalized_form
    # nothing a user saved is overwritten
    with pytest.raises(OutputExistsError, match="already exists"):
        dec.save(path)
    dec[:1].save(path, overwrite=True)
    assert Decomposition.load(path, model).batch_size == 1


def test_load_refuses_another_model_or_a_foreign_file(tmp_path, random_toy):
    dec = random_toy.decompose(pixels(1, 64))
    path = dec.save(tmp_path / "d.safetensors")
    other = cliplens.wrap(tiny_open_clip(image_size=64, patch=8))
    with pytest.raises(ModelLoadError, match="another model"):
        Decomposition.load(path, other)
    edited = copy.deepcopy(random_toy.model)
    with torch.no_grad():
        edited.blocks[0].fc1.weight.mul_(1.001)  # the fingerprint comes from the weights themselves
    from cliplens.models.toy import ToyCLIPAdapter

    with pytest.raises(ModelLoadError, match="another model"):
        Decomposition.load(path, ToyCLIPAdapter(edited, random_toy.tokenizer))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidInputError, match="not a readable safetensors"):
        Decomposition.load(junk, random_toy)
    with pytest.raises(InvalidInputError, match="no saved decomposition"):
        Decomposition.load(tmp_path / "missing.safetensors", random_toy)


def test_fingerprint_follows_weights_and_preprocessing(random_toy):
    fp = random_toy.fingerprint()
    assert fp == random_toy.fingerprint()
    p = random_toy.model.ln_post.bias
    saved = p.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
        assert random_toy.fingerprint() != fp  # in-place edits are seen
        p.copy_(saved)
    assert random_toy.fingerprint() == fp


def test_slicing_and_concatenation(random_toy):
    x = pixels(5, 64, seed=3)
    dec = random_toy.decompose(x)
    parts = [dec[:2], dec[2], dec[[3, 4]]]
    assert [p.batch_size for p in parts] == [2, 1, 2]
    _same(Decomposition.cat(parts), dec)
    one = random_toy.decompose(x[2:3])
    torch.testing.assert_close(dec[2].head_terms(), one.head_terms(), rtol=1e-5, atol=1e-6)
    assert dec[torch.tensor([True, False, True, False, False])].batch_size == 2
    assert dec[-1].batch_size == 1
    with pytest.raises(InvalidInputError, match="out of range"):
        dec[7]
    with pytest.raises(InvalidInputError, match="differ in spatial"):
        Decomposition.cat([dec, random_toy.decompose(x, spatial=False)])
    with pytest.raises(InvalidInputError, match="head layers"):
        Decomposition.cat([dec, random_toy.decompose(x, last=2)])


def test_normalized_keeps_caches_and_is_the_unit_norm_decomposition(random_toy):
    dec = random_toy.decompose(pixels(2, 64))
    maps = dec.head_maps()
    norm = dec.normalized()
    assert norm.head_maps() is maps  # no recomputation of the weight-derived matrices
    assert norm.normalized() is norm
    unit = F.normalize(dec.embedding, dim=-1)
    torch.testing.assert_close(norm.reconstruct(), unit, rtol=1e-5, atol=1e-6)
    norm.check()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_check_uses_a_tolerance_that_fits_the_dtype(dtype):
    model = copy.deepcopy(oc_vit("B-16", layers=4)).to(dtype)
    adapter = cliplens.wrap(model)
    x = pixels(2, 224)
    dec = adapter.decompose(x)
    err = dec.check()  # the model's dtype sets the tolerance
    assert dec.tolerance == CHECK_TOLERANCE[dtype] > CHECK_TOLERANCE[torch.float32]
    assert err > CHECK_TOLERANCE[torch.float32]  # the fp32 tolerance would not fit
    assert adapter.decompose(x, dtype=dtype).check() <= CHECK_TOLERANCE[dtype]


def test_a_file_of_the_first_format_still_loads(tmp_path, random_toy):
    """Files written before the readout axis (CLS pooling: values at CLS, ln_post's mean and std) load as the
    same decomposition."""
    import json

    from safetensors.torch import save_file

    dec = random_toy.decompose(pixels(2, 64), last=2)
    old = {"embed_term": dec.embed_term[:, 0], "mlp_out": dec.mlp_out[:, 0], "attn_out": dec.attn_out[:, 0],
           "heads": dec.heads[:, 0], "mean": dec.readout.token_mean[:, 0], "std": 1 / dec.readout.scale[:, 0],
           "embedding": dec.embedding, "scale": dec.scale}
    header = {**dec.header(), "format": "cliplens.decomposition/1"}
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in old.items()}, str(path), metadata={"cliplens": json.dumps(header)})
    back = Decomposition.load(path, random_toy)
    torch.testing.assert_close(back.reconstruct(), dec.reconstruct(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(back.head_terms(), dec.head_terms(), rtol=1e-6, atol=1e-7)
    back.check()
