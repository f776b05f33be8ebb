"""Data-free head descriptions: the OV route equals each token's direct effect through the head, the singular
directions are those of a naively built matrix, and the texts are the nearest ones."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.nn.functional import normalize

import cliplens
from cliplens.analyses.head_descriptions import describe_heads, head_ov, pool_ov
from cliplens.errors import InvalidInputError
from tests.conftest import pixels, tiny_open_clip
from tests.pooled_towers import pooled_toy


@pytest.fixture(scope="module")
def oc_model():
    return tiny_open_clip(layer_scale=True, layers=3).double()


@pytest.fixture(scope="module")
def adapter(oc_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cliplens.wrap(copy.deepcopy(oc_model), name="ViT-B-16")


def _naive_ov(oc_model, layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From the open_clip modules themselves: ln_1 (γ₁, β₁), the value rows and out-projection columns of the
    head, layer scale, ln_post's γ and the projection."""
    v = oc_model.visual
    blk = v.transformer.resblocks[layer]
    D = v.transformer.width
    H = blk.attn.num_heads
    dh = D // H
    rows = slice(head * dh, (head + 1) * dh)
    W_V = blk.attn.in_proj_weight[2 * D:][rows]  # [dh, D]
    b_V = blk.attn.in_proj_bias[2 * D:][rows]
    W_O = blk.attn.out_proj.weight[:, rows]  # [D, dh]
    ls = blk.ls_1.gamma
    P = W_O.T @ torch.diag(ls) @ torch.diag(v.ln_post.weight) @ v.proj  # [dh, E]
    M = torch.diag(blk.ln_1.weight) @ W_V.T @ P
    b = (blk.ln_1.bias @ W_V.T + b_V) @ P
    return M.detach(), b.detach()


def test_ov_matrix_is_the_naive_one(oc_model, adapter):
    for layer, head in ((0, 1), (2, 3)):
        M, b = head_ov(adapter.vision, layer, head)
        M0, b0 = _naive_ov(oc_model, layer, head)
        assert torch.allclose(M, M0, rtol=1e-10, atol=1e-12) and torch.allclose(b, b0, rtol=1e-10, atol=1e-12)


