"""CASS against its naive float64 reference (tests/maps/cass_reference.py) on a random-weight open_clip CLIP and
random-weight DINO / DINOv2 backbones of the same width built from transformers configs; its head matching;
its refusals; its second backbone by name."""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from cliplens.errors import UnsupportedArchitectureError
from cliplens.maps import TextEmbeddings, get_map
from cliplens.maps.cass import spectral_graph, text_clusters
from tests.maps.cass_reference import reference_cass
from tests.maps.dense_reference import build_tiny_clip, random_directions, random_images
from tests.models.vfm_models import tiny_vfm

pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("scipy")

N_TEXTS = 4
CONTEXT = dict(h_threshold=1.0, mean_vector_weight=0.3, global_semantics_weight=0.2)


@pytest.fixture(scope="module")
def clip():
    """(open_clip model for the oracle, a cliplens-wrapped float64 copy): width 64, 4 heads of 16."""
    model = build_tiny_clip(layers=3, seed=41)
    return model, cliplens.wrap(copy.deepcopy(model).double().eval())


def _vfm(kind: str):
    """A backbone of ``kind`` with CLIP's width and heads, 8-pixel patches and a 64-pixel native input."""
    return tiny_vfm(kind, width=64, heads=4, patch=8, image_size=64, seed=3)


def _texts(dtype: torch.dtype) -> TextEmbeddings:
    return TextEmbeddings(random_directions(N_TEXTS, seed=5).to(dtype), tuple(f"t{i}" for i in range(N_TEXTS)))


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref).abs().max() / ref.abs().max()).item()


def _closest_reference(model, vfm, x, directions, dtype=torch.float64, **params) -> tuple[float, int]:
    """The smallest relative difference between ``ours`` (run in ``dtype``) and the reference over the optimal
    matchings (ties are common: see cass_reference), and how many matchings there were."""
    ours = get_map("cass", vfm=copy.deepcopy(vfm).to(dtype), **params).raw(
        cliplens.wrap(copy.deepcopy(model).to(dtype).eval()), x.to(dtype), TextEmbeddings(directions.to(dtype), tuple(
            f"t{i}" for i in range(directions.shape[0]))))
    ref, counts = reference_cass(model, vfm, x, directions, **params)
    best = _rel(ours, ref)
    for pick in range(1, counts[0]):
        if best <= 1e-9:
            break
        best = min(best, _rel(ours, reference_cass(model, vfm, x, directions, pick=pick, **params)[0]))
    return best, counts[0]


@pytest.mark.parametrize("size", [64, 96], ids=["native", "96x96"])
@pytest.mark.parametrize("kind", ["dino", "dinov2", "dinov2_reg"])
@pytest.mark.parametrize("params", [{}, dict(rescale=False), CONTEXT], ids=["defaults", "no-rescale", "context"])
def test_matches_reference(clip, kind, size, params):
    model, _ = clip
    directions = random_directions(N_TEXTS, seed=5)
    for b in range(2):  # one image at a time: the matching is per image
        x = random_images(2, (size, size), seed=7)[b:b + 1]
        rel, _ = _closest_reference(model, _vfm(kind), x, directions, **params)
        # the reference resamples a registers model's table with timm, in float32
        assert rel <= (1e-6 if kind == "dinov2_reg" and size != 64 else 1e-9), (b, rel)


def test_batched_equals_one_at_a_time_and_float32(clip):
    """A batch gives each image's own maps; float32 matches the reference to 1e-4 (over the optimal matchings: in
    float32 a tie may go another way than in float64, as it may in the repository's float16)."""
    model, wrapped = clip
    vfm = _vfm("dino")
    x = random_images(3, (64, 64), seed=8)
    method = get_map("cass", vfm=copy.deepcopy(vfm).double(), **CONTEXT)
    batch = method.raw(wrapped, x.double(), _texts(torch.float64))
    for b in range(3):
        torch.testing.assert_close(method.raw(wrapped, x[b:b + 1].double(), _texts(torch.float64))[0], batch[b])
    rel, _ = _closest_reference(model, vfm, x[:1], random_directions(N_TEXTS, seed=5), torch.float32, **CONTEXT)
    assert rel <= 1e-4


def test_the_matching_is_a_least_cost_assignment_and_the_graph_mixes_both():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(4, 25, 8, generator=g, dtype=torch.float64)
    dk = torch.randn(4, 25, 8, generator=g, dtype=torch.float64)
    G = spectral_graph(k, dk)
    a = k @ k.transpose(1, 2) * 8 ** -0.5
    assert G.shape == (4, 25, 25) and not torch.allclose(G, a)
    assert torch.allclose(G, G.transpose(1, 2))  # symmetric parts, symmetric mix
    assert (G.amin((1, 2)) >= a.amin((1, 2)) - 1e-12).all() and (G.amax((1, 2)) <= a.amax((1, 2)) + 1e-12).all()


def test_text_clusters():
    t = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0.99, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=-1)
    assert sorted(map(sorted, text_clusters(t, 0.5))) == [[0, 1], [2], [3]]
    assert sorted(map(sorted, text_clusters(t, 0.0))) == [[0], [1], [2], [3]]
    assert text_clusters(t[:1], 0.5) == [[0]]


def test_scipy_missing_names_the_extra(monkeypatch):
    import sys

    from cliplens.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(MissingDependencyError, match=r"\.\[dino\]"):
        spectral_graph(torch.randn(2, 5, 4), torch.randn(2, 5, 4))


def test_refuses_a_backbone_of_another_width_in_one_paragraph(clip):
    _, wrapped = clip
    narrow = tiny_vfm("dino", width=32, heads=4, patch=8, image_size=64)
    with pytest.raises(UnsupportedArchitectureError, match="4 heads of 8, CLIP's last block 4 of 16"):
        get_map("cass", vfm=narrow)(wrapped, torch.rand(3, 64, 64), ["a cat", "a dog"])
    with pytest.raises(Exception, match="mean_vector_weight must be between 0 and 1"):
        get_map("cass", mean_vector_weight=2)


def test_leaves_both_models_unchanged_and_repeats_exactly(clip):
    model, _ = clip
    wrapped = cliplens.wrap(copy.deepcopy(model))
    vfm = _vfm("dinov2")
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (wrapped.model, vfm)]
    x = random_images(1, (64, 64), seed=9)
    method = get_map("cass", vfm=vfm, **CONTEXT)
    first = method.raw(wrapped, x, _texts(torch.float32))
    for saved, m in zip(before, (wrapped.model, vfm), strict=True):
        for k, v in m.state_dict().items():
            assert torch.equal(v, saved[k]), k
    torch.testing.assert_close(method.raw(wrapped, x, _texts(torch.float32)), first, rtol=0, atol=0)
