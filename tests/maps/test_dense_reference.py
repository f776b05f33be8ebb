"""Self-checks of the naive dense / attribution map oracle (tests/maps/dense_reference.py), without cliplens.

The oracle's explicit forward is checked against open_clip's own forward; each method's modified block against a
hand-modified copy of open_clip's modules (nn.MultiheadAttention with copied projections or masks); the
text-independent maps against hand-written products; the gradients against central finite differences in which
the perturbation is injected into open_clip's own forward with hooks. Float64 throughout.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import resize_pos_embed

from tests.maps.dense_reference import (
    ALL_METHODS,
    METHOD_POSITIONAL,
    build_tiny_clip,
    default_reference_layers,
    gaussian_window,
    gem_attention,
    last_block_attention,
    prepare_visual,
    random_directions,
    random_images,
    reference_chefer,
    reference_chefer_gradients,
    reference_dense_tokens,
    reference_gradcam,
    reference_gradcam_gradient,
    reference_legrad,
    reference_legrad_gradients,
    reference_raw,
    reference_rollout,
    vanilla_trace,
)
from tests.maps.surgery_reference import _local_positional_table


@pytest.fixture(scope="module", params=[None, 0.5], ids=["plain", "layerscale"])
def model(request):
    return build_tiny_clip(layers=6, ls_init_value=request.param, seed=0)


def _double(model):
    return copy.deepcopy(model).double().eval()


def _run_open_clip(model64, x):
    """open_clip's own forward: each block's input and output, ln_post's output (all tokens), pooled embedding."""
    inputs, outputs, captured = [], [], {}
    handles = []
    for block in model64.visual.transformer.resblocks:
        handles.append(block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].clone())))
        handles.append(block.register_forward_hook(lambda _m, _a, out: outputs.append(out.clone())))
    handles.append(model64.visual.ln_post.register_forward_hook(
        lambda _m, _a, out: captured.__setitem__("ln_post", out.clone())))
    try:
        with torch.no_grad():
            pooled = model64.encode_image(x)
    finally:
        for handle in handles:
            handle.remove()
    assert model64.visual.transformer.batch_first
    return inputs, outputs, captured["ln_post"], pooled


def _mha_weights(block, X, attn_mask=None):
    """Per-head probabilities [B, H, N, N] from torch's own nn.MultiheadAttention."""
    return block.attn(X, X, X, need_weights=True, average_attn_weights=False, attn_mask=attn_mask)[1]


def _with_projections(attn, query_from: str, key_from: str):
    """A copy of ``attn`` whose query / key projections are taken from its 'q', 'k' or 'v' projection."""
    width = attn.embed_dim
    part = {"q": slice(0, width), "k": slice(width, 2 * width), "v": slice(2 * width, 3 * width)}
    new = copy.deepcopy(attn)
    with torch.no_grad():
        new.in_proj_weight[0:width] = attn.in_proj_weight[part[query_from]]
        new.in_proj_bias[0:width] = attn.in_proj_bias[part[query_from]]
        new.in_proj_weight[width:2 * width] = attn.in_proj_weight[part[key_from]]
        new.in_proj_bias[width:2 * width] = attn.in_proj_bias[part[key_from]]
    return new


