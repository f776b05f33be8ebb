"""Every map method on towers without a CLS token (attention pooling with a learned probe, mean pooling).

The towers are the random toy CLIP with its CLS token removed and its head replaced (the same blocks, the same
text side), so what is tested is the downstream code's handling of the pooling head and of the token prefix,
independently of any one source library's family.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliplens.errors import UnsupportedArchitectureError
from cliplens.maps import get_map, map_names
from tests.pooled_towers import pooled_toy as _pooled


@pytest.fixture(scope="module", params=["map", "mean"])
def tower(request, random_toy_weights):
    return _pooled(random_toy_weights, request.param)


def test_the_decomposition_sums_to_the_embedding_without_a_cls_token(tower):
    px = tower.preprocess([torch.rand(3, 64, 64), torch.rand(3, 64, 64)])
    emb = tower.encode_image(px)
    dec = tower.decompose(px, spatial=True)
    assert dec.heads.shape[2] == 1 or dec.heads.shape[-3] == 64  # 64 patches, no CLS
    dec.check()
    torch.testing.assert_close(dec.reconstruct(), emb, rtol=1e-4, atol=1e-5)
    # the per-token maps of the decomposition cover the 8x8 patches only
    t = F.normalize(torch.randn(3, tower.vision.embed_dim), dim=-1)
    assert dec.normalized().project(t).token_map().shape[-2:] == (8, 8)


@pytest.mark.parametrize("method", [m for m in map_names(second_backbone=False) if m != "chefer"])
def test_every_map_method_runs_on_a_tower_without_cls(tower, method):
    maps = get_map(method)(tower, [torch.rand(3, 64, 64), torch.rand(3, 48, 80)], ["red circle", "blue square"],
                           normalization="raw")
    assert len(maps) == 2
    for item in maps.images:
        assert item.raw.shape[0] == 2 and torch.isfinite(item.raw).all()
        # a map varies over the image (not the flat baselines; not a mean's pooling weights)
        constant = method in ("nothing", "uniform") or (method == "raw-attention" and tower.vision.head.kind == "mean")
        assert (item.raw.std() > 0) != constant


def test_raw_attention_is_the_probes_attention_and_rollout_reads_through_it(random_toy_weights):
    m = _pooled(random_toy_weights, "map")
    px = m.preprocess([torch.rand(3, 64, 64)])
    texts = get_map("raw-attention")
    out = m.run(px, names=["final"])
    alpha = m.vision.head.pattern(m.vision.head.norm(out["final"]))  # [1, Hp, N]
    from cliplens.maps.targets import TextEmbeddings

    te = TextEmbeddings(directions=F.normalize(torch.randn(1, 32), dim=-1), labels=["x"])
    got = texts.raw(m, px, te)
    torch.testing.assert_close(got[0, 0], alpha.mean(1)[0].reshape(8, 8))
    # rollout: the probe row times the product of (½ mean-head attention + ½ I) over the blocks (naive loop)
    names = [f"blocks.{i}.attn.pattern" for i in range(m.vision.num_layers)]
    pats = m.run(px, names=names)
    joint = torch.eye(64)
    for n in names:
        joint = (0.5 * pats[n][0].mean(0) + 0.5 * torch.eye(64)) @ joint
    want = alpha.mean(1)[0] @ joint
    torch.testing.assert_close(get_map("rollout").raw(m, px, te)[0, 0], want.reshape(8, 8), rtol=1e-4, atol=1e-6)


def test_chefer_refuses_a_tower_without_cls(random_toy_weights):
    m = _pooled(random_toy_weights, "map")
    with pytest.raises(UnsupportedArchitectureError, match="no CLS token"):
        get_map("chefer").raw(m, m.preprocess([torch.rand(3, 64, 64)]), None)


def test_legrad_on_an_attention_pooled_tower_follows_the_official_rule(random_toy_weights):
    """Naive: per layer, pool the block's tokens through the probe (no final norm), score, differentiate w.r.t. the
    probe's attention, ReLU, mean over pool heads; sum; the empty prompt's min-max map above 0.8 zeroes it."""
    from cliplens.maps.targets import TextEmbeddings

    m = _pooled(random_toy_weights, "map")
    head = m.vision.head
    px = m.preprocess([torch.rand(3, 64, 64)])
    t = F.normalize(torch.randn(2, 32), dim=-1)
    e = F.normalize(torch.randn(32), dim=-1)
    L = m.vision.num_layers
    out = m.run(px, names=[f"blocks.{i}.resid_post" for i in range(L)])

    def grads(x, d):
        q = F.linear(head.probe, head.q_weight, head.q_bias).reshape(4, 1, -1)
        k = F.linear(x[0], head.k_weight, head.k_bias).reshape(64, 4, -1).transpose(0, 1)
        a = torch.softmax(q @ k.transpose(-1, -2) / (k.shape[-1] ** 0.5), -1)[:, 0].detach().requires_grad_(True)
        v = F.linear(x[0], head.v_weight, head.v_bias).reshape(64, 4, -1).transpose(0, 1)  # [Hp, N, d]
        o = F.linear((a[:, None] @ v)[:, 0].reshape(-1), head.out_weight, head.out_bias)
        z = o + head.mlp(o[None])[0]
        s = F.normalize(z, dim=-1) @ d
        (g,) = torch.autograd.grad(s, [a])
        return g.relu().mean(0)  # [N]

    want = []
    for j in range(2):
        tot = sum(grads(out[f"blocks.{i}.resid_post"], t[j]) for i in range(L - 2, L))
        emp = sum(grads(out[f"blocks.{i}.resid_post"], e) for i in range(L - 2, L))
        emp = (emp - emp.min()) / (emp.max() - emp.min())
        want.append(tot.masked_fill(emp > 0.8, 0).reshape(8, 8))
    te = TextEmbeddings(directions=t, labels=["a", "b"], empty=e)
    got = get_map("legrad").raw(m, px, te)[0]
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_pooled_tower_in_half_precision_sums_within_its_dtypes_tolerance(random_toy_weights, dtype):
    from cliplens.decomposition import CHECK_TOLERANCE

    for kind in ("map", "mean"):
        m = _pooled(random_toy_weights, kind, dtype=dtype)
        assert m.vision.head.kind == kind and m.vision.dtype == dtype
        dec = m.decompose(m.preprocess([torch.rand(3, 64, 64), torch.rand(3, 64, 64)]).to(dtype))
        assert dec.tolerance == CHECK_TOLERANCE[dtype] and m.vision.head.kind == kind
        dec.check()
