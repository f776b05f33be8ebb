"""GEM's self-self attention (core/attention/grounding.py): its fused output and its explicit pattern against the
formula written out naively here (float64), and the forward's taps (``attn.pattern``, ``attn.cls_pattern``) of
a GEM side path or main attention against the output the forward uses when nothing is recorded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliplens.core import Plan, SidePath, get_attention, run_vision
from cliplens.core.attention import AttentionContext
from cliplens.models.openclip import vision_view_from_open_clip
from tests.conftest import pixels, tiny_open_clip


def _naive_pattern(q, k, v, x_in, iterations, temperature):
    """(A_q + A_k + A_v) / 3, each x iterated ``x <- softmax(β x̂ x̂ᵀ) x̂`` then ``A_x = softmax(β x̂ x̂ᵀ)``."""
    q, k, v, x_in = (t.double() for t in (q, k, v, x_in))
    if temperature is None:
        beta = (x_in.norm(dim=-1).mean(-1) * q.shape[-1] ** -0.5).view(-1, 1, 1, 1)
    else:
        beta = torch.full((q.shape[0], 1, 1, 1), float(temperature), dtype=torch.float64)
    total = 0
    for x in (q, k, v):
        for _ in range(iterations):
            xn = x / x.norm(dim=-1, keepdim=True)
            x = torch.softmax(beta * xn @ xn.transpose(-1, -2), -1) @ xn
        xn = x / x.norm(dim=-1, keepdim=True)
        total = total + torch.softmax(beta * xn @ xn.transpose(-1, -2), -1)
    return total / 3


def _inputs(dtype, B=2, H=3, N=11, dh=8, D=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, dh, generator=g).to(dtype) for _ in range(3))
    x_in = torch.randn(B, N, D, generator=g).to(dtype)
    return q, k, v, AttentionContext(layer=0, block=None, grid=(2, 5), x=x_in)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("iterations,temperature", [(0, None), (1, None), (3, None), (1, 7.0)])
def test_output_and_pattern_match_the_formula(dtype, tol, iterations, temperature):
    q, k, v, ctx = _inputs(dtype)
    att = get_attention("grounding", iterations=iterations, temperature=temperature)
    want = _naive_pattern(q, k, v, ctx.x, iterations, temperature)
    pattern = att.pattern(q, k, v, ctx)
    assert pattern.dtype == dtype and pattern.shape == want.shape
    assert (pattern.double() - want).abs().max().item() <= tol
    rows = att.pattern(q, k, v, ctx.with_rows(slice(0, 1)))
    assert rows.shape == (*want.shape[:2], 1, want.shape[-1])
    assert (rows.double() - want[:, :, :1]).abs().max().item() <= tol
    z = att.output(q, k, v, ctx)
    want_z = want @ v.double()
    assert z.dtype == dtype and z.shape == v.shape
    assert (z.double() - want_z).abs().max().item() <= tol * want_z.abs().max().item()


def test_output_under_autograd_carries_the_temperatures_gradient():
    """Without autograd β is the fused kernel's scale (a number); with it, β's gradient must still reach the block
    input it is taken from, as in the naive formula."""
    q, k, v, ctx = _inputs(torch.float64)
    q = q.clone().requires_grad_(True)
    x = ctx.x.clone().requires_grad_(True)
    ctx = AttentionContext(layer=0, block=None, grid=(2, 5), x=x)  # type: ignore[arg-type]
    z = get_attention("grounding").output(q, k, v, ctx)
    want = _naive_pattern(q, k, v, x, 1, None) @ v
    torch.testing.assert_close(z, want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # the in-place path outside autograd: the same numbers
        torch.testing.assert_close(get_attention("grounding").output(q, k, v, ctx), z.detach(), rtol=1e-12, atol=1e-12)
    got, ref = torch.autograd.grad(z.square().sum(), [q, x]), torch.autograd.grad(want.square().sum(), [q, x])
    assert ref[1].abs().max() > 0  # the temperature's gradient is not trivially zero here
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_forward_taps_equal_the_fused_path():
    """A GEM side path and a GEM main attention: recording the patterns changes nothing, and they are the formula."""
    view = vision_view_from_open_clip(tiny_open_clip(layers=3).double())
    att = get_attention("grounding")
    plan = Plan().side(range(1, 3), SidePath("gem", attention=att)).at(2, attention=att)
    x = pixels(2, (64, 96)).double()
    fused = run_vision(view, x, plan=plan, names=["side.gem.dense", "embedding", "blocks.2.attn.z"])
    taps = ["blocks.2.side.gem.attn.pattern", "blocks.1.side.gem.attn.pattern", "blocks.2.attn.pattern",
            "blocks.2.attn.cls_pattern", "blocks.2.ln_1", "blocks.2.attn.q", "blocks.2.attn.k", "blocks.2.attn.v"]
    rec = run_vision(view, x, plan=plan, names=["side.gem.dense", "embedding", *taps])
    torch.testing.assert_close(rec["side.gem.dense"], fused["side.gem.dense"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rec.embedding, fused.embedding, rtol=1e-12, atol=1e-12)
    q, k, v = (rec[f"blocks.2.attn.{t}"].transpose(1, 2) for t in "qkv")
    want = _naive_pattern(q, k, v, rec["blocks.2.ln_1"], 1, None)
    torch.testing.assert_close(rec["blocks.2.attn.pattern"], want, rtol=0, atol=1e-12)
    torch.testing.assert_close(rec["blocks.2.side.gem.attn.pattern"], want, rtol=0, atol=1e-12)
    torch.testing.assert_close(rec["blocks.2.attn.cls_pattern"], want[:, :, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(fused["blocks.2.attn.z"], (want @ v).transpose(1, 2), rtol=0, atol=1e-12)
    assert F.cosine_similarity(rec["side.gem.dense"].flatten(), fused["side.gem.dense"].flatten(), dim=0) > 0.999
