"""cliplens's dense and attribution map methods against the independent naive oracle in
tests/maps/dense_reference.py (written from the formulas on open_clip's own modules, float64).

Every method, at its defaults and at non-default settings of each parameter, on two small random open_clip
models (8 blocks, 4 heads; one with layer-scale), a batch of 2 images and 3 texts, at the native 64x64 size and
at a non-square 64x96 size (positional table resized bicubic). cliplens runs on a float64 copy of the model; its
raw maps [B, T, gh, gw] must match the oracle to max|ours - ref| / max|ref| <= 1e-9 when it returns float64, and
<= 1e-5 when it returns float32. One float32 run per method checks the float32 path to 1e-4.
"""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from cliplens.maps import TextEmbeddings, get_map
from tests.maps.dense_reference import (
    ALL_METHODS,
    GRADIENT_METHODS,
    build_tiny_clip,
    random_directions,
    random_images,
    reference_raw,
)

DEPTH = 8
N_TEXTS = 3

CASES = [
    ("maskclip", {}),
    ("maskclip", dict(residual_ffn=False)),
    ("sclip", {}),
    ("clearclip", {}),
    ("naclip", {}),
    ("naclip", dict(gaussian=False)),
    ("naclip", dict(sigma=2.0)),
    ("resclip", {}),
    ("resclip", dict(sigma=2.0)),
    ("resclip", dict(tau=1.0, lam=0.6)),
    ("resclip", dict(reference_layers=(1, 4, 6))),
    ("gem", {}),
    ("gem", dict(blocks=3)),
    ("gem", dict(blocks=DEPTH)),
    ("gem", dict(iterations=0)),
    ("gem", dict(iterations=3)),
    ("gem", dict(temperature=7.0)),
    ("raw-attention", {}),
    ("rollout", {}),
    ("rollout", dict(start_layer=3)),
    ("gradcam", {}),
    ("gradcam", dict(layer=-3)),
    ("gradcam", dict(layer=2)),
    ("chefer", {}),
    ("chefer", dict(start_layer=5)),
    ("chefer", dict(start_layer=-2)),
    ("chefer", dict(start_layer=-1)),
    ("legrad", {}),
    ("legrad", dict(start_layer=-5)),
    ("legrad", dict(start_layer=0)),
]


def _case_id(case) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


@pytest.fixture(scope="module", params=[None, 0.5], ids=["plain", "layerscale"])
def models(request):
    """(open_clip model in float32 for the oracle, cliplens-wrapped float64 copy)."""
    model = build_tiny_clip(layers=DEPTH, ls_init_value=request.param, seed=31)
    return model, cliplens.wrap(copy.deepcopy(model).double().eval())


def _texts(dtype: torch.dtype, seed: int = 5) -> TextEmbeddings:
    directions = random_directions(N_TEXTS, seed=seed).to(dtype)
    return TextEmbeddings(directions, tuple(f"text {i}" for i in range(N_TEXTS)))


def _run(name: str, params: dict, wrapped, x: torch.Tensor, texts: TextEmbeddings) -> torch.Tensor:
    method = get_map(name, **params)
    if name in GRADIENT_METHODS:
        return method.raw(wrapped, x, texts)  # gradient methods enable gradients themselves
    with torch.no_grad():
        return method.raw(wrapped, x, texts)


def _relative_error(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    err = (ours.detach().double() - ref).abs().max().item()
    return err, err / ref.abs().max().item()


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=["64x64", "64x96"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_method_matches_reference(models, case, hw):
    name, params = case
    model, wrapped = models
    x = random_images(2, hw, seed=7)
    texts = _texts(torch.float64)
    ref = reference_raw(name, model, x, texts.directions, **params)
    grid = (hw[0] // 16, hw[1] // 16)
    assert ref.shape == (2, N_TEXTS, *grid) and ref.abs().max() > 0

    ours = _run(name, params, wrapped, x.double(), texts)

    assert isinstance(ours, torch.Tensor)
    assert tuple(ours.shape) == (2, N_TEXTS, *grid), f"shape {tuple(ours.shape)}"
    assert torch.isfinite(ours).all()
    err, rel = _relative_error(ours, ref)
    tol = 1e-9 if ours.dtype == torch.float64 else 1e-5
    assert rel <= tol, f"{_case_id(case)} at {hw}: max abs err {err:.3e}, relative {rel:.3e} (dtype {ours.dtype})"


@pytest.mark.parametrize("name", ALL_METHODS)
def test_float32_model_matches_reference(name):
    """The float32 path: a float32 wrapped model, float32 pixels and texts, against the float64 oracle."""
    model = build_tiny_clip(layers=DEPTH, ls_init_value=0.5, seed=32)
    wrapped = cliplens.wrap(copy.deepcopy(model))
    x = random_images(2, (64, 96), seed=8)
    texts = _texts(torch.float32, seed=6)
    ref = reference_raw(name, model, x, texts.directions, **({"blocks": 4} if name == "gem" else {}))
    ours = _run(name, {"blocks": 4} if name == "gem" else {}, wrapped, x, texts)
    assert tuple(ours.shape) == (2, N_TEXTS, 4, 6)
    err, rel = _relative_error(ours, ref)
    assert rel <= 1e-4, f"{name} float32: max abs err {err:.3e}, relative {rel:.3e}"


@pytest.mark.parametrize("name", ALL_METHODS)
def test_method_leaves_the_model_unchanged(name):
    model = build_tiny_clip(layers=DEPTH, seed=33)
    wrapped = cliplens.wrap(model)
    before = {key: value.detach().clone() for key, value in model.state_dict().items()}
    x = random_images(1, (64, 96), seed=9)
    first = _run(name, {}, wrapped, x, _texts(torch.float32))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    # a second call gives the same maps (no state left behind: hooks, patched modules, modified tables)
    torch.testing.assert_close(_run(name, {}, wrapped, x, _texts(torch.float32)), first, rtol=0, atol=0)
