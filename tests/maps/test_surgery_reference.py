"""Self-checks of the naive CLIP Surgery oracle (tests/maps/surgery_reference.py), without cliplens.

Small random open_clip models built offline; 1-D parameters (biases, LayerNorm affines, layer-scale gammas,
the class embedding) are perturbed so that they are not 0/1. Comparisons run in float64.
"""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import resize_pos_embed

from tests.maps.surgery_reference import (
    reference_empty_surgery,
    reference_feature_surgery,
    reference_maps,
    reference_points,
    reference_surgery_tokens,
)

TEXT_CFG = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)


def _build(layers: int = 8, ls_init_value: float | None = None, image_size=64, seed: int = 0) -> open_clip.CLIP:
    vision_cfg = dict(image_size=image_size, patch_size=16, width=64, layers=layers, head_width=16)
    if ls_init_value is not None:
        vision_cfg["ls_init_value"] = ls_init_value
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(32, vision_cfg=vision_cfg, text_cfg=TEXT_CFG).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _images(batch: int = 2, hw=(64, 64), seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *hw, generator=g)


@pytest.fixture(scope="module", params=[None, 0.5], ids=["plain", "layerscale"])
def model(request) -> open_clip.CLIP:
    return _build(layers=8, ls_init_value=request.param)


def _double(model: open_clip.CLIP) -> open_clip.CLIP:
    return copy.deepcopy(model).double().eval()


def _vv_mha(attn: torch.nn.MultiheadAttention) -> torch.nn.MultiheadAttention:
    """A copy of ``attn`` whose query and key projections are its value projection: mha(X, X, X) = v-v attention."""
    vv = copy.deepcopy(attn)
    width = attn.embed_dim
    with torch.no_grad():
        w_v = attn.in_proj_weight[2 * width:]
        b_v = attn.in_proj_bias[2 * width:]
        vv.in_proj_weight.copy_(torch.cat([w_v, w_v, w_v], dim=0))
        vv.in_proj_bias.copy_(torch.cat([b_v, b_v, b_v], dim=0))
    return vv


def _block_inputs_and_tokens(model64: open_clip.CLIP, x: torch.Tensor):
    """Run open_clip's own forward; capture each block's input and ln_post's output (all tokens)."""
    inputs: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}
    handles = [
        block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].clone()))
        for block in model64.visual.transformer.resblocks
    ]
    handles.append(model64.visual.ln_post.register_forward_hook(
        lambda _m, _args, out: captured.__setitem__("ln_post", out.clone())))
    try:
        with torch.no_grad():
            pooled = model64.encode_image(x)
    finally:
        for handle in handles:
            handle.remove()
    assert model64.visual.transformer.batch_first
    return inputs, captured["ln_post"], pooled


# (a) ---------------------------------------------------------------------------------------------------------
def test_k0_is_vanilla_clip(model):
    x = _images()
    model64 = _double(model)
    _, ln_post_tokens, pooled = _block_inputs_and_tokens(model64, x.double())
    out = reference_surgery_tokens(model, x, k=0)
    assert out.shape == (2, 1 + 4 * 4, 32) and out.dtype == torch.float64
    torch.testing.assert_close(out[:, 0], pooled, rtol=0, atol=1e-10)
    # with no surgical block the patch tokens are the vanilla ones too
    torch.testing.assert_close(out[:, 1:], ln_post_tokens[:, 1:] @ model64.visual.proj, rtol=0, atol=1e-10)
    # and float32 encode_image agrees at float32 precision
    with torch.no_grad():
        torch.testing.assert_close(out[:, 0].float(), model.encode_image(x), rtol=1e-4, atol=1e-5)


# (b) ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 6, 8])
def test_main_stream_cls_is_encode_image(model, k):
    x = _images()
    model64 = _double(model)
    _, ln_post_tokens, pooled = _block_inputs_and_tokens(model64, x.double())
    out = reference_surgery_tokens(model, x, k=k)
    torch.testing.assert_close(out[:, 0], pooled, rtol=0, atol=1e-10)
    # the surgery does change the patch tokens
    vanilla_patches = ln_post_tokens[:, 1:] @ model64.visual.proj
    assert (out[:, 1:] - vanilla_patches).abs().max() > 1e-3


