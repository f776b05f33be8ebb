"""The decomposition is exact, its reductions agree, and its terms match an independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from cliplens.core.forward import run_vision
from cliplens.decomposition import decompose, resolve_layers
from cliplens.errors import InvalidInputError
from cliplens.models.openclip import vision_view_from_open_clip
from tests.conftest import oc_vit, pixels, tiny_open_clip

# real shapes with 3 blocks; one full-depth tower (B-16); tiny towers for layer-scale and other sizes
MODELS = [
    ("B-32", lambda: oc_vit("B-32", layers=3), 224),
    ("B-16-quickgelu@160", lambda: oc_vit("B-16", layers=3, quick_gelu=True), 160),
    ("L-14", lambda: oc_vit("L-14", layers=3), 224),
    ("B-16-full-depth", lambda: oc_vit("B-16", layers=0), 224),
    ("layer-scale", lambda: tiny_open_clip(layer_scale=True), 64),
    ("tiny@non-native-96", lambda: tiny_open_clip(), 96),
]
MODES = [
    dict(spatial=True, layers=None),
    dict(spatial=False, layers=None),
    dict(spatial=True, last=2),
    dict(spatial=False, last=1),
    dict(spatial=True, layers=[0, -1]),
]


@pytest.mark.parametrize("case", MODELS, ids=[m[0] for m in MODELS])
def test_exact_for_every_model_and_mode(case):
    name, factory, size = case
    model = factory()
    view = vision_view_from_open_clip(model)
    x = pixels(2, size)
    # batch 1 and batch > 1 for the small towers; one batch for the full-depth one (keeps the suite fast)
    batches = [x] if name == "B-16-full-depth" else [x, x[:1]]
    for xb in batches:
        with torch.no_grad():
            ref = model.encode_image(xb) if size == view.image_size[0] else None
        for i, mode in enumerate(MODES):
            d = decompose(view, xb, **mode)
            if ref is not None:
                assert (d.embedding - ref).abs().max() <= 1e-5 * ref.norm(dim=-1).max()
            err = d.check(rtol=1e-5)
            assert err < 1e-5
            if i == 0:
                assert d.normalized().check(rtol=1e-5) < 1e-5


def test_reductions_agree():
    model = tiny_open_clip(layer_scale=True, layers=4)
    view = vision_view_from_open_clip(model)
    x = pixels(3, 64)
    sp = decompose(view, x, spatial=True)
    ns = decompose(view, x, spatial=False)
    B, L, N, H, E = 3, 4, 17, view.num_heads, view.embed_dim
    ht = sp.head_terms()
    assert ht.shape == (B, L, N, H, E)
    assert sp.mlp_terms().shape == (B, L + 1, E)
    # tokens summed = the non-spatial per-head terms (shares of mean and bias included)
    torch.testing.assert_close(ht.sum(2), ns.head_terms(), rtol=1e-4, atol=1e-6)
    # heads summed = each attention layer's term computed from its whole output
    torch.testing.assert_close(ht.sum((2, 3)), sp.attention_layer_terms(), rtol=1e-4, atol=1e-6)
    # token terms over all layers = per-token sums of the head terms
    torch.testing.assert_close(sp.token_terms(), ht.sum((1, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sp.token_terms([2, 3]), ht[:, 2:].sum((1, 3)), rtol=1e-4, atol=1e-6)
    # layer terms list the 2L+1 sites and add up to the embedding
    lt, labels = sp.layer_terms()
    assert lt.shape == (B, 2 * L + 1, E) and labels[0] == "embed" and labels[-1] == f"L{L - 1}.mlp"
    torch.testing.assert_close(lt.sum(1), sp.embedding, rtol=1e-4, atol=1e-5)
    # last-k mode has the same per-head terms for those layers
    last2 = decompose(view, x, spatial=True, last=2)
    torch.testing.assert_close(last2.head_terms(), ht[:, 2:], rtol=1e-4, atol=1e-6)


def test_project_scores_every_component():
    model = tiny_open_clip(layers=3)
    view = vision_view_from_open_clip(model)
    x = pixels(2, 64)
    d = decompose(view, x, spatial=True)
    texts = F.normalize(torch.randn(5, view.embed_dim, generator=torch.Generator().manual_seed(3)), dim=-1)
    s = d.project(texts)
    assert s.heads.shape == (2, 3, 17, view.num_heads, 5)
    torch.testing.assert_close(s.total, d.embedding @ texts.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s.heads, torch.einsum("blnhe,te->blnht", d.head_terms(), texts), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s.mlp, d.mlp_terms()[:, 1:] @ texts.T, rtol=1e-4, atol=1e-6)
    assert s.token_map().shape == (2, 5, 4, 4)
    torch.testing.assert_close(s.per_head(), s.heads.sum(2))
    with pytest.raises(ValueError, match="directions must be"):
        d.project(torch.randn(3, view.embed_dim + 1))
    # non-spatial projection agrees with the spatial one
    ns = decompose(view, x, spatial=False).project(texts)
    torch.testing.assert_close(ns.heads, s.heads.sum(2), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="spatial"):
        ns.token_map()


def _reference_terms(model, x):
    """An independent computation from open_clip's own modules: per layer/token/head terms [B,L,N,H,E]
    and embed+MLP terms [B,L+1,E], with the original paper's sharing of LN_post's mean and bias."""
    visual = model.visual
    inputs, mlps = [], []
    hooks = [blk.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for blk in visual.transformer.resblocks]
    hooks += [blk.mlp.register_forward_hook(lambda m, a, o: mlps.append(o[:, 0])) for blk in visual.transformer.resblocks]
    pooled = []
    hooks.append(visual.ln_post.register_forward_pre_hook(lambda m, a: pooled.append(a[0])))
    emb_in = []
    hooks.append(visual.ln_pre.register_forward_hook(lambda m, a, o: emb_in.append(o[:, 0])))
    with torch.no_grad():
        emb = model.encode_image(x)
        L = len(visual.transformer.resblocks)
        attn_terms = []
        for blk, xin in zip(visual.transformer.resblocks, inputs, strict=True):
            h = blk.ln_1(xin)
            _, w = blk.attn(h, h, h, need_weights=True, average_attn_weights=False)  # [B,H,N,N]
            D, H = blk.attn.embed_dim, blk.attn.num_heads
            dh = D // H
            v = F.linear(h, blk.attn.in_proj_weight[2 * D:], blk.attn.in_proj_bias[2 * D:]).view(*h.shape[:2], H, dh)
            contrib = w[:, :, 0, :, None].transpose(1, 2) * v  # [B,N,H,dh]
            Wo = blk.attn.out_proj.weight.view(D, H, dh)
            per = torch.einsum("bnhd,ehd->bnhe", contrib, Wo) + blk.attn.out_proj.bias / (H * h.shape[1])
            if hasattr(blk.ls_1, "gamma"):
                per = per * blk.ls_1.gamma
            attn_terms.append(per)
        for hk in hooks:
            hk.remove()
        attn = torch.stack(attn_terms, 1)  # [B,L,N,H,D]
        mlp = torch.stack([emb_in[0]] + [m * (blk.ls_2.gamma if hasattr(blk.ls_2, "gamma") else 1)
                                          for m, blk in zip(mlps, visual.transformer.resblocks, strict=True)], 1)
        p = pooled[0][:, 0]
        mu, sd = p.mean(-1), torch.sqrt(p.var(-1, unbiased=False) + visual.ln_post.eps)
        sites = 2 * L + 1
        N, H = attn.shape[2], attn.shape[3]
        g, b = visual.ln_post.weight, visual.ln_post.bias
        a_share = sites * N * H
        attn_j = ((attn - mu[:, None, None, None, None] / a_share) * g / sd[:, None, None, None, None] + b / a_share) @ visual.proj
        mlp_j = ((mlp - mu[:, None, None] / sites) * g / sd[:, None, None] + b / sites) @ visual.proj
    return attn_j, mlp_j, emb


@pytest.mark.parametrize("factory", [lambda: oc_vit("B-32", layers=3), lambda: tiny_open_clip(layer_scale=True)],
                         ids=["B-32", "layer-scale"])
def test_terms_match_an_independent_computation(factory):
    model = factory()
    view = vision_view_from_open_clip(model)
    x = pixels(2, view.image_size[0], seed=5)
    attn_ref, mlp_ref, emb = _reference_terms(model, x)
    d = decompose(view, x, spatial=True)
    scale = emb.norm(dim=-1).max().item()
    assert (d.head_terms() - attn_ref).abs().max().item() <= 1e-5 * scale
    assert (d.mlp_terms() - mlp_ref).abs().max().item() <= 1e-5 * scale
    assert ((attn_ref.sum((1, 2, 3)) + mlp_ref.sum(1)) - emb).abs().max().item() <= 1e-5 * scale


class _OpShapes(TorchDispatchMode):
    """Records the name and output shapes of every aten op that runs."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.ops.append((str(func), tuple(t.shape)))
        return out