def _double_at(model, hw):
    """A float64 copy of ``model`` built for images of size ``hw``: open_clip itself resizes the positional table
    (bicubic, align_corners=False, CLS row kept), so open_clip's own forward runs at that size."""
    visual = model.visual
    blocks = visual.transformer.resblocks
    ls = 0.5 if hasattr(blocks[0].ls_1, "gamma") else None
    big = build_tiny_clip(layers=len(blocks), ls_init_value=ls, image_size=hw, width=visual.conv1.out_channels,
                          head_width=visual.conv1.out_channels // blocks[0].attn.num_heads).double()
    state = {name: value.double() for name, value in model.state_dict().items()}
    resize_pos_embed(state, big, interpolation="bicubic", antialias=False)
    big.load_state_dict(state)
    return big.eval()


# vanilla forward ----------------------------------------------------------------------------------------------
def test_vanilla_forward_equals_open_clip(model):
    model64 = _double(model)
    x = random_images().double()
    inputs, outputs, ln_post_tokens, pooled = _run_open_clip(model64, x)
    visual = prepare_visual(model)
    with torch.no_grad():
        trace = vanilla_trace(visual, x)
        for li, block in enumerate(model64.visual.transformer.resblocks):
            torch.testing.assert_close(trace.inputs[li], inputs[li], rtol=0, atol=1e-11)
            torch.testing.assert_close(trace.outputs[li], outputs[li], rtol=0, atol=1e-11)
            torch.testing.assert_close(trace.X[li], block.ln_1(inputs[li]), rtol=0, atol=1e-12)
            torch.testing.assert_close(trace.A[li], _mha_weights(block, block.ln_1(inputs[li])), rtol=0, atol=1e-12)
        torch.testing.assert_close(visual.ln_post(trace.final), ln_post_tokens, rtol=0, atol=1e-11)
        torch.testing.assert_close(visual.ln_post(trace.final[:, 0]) @ visual.proj, pooled, rtol=0, atol=1e-11)
        # and the float32 model agrees at float32 precision
        torch.testing.assert_close((visual.ln_post(trace.final[:, 0]) @ visual.proj).float(),
                                   model.encode_image(x.float()), rtol=1e-4, atol=1e-5)
    assert trace.grid == (4, 4)


def test_other_input_size_matches_open_clip_resized_model():
    small = build_tiny_clip(layers=3, seed=21)
    big64 = _double(build_tiny_clip(layers=3, image_size=(64, 96), seed=22))
    state = {name: value.double() for name, value in small.state_dict().items()}
    resize_pos_embed(state, big64, interpolation="bicubic", antialias=False)  # 4x4 -> 4x6, CLS row kept
    big64.load_state_dict(state)
    x = random_images(hw=(64, 96), seed=23).double()
    with torch.no_grad():
        trace = vanilla_trace(prepare_visual(small), x)
        expected = big64.encode_image(x)
    visual = prepare_visual(small)
    torch.testing.assert_close(visual.ln_post(trace.final[:, 0]) @ visual.proj, expected, rtol=0, atol=1e-10)
    assert trace.grid == (4, 6)
    d = random_directions(3)
    for name in ALL_METHODS:  # every method sees the same model either way, its table resized by its own rule
        params = dict(blocks=2) if name == "gem" else {}
        rule = METHOD_POSITIONAL.get(name, "bicubic")
        big = big64
        if rule != "bicubic":
            big = copy.deepcopy(big64)
            with torch.no_grad():
                big.visual.positional_embedding.copy_(_local_positional_table(prepare_visual(small), (4, 6), rule))
        torch.testing.assert_close(reference_raw(name, small, x, d, **params), reference_raw(name, big, x, d, **params),
                                   rtol=0, atol=1e-10, msg=name)


def test_model_is_not_modified(model):
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    x, d = random_images(hw=(64, 96)), random_directions(2)
    for name in ALL_METHODS:
        reference_raw(name, model, x, d)
    after = model.state_dict()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and torch.equal(after[name], value), name
    assert all(p.grad is None for p in model.parameters())


# dense methods ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual_ffn", [True, False])
def test_maskclip_equals_hand_modified_model(model, residual_ffn):
    """Identity attention = open_clip's MHA with a diagonal-only mask; no-residual variant = ls_1(attn(ln_1(x)))."""
    model64 = _double(model)
    x = random_images(seed=5).double()
    block = model64.visual.transformer.resblocks[-1]
    n_tokens = 17
    # additive float mask (open_clip casts masks to the input dtype): -inf off the diagonal
    only_self = torch.full((n_tokens, n_tokens), float("-inf"), dtype=torch.float64).fill_diagonal_(0.0)

    class DiagonalBlock(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, attn_mask=None):
            if residual_ffn:
                return self.inner(x, attn_mask=only_self)
            return self.inner.ls_1(self.inner.attention(self.inner.ln_1(x), attn_mask=only_self))

    model64.visual.transformer.resblocks[-1] = DiagonalBlock(block)
    _, _, ln_post_tokens, _ = _run_open_clip(model64, x)
    expected = F.normalize(ln_post_tokens[:, 1:] @ model64.visual.proj, dim=-1)
    d = random_directions(4)
    expected_map = (expected @ d.T).permute(0, 2, 1).reshape(2, 4, 4, 4)
    torch.testing.assert_close(reference_raw("maskclip", model, x, d, residual_ffn=residual_ffn), expected_map,
                               rtol=0, atol=1e-11)


@pytest.mark.parametrize("name", ["clearclip", "naclip-flat", "naclip", "sclip"])
def test_modified_last_block_equals_mha_copies(model, name):
    """clearclip = q-q MHA; naclip (gaussian=False) = k-k MHA; naclip = k-k MHA with Ω as additive float mask;
    sclip = x_in + [q-q MHA + k-k MHA - out_proj bias] (ls_1), then the block's MLP."""
    model64 = _double_at(model, (64, 96))
    x = random_images(hw=(64, 96), seed=6).double()
    inputs, _, _, _ = _run_open_clip(model64, x)
    block = model64.visual.transformer.resblocks[-1]
    x_in = inputs[-1]
    with torch.no_grad():
        X = block.ln_1(x_in)
        if name == "clearclip":
            tokens = block.ls_1(_with_projections(block.attn, "q", "q")(X, X, X, need_weights=False)[0])
            got, _ = reference_dense_tokens("clearclip", model, x)
        elif name == "naclip-flat":
            tokens = block.ls_1(_with_projections(block.attn, "k", "k")(X, X, X, need_weights=False)[0])
            got, _ = reference_dense_tokens("naclip", model, x, gaussian=False)
        elif name == "naclip":
            mask = torch.zeros(25, 25, dtype=torch.float64)
            for a in range(24):
                for b in range(24):
                    (i, j), (k, li) = divmod(a, 6), divmod(b, 6)
                    mask[1 + a, 1 + b] = math.exp(-((i - k) ** 2 + (j - li) ** 2) / (2 * 3.0 ** 2))
            tokens = block.ls_1(_with_projections(block.attn, "k", "k")(X, X, X, need_weights=False,
                                                                         attn_mask=mask)[0])
            got, _ = reference_dense_tokens("naclip", model, x, sigma=3.0)
        else:
            qq = _with_projections(block.attn, "q", "q")(X, X, X, need_weights=False)[0]
            kk = _with_projections(block.attn, "k", "k")(X, X, X, need_weights=False)[0]
            hidden = x_in + block.ls_1(qq + kk - block.attn.out_proj.bias)
            tokens = hidden + block.ls_2(block.mlp(block.ln_2(hidden)))
            got, _ = reference_dense_tokens("sclip", model, x)
    torch.testing.assert_close(got, tokens, rtol=0, atol=1e-11)


def test_gaussian_window_entries():
    omega = gaussian_window((3, 5), sigma=2.0)
    assert omega.shape == (16, 16)
    assert torch.all(omega[0] == 0) and torch.all(omega[:, 0] == 0)
    torch.testing.assert_close(omega[1:, 1:].diagonal(), torch.ones(15, dtype=torch.float64))
    torch.testing.assert_close(omega, omega.T)
    # patch (row 0, col 1) = token 2; patch (row 2, col 4) = token 1 + 2 * 5 + 4 = 15: distance² = 4 + 9
    assert omega[2, 15].item() == pytest.approx(math.exp(-13 / 8.0), abs=1e-15)
    assert omega[1, 6].item() == pytest.approx(math.exp(-1 / 8.0), abs=1e-15)  # (0, 0) and (1, 0)


@pytest.mark.parametrize(("name", "params", "row_sum"), [
    ("maskclip", {}, 1.0), ("sclip", {}, 2.0), ("clearclip", {}, 1.0), ("naclip", {}, 1.0),
    ("naclip", dict(gaussian=False), 1.0), ("resclip", {}, 2.0), ("resclip", dict(tau=0.7, lam=0.9), 0.7),
])
def test_last_block_attention_row_sums(model, name, params, row_sum):
    visual = prepare_visual(model)
    with torch.no_grad():
        trace = vanilla_trace(visual, random_images(hw=(64, 96), seed=7))
        A = last_block_attention(name, trace, visual, **params)
    assert A.shape == (2, 4, 25, 25)
    assert torch.all(A >= 0)
    torch.testing.assert_close(A.sum(dim=-1), torch.full((2, 4, 25), row_sum, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    if name == "maskclip":
        torch.testing.assert_close(A, torch.eye(25, dtype=torch.float64).expand_as(A), rtol=0, atol=0)


def test_resclip_default_reference_layers_and_formula(model):
    assert default_reference_layers(12) == [5, 6, 7, 8]
    assert default_reference_layers(8) == [3, 4, 5]
    assert default_reference_layers(24) == [10, 11, 12, 13, 14, 15, 16, 17]
    model64 = _double(model)
    x = random_images(seed=8).double()
    inputs, _, _, _ = _run_open_clip(model64, x)
    blocks = model64.visual.transformer.resblocks
    with torch.no_grad():
        R = sum(_mha_weights(blocks[li], blocks[li].ln_1(inputs[li])) for li in (1, 4)) / 2
        X = blocks[-1].ln_1(inputs[-1])
        width = X.shape[-1]
        omega = gaussian_window((4, 4), 2.0)
        local = _with_projections(blocks[-1].attn, "k", "k")(X, X, X, need_weights=True, average_attn_weights=False,
                                                              attn_mask=omega)[1]
        A = 1.5 * (0.4 * local + 0.6 * R)
        v = X @ blocks[-1].attn.in_proj_weight[2 * width:].T + blocks[-1].attn.in_proj_bias[2 * width:]
        heads = 4
        z = torch.cat([A[:, h] @ v[..., h * 16:(h + 1) * 16] for h in range(heads)], dim=-1)
        expected = blocks[-1].ls_1(blocks[-1].attn.out_proj(z))
        got, _ = reference_dense_tokens("resclip", model, x, sigma=2.0, tau=1.5, lam=0.6, reference_layers=(1, 4))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-11)
    # lam = 0, tau = 1: exactly NACLIP
    torch.testing.assert_close(reference_dense_tokens("resclip", model, x, tau=1.0, lam=0.0)[0],
                               reference_dense_tokens("naclip", model, x)[0], rtol=0, atol=1e-12)


def test_gem_one_block_by_hand():
    """1-layer model, blocks = 1: side = x_in + out_proj(SS) with SS written per image, head and token."""
    model = build_tiny_clip(layers=1, seed=9, width=32, head_width=16)
    model64 = _double(model)
    x = random_images(seed=10).double()
    inputs, _, _, _ = _run_open_clip(model64, x)
    block = model64.visual.transformer.resblocks[0]
    attn = block.attn
    width, heads, d = 32, 2, 16
    with torch.no_grad():
        for iterations, temperature in ((1, None), (2, 7.0), (0, None)):
            expected = torch.zeros(2, 17, width, dtype=torch.float64)
            for b in range(2):
                X = block.ln_1(inputs[0][b])  # [N, D]
                beta = temperature if temperature is not None else \
                    sum(X[n].norm() for n in range(17)) / 17 / math.sqrt(d)
                proj = [X @ attn.in_proj_weight[i * width:(i + 1) * width].T
                        + attn.in_proj_bias[i * width:(i + 1) * width] for i in range(3)]
                for h in range(heads):
                    cols = slice(h * d, (h + 1) * d)
                    total = torch.zeros(17, 17, dtype=torch.float64)
                    for z in (p[:, cols] for p in proj):
                        for _ in range(iterations):
                            zn = torch.stack([z[n] / z[n].norm() for n in range(17)])
                            z = torch.softmax(beta * zn @ zn.T, dim=-1) @ zn
                        zn = torch.stack([z[n] / z[n].norm() for n in range(17)])
                        total = total + torch.softmax(beta * zn @ zn.T, dim=-1)
                    expected[b, :, cols] = (total / 3) @ proj[2][:, cols]
            side = inputs[0] + expected @ attn.out_proj.weight.T + attn.out_proj.bias
            got, _ = reference_dense_tokens("gem", model, x, blocks=1, iterations=iterations,
                                            temperature=temperature)
            torch.testing.assert_close(got, side, rtol=0, atol=1e-11)


@pytest.mark.parametrize("blocks", [2, 6])
def test_gem_side_stream_from_main_stream(model, blocks):
    """side = x_in^(L-k) + Σ_l ls_1(O(SS_l)) with SS_l from open_clip's own block inputs (iterations = 0 check of
    the attention via gem_attention on MHA-free projections)."""
    model64 = _double(model)
    x = random_images(seed=11).double()
    inputs, _, _, _ = _run_open_clip(model64, x)
    blocks_ = model64.visual.transformer.resblocks
    depth = len(blocks_)
    with torch.no_grad():
        side = inputs[depth - blocks].clone()
        for li in range(depth - blocks, depth):
            block = blocks_[li]
            X = block.ln_1(inputs[li])
            beta = X.norm(dim=-1).mean(dim=-1) / 4.0  # s = 16 ** -0.5
            q, k, v = (torch.stack((X @ w.T + b).split(16, dim=-1), dim=1)
                       for w, b in zip(block.attn.in_proj_weight.split(64), block.attn.in_proj_bias.split(64), strict=True))
            A = (gem_attention(q, beta, 1) + gem_attention(k, beta, 1) + gem_attention(v, beta, 1)) / 3
            z = (A @ v).permute(0, 2, 1, 3).reshape(2, 17, 64)
            side = side + block.ls_1(block.attn.out_proj(z))
    got, _ = reference_dense_tokens("gem", model, x, blocks=blocks)
    torch.testing.assert_close(got, side, rtol=0, atol=1e-11)


def test_gem_attention_iterations_zero_and_batch_beta():
    g = torch.Generator().manual_seed(12)
    z = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    beta = torch.tensor([0.5, 3.0], dtype=torch.float64)
    A = gem_attention(z, beta, 0)
    zn = z / z.norm(dim=-1, keepdim=True)
    for b in range(2):
        torch.testing.assert_close(A[b], torch.softmax(beta[b] * zn[b] @ zn[b].transpose(-1, -2), -1),
                                   rtol=0, atol=1e-14)
    A1 = gem_attention(z, beta, 1)
    z1 = torch.stack([torch.softmax(beta[b] * zn[b] @ zn[b].transpose(-1, -2), -1) @ zn[b] for b in range(2)])
    z1n = z1 / z1.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(A1, torch.stack([torch.softmax(beta[b] * z1n[b] @ z1n[b].transpose(-1, -2), -1)
                                                for b in range(2)]), rtol=0, atol=1e-14)


# text-independent maps ----------------------------------------------------------------------------------------
def test_raw_attention_and_rollout_by_hand(model):
    model64 = _double_at(model, (64, 96))
    x = random_images(hw=(64, 96), seed=13).double()
    inputs, _, _, _ = _run_open_clip(model64, x)
    blocks = model64.visual.transformer.resblocks
    with torch.no_grad():
        A = [_mha_weights(b, b.ln_1(i)).mean(dim=1) for b, i in zip(blocks, inputs, strict=True)]  # [B, N, N] mean over heads
    d = random_directions(3)
    raw = reference_raw("raw-attention", model, x, d)
    assert raw.shape == (2, 3, 4, 6)
    for t in range(3):
        torch.testing.assert_close(raw[:, t], A[-1][:, 0, 1:].reshape(2, 4, 6), rtol=0, atol=1e-13)
    # start at the last block: J = 0.5 A + 0.5 I, so J[0, 1:] = 0.5 A[0, 1:]
    torch.testing.assert_close(reference_rollout(model, x, start_layer=5), 0.5 * A[-1][:, 0, 1:].reshape(2, 4, 6),
                               rtol=0, atol=1e-13)
    torch.testing.assert_close(reference_rollout(model, x, start_layer=-1), 0.5 * A[-1][:, 0, 1:].reshape(2, 4, 6),
                               rtol=0, atol=1e-13)
    # two blocks, written as explicit sums: J[0, m] = Σ_j Â_5[0, j] Â_4[j, m]
    hat = [0.5 * a + 0.5 * torch.eye(25, dtype=torch.float64) for a in A]
    two = torch.zeros(2, 24, dtype=torch.float64)
    for b in range(2):
        for m in range(1, 25):
            two[b, m - 1] = sum(hat[5][b, 0, j] * hat[4][b, j, m] for j in range(25))
    torch.testing.assert_close(reference_rollout(model, x, start_layer=4), two.reshape(2, 4, 6), rtol=0, atol=1e-13)
    full = hat[0]
    for li in range(1, 6):
        full = hat[li] @ full
    torch.testing.assert_close(reference_raw("rollout", model, x, d)[:, 1], full[:, 0, 1:].reshape(2, 4, 6),
                               rtol=0, atol=1e-13)


def test_one_layer_rollout():
    model = build_tiny_clip(layers=1, seed=14)
    model64 = _double(model)
    x = random_images(seed=15).double()
    inputs, _, _, _ = _run_open_clip(model64, x)
    block = model64.visual.transformer.resblocks[0]
    with torch.no_grad():
        A = _mha_weights(block, block.ln_1(inputs[0]))
    expected = torch.stack([0.5 * sum(A[b, h, 0, 1:] for h in range(4)) / 4 for b in range(2)]).reshape(2, 4, 4)
    torch.testing.assert_close(reference_rollout(model, x), expected, rtol=0, atol=1e-13)


# gradients against finite differences injected into open_clip's own forward -------------------------------------
@pytest.fixture(scope="module")
def tiny():
    """2 blocks, width 32, 2 heads, 32x32 images with 16-pixel patches: N = 5 tokens."""
    return build_tiny_clip(layers=2, ls_init_value=0.7, image_size=32, width=32, head_width=16, seed=16)


def _open_clip_embedding(model64, x, hooks):
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        with torch.no_grad():
            return F.normalize(model64.encode_image(x), dim=-1)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("layer", [-1, 0])
def test_gradcam_gradient_finite_differences(tiny, layer):
    model64 = _double(tiny)
    x = random_images(hw=(32, 32), seed=17).double()
    t = random_directions(1, seed=18)[0]
    A, G = reference_gradcam_gradient(tiny, x, t, layer)
    ln_1 = model64.visual.transformer.resblocks[layer].ln_1
    eps = 1e-6
    fd = torch.zeros_like(G)
    def bump(n, c, delta):
        def hook(_m, _a, out):
            out = out.clone()
            out[:, n, c] += delta
            return out
        return _open_clip_embedding(model64, x, [(ln_1, hook)]) @ t

    for n in range(5):
        for c in range(32):
            fd[:, n, c] = (bump(n, c, eps) - bump(n, c, -eps)) / (2 * eps)
    torch.testing.assert_close(G, fd, rtol=0, atol=1e-8)
    assert G.abs().max() > 1e-4
    # the map formula from the gradient
    cam = reference_gradcam(tiny, x, t[None], layer)[:, 0].reshape(2, 4)
    alpha = fd[:, 1:].mean(dim=1)
    torch.testing.assert_close(cam, torch.relu((A[:, 1:] * alpha[:, None]).sum(-1)), rtol=0, atol=1e-8)


def _attention_bump(block, head, i, j, delta):
    """Forward hook on block.attn adding what A[head, i, j] += delta adds: out_proj.weight[:, head] @ (delta v_j)."""
    attn = block.attn
    width = attn.embed_dim
    d = width // attn.num_heads
    cols = slice(head * d, (head + 1) * d)

    def hook(_m, args, out):
        value = args[2]  # [B, N, D], batch first
        v = value @ attn.in_proj_weight[2 * width:].T + attn.in_proj_bias[2 * width:]
        extra = delta * v[:, j, cols] @ attn.out_proj.weight[:, cols].T  # [B, D]
        result = out[0].clone()
        result[:, i] += extra
        return (result,) + tuple(out[1:])
    return hook


def test_chefer_gradients_finite_differences(tiny):
    model64 = _double(tiny)
    x = random_images(hw=(32, 32), seed=19).double()
    t = random_directions(1, seed=20)[0]
    layers, As, Gs = reference_chefer_gradients(tiny, x, t, start_layer=0)
    assert layers == [0, 1]
    scale = math.exp(tiny.logit_scale.item())
    blocks = model64.visual.transformer.resblocks
    eps = 1e-6
    for li, G in zip(layers, Gs, strict=True):
        fd = torch.zeros_like(G)
        for h in range(2):
            for i in range(5):
                for j in range(5):
                    up = _open_clip_embedding(model64, x, [(blocks[li].attn, _attention_bump(blocks[li], h, i, j, eps))])
                    down = _open_clip_embedding(model64, x,
                                                [(blocks[li].attn, _attention_bump(blocks[li], h, i, j, -eps))])
                    fd[:, h, i, j] = scale * (up - down) @ t / (2 * eps)
        torch.testing.assert_close(G, fd, rtol=0, atol=1e-7)
        assert G.abs().max() > 1e-3
    # map formula: R = I + Ē_1 (I + Ē_0)
    E = [torch.relu(G * A).mean(dim=1) for A, G in zip(As, Gs, strict=True)]
    eye = torch.eye(5, dtype=torch.float64)
    R = (eye + E[1]) @ (eye + E[0])
    torch.testing.assert_close(reference_chefer(tiny, x, t[None])[:, 0].reshape(2, 4), R[:, 0, 1:],
                               rtol=0, atol=1e-12)
    # start at the last block only: map = Ē_1[0, 1:]
    torch.testing.assert_close(reference_chefer(tiny, x, t[None], start_layer=-1)[:, 0].reshape(2, 4),
                               E[1][:, 0, 1:], rtol=0, atol=1e-12)


def test_legrad_gradients_finite_differences(tiny):
    model64 = _double(tiny)
    x = random_images(hw=(32, 32), seed=21).double()
    t = random_directions(1, seed=22)[0]
    layers, Gs = reference_legrad_gradients(tiny, x, t, start_layer=-2)
    assert layers == [0, 1]
    blocks = model64.visual.transformer.resblocks
    visual = model64.visual
    eps = 1e-6

    def layer_score(li, hooks):
        captured = {}
        hooks = hooks + [(blocks[li], lambda _m, _a, out: captured.__setitem__("out", out.clone()))]
        _open_clip_embedding(model64, x, hooks)
        pooled = captured["out"].mean(dim=1)
        return F.normalize(visual.ln_post(pooled) @ visual.proj, dim=-1) @ t

    for li, G in zip(layers, Gs, strict=True):
        fd = torch.zeros_like(G)
        for h in range(2):
            for i in range(5):
                for j in range(5):
                    up = layer_score(li, [(blocks[li].attn, _attention_bump(blocks[li], h, i, j, eps))])
                    down = layer_score(li, [(blocks[li].attn, _attention_bump(blocks[li], h, i, j, -eps))])
                    fd[:, h, i, j] = (up - down) / (2 * eps)
        torch.testing.assert_close(G, fd, rtol=0, atol=1e-8)
        assert G.abs().max() > 1e-4
    expected = sum(torch.relu(G).mean(dim=(1, 2))[:, 1:] for G in Gs)
    torch.testing.assert_close(reference_legrad(tiny, x, t[None])[:, 0].reshape(2, 4), expected,
                               rtol=0, atol=1e-12)
    only_last = torch.relu(Gs[1]).mean(dim=(1, 2))[:, 1:]
    torch.testing.assert_close(reference_legrad(tiny, x, t[None], start_layer=1)[:, 0].reshape(2, 4), only_last,
                               rtol=0, atol=1e-12)


# batches ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_METHODS)
def test_batch_of_two_equals_two_batches_of_one(name):
    model = build_tiny_clip(layers=3, ls_init_value=0.5, seed=23)
    x = random_images(hw=(64, 96), seed=24)
    x[1] *= 3.0  # a different scale per image: GEM's β is per image
    d = random_directions(3, seed=25)
    params = dict(blocks=2) if name == "gem" else {}
    both = reference_raw(name, model, x, d, **params)
    assert both.shape == (2, 3, 4, 6) and both.dtype == torch.float64
    one = torch.cat([reference_raw(name, model, x[i:i + 1], d, **params) for i in range(2)])
    torch.testing.assert_close(both, one, rtol=0, atol=1e-12)
    texts = torch.cat([reference_raw(name, model, x, d[i:i + 1], **params) for i in range(3)], dim=1)
    torch.testing.assert_close(both, texts, rtol=0, atol=1e-12)
