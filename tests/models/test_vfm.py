"""The second vision backbone (cliplens.models.vfm): its features and last-block q/k/v equal transformers' own
outputs at the native grid and at another one, its pixel normalisation, name resolution, loading and errors."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cliplens.errors import InvalidInputError, MissingDependencyError, ModelLoadError, ModelNotFoundError
from cliplens.models import vfm
from tests.maps.surgery_reference import _local_positional_table
from tests.models.vfm_models import KINDS, tiny_vfm

pytest.importorskip("transformers")
tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]
#: (H, W) of the native grid (16 px / 4 px patches) and of a non-square, non-native one
SIZES = [(16, 16), (20, 28)]


def _pre_norm(layer):
    return layer.norm1 if hasattr(layer, "norm1") else layer.layernorm_before


def _blocks(model):
    if hasattr(model, "layers"):  # ViTModel in transformers 5
        return model.layers
    return model.encoder.layer if hasattr(model.encoder, "layer") else model.encoder.layers


def _projections(layer):
    attn = layer.attention
    attn = getattr(attn, "attention", attn)
    names = ("q_proj", "k_proj", "v_proj") if hasattr(attn, "q_proj") else ("query", "key", "value")
    return [getattr(attn, n) for n in names]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES)
def test_features_and_qkv_equal_transformers_outputs(kind, size):
    model = tiny_vfm(kind)
    bb = vfm.load_vfm(model)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    got = bb(x)
    extra = {"interpolate_pos_encoding": True} if kind == "dino" else {}
    with torch.no_grad():
        ref = model(pixel_values=x, output_hidden_states=True, output_attentions=True, **extra)
    prefix = 1 + (4 if kind == "dinov2_reg" else 0)
    gh, gw = size[0] // 4, size[1] // 4
    assert got.grid == (gh, gw) and got.prefix == prefix == bb.prefix
    n = prefix + gh * gw
    # features: patch token (i, j) is token prefix + i * gw + j of the last hidden state (after the final norm)
    assert got.features.shape == (2, 32, gh, gw)
    lhs = ref.last_hidden_state
    for i, j in [(0, 0), (gh - 1, 0), (1, gw - 1), (gh - 1, gw - 1)]:
        torch.testing.assert_close(got.features[:, :, i, j], lhs[:, prefix + i * gw + j], rtol=0, atol=0)
    # q, k: their scaled softmax is transformers' attention pattern of the last block
    assert got.q.shape == got.k.shape == got.v.shape == (2, 4, n, 8)
    pattern = (got.q @ got.k.transpose(-1, -2) * 8 ** -0.5).softmax(-1)
    torch.testing.assert_close(pattern, ref.attentions[-1], rtol=1e-5, atol=1e-6)
    # q, k, v: the last block's projections of its (pre-normed) input, split by head
    last = _blocks(model)[-1]
    with torch.no_grad():
        h = _pre_norm(last)(ref.hidden_states[-2])
        for mine, proj in zip((got.q, got.k, got.v), _projections(last), strict=True):
            want = proj(h).reshape(2, n, 4, 8).transpose(1, 2)
            torch.testing.assert_close(mine, want, rtol=1e-6, atol=1e-6)
    assert got.patches(got.v).shape == (2, 4, gh * gw, 8)
    assert not got.features.requires_grad


def test_positional_table_is_resized_at_a_non_native_grid():
    """The non-native case really exercises the resized table (outputs differ from a cropped-table forward)."""
    bb = vfm.load_vfm(tiny_vfm("dinov2"))
    x = torch.randn(1, 3, 20, 28, generator=torch.Generator().manual_seed(2))
    full = bb(x).features
    crop = bb(x[..., :16, :16]).features
    assert not torch.allclose(full[..., :4, :4], crop)


def test_normalize_from_clip_statistics():
    bb = vfm.load_vfm(tiny_vfm("dinov2"))
    raw = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    clip = (raw - torch.tensor(clip_mean).view(1, 3, 1, 1)) / torch.tensor(clip_std).view(1, 3, 1, 1)
    want = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    torch.testing.assert_close(bb.normalize_from(clip, clip_mean, clip_std), want, rtol=1e-5, atol=1e-5)


def test_patch_size_heads_and_grid():
    bb = vfm.load_vfm(tiny_vfm("dino", patch=8, image_size=32))
    assert (bb.patch_size, bb.heads, bb.head_dim, bb.width, bb.prefix) == (8, 4, 8, 32, 1)
    assert bb.grid(336, 250) == (42, 31)
    assert vfm.load_vfm(bb) is bb


@pytest.mark.parametrize("name, want", [
    ("dino_vitb8", "facebook/dino-vitb8"),
    ("dino_vitb16", "facebook/dino-vitb16"),
    ("dinov2_vitb14", "facebook/dinov2-base"),
    ("dinov2_vitb14_reg", "facebook/dinov2-with-registers-base"),
    ("facebook/dinov2-small", "facebook/dinov2-small"),
])
def test_names_resolve_to_transformers_ids(name, want):
    assert vfm.resolve_name(name) == want


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ModelNotFoundError, match="dino_vitb8"):
        vfm.resolve_name("dino_vitb88")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        vfm.resolve_name("/no/such/folder")


def test_folder_loads_lazily_once_and_matches_the_model(tmp_path):
    model = tiny_vfm("dinov2_reg")
    folder = tmp_path / "dino"
    model.save_pretrained(folder)
    vfm.clear_cache()
    a = vfm.load_vfm(str(folder))
    assert vfm.load_vfm(str(folder)) is a  # cached
    assert vfm.load_vfm(str(folder), dtype=torch.float64) is not a
    assert a.prefix == 5
    x = torch.randn(1, 3, 24, 20, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a(x).features, vfm.load_vfm(model)(x).features)
    vfm.clear_cache()


def test_unsupported_folder_and_object(tmp_path):
    transformers = pytest.importorskip("transformers")
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1, image_size=16,
        patch_size=4))
    clip.save_pretrained(tmp_path / "clip")
    with pytest.raises(ModelLoadError, match="clip_vision_model"):
        vfm.load_vfm(str(tmp_path / "clip"))
    with pytest.raises(InvalidInputError, match="CLIPVisionModel"):
        vfm.load_vfm(clip)
    with pytest.raises(InvalidInputError, match="got int"):
        vfm.load_vfm(3)


def test_no_weights_offline_is_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vfm.clear_cache()
    with pytest.raises(ModelLoadError) as info:
        vfm.load_vfm("dino_vitb8", cache_dir=str(tmp_path))
    msg = str(info.value)
    assert "facebook/dino-vitb8" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg


def test_transformers_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"\.\[dino\]"):
        vfm.load_vfm("dino_vitb8")


def test_pyproject_has_the_dino_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("transformers") for req in extras[vfm.EXTRA])


def _at_size(model, kind: str, size: int, table: torch.Tensor):
    """A copy of ``model`` built natively for ``size`` pixels with positional table ``table``: its forward at that
    size uses the table as it is (no resizing)."""
    native = copy.deepcopy(model)
    native.config.image_size = size
    native.embeddings.position_embeddings = torch.nn.Parameter(table.detach().clone())
    if kind == "dino":
        native.embeddings.patch_embeddings.image_size = (size, size)
    return native


@pytest.mark.parametrize("kind, mode", [("dinov2", "bicubic_dino"), ("dino", "bicubic_dino"),
                                        ("dinov2_reg", "bicubic_antialias")])
def test_hub_positional_rule(kind, mode):
    """``positional="hub"``: the table of the torch.hub code (DINO's scale factor (n + 0.1) / N; DINOv2 with
    registers: antialiased bicubic to the size), checked against the independent implementations of those rules in
    tests/maps/surgery_reference.py; the forward equals the model's own at a size it was built for, with that table."""
    model = copy.deepcopy(tiny_vfm(kind)).double()
    bb = vfm.load_vfm(model)
    table = model.embeddings.position_embeddings  # [1, 1 + 16, D]: a 4 x 4 grid
    fake = SimpleNamespace(positional_embedding=table[0], grid_size=(4, 4))
    want = _local_positional_table(fake, (6, 6), mode)
    got = vfm.hub_positional_table(table, (24, 24), 4, model.config.model_type)
    tol = 1e-12 if mode == "bicubic_dino" else 1e-6  # timm resamples in float32
    torch.testing.assert_close(got[0], want.to(got.dtype), rtol=tol, atol=tol)
    assert vfm.hub_positional_table(table, (16, 16), 4, model.config.model_type) is table
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    hub = bb(x, positional="hub")
    assert "interpolate_pos_encoding" not in model.embeddings.__dict__  # nothing left on the model
    ref = vfm.load_vfm(_at_size(model, kind, 24, got)).forward(x)
    torch.testing.assert_close(hub.features, ref.features, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hub.k, ref.k, rtol=1e-12, atol=1e-12)
    if kind != "dinov2_reg":  # transformers' own rule differs (registers: the same rule)
        assert not torch.allclose(hub.features, bb(x).features)
    with pytest.raises(InvalidInputError, match="positional rule"):
        bb(x, positional="bilinear")
