"""A family defined outside the package: one TowerFamily registered, and the model runs through cliplens.

The tower is written here from scratch (patch embedding without a CLS token, open_clip's transformer blocks, a
LayerNorm over each token, the mean of the patches, a projection): the shape of a lab's own model. The family
maps its weights into a view (references, no copies) with the mean-pooling head; nothing else is registered.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cliplens
from cliplens.core.heads import MeanHead
from cliplens.core.view import BlockView, LayerNormView, VisionView
from cliplens.errors import UnsupportedArchitectureError
from cliplens.maps import get_map
from cliplens.models.families import TowerFamily, families, register_family
from tests.conftest import pixels, tiny_open_clip


class MeanPoolViT(nn.Module):
    def __init__(self, inner: nn.Module, embed_dim: int) -> None:
        super().__init__()
        width = inner.conv1.out_channels
        self.patch = inner.conv1
        self.pos = nn.Parameter(inner.positional_embedding[1:].detach().clone())
        self.blocks = inner.transformer  # open_clip's Transformer (ResidualAttentionBlock, nn.MultiheadAttention)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
        self.image_size = inner.image_size
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        x = self.blocks(x)
        return self.norm(x).mean(1) @ self.proj


def _ln(m: nn.LayerNorm) -> LayerNormView:
    return LayerNormView(m.weight, m.bias, m.eps)


def _block(b: nn.Module) -> BlockView:
    a, d = b.attn, b.attn.embed_dim
    w, bias = a.in_proj_weight, a.in_proj_bias
    return BlockView(ln_1=_ln(b.ln_1), q_weight=w[:d], k_weight=w[d:2 * d], v_weight=w[2 * d:], q_bias=bias[:d],
                     k_bias=bias[d:2 * d], v_bias=bias[2 * d:], out_weight=a.out_proj.weight, out_bias=a.out_proj.bias,
                     ln_2=_ln(b.ln_2), fc1_weight=b.mlp.c_fc.weight, fc1_bias=b.mlp.c_fc.bias,
                     fc2_weight=b.mlp.c_proj.weight, fc2_bias=b.mlp.c_proj.bias, num_heads=a.num_heads)


def _view(model: nn.Module, name: str) -> VisionView:
    t = model.visual
    return VisionView(patch_weight=t.patch.weight, patch_bias=t.patch.bias, class_embedding=None,
                      positional_embedding=t.pos, ln_pre=None,
                      blocks=tuple(_block(b) for b in t.blocks.resblocks), ln_post=None, proj=None,
                      image_size=tuple(t.image_size), source=f"my-lab:{name}",
                      head=MeanHead(_ln(t.norm), t.proj, skip=0))


FAMILY = TowerFamily(name="mean-vit", summary="my lab's mean-pooled ViT", library="open_clip",
                     matches=lambda m: isinstance(getattr(m, "visual", None), MeanPoolViT), build=_view,
                     exact="exact: every head x token through the mean of per-token LayerNorms")


@pytest.fixture(scope="module")
def model():
    m = tiny_open_clip()
    m.visual = MeanPoolViT(m.visual, embed_dim=32).eval()
    return m


def test_a_tower_cliplens_does_not_know_is_refused_naming_the_way_to_add_it(model):
    if FAMILY in families():
        pytest.skip("registered by another test of this module first")
    with pytest.raises(UnsupportedArchitectureError, match="register a TowerFamily") as e:
        cliplens.wrap(model, name="my-vit")
    assert "MeanPoolViT" in str(e.value) and "clip-vit" in str(e.value)


def test_a_registered_family_runs_end_to_end(model):
    register_family(FAMILY)
    try:
        wrapped = cliplens.wrap(model, name="my-vit")
        x = pixels(2, 64)
        want = model.encode_image(x)
        torch.testing.assert_close(wrapped.encode_image(x), want, rtol=1e-5, atol=1e-6)
        dec = wrapped.decompose(x, spatial=True)
        dec.check()
        torch.testing.assert_close(dec.reconstruct(), want, rtol=1e-4, atol=1e-5)
        maps = get_map("naclip")(wrapped, [torch.rand(3, 64, 64)], ["a dog", "a cat"])
        assert maps.raw.shape == (1, 2, 4, 4) and torch.isfinite(maps.raw).all()
        # the view references the model's weights: an edit shows at once
        assert wrapped.vision.positional_embedding.data_ptr() == model.visual.pos.data_ptr()
    finally:
        import cliplens.models.families as fam

        fam._FAMILIES[:] = [f for f in fam._FAMILIES if f is not FAMILY]
