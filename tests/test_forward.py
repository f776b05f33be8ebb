"""The functional forward equals open_clip's own encode_image, and hooks/taps behave."""

from __future__ import annotations

import copy

import pytest
import torch

from cliplens.core.forward import positional_embedding_for, run_vision
from cliplens.core.hooks import hook_names, resolve_names
from cliplens.models.openclip import vision_view_from_open_clip
from tests.conftest import open_clip_model, pixels, tiny_open_clip

PARITY_CASES = [
    # (id, model factory, batch, input size)
    ("ViT-B-32-b1", lambda: open_clip_model("ViT-B-32"), 1, 224),
    ("ViT-B-32-b3", lambda: open_clip_model("ViT-B-32"), 3, 224),
    ("ViT-B-16-b2", lambda: open_clip_model("ViT-B-16"), 2, 224),
    ("ViT-L-14-b1", lambda: open_clip_model("ViT-L-14"), 1, 224),
    ("ViT-B-16-quickgelu-b2", lambda: open_clip_model("ViT-B-16-quickgelu"), 2, 224),
    ("ViT-B-16@160-b2", lambda: open_clip_model("ViT-B-16", force_image_size=160), 2, 160),
    ("layer-scale-b3", lambda: tiny_open_clip(layer_scale=True), 3, 64),
    ("tiny-quickgelu-b1", lambda: tiny_open_clip(quick_gelu=True), 1, 64),
]


@pytest.mark.parametrize("case", PARITY_CASES, ids=[c[0] for c in PARITY_CASES])
def test_parity_with_open_clip_fp32(case):
    _, factory, batch, size = case
    model = factory()
    view = vision_view_from_open_clip(model)
    x = pixels(batch, size)
    with torch.no_grad():
        ref = model.encode_image(x)
        out = run_vision(view, x).embedding
    tol = 1e-5 * ref.norm(dim=-1).max().item()
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= tol


def test_view_shares_storage_and_sees_edits():
    model = tiny_open_clip()
    view = vision_view_from_open_clip(model)
    params = {p.data_ptr() for p in model.parameters()}
    # every view tensor lies inside a parameter's storage (slices of in_proj_weight included)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for t in view.parameters():
        assert t.untyped_storage().data_ptr() in storages
    assert view.blocks[0].qkv_weight.data_ptr() in params
    x = pixels(1, 64)
    before = run_vision(view, x).embedding
    with torch.no_grad():
        model.visual.proj.mul_(2.0)
    after = run_vision(view, x).embedding
    torch.testing.assert_close(after, 2 * before)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_runs_without_nans(dtype, rtol):
    model = copy.deepcopy(open_clip_model("ViT-B-32")).to(dtype)
    view = vision_view_from_open_clip(model)
    x = pixels(2, 224)
    with torch.no_grad():
        ref32 = open_clip_model("ViT-B-32").encode_image(x)
        out = run_vision(view, x).embedding
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    rel = ((out.float() - ref32).norm(dim=-1) / ref32.norm(dim=-1)).max().item()
    assert rel <= rtol


def test_positional_interpolation_matches_bicubic_rule():
    model = tiny_open_clip(image_size=64, patch=16)
    view = vision_view_from_open_clip(model)
    assert positional_embedding_for(view, (4, 4)) is view.positional_embedding
    pos = positional_embedding_for(view, (6, 5))
    assert pos.shape == (1 + 30, view.width)
    torch.testing.assert_close(pos[0], view.positional_embedding[0])
    # a constant positional field stays constant under bicubic resampling
    const = copy.deepcopy(model)
    with torch.no_grad():
        const.visual.positional_embedding[1:] = 0.25
    cpos = positional_embedding_for(vision_view_from_open_clip(const), (7, 3))
    torch.testing.assert_close(cpos[1:], torch.full_like(cpos[1:], 0.25))
    # and the forward runs at a non-native size through it
    out = run_vision(view, pixels(2, (96, 80)))
    assert out.grid == (6, 5)


def test_non_native_input_equals_model_with_interpolated_positions():
    """At another input size the forward equals open_clip run with the interpolated positions loaded."""
    small = tiny_open_clip(image_size=64, patch=16)
    view = vision_view_from_open_clip(small)
    big = tiny_open_clip(image_size=96, patch=16)
    big.load_state_dict({k: v for k, v in small.state_dict().items() if "positional_embedding" not in k or "visual" not in k},
                        strict=False)
    with torch.no_grad():
        big.visual.positional_embedding.copy_(positional_embedding_for(view, (6, 6)))
    x = pixels(2, 96)
    with torch.no_grad():
        ref = big.encode_image(x)
    out = run_vision(view, x).embedding
    assert (out - ref).abs().max().item() <= 1e-5 * ref.norm(dim=-1).max().item()