def test_model_is_not_modified(model):
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    reference_surgery_tokens(model, _images(hw=(80, 96)), k=6)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and torch.equal(after[name], value), name


# (c) ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ls_init_value", [None, 0.5])
def test_one_block_side_path_by_hand(ls_init_value):
    """1-block model, k = 1: patches = ln_post(x0 + ls_1(out_proj(VV(ln_1(x0))))) @ proj, x0 = block input.

    VV is computed here with torch's own nn.MultiheadAttention whose q and k projections are set to the v one
    (so the attention is softmax(s v vᵀ) v, biases included), not with the reference's per-head loop.
    """
    model64 = _double(_build(layers=1, ls_init_value=ls_init_value, seed=5))
    x = _images(seed=7).double()
    inputs, _, pooled = _block_inputs_and_tokens(model64, x)
    x0 = inputs[0]
    block = model64.visual.transformer.resblocks[0]
    with torch.no_grad():
        X = block.ln_1(x0)
        vv = _vv_mha(block.attn)(X, X, X, need_weights=False)[0]
        side = x0 + block.ls_1(vv)
        expected = model64.visual.ln_post(side[:, 1:]) @ model64.visual.proj
    out = reference_surgery_tokens(model64, x, k=1)
    torch.testing.assert_close(out[:, 1:], expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(out[:, 0], pooled, rtol=0, atol=1e-10)


def test_one_block_vv_attention_fully_by_hand():
    """The same single block, with the attention written out per head in explicit per-token sums."""
    model64 = _double(_build(layers=1, seed=9))
    x = _images(batch=1, seed=11).double()
    inputs, _, _ = _block_inputs_and_tokens(model64, x)
    x0 = inputs[0][0]  # [N, D]
    block = model64.visual.transformer.resblocks[0]
    attn = block.attn
    width, heads = attn.embed_dim, attn.num_heads
    d = width // heads
    with torch.no_grad():
        X = block.ln_1(x0)
        V = X @ attn.in_proj_weight[2 * width:].T + attn.in_proj_bias[2 * width:]
        n = V.shape[0]
        out = torch.zeros(n, width, dtype=torch.float64)
        for h in range(heads):
            Vh = V[:, h * d:(h + 1) * d]
            for i in range(n):
                logits = torch.stack([(Vh[i] * Vh[j]).sum() / d ** 0.5 for j in range(n)])
                weights = torch.exp(logits - logits.max())
                weights = weights / weights.sum()
                out[i, h * d:(h + 1) * d] = sum(weights[j] * Vh[j] for j in range(n))
        side = x0 + out @ attn.out_proj.weight.T + attn.out_proj.bias
        expected = model64.visual.ln_post(side[1:]) @ model64.visual.proj
    out_ref = reference_surgery_tokens(model64, x, k=1)
    torch.testing.assert_close(out_ref[0, 1:], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("k", [2, 6])
def test_multi_block_side_path_by_hand(model, k):
    """x_side = x_in^(L-k) + Σ_l ls_1(O(VV(ln_1(x_in^(l))))) with the block inputs of open_clip's own forward."""
    model64 = _double(model)
    x = _images(seed=13).double()
    inputs, _, _ = _block_inputs_and_tokens(model64, x)
    blocks = model64.visual.transformer.resblocks
    depth = len(blocks)
    with torch.no_grad():
        side = inputs[depth - k].clone()
        for index in range(depth - k, depth):
            X = blocks[index].ln_1(inputs[index])
            side = side + blocks[index].ls_1(_vv_mha(blocks[index].attn)(X, X, X, need_weights=False)[0])
        expected = model64.visual.ln_post(side[:, 1:]) @ model64.visual.proj
    out = reference_surgery_tokens(model, x.float(), k=k)
    torch.testing.assert_close(out[:, 1:], expected, rtol=0, atol=1e-10)


def test_k_out_of_range(model):
    with pytest.raises(ValueError):
        reference_surgery_tokens(model, _images(batch=1), k=9)


# (d) ---------------------------------------------------------------------------------------------------------
def _normalised(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=g, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("n_texts", [1, 2, 5])
def test_feature_surgery_equals_weighted_similarity_form(n_texts):
    f = _normalised(3, 17, 32, seed=1)
    t = _normalised(n_texts, 32, seed=2)
    s = torch.einsum("bnc,tc->bnt", f, t)  # cosine similarities
    p = torch.softmax(2 * s[:, 0, :], dim=-1)  # [B, T], from the CLS row
    w = n_texts * p  # p / mean(p), mean(p) = 1 / T
    ws = w[:, None, :] * s
    expected = ws - ws.mean(dim=-1, keepdim=True)
    out = reference_feature_surgery(f, t)
    assert out.shape == (3, 17, n_texts)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    if n_texts == 1:  # a single text is entirely "redundant"
        assert out.abs().max() < 1e-12


def test_empty_surgery_formula():
    f = _normalised(2, 5, 16, seed=3)
    t = _normalised(3, 16, seed=4)
    empty = _normalised(16, seed=5)
    expected = torch.stack([torch.stack([torch.stack([(f[b, n] * (t[j] - empty)).sum() for j in range(3)])
                                         for n in range(5)]) for b in range(2)])
    torch.testing.assert_close(reference_empty_surgery(f, t, empty), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(reference_empty_surgery(f, t, empty[None]), expected, rtol=0, atol=1e-12)


# (e) ---------------------------------------------------------------------------------------------------------
def test_batch_of_two_equals_two_batches_of_one(model):
    x = _images(seed=17)
    both = reference_surgery_tokens(model, x, k=6)
    one = torch.cat([reference_surgery_tokens(model, x[i:i + 1], k=6) for i in range(2)])
    torch.testing.assert_close(both, one, rtol=0, atol=1e-12)

    f = both / both.norm(dim=-1, keepdim=True)
    t = _normalised(4, 32, seed=6)
    empty = _normalised(32, seed=7)
    for fn, args in ((reference_feature_surgery, (t,)), (reference_empty_surgery, (t, empty))):
        batched = fn(f, *args)
        single = torch.cat([fn(f[i:i + 1], *args) for i in range(2)])
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)
    maps = reference_maps(reference_feature_surgery(f, t), (4, 4), (20, 30))
    single_maps = torch.cat([reference_maps(reference_feature_surgery(f[i:i + 1], t), (4, 4), (20, 30))
                             for i in range(2)])
    torch.testing.assert_close(maps, single_maps, rtol=0, atol=1e-12)


# other input sizes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_other_input_size_matches_open_clip_resized_model(mode):
    """A 64x64 model run at 80x96 equals a model built for 80x96 whose table open_clip itself resized."""
    small = _build(layers=3, seed=21)
    big64 = _double(_build(layers=3, image_size=(80, 96), seed=22))
    state = {name: value.double() for name, value in small.state_dict().items()}  # resize in float64 too
    resize_pos_embed(state, big64, interpolation=mode, antialias=False)  # 4x4 -> 5x6, CLS row kept
    big64.load_state_dict(state)
    x = _images(seed=23, hw=(80, 96))
    out = reference_surgery_tokens(small, x, k=0, positional=mode)
    assert out.shape == (2, 1 + 5 * 6, 32)
    with torch.no_grad():
        expected = big64.encode_image(x.double())
    torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-10)
    # and the surgical tokens agree as well
    torch.testing.assert_close(reference_surgery_tokens(small, x, k=2, positional=mode), reference_surgery_tokens(big64, x, k=2),
                               rtol=0, atol=1e-10)
    # at the model's own size the table is used as is
    torch.testing.assert_close(reference_surgery_tokens(small, _images(seed=24), k=0)[:, 0],
                               _double(small).encode_image(_images(seed=24).double()), rtol=0, atol=1e-10)


# maps ----------------------------------------------------------------------------------------------------------
def test_maps_min_max_then_bilinear():
    g = torch.Generator().manual_seed(8)
    scores = torch.randn(2, 1 + 3 * 4, 5, generator=g, dtype=torch.float64)
    same = reference_maps(scores, (3, 4), (3, 4))  # same size: bilinear is the identity
    assert same.shape == (2, 5, 3, 4)
    patches = scores[:, 1:, :]
    for b in range(2):
        for j in range(5):
            v = patches[b, :, j]
            expected = ((v - v.min()) / (v.max() - v.min())).reshape(3, 4)  # row-major grid
            torch.testing.assert_close(same[b, j], expected, rtol=0, atol=1e-12)
    big = reference_maps(scores, (3, 4), (30, 41))
    assert big.shape == (2, 5, 30, 41)
    assert big.min() >= 0 and big.max() <= 1
    torch.testing.assert_close(big, F.interpolate(same, size=(30, 41), mode="bilinear", align_corners=False))
    changed_cls = scores.clone()
    changed_cls[:, 0] += 100.0
    torch.testing.assert_close(reference_maps(changed_cls, (3, 4), (30, 41)), big, rtol=0, atol=0)


# (f) ---------------------------------------------------------------------------------------------------------
def _peak_grid(gh, gw, row, col):
    rows = torch.arange(gh, dtype=torch.float64)[:, None]
    cols = torch.arange(gw, dtype=torch.float64)[None, :]
    return torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 2.0)


@pytest.mark.parametrize(("gh", "gw", "row", "col", "image_hw"),
                         [(8, 8, 5, 2, (120, 200)), (16, 16, 1, 14, (512, 512)), (8, 12, 6, 9, (333, 517))])
def test_points_on_a_known_peak(gh, gw, row, col, image_hw):
    grid = _peak_grid(gh, gw, row, col)
    points, labels = reference_points(grid, image_hw)
    h, w = gh // 2, gw // 2
    H, W = image_hw
    n_pos = labels.count(1)
    assert n_pos >= 1 and labels == [1] * n_pos + [0] * n_pos and len(points) == 2 * n_pos
    assert n_pos <= (h * w) // 2
    for x, y in points:
        assert isinstance(x, int) and isinstance(y, int)
        assert 0 <= x <= W - 1 and 0 <= y <= H - 1
    # the strongest positive is listed last (ascending order) and lies in the peak's downsampled cell
    peak_row, peak_col = row // 2, col // 2
    x, y = points[n_pos - 1]
    assert int(x * w / W) == peak_col and int(y * h / H) == peak_row
    assert [x, y] == [int((peak_col + 0.5) * W / w), int((peak_row + 0.5) * H / h)]
    # positives in ascending score: recompute the downsampled, min-max'ed map
    small = F.interpolate(grid[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    small = (small - small.min()) / (small.max() - small.min())

    def cell(point):
        return small[min(int(point[1] * h / H), h - 1), min(int(point[0] * w / W), w - 1)].item()

    positive_scores = [cell(p) for p in points[:n_pos]]
    assert positive_scores == sorted(positive_scores)
    assert all(s >= 0.8 for s in positive_scores)
    negative_scores = [cell(p) for p in points[n_pos:]]
    assert max(negative_scores) <= min(positive_scores)
    assert negative_scores[0] == 0.0  # the minimum cell


def test_points_exact_small_case_and_clamp():
    """4x4 grid -> 2x2 cells with scores [[0, 1/3], [2/3, 1]] after min-max (bilinear of a 2x2-block map)."""
    grid = torch.tensor([[0.0, 0.0, 1.0, 1.0],
                         [0.0, 0.0, 1.0, 1.0],
                         [2.0, 2.0, 3.0, 3.0],
                         [2.0, 2.0, 3.0, 3.0]])
    # only one cell >= 0.8; k = min(1, 4 // 2) = 1
    points, labels = reference_points(grid, (10, 20))
    assert labels == [1, 0]
    assert points == [[15, 7], [5, 2]]  # x = (1.5) * 20 / 2, y = int(1.5 * 10 / 2 = 7.5); (0.5*10, 0.5*5)
    points, labels = reference_points(grid, (10, 20), threshold=0.5)  # two cells: ascending order
    assert labels == [1, 1, 0, 0]
    assert points == [[5, 7], [15, 7], [5, 2], [15, 2]]
    # a tiny image: (col + 0.5) * W / w exceeds W - 1 and is clamped
    points, _ = reference_points(grid, (1, 1))
    assert points == [[0, 0], [0, 0]]