def _square_outputs(ops, n):
    return [(name, shape) for name, shape in ops if len(shape) >= 2 and shape[-2:] == (n, n)]


def test_only_the_cls_query_row_is_computed():
    """No op of the spatial decomposition produces an [N x N] tensor (a full attention pattern):
    only the CLS row of each pattern is computed (the forward itself uses the fused kernel)."""
    view = vision_view_from_open_clip(tiny_open_clip())
    n = view.num_tokens()
    with _OpShapes() as rec:
        decompose(view, pixels(2, 64), spatial=True)
    assert rec.ops and not _square_outputs(rec.ops, n)
    # the spy sees a full pattern where one is computed: recording attn.pattern builds N x N tensors
    with _OpShapes() as rec_full:
        run_vision(view, pixels(2, 64), names=["blocks.0.attn.pattern"])
    assert _square_outputs(rec_full.ops, n)


def test_resolve_layers_and_errors():
    assert resolve_layers(None, 4) == (0, 1, 2, 3)
    assert resolve_layers(None, 4, last=2) == (2, 3)
    assert resolve_layers([-1, 0], 4) == (0, 3)
    assert resolve_layers(-1, 4) == (3,)  # a negative int is an index (it never meant "the last k")
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers([7], 4)
    for bad in (0, 5):
        with pytest.raises(InvalidInputError, match=r"1\.\.4"):
            resolve_layers(None, 4, last=bad)
    with pytest.raises(InvalidInputError, match=r"last=2.*layers=\[2\]"):  # the old int form: refused, both named
        resolve_layers(2, 4)
    d = decompose(vision_view_from_open_clip(tiny_open_clip()), pixels(1, 64), last=1)
    with pytest.raises(InvalidInputError, match="no per-head terms"):
        d.token_terms([0])


def test_negative_layer_indices_work_everywhere():
    view = vision_view_from_open_clip(tiny_open_clip())
    d = decompose(view, pixels(2, 64), layers=[0, -1])
    assert d.head_layers == (0, 2)
    texts = F.normalize(torch.randn(3, view.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    s = d.project(texts)
    torch.testing.assert_close(d.token_terms([-1]), d.token_terms([2]))
    torch.testing.assert_close(s.token_map(layers=[-1]), s.token_map(layers=[2]))
    torch.testing.assert_close(s.token_map(layers=-1), s.token_map(layers=[2]))
    assert s.layer_index([-1, 0]) == [0, 1]
    with pytest.raises(InvalidInputError, match="no per-head terms"):
        s.token_map(layers=[-2])