def test_ov_route_equals_each_tokens_direct_effect(oc_model, adapter):
    """A token's term through the head, from the exact decomposition, is α_m/σ_post · (x̂_m M + b) plus the
    same constant for every token: differences between tokens cancel the constant."""
    x = pixels(2, 64, seed=3).double()
    layer, head = 1, 2
    dec = adapter.decompose(x, spatial=True, dtype=torch.float64)
    terms = dec.head_terms()[:, layer, :, head]  # [B, N, E]
    _, cache = adapter.run_with_cache(x, [f"blocks.{layer}.resid_pre", f"blocks.{layer}.attn.cls_pattern",
                                          "pooled"])
    r = cache[f"blocks.{layer}.resid_pre"]  # [B, N, D]
    x_hat = (r - r.mean(-1, keepdim=True)) / (r.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    alpha = cache[f"blocks.{layer}.attn.cls_pattern"][:, head]  # [B, N]
    p = cache["pooled"]
    sigma = (p.var(-1, unbiased=False) + 1e-5).sqrt()  # ln_post's frozen scale
    M, b = _naive_ov(oc_model, layer, head)
    route = alpha[..., None] / sigma[:, None, None] * (x_hat @ M + b)  # [B, N, E]
    assert torch.allclose(terms - terms[:, :1], route - route[:, :1], rtol=1e-8, atol=1e-10)
    assert (route[:, 1:] - route[:, :1]).abs().max() > 1e-3  # the tokens differ: the check has teeth


def test_directions_are_the_svd_of_the_naive_matrix(oc_model, adapter):
    E = oc_model.visual.output_dim
    g = torch.Generator().manual_seed(0)
    T = torch.randn(40, E, generator=g, dtype=torch.float64)
    texts = [f"t{i}" for i in range(40)]
    out = describe_heads(adapter, texts, T, heads=[(2, 0), (0, 3)], directions=3, top=4)
    assert [d.name for d in out] == ["L0.H3", "L2.H0"]
    d = out[1]
    M0, b0 = _naive_ov(oc_model, 2, 0)
    _, S, Vh = torch.linalg.svd(M0)
    assert torch.allclose(torch.tensor(d.singular_values, dtype=torch.float64), S, rtol=1e-9)
    for i, direction in enumerate(d.directions):
        assert abs(float(direction.vector @ Vh[i])) == pytest.approx(1.0, abs=1e-9)
        # the nearest texts to ±v, by cosine with SpLiCE's centred pool
        Tn = normalize(T, dim=-1)
        C = normalize(Tn - Tn.mean(0), dim=-1)
        cos = C @ direction.vector
        assert [t for t, _ in direction.positive] == [texts[j] for j in cos.topk(4).indices]
        assert [t for t, _ in direction.negative] == [texts[j] for j in (-cos).topk(4).indices]
        assert direction.share == pytest.approx(float(S[i] ** 2 / (S ** 2).sum()))
    assert d.bias_norm == pytest.approx(float(b0.norm()))


def test_sparse_descriptions_and_choices(adapter):
    E = adapter.vision.embed_dim
    T = torch.randn(30, E, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    texts = [f"t{i}" for i in range(30)]
    out = describe_heads(adapter, texts, T, last=1, directions=1, sparse=True, texts_used=2)
    assert [d.name for d in out] == [f"L2.H{h}" for h in range(adapter.vision.num_heads)]
    s = out[0].directions[0].sparse_positive
    assert s is not None and "'t" in s and 1 <= len(s.split(" + ")) <= 2
    assert [d.name for d in describe_heads(adapter, texts, T, layers=[0, -1], directions=1)][::4] == ["L0.H0", "L2.H0"]
    with pytest.raises(InvalidInputError, match="L5.H0 does not exist"):
        describe_heads(adapter, texts, T, heads=[(5, 0)])
    with pytest.raises(InvalidInputError, match="pooling head has no heads"):
        describe_heads(adapter, texts, T, pool_heads=True)
    with pytest.raises(InvalidInputError, match="joint space has"):
        describe_heads(adapter, texts, T[:, :3])


def test_pool_heads_of_an_attention_pool(random_toy_weights):
    """SigLIP's MAP head (on the toy's blocks): each pooling head's value-to-output map is diag(γ)·W_Vʳᵀ·W_Oʳᵀ;
    a layer head's map goes through every pooling head (equal weights) or one."""
    m = pooled_toy(random_toy_weights, "map", dtype=torch.float64)
    head = m.vision.head
    Hp, D = head.num_heads, m.vision.width
    d = D // Hp
    gamma = head.norm.weight
    for r in (0, Hp - 1):
        rows = slice(r * d, (r + 1) * d)
        naive = torch.diag(gamma) @ head.v_weight[rows].T @ head.out_weight[:, rows].T
        assert torch.allclose(pool_ov(m.vision, r), naive, rtol=1e-10, atol=1e-12)
    texts = [f"t{i}" for i in range(12)]
    T = torch.randn(12, m.vision.embed_dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = describe_heads(m, texts, T, pool_heads=True, directions=2, top=2)
    assert [h.name for h in out] == [f"pool.H{r}" for r in range(Hp)]
    total, _ = head_ov(m.vision, 1, 0)
    parts = [head_ov(m.vision, 1, 0, readout=r)[0] for r in range(Hp)]
    assert torch.allclose(total, sum(parts), rtol=1e-10, atol=1e-12)
    with pytest.raises(InvalidInputError, match=f"readout {Hp} does not exist"):
        head_ov(m.vision, 1, 0, readout=Hp)


def test_docs_page_code_runs():
    """docs/analyses/head-descriptions.md: its Python block runs and gives what it says."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "analyses" / "head-descriptions.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), scope)
    heads, M, b = scope["heads"], scope["M"], scope["b"]
    L = scope["model"].vision.num_layers
    assert [h.name for h in heads] == [f"L{L - 1}.H{i}" for i in range(scope["model"].vision.num_heads)]
    assert M.shape == (scope["model"].vision.width, scope["model"].vision.embed_dim) and b.shape == (M.shape[1],)
    assert heads[1].singular_values[0] == pytest.approx(float(torch.linalg.svdvals(M)[0]))


def test_eva02_route_through_the_sub_layernorm():
    """EVA02 (sub-LN over the heads): a token's term through a head is α_m/(σ_post·σ_sub) · (x̂_m M + b) plus a
    constant shared by the tokens, with the sub-LN's γ folded into M (σ_sub: the CLS token's sub-LN scale)."""
    pytest.importorskip("timm")
    from tests.families.models import open_clip_timm

    oc = open_clip_timm("EVA02-B-16", layers=2, layer_scale=True).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ad = cliplens.wrap(oc, name="EVA02-B-16")
    layer, head = 1, 5
    blk = ad.vision.blocks[layer]
    x = pixels(1, 224, seed=1).double()
    with torch.no_grad():  # the wrapped source's parameters require grad
        terms = ad.decompose(x, spatial=True, dtype=torch.float64).head_terms()[:, layer, :, head]  # [B, N, E]
        _, cache = ad.run_with_cache(x, [f"blocks.{layer}.resid_pre", f"blocks.{layer}.attn.cls_pattern",
                                         f"blocks.{layer}.attn.z", "pooled"])
        r = cache[f"blocks.{layer}.resid_pre"]
        x_hat = (r - r.mean(-1, keepdim=True)) / (r.var(-1, unbiased=False, keepdim=True) + blk.ln_1.eps).sqrt()
        alpha = cache[f"blocks.{layer}.attn.cls_pattern"][:, head]
        z = cache[f"blocks.{layer}.attn.z"][:, 0].reshape(x.shape[0], -1)  # the CLS token's heads, concatenated
        sd_sub = (z.var(-1, unbiased=False) + blk.attn_norm.eps).sqrt()
        p = cache["pooled"]
        sd_post = (p.var(-1, unbiased=False) + ad.vision.head.norm.eps).sqrt()
        M, b = head_ov(ad.vision, layer, head)
        route = alpha[..., None] / (sd_post * sd_sub)[:, None, None] * (x_hat @ M + b)
    ours, ref = terms - terms[:, :1], route - route[:, :1]
    assert ref.abs().max() > 1e-9  # the tokens differ: the check has teeth
    assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-7
