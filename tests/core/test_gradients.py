"""Gradients flow through the functional forward (as documented in cliplens.core.forward), and the
inference entry points return tensors without autograd history."""

from __future__ import annotations

import copy
import warnings

import torch

import cliplens
from tests.conftest import pixels, tiny_open_clip


def test_input_gradients_equal_open_clips_own():
    model = tiny_open_clip(layer_scale=True)
    adapter = cliplens.wrap(model)
    text = torch.randn(adapter.vision.embed_dim, generator=torch.Generator().manual_seed(4))
    x = pixels(2, 64).requires_grad_(True)
    (g_ours,) = torch.autograd.grad((adapter.run(x).embedding @ text).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((model.encode_image(x2) @ text).sum(), x2)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-7)
    assert g_ours.abs().sum() > 0


def test_gradient_with_respect_to_an_attention_pattern_by_name():
    """∂score/∂pattern, reached by name, equals central finite differences of the same forward."""
    model = copy.deepcopy(tiny_open_clip()).double()
    adapter = cliplens.wrap(model)
    x = pixels(1, 64).double()
    text = torch.randn(adapter.vision.embed_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    name = "blocks.1.attn.pattern"
    out = adapter.run(x, names=[name])
    (grad,) = torch.autograd.grad(out.embedding @ text, out[name])
    assert grad.shape == out[name].shape

    def score(delta: float, idx) -> float:
        def bump(t, n):
            t = t.clone()
            t[idx] += delta
            return t

        with torch.no_grad():
            return float(adapter.run(x, hooks={name: bump}).embedding @ text)

    for idx in [(0, 0, 0, 0), (0, 2, 5, 9), (0, 3, 16, 1)]:
        eps = 1e-6
        fd = (score(eps, idx) - score(-eps, idx)) / (2 * eps)
        assert abs(fd - float(grad[idx])) <= 1e-6 * max(1.0, abs(fd)), (idx, fd, float(grad[idx]))


def test_inference_entry_points_carry_no_autograd_history(random_toy):
    model = random_toy
    assert any(p.requires_grad for p in model.model.parameters())
    x = pixels(2, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "converting a tensor with requires_grad=True to a scalar"
        emb = model.encode_image(x)
        dense = model.encode_dense(x)
        txt = model.encode_text(["a red circle", "a blue star"])
        dec = model.decompose(x)
        scores = dec.normalized().project(txt)
        outs = [emb, dense, txt, dec.embedding, dec.heads, dec.head_terms(), dec.mlp_terms(), dec.token_terms(),
                dec.reconstruct(), scores.heads, scores.total, scores.token_map()]
        float(scores.total[0, 0])
    assert all(t.grad_fn is None and not t.requires_grad for t in outs)