def test_cache_shapes_and_cls_only():
    model = tiny_open_clip()
    view = vision_view_from_open_clip(model)
    B, N, D, H = 2, 17, view.width, view.num_heads
    dh = D // H
    x = pixels(B, 64)
    names = ["embed", "blocks.1.*", "pooled", "ln_post.mean", "ln_post.std", "embedding"]
    out = run_vision(view, x, names=names)
    c = out.cache
    assert c["embed"].shape == (B, N, D)
    assert c["blocks.1.attn.q"].shape == (B, N, H, dh)
    assert c["blocks.1.attn.pattern"].shape == (B, H, N, N)
    assert c["blocks.1.attn.cls_pattern"].shape == (B, H, N)
    assert c["blocks.1.attn.cls_contrib"].shape == (B, N, H, dh)
    assert c["blocks.1.mlp.hidden"].shape == (B, N, 4 * D)
    assert c["pooled"].shape == (B, D) and c["ln_post.std"].shape == (B,)
    torch.testing.assert_close(c["blocks.1.attn.pattern"][:, :, 0], c["blocks.1.attn.cls_pattern"])
    torch.testing.assert_close(c["blocks.1.attn.cls_contrib"].sum(1), c["blocks.1.attn.z"][:, 0])
    torch.testing.assert_close(c["blocks.1.resid_post"], c["blocks.1.resid_pre"] + c["blocks.1.attn_out"] + c["blocks.1.mlp_out"])
    torch.testing.assert_close(out.embedding, c["embedding"])
    # LayerNorm stats are those of the pooled CLS token
    torch.testing.assert_close(c["ln_post.mean"], c["pooled"].mean(-1))
    # recording with cls_only drops the query axis but keeps source-token axes
    cls = run_vision(view, x, names=["blocks.1.mlp_out", "blocks.1.attn.cls_contrib", "blocks.1.attn.pattern"],
                     cls_only=True).cache
    assert cls["blocks.1.mlp_out"].shape == (B, D)
    assert cls["blocks.1.attn.cls_contrib"].shape == (B, N, H, dh)
    torch.testing.assert_close(cls["blocks.1.attn.pattern"], c["blocks.1.attn.cls_pattern"])
    # recording does not change the result
    torch.testing.assert_close(run_vision(view, x).embedding, out.embedding)


def test_hooks_edit_the_forward():
    model = tiny_open_clip()
    view = vision_view_from_open_clip(model)
    x = pixels(2, 64)
    base = run_vision(view, x).embedding
    # an identity pattern hook forces explicit attention and leaves the output unchanged
    same = run_vision(view, x, hooks={"blocks.*.attn.pattern": lambda t, n: t}).embedding
    torch.testing.assert_close(same, base, rtol=1e-5, atol=1e-6)
    # zeroing every MLP equals a model whose MLP output projections are zero
    zero = run_vision(view, x, hooks={"blocks.*.mlp_out": lambda t, n: torch.zeros_like(t)}).embedding
    ref_model = copy.deepcopy(model)
    with torch.no_grad():
        for blk in ref_model.visual.transformer.resblocks:
            blk.mlp.c_proj.weight.zero_()
            blk.mlp.c_proj.bias.zero_()
        ref = ref_model.encode_image(x)
    torch.testing.assert_close(zero, ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(zero, base)
    # knocking out attention to every token but CLS changes the output
    def keep_cls(t, n):
        t = torch.zeros_like(t)
        t[..., 0] = 1.0
        return t
    knocked = run_vision(view, x, hooks={"blocks.0.attn.pattern": keep_cls}).embedding
    assert not torch.allclose(knocked, base)


def test_bad_names_and_read_only_hooks():
    view = vision_view_from_open_clip(tiny_open_clip())
    with pytest.raises(KeyError, match="unknown hook name"):
        run_vision(view, pixels(1, 64), names=["blocks.9.mlp_out"])
    with pytest.raises(ValueError, match="read-only"):
        run_vision(view, pixels(1, 64), hooks={"blocks.0.attn.cls_pattern": lambda t, n: t})
    seen = []
    run_vision(view, pixels(1, 64), hooks={"blocks.*.attn.cls_contrib": lambda t, n: seen.append(n)})
    assert seen == [f"blocks.{i}.attn.cls_contrib" for i in range(3)]
    with pytest.raises(ValueError, match="shape"):
        run_vision(view, pixels(1, 64), hooks={"blocks.0.mlp_out": lambda t, n: t[:, :1]})
    assert len(resolve_names(["blocks.*.mlp_out"], 3)) == 3
    assert "blocks.2.attn.cls_contrib" in hook_names(3)


def test_unsupported_resnet_is_named():
    from cliplens.errors import UnsupportedArchitectureError

    model = open_clip_model("RN50")
    with pytest.raises(UnsupportedArchitectureError, match="ResNet"):
        vision_view_from_open_clip(model, "RN50")
