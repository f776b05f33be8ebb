"""CLIP Surgery on a Hugging Face ``transformers`` CLIP, against a naive implementation written here on the
model's own modules (float64): the main stream block by block, and the v-v side path over the last k blocks."""

from __future__ import annotations

import copy

import pytest
import torch

import cliplens
from cliplens.maps import Surgery
from tests.conftest import hf_vit, pixels


def _heads(t: torch.Tensor, H: int) -> torch.Tensor:
    B, N, D = t.shape
    return t.view(B, N, H, D // H).transpose(1, 2)  # [B, H, N, dh]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v  # [B, H, N, dh]
    B, H, N, dh = a.shape
    return a.transpose(1, 2).reshape(B, N, H * dh)


def reference_tokens(model: torch.nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, N, E]``: CLS from the main stream, the other tokens from the side path (the main stream's residual at
    the first surgical block plus, at each surgical block, out_proj(softmax(v vᵀ/√dh) v) of its ln_1 output),
    each through post_layernorm and the visual projection."""
    m = copy.deepcopy(model).double().eval()
    vm = m.vision_model
    main = vm.pre_layrnorm(vm.embeddings(x.double()))
    layers = list(vm.encoder.layers)
    side = None
    for i, layer in enumerate(layers):
        sa = layer.self_attn
        H = sa.num_heads
        h = layer.layer_norm1(main)
        if i >= len(layers) - k:
            side = main if side is None else side
            v = _heads(sa.v_proj(h), H)
            side = side + sa.out_proj(_attend(v, v, v))
        attn = sa.out_proj(_attend(_heads(sa.q_proj(h), H), _heads(sa.k_proj(h), H), _heads(sa.v_proj(h), H)))
        main = main + attn
        main = main + layer.mlp(layer.layer_norm2(main))
    tokens = torch.cat([main[:, :1], side[:, 1:]], dim=1)
    return m.visual_projection(vm.post_layernorm(tokens))


@pytest.mark.parametrize("blocks", [2, 3])
def test_surgery_tokens_on_a_transformers_clip(blocks):
    model = hf_vit("B-32", layers=3)
    x = pixels(2, 224)
    with torch.no_grad():
        ref = reference_tokens(model, x, blocks)
    ours, grid = Surgery(blocks=blocks).tokens(cliplens.wrap(model), x)
    assert grid == (7, 7) and ours.shape == ref.shape
    err = ((ours.double() - ref).abs().max() / ref.abs().max()).item()
    assert err <= 1e-5, err
    # the vanilla main stream of the reference is the model's own forward (so the reference itself is right)
    with torch.no_grad():
        own = model(pixel_values=x).image_embeds.double()
    assert torch.allclose(ref[:, 0], own, atol=1e-5 * own.abs().max().item())
