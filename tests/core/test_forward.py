"""The functional forward equals the source libraries' own forwards (embedding and dense tokens), and
hooks and taps behave."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.core.forward import positional_embedding_for, run_vision
from cliplens.core.hooks import hook_names, resolve_names
from cliplens.errors import HookNameError, InvalidInputError
from cliplens.models.hf import vision_view_from_hf
from cliplens.models.openclip import vision_view_from_open_clip
from tests.conftest import hf_vit, oc_vit, pixels, rel_err, tiny_open_clip

OC_CASES = [
    # (id, model factory, batch, input size (h, w))
    ("B-32-b1", lambda: oc_vit("B-32"), 1, (224, 224)),
    ("B-32-b3@288x192", lambda: oc_vit("B-32"), 3, (288, 192)),
    ("B-16-b2", lambda: oc_vit("B-16"), 2, (224, 224)),
    ("B-16-quickgelu-b2@160", lambda: oc_vit("B-16", quick_gelu=True), 2, (160, 160)),
    ("L-14-b1", lambda: oc_vit("L-14"), 1, (224, 224)),
    ("L-14-b2@168x196", lambda: oc_vit("L-14"), 2, (168, 196)),
    ("layer-scale-b3", lambda: tiny_open_clip(layer_scale=True), 3, (64, 64)),
    ("B-16-full-depth-b2", lambda: oc_vit("B-16", layers=0), 2, (224, 224)),
]


def _oc_reference(model, x):
    """open_clip's own forward: ``(embedding, every token through ln_post and proj)``, interpolating the
    positional table for other sizes with the same (HF) rule loaded into a copy of the model."""
    visual = model.visual
    grid = (x.shape[-2] // visual.patch_size[0], x.shape[-1] // visual.patch_size[1])
    if grid != tuple(visual.grid_size):
        visual = copy.deepcopy(visual)
        pos = positional_embedding_for(vision_view_from_open_clip(model), grid)
        visual.positional_embedding = torch.nn.Parameter(pos.detach().clone())
    visual.output_tokens = True
    try:
        pooled, tokens = visual(x)
    finally:
        visual.output_tokens = False
    # open_clip's tokens went through ln_post (final_ln_after_pool is False) but not the projection
    return pooled, torch.cat([pooled[:, None], tokens @ visual.proj], 1)


@pytest.mark.parametrize("case", OC_CASES, ids=[c[0] for c in OC_CASES])
def test_parity_with_open_clip_fp32(case):
    _, factory, batch, size = case
    model = factory()
    view = vision_view_from_open_clip(model)
    x = pixels(batch, size)
    with torch.no_grad():
        emb_ref, dense_ref = _oc_reference(model, x)
        out = run_vision(view, x, names=["dense"])
    assert out.embedding.shape == emb_ref.shape and out.dense.shape == dense_ref.shape
    assert rel_err(out.embedding, emb_ref) <= 1e-5
    assert rel_err(out.dense, dense_ref) <= 1e-5
    if size == (224, 224):  # at the native size, also against encode_image itself
        with torch.no_grad():
            assert rel_err(out.embedding, model.encode_image(x)) <= 1e-5


HF_CASES = [
    ("B-32-b3", lambda: hf_vit("B-32"), 3, (224, 224)),
    ("B-32-b2@288x192", lambda: hf_vit("B-32"), 2, (288, 192)),
    ("B-16-b1", lambda: hf_vit("B-16"), 1, (224, 224)),
    ("B-16-b2@160", lambda: hf_vit("B-16"), 2, (160, 160)),
    ("L-14-b1", lambda: hf_vit("L-14"), 1, (224, 224)),
    ("B-32-full-depth-b2", lambda: hf_vit("B-32", layers=0), 2, (224, 224)),
]


@pytest.mark.parametrize("case", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_parity_with_transformers_fp32(case):
    _, factory, batch, size = case
    model = factory()
    view = vision_view_from_hf(model)
    x = pixels(batch, size)
    with torch.no_grad():
        src = model(pixel_values=x, interpolate_pos_encoding=size != (224, 224))
        dense_ref = model.vision_model.post_layernorm(src.last_hidden_state) @ model.visual_projection.weight.T
        out = run_vision(view, x, names=["dense"])
    assert rel_err(out.embedding, src.image_embeds) <= 1e-5
    assert rel_err(out.dense, dense_ref) <= 1e-5


def test_view_shares_storage_and_sees_edits():
    model = tiny_open_clip()
    view = vision_view_from_open_clip(model)
    params = {p.data_ptr() for p in model.parameters()}
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for t in view.parameters():  # every view tensor lies inside a parameter's storage (slices included)
        assert t.untyped_storage().data_ptr() in storages
    assert view.blocks[0].qkv_weight.data_ptr() in params
    x = pixels(1, 64)
    before = run_vision(view, x).embedding
    with torch.no_grad():
        model.visual.proj.mul_(2.0)
    torch.testing.assert_close(run_vision(view, x).embedding, 2 * before)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_runs_without_nans(dtype, rtol):
    model = oc_vit("B-32", layers=4)
    half = copy.deepcopy(model).to(dtype)
    x = pixels(2, 224)
    with torch.no_grad():
        ref32 = model.encode_image(x)
        out = run_vision(vision_view_from_open_clip(half), x, names=["dense"])
    assert out.embedding.dtype == dtype and torch.isfinite(out.embedding).all() and torch.isfinite(out.dense).all()
    rel = ((out.embedding.float() - ref32).norm(dim=-1) / ref32.norm(dim=-1)).max().item()
    assert rel <= rtol


def test_positional_interpolation_is_bicubic_and_never_mutates_the_model():
    model = tiny_open_clip(image_size=64, patch=16)
    view = vision_view_from_open_clip(model)
    table = model.visual.positional_embedding.detach().clone()
    assert positional_embedding_for(view, (4, 4)) is view.positional_embedding
    pos = positional_embedding_for(view, (6, 5))
    assert pos.shape == (1 + 30, view.width)
    torch.testing.assert_close(pos[0], view.positional_embedding[0])
    # the patch part is the native 4x4 grid resized as an image, bicubic, align_corners=False, no antialias
    grid = view.positional_embedding[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(6, 5), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(30, -1)
    torch.testing.assert_close(pos[1:], want)
    out = run_vision(view, pixels(2, (96, 80)))
    assert out.grid == (6, 5)
    torch.testing.assert_close(model.visual.positional_embedding, table, rtol=0, atol=0)  # not written back
    # and the native size still gives the native forward afterwards
    torch.testing.assert_close(run_vision(view, pixels(1, 64)).embedding, model.encode_image(pixels(1, 64)),
                               rtol=1e-5, atol=1e-6)


def test_cache_shapes_and_cls_only():
    model = tiny_open_clip()
    view = vision_view_from_open_clip(model)
    B, N, D, H = 2, 17, view.width, view.num_heads
    dh = D // H
    x = pixels(B, 64)
    names = ["embed", "blocks.1.*", "pooled", "ln_post.mean", "ln_post.std", "embedding", "dense"]
    out = run_vision(view, x, names=names)
    c = out.cache
    assert c["embed"].shape == (B, N, D) and c["dense"].shape == (B, N, view.embed_dim)
    assert c["blocks.1.attn.q"].shape == (B, N, H, dh)
    assert c["blocks.1.attn.pattern"].shape == (B, H, N, N)
    assert c["blocks.1.attn.cls_pattern"].shape == (B, H, N)
    assert c["blocks.1.attn.cls_contrib"].shape == (B, N, H, dh)
    assert c["blocks.1.mlp.hidden"].shape == (B, N, 4 * D)
    assert c["pooled"].shape == (B, D) and c["ln_post.std"].shape == (B,)
    torch.testing.assert_close(c["blocks.1.attn.pattern"][:, :, 0], c["blocks.1.attn.cls_pattern"])
    torch.testing.assert_close(c["blocks.1.attn.cls_contrib"].sum(1), c["blocks.1.attn.z"][:, 0])
    torch.testing.assert_close(c["blocks.1.resid_post"], c["blocks.1.resid_pre"] + c["blocks.1.attn_out"]
                               + c["blocks.1.mlp_out"])
    torch.testing.assert_close(out.embedding, c["embedding"])
    torch.testing.assert_close(c["dense"][:, 0], out.embedding)
    torch.testing.assert_close(c["ln_post.mean"], c["pooled"].mean(-1))
    # cls_only drops the query axis, keeps source-token axes, and leaves dense outputs whole
    cls = run_vision(view, x, names=["blocks.1.mlp_out", "blocks.1.attn.cls_contrib", "blocks.1.attn.pattern",
                                     "dense"], cls_only=True).cache
    assert cls["blocks.1.mlp_out"].shape == (B, D)
    assert cls["blocks.1.attn.cls_contrib"].shape == (B, N, H, dh)
    assert cls["dense"].shape == (B, N, view.embed_dim)
    torch.testing.assert_close(cls["blocks.1.attn.pattern"], c["blocks.1.attn.cls_pattern"])
    torch.testing.assert_close(run_vision(view, x).embedding, out.embedding)  # recording changes nothing


def test_run_with_cache_on_a_wrapped_model():
    model = tiny_open_clip()
    wrapped = cliplens.wrap(model)
    x = pixels(2, 64)
    emb, cache = wrapped.run_with_cache(x, names=["blocks.*.attn.cls_pattern", "blocks.1.mlp_out"])
    with torch.no_grad():
        want = model.encode_image(x)
    assert rel_err(emb, want) <= 1e-5
    L, H, N = wrapped.vision.num_layers, wrapped.vision.num_heads, 17
    assert sorted(cache) == sorted([f"blocks.{i}.attn.cls_pattern" for i in range(L)] + ["blocks.1.mlp_out"])
    for i in range(L):
        pat = cache[f"blocks.{i}.attn.cls_pattern"]
        assert pat.shape == (2, H, N)
        torch.testing.assert_close(pat.sum(-1), torch.ones(2, H))  # a softmax row per head
    direct = run_vision(wrapped.vision, x, names=["blocks.1.mlp_out", "blocks.0.attn.pattern"]).cache
    torch.testing.assert_close(cache["blocks.1.mlp_out"], direct["blocks.1.mlp_out"])
    torch.testing.assert_close(cache["blocks.0.attn.cls_pattern"], direct["blocks.0.attn.pattern"][:, :, 0])


def _manual_forward(model, x, block0_attn):
    """open_clip's own modules, block by block, with block 0's attention output given by ``block0_attn(h)``."""
    v = model.visual
    t = v.conv1(x).flatten(2).transpose(1, 2)
    t = torch.cat([v.class_embedding.expand(t.shape[0], 1, -1), t], 1) + v.positional_embedding
    t = v.ln_pre(t)
    for i, blk in enumerate(v.transformer.resblocks):
        if i == 0:
            t = t + blk.ls_1(block0_attn(blk, blk.ln_1(t)))
            t = t + blk.ls_2(blk.mlp(blk.ln_2(t)))
        else:
            t = blk(t)
    return v.ln_post(t[:, 0]) @ v.proj


def test_pattern_hooks_change_attention_as_specified():
    model = tiny_open_clip(layer_scale=True)
    view = vision_view_from_open_clip(model)
    x = pixels(2, 64)
    with torch.no_grad():
        base = run_vision(view, x).embedding
        same = run_vision(view, x, hooks={"blocks.*.attn.pattern": lambda t, n: t}).embedding
        torch.testing.assert_close(same, base, rtol=1e-5, atol=1e-6)

        def only_cls(t, n):  # every query attends to CLS alone
            t = torch.zeros_like(t)
            t[..., 0] = 1.0
            return t

        knocked = run_vision(view, x, hooks={"blocks.0.attn.pattern": only_cls}).embedding

        def ref_attn(blk, h):  # then every token's head output is CLS's value: out_proj(v_CLS)
            D = blk.attn.embed_dim
            v = F.linear(h, blk.attn.in_proj_weight[2 * D:], blk.attn.in_proj_bias[2 * D:])
            return blk.attn.out_proj(v[:, :1].expand_as(v))

        torch.testing.assert_close(knocked, _manual_forward(model, x, ref_attn), rtol=1e-5, atol=1e-5)
        # zeroing every MLP equals a model whose MLP output projections are zero
        zero = run_vision(view, x, hooks={"blocks.*.mlp_out": lambda t, n: torch.zeros_like(t)}).embedding
        ref_model = copy.deepcopy(model)
        for blk in ref_model.visual.transformer.resblocks:
            blk.mlp.c_proj.weight.zero_()
            blk.mlp.c_proj.bias.zero_()
        torch.testing.assert_close(zero, ref_model.encode_image(x), rtol=1e-5, atol=1e-6)


def test_bad_names_and_read_only_hooks():
    view = vision_view_from_open_clip(tiny_open_clip())
    with pytest.raises(HookNameError, match="unknown hook name 'blocks.9.mlp_out'") as info:
        run_vision(view, pixels(1, 64), names=["blocks.9.mlp_out"])
    assert "blocks.<0..2>" in str(info.value) and "dense" in str(info.value)
    with pytest.raises(InvalidInputError, match="read-only"):
        run_vision(view, pixels(1, 64), hooks={"blocks.0.attn.cls_pattern": lambda t, n: t + 1})
    seen = []
    run_vision(view, pixels(1, 64), hooks={"blocks.*.attn.cls_contrib": lambda t, n: seen.append(n)})
    assert seen == [f"blocks.{i}.attn.cls_contrib" for i in range(3)]
    with pytest.raises(InvalidInputError, match="shape"):
        run_vision(view, pixels(1, 64), hooks={"blocks.0.mlp_out": lambda t, n: t[:, :1]})
    assert len(resolve_names(["blocks.*.mlp_out"], 3)) == 3
    assert "blocks.2.attn.cls_contrib" in hook_names(3)


def test_resnet_view_is_an_opaque_trunk_and_the_pool():
    open_clip = pytest.importorskip("open_clip")
    vision_cfg = dict(image_size=64, layers=[1, 1, 1, 1], width=8, patch_size=None)
    text_cfg = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    model = open_clip.CLIP(32, vision_cfg=vision_cfg, text_cfg=text_cfg)  # a tiny ModifiedResNet tower
    view = vision_view_from_open_clip(model, "RN50")
    assert view.trunk is not None and view.blocks == () and view.head.kind == "attnpool"
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(run_vision(view, x).embedding, model.encode_image(x), rtol=1e-5, atol=1e-6)
