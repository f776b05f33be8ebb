"""OpenAI ResNet CLIPs (open_clip ``RN50``, ``RN101``, ``RN50x4``) through cliplens: the functional forward equals
open_clip's ``encode_image`` (fp32, perturbed BatchNorm statistics and biases), the decomposition of the
attention pool is exact and equals the float64 reference (:func:`tests.families.reference.reference_resnet`), the
trunk is said to be opaque, and loading by name works offline."""

from __future__ import annotations

import warnings

import pytest
import torch

import cliplens
from cliplens.core.forward import run_vision
from cliplens.decomposition.decomposition import decompose
from cliplens.errors import UnsupportedArchitectureError
from tests.families import models, reference

pytest.importorskip("open_clip")

#: name, input size (RN50x4 takes ~8 s to build here: marked slow)
RESNETS = [("RN50", 224), ("RN101", 224), pytest.param(("RN50x4", 288), marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=RESNETS, ids=lambda p: p[0])
def case(request):
    name, size = request.param
    torch.set_num_threads(1)
    model = models.open_clip_resnet(name)  # float64, biases and BatchNorm statistics perturbed
    adapter = cliplens.wrap(model, name=name)
    return name, size, model, adapter


def test_encode_image_parity_fp32(case):
    name, size, model, _ = case
    m32 = models.open_clip_resnet(name).float() if name != "RN50" else _float_copy(model)
    view = cliplens.wrap(m32, name=name).vision
    x = models.pixels(2, size, seed=3).float()
    with torch.no_grad():
        want = m32.encode_image(x)
        got = run_vision(view, x).embedding
    assert got.dtype == torch.float32
    assert float(((got - want).norm(dim=-1) / want.norm(dim=-1)).max()) <= 1e-5


def _float_copy(model):
    import copy

    return copy.deepcopy(model).float()


def test_pool_terms_equal_the_reference_mean_token_first(case):
    name, size, model, adapter = case
    x = models.pixels(2, size, seed=6)
    r = reference.reference_resnet(model, x)
    dec = decompose(adapter.vision, x, dtype=torch.float64)
    assert dec.check() <= 1e-10
    P = int(r["grid"].prod())
    first = torch.cat([torch.tensor([P]), torch.arange(P)])  # the reference keeps the mean token last
    pool = dec.pool_terms()
    assert pool.shape == (2, model.visual.attnpool.num_heads, P + 1, model.visual.attnpool.c_proj.out_features)
    alpha = dec.readout.pooling
    torch.testing.assert_close(alpha, r["pool_attn"][:, :, first], rtol=0, atol=1e-12)
    # pool_terms carry each token's share a[r, n]/R of the head's constant (value and out-projection biases)
    bias = dec._map.w.bias
    torch.testing.assert_close(bias, r["constants"][0], rtol=0, atol=1e-12)
    without = pool - alpha[..., None] * bias / dec.num_readouts
    torch.testing.assert_close(without, r["pool_terms"][:, :, first], rtol=0, atol=1e-12)
    torch.testing.assert_close(pool.sum((1, 2)), r["embedding"], rtol=0, atol=1e-10)
    # the whole embedding term read out per pool head is the pool head's output
    torch.testing.assert_close(dec.readout_terms().sum(1), r["embedding"], rtol=0, atol=1e-10)


def test_decompose_fp32_is_exact_and_says_the_trunk_is_opaque(case):
    name, size, _, _ = case
    adapter = cliplens.wrap(_float_copy(case[2]), name=name)
    x = models.pixels(2, size, seed=4).float()
    dec = adapter.decompose(x)
    assert dec.num_layers == 0 and dec.num_heads == 0 and dec.prefix == 1
    assert dec.check() <= 1e-5
    assert "trunk not decomposed" in repr(dec)
    assert "not decomposed" in dec.header()["settings"]["not_decomposed"]
    assert dec.head_kind == "attnpool" and dec.view.head.affine
    tokens = dec.token_terms()  # through the pool, per token (mean token first)
    assert tokens.shape == (2, dec.num_tokens, dec.embedding.shape[1])
    torch.testing.assert_close(tokens.sum(1), dec.embedding, rtol=1e-5, atol=1e-5)
    scores = dec.normalized().project(torch.nn.functional.normalize(torch.randn(3, dec.embedding.shape[1]), dim=-1))
    assert scores.embed.shape == (2, 3)


def test_view_without_blocks():
    model = models.open_clip_resnet("RN50")
    view = cliplens.wrap(model, name="RN50").vision
    assert view.blocks == () and view.num_heads == 0 and view.head_dim == 0
    assert view.width == 2048 and view.patch_size == (32, 32) and view.grid_size == (7, 7)
    assert view.num_tokens() == 50 and view.num_prefix_tokens == 1
    # every trunk tensor (BatchNorm statistics included) is in the fingerprint
    assert any(t is model.visual.bn1.running_mean for t in view.parameters())
    before = cliplens.wrap(model, name="RN50").fingerprint()
    with torch.no_grad():
        model.visual.layer1[0].bn1.running_var.mul_(1.5)
    assert cliplens.wrap(model, name="RN50").fingerprint() != before


def test_other_input_sizes_resize_the_positions_and_stay_exact():
    model = models.open_clip_resnet("RN50")
    adapter = cliplens.wrap(model, name="RN50")
    x = models.pixels(1, 256, seed=2)
    dec = decompose(adapter.vision, x, dtype=torch.float64)
    assert dec.grid == (8, 8) and dec.check() <= 1e-10
    odd = decompose(adapter.vision, models.pixels(1, 250, seed=2), dtype=torch.float64)  # floored like the trunk
    assert odd.grid == (7, 7) and odd.check() <= 1e-10


def test_load_by_name_offline_and_list_models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cliplens.load("RN50", pretrained="random")
    x = torch.randn(1, 3, 224, 224)
    assert m.encode_image(x).shape == (1, 1024)
    m.decompose(x).check()
    infos = {i.name: i for i in cliplens.list_models()}
    for name in ("RN50", "RN101", "RN50x4"):
        assert infos[name].decomposable and "pool only" in infos[name].note and "not decomposed" in infos[name].note


def test_what_needs_blocks_refuses_with_one_paragraph():
    model = models.open_clip_resnet("RN50")
    adapter = cliplens.wrap(model, name="RN50")
    from cliplens.core.trunk import needs_blocks

    with pytest.raises(UnsupportedArchitectureError, match="not decomposed") as e:
        needs_blocks("per-layer head terms", adapter.vision)
    assert "\n" not in str(e.value) and "ViT" in str(e.value)
    needs_blocks("anything", cliplens.load("toy").vision)  # a ViT passes
