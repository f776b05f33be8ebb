"""ProxyCLIP against its naive float64 reference (tests/maps/proxyclip_reference.py) on a random-weight open_clip
CLIP and random-weight DINO / DINOv2 backbones built from transformers configs; its proxy attention's edge case;
its second backbone by name from Python and from the command line."""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from cliplens.errors import UnsupportedArchitectureError
from cliplens.maps import TextEmbeddings, get_map
from cliplens.maps.proxyclip import proxy_attention
from tests.maps.dense_reference import build_tiny_clip, random_directions, random_images
from tests.maps.proxyclip_reference import reference_proxyclip
from tests.models.vfm_models import tiny_vfm, vfm_saved

pytest.importorskip("transformers")
pytest.importorskip("open_clip")

N_TEXTS = 3


@pytest.fixture(scope="module")
def clip():
    """(open_clip model for the oracle, a cliplens-wrapped float64 copy)."""
    model = build_tiny_clip(layers=4, ls_init_value=0.5, seed=41)
    return model, cliplens.wrap(copy.deepcopy(model).double().eval())


def _vfm(kind: str):
    """A backbone of ``kind`` with 8-pixel patches and a 64-pixel native input (an 8 x 8 grid)."""
    return tiny_vfm(kind, patch=8, image_size=64, seed=3)


def _texts(dtype: torch.dtype) -> TextEmbeddings:
    return TextEmbeddings(random_directions(N_TEXTS, seed=5).to(dtype), tuple(f"t{i}" for i in range(N_TEXTS)))


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("hw, params", [
    ((64, 64), {}),  # both grids native
    ((96, 96), {}),  # both tables resized, each by its own rule (CLIP: DINO's scale factor; the backbone: its hub's)
    ((64, 64), dict(beta=0.6, gamma=5.0)),
    ((64, 96), dict(vfm_positional="transformers")),  # non-square: the backbone by transformers' rule
    ((96, 96), dict(vfm_positional="transformers", positional="bicubic")),
], ids=["native", "96x96", "beta-gamma", "64x96-transformers", "96x96-bicubic-transformers"])
@pytest.mark.parametrize("kind", ["dinov2", "dinov2_reg", "dino"])
def test_matches_reference(clip, kind, hw, params):
    model, wrapped = clip
    vfm = _vfm(kind)
    x = random_images(2, hw, seed=7)
    ref_params = {k: v for k, v in params.items() if k != "positional"}
    ref = reference_proxyclip(model, vfm, x, _texts(torch.float64).directions, **ref_params,
                              clip_positional=params.get("positional", "bicubic_dino"))
    grid = (hw[0] // 8, hw[1] // 8)  # the backbone's grid, not CLIP's (hw // 16)
    assert ref.shape == (2, N_TEXTS, *grid)
    method = get_map("proxyclip", vfm=copy.deepcopy(vfm).double(), **params)
    ours = method.raw(wrapped, x.double(), _texts(torch.float64))
    assert ours.shape == ref.shape and torch.isfinite(ours).all()
    # the reference resamples a registers model's table with timm, in float32
    timm_float32 = kind == "dinov2_reg" and hw == (96, 96) and "vfm_positional" not in params
    assert _rel(ours, ref) <= (1e-6 if timm_float32 else 1e-9)


def test_float32_matches_reference():
    model = build_tiny_clip(layers=4, seed=42)
    vfm = _vfm("dinov2")
    x = random_images(2, (64, 96), seed=8)
    ref = reference_proxyclip(model, vfm, x, _texts(torch.float64).directions, vfm_positional="transformers")
    ours = get_map("proxyclip", vfm=vfm, vfm_positional="transformers").raw(cliplens.wrap(copy.deepcopy(model)), x,
                                                                             _texts(torch.float32))
    assert _rel(ours, ref) <= 1e-4


def test_the_proxy_attention_masks_negatives_and_a_fully_masked_row_keeps_its_token():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    a = proxy_attention(feats, beta=1.2, gamma=3.0)
    f = torch.nn.functional.normalize(feats.flatten(2), dim=1)
    s = f.transpose(1, 2) @ f
    kept = (s - 1.2 * s.mean(dim=(1, 2), keepdim=True)) >= 0
    assert torch.equal(a > 0, kept) and torch.allclose(a.sum(-1), torch.ones(2, 12, dtype=torch.float64))
    # identical features: every similarity is 1, so 3 · (1 − 1.2) < 0 masks every entry (the repository: NaN)
    same = torch.ones(1, 5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(proxy_attention(same, beta=1.2, gamma=3.0)[0], torch.eye(6, dtype=torch.float64))


def test_leaves_both_models_unchanged_and_repeats_exactly(clip):
    model, _ = clip
    wrapped = cliplens.wrap(copy.deepcopy(model))
    vfm = _vfm("dinov2_reg")
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (wrapped.model if hasattr(wrapped, "model")
                                                                           else model, vfm)]
    x = random_images(1, (64, 96), seed=9)
    method = get_map("proxyclip", vfm=vfm)
    first = method.raw(wrapped, x, _texts(torch.float32))
    for saved, m in zip(before, (wrapped.model if hasattr(wrapped, "model") else model, vfm), strict=True):
        for k, v in m.state_dict().items():
            assert torch.equal(v, saved[k]), k
    torch.testing.assert_close(method.raw(wrapped, x, _texts(torch.float32)), first, rtol=0, atol=0)


@pytest.fixture(scope="module")
def vfm_folder(tmp_path_factory) -> str:
    return vfm_saved(tmp_path_factory.mktemp("vfm") / "dinov2")


def test_a_named_backbone_through_the_map_pipeline(clip, vfm_folder):
    _, wrapped = clip
    image = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(10))
    maps = get_map("proxyclip", vfm=vfm_folder)(wrapped, image, ["a cat", "a dog"])
    assert maps.raw.shape == (1, 2, 8, 12)
    assert maps.settings["vfm"] == vfm_folder and maps.settings["beta"] == 1.2 and maps.settings["gamma"] == 3.0
    assert maps.settings["positional"] == "bicubic_dino"


def test_an_unknown_backbone_is_one_paragraph(clip):
    _, wrapped = clip
    with pytest.raises(UnsupportedArchitectureError, match="second backbone: Unknown vision backbone 'dino_vit'"):
        get_map("proxyclip", vfm="dino_vit")(wrapped, torch.rand(3, 64, 64), ["a cat"])
