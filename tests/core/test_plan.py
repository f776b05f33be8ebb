"""The forward as a plan: strategies (a user's own too), residual/MLP switches, side paths, and taps
from the attention actually used, against direct computations with open_clip's own modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliplens.core import AttentionStrategy, Plan, SidePath, get_attention, register_attention, run_vision
from cliplens.core.attention import attention_names
from cliplens.core.plan import resolve_layer_indices
from cliplens.decomposition import decompose
from cliplens.errors import InvalidInputError
from cliplens.models.openclip import vision_view_from_open_clip
from tests.conftest import pixels, tiny_open_clip


# --- a strategy defined outside the package, registered without editing it --------------------------
@register_attention("test-sharpened")
class Sharpened(AttentionStrategy):
    """softmax(q kᵀ / (√dh · temperature))."""

    def __init__(self, temperature: float = 0.5):
        super().__init__(temperature=temperature)

    def pattern(self, q, k, v, ctx):
        rows = q if ctx.rows is None else q[:, :, ctx.rows]
        return (rows @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 / self.params["temperature"]).softmax(-1)


@register_attention("test-grid-decay")
def grid_decay(q, k, v, ctx, strength: float = 1.0):
    """A plain-function strategy using the token grid: vanilla logits minus strength × patch distance."""
    gh, gw = ctx.grid
    r = torch.arange(gh * gw) // gw
    c = torch.arange(gh * gw) % gw
    dist = ((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).float().sqrt()
    full = torch.zeros(1 + gh * gw, 1 + gh * gw)
    full[1:, 1:] = dist
    return (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 - strength * full).softmax(-1)


def _blocks(model):
    return model.visual.transformer.resblocks


def _embed(model, x):
    v = model.visual
    t = v.conv1(x).flatten(2).transpose(1, 2)
    t = torch.cat([v.class_embedding.expand(t.shape[0], 1, -1), t], 1) + v.positional_embedding
    return v.ln_pre(t)


def _qkv(blk, h):
    D, H = blk.attn.embed_dim, blk.attn.num_heads
    qkv = F.linear(h, blk.attn.in_proj_weight, blk.attn.in_proj_bias)
    return [t.reshape(*h.shape[:2], H, D // H).transpose(1, 2) for t in qkv.chunk(3, -1)]  # [B, H, N, dh]


def _attn_out(blk, pattern, v):
    z = (pattern @ v).transpose(1, 2).flatten(2)
    return blk.ls_1(blk.attn.out_proj(z))


def _head(model, t):
    return model.visual.ln_post(t) @ model.visual.proj


def test_user_strategies_run_and_equal_their_formula():
    assert {"vanilla", "test-sharpened", "test-grid-decay"} <= set(attention_names())
    model = tiny_open_clip(layer_scale=True)
    view = vision_view_from_open_clip(model)
    x = pixels(2, 64)
    plan = Plan().at(-1, attention=get_attention("test-sharpened", temperature=0.3)).at(0, attention="test-grid-decay")
    with torch.no_grad():
        out = run_vision(view, x, plan=plan).embedding
        t = _embed(model, x)
        for i, blk in enumerate(_blocks(model)):
            q, k, v = _qkv(blk, blk.ln_1(t))
            logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
            if i == 0:
                logits = logits - _distance(4, 4)
            elif i == len(_blocks(model)) - 1:
                logits = logits / 0.3
            t = t + _attn_out(blk, logits.softmax(-1), v)
            t = t + blk.ls_2(blk.mlp(blk.ln_2(t)))
        ref = _head(model, t[:, 0])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidInputError, match="unknown attention strategy 'nope'"):
        Plan().at(0, attention="nope")
    with pytest.raises(InvalidInputError, match="test-sharpened"):
        get_attention("test-sharpened", colour="red")


def _distance(gh, gw):
    r, c = torch.arange(gh * gw) // gw, torch.arange(gh * gw) % gw
    d = torch.zeros(1 + gh * gw, 1 + gh * gw)
    d[1:, 1:] = ((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).float().sqrt()
    return d


def test_residual_and_mlp_switches():
    """Last block without residual and MLP: its output is its attention output alone (ClearCLIP's shape)."""
    model = tiny_open_clip()
    view = vision_view_from_open_clip(model)
    x = pixels(2, 64)
    plan = Plan().at(-1, residual=False, mlp=False)
    with torch.no_grad():
        out = run_vision(view, x, plan=plan, names=["dense", "blocks.2.mlp_out"])
        t = _embed(model, x)
        for blk in _blocks(model)[:-1]:
            t = blk(t)
        blk = _blocks(model)[-1]
        q, k, v = _qkv(blk, blk.ln_1(t))
        t = _attn_out(blk, (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1), v)
    torch.testing.assert_close(out.embedding, _head(model, t[:, 0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.dense, _head(model, t), rtol=1e-5, atol=1e-5)
    assert not out["blocks.2.mlp_out"].any()  # a dropped MLP reads as zeros


def test_side_path_reads_the_main_stream_and_leaves_it_untouched():
    """A side path over the last 2 blocks: starts from the main residual at its first block, adds each
    block's attention on the main ln_1 output (here v-v attention), no MLP."""

    @register_attention("test-vv")
    class VV(AttentionStrategy):
        def pattern(self, q, k, v, ctx):
            rows = v if ctx.rows is None else v[:, :, ctx.rows]
            return (rows @ v.transpose(-1, -2) * v.shape[-1] ** -0.5).softmax(-1)

    model = tiny_open_clip(layer_scale=True)
    view = vision_view_from_open_clip(model)
    x = pixels(2, 64)
    plan = Plan().side(range(-2, 0), SidePath("s", attention="test-vv"))
    with torch.no_grad():
        base = run_vision(view, x, names=["dense"])
        out = run_vision(view, x, plan=plan, names=["dense", "side.s.dense", "blocks.2.side.s.attn_out"])
        t = _embed(model, x)
        side = None
        for i, blk in enumerate(_blocks(model)):
            if i >= 1:
                side = t if side is None else side
                q, k, v = _qkv(blk, blk.ln_1(t))
                side = side + _attn_out(blk, (v @ v.transpose(-1, -2) * v.shape[-1] ** -0.5).softmax(-1), v)
            t = blk(t)
    torch.testing.assert_close(out.embedding, base.embedding)  # the main stream is untouched
    torch.testing.assert_close(out.dense, base.dense)
    torch.testing.assert_close(out["side.s.dense"], _head(model, side), rtol=1e-5, atol=1e-5)
    assert out["blocks.2.side.s.attn_out"].shape == (2, 17, view.width)
    with pytest.raises(Exception, match="side.s.dense"):  # side names exist only with the side path
        run_vision(view, x, names=["side.s.dense"])


def test_layer_indices_resolve_against_the_depth():
    assert resolve_layer_indices(-1, 12) == [11]
    assert resolve_layer_indices(range(-6, 0), 12) == list(range(6, 12))
    assert resolve_layer_indices(slice(-2, None), 5) == [3, 4]
    with pytest.raises(InvalidInputError, match="out of range for a 4-layer tower"):
        resolve_layer_indices(7, 4)
    blocks = Plan().at(range(-2, 0), mlp=False).resolve(5)
    assert [b.mlp for b in blocks] == [True, True, True, False, False]
    assert Plan().is_vanilla(3) and not Plan().at(0, residual=False).is_vanilla(3)
    with pytest.raises(InvalidInputError, match="Plan.at takes"):
        Plan().at(0, colour="red")


def _rel(dec):
    return float(dec.relative_error().max())


def test_decomposition_under_edited_attention_sums_to_that_forward():
    model = tiny_open_clip(layer_scale=True)
    view = vision_view_from_open_clip(model)
    x = pixels(2, 64)

    def knock_out_token_5(t, n):
        t = t.clone()
        t[..., 5] = 0
        return t / t.sum(-1, keepdim=True)

    def rescale_head_1(t, n):
        t = t.clone()
        t[:, 1] *= 0.3
        return t

    edits = [
        dict(hooks={"blocks.*.attn.pattern": knock_out_token_5}),
        dict(hooks={"blocks.1.attn.pattern": rescale_head_1}),
        dict(plan=Plan().at(range(3), attention=get_attention("test-sharpened", temperature=2.0))),
        dict(plan=Plan().at(-1, residual=False, mlp=False)),
        dict(plan=Plan().at(1, mlp=False)),
        dict(hooks={"blocks.0.attn.z": lambda t, n: t * 0.5}),  # whole-head edits, non-spatial
    ]
    for i, edit in enumerate(edits):
        spatial = i != len(edits) - 1
        with torch.no_grad():
            emb = run_vision(view, x, **edit).embedding
        dec = decompose(view, x, spatial=spatial, **edit)
        torch.testing.assert_close(dec.embedding, emb)  # the decomposition is of that same forward
        assert not torch.allclose(emb, run_vision(view, x).embedding)  # the edit mattered
        assert _rel(dec) <= 1e-5, (i, _rel(dec))
    with pytest.raises(InvalidInputError, match="resid_post"):
        decompose(view, x, hooks={"blocks.1.resid_post": lambda t, n: t * 2})
