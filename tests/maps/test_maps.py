"""Map methods: the registry, the decomposition map against an independent computation, baselines."""

from __future__ import annotations

import pytest
import torch

from cliplens.errors import InvalidInputError
from cliplens.maps import MapMethod, TextEmbeddings, contrast_others, get_map, map_names, register_map


def test_registry_and_user_methods():
    assert {"decomposition", "uniform", "gaussian"} <= set(map_names())
    with pytest.raises(InvalidInputError, match="unknown map method 'nope'"):
        get_map("nope")

    class Constant(MapMethod):
        def __init__(self, value: float = 1.0):
            super().__init__(value=value)

        def raw(self, model, pixels, texts):
            return torch.full((pixels.shape[0], texts.directions.shape[0], 2, 2), self.params["value"])

    register_map("test-constant")(Constant)
    m = get_map("test-constant", value=3.0)
    texts = TextEmbeddings(torch.zeros(4, 5), ("a", "b", "c", "d"))
    assert m.name == "test-constant" and float(m.raw(None, torch.zeros(2, 3, 8, 8), texts).max()) == 3.0
    with pytest.raises(InvalidInputError, match="already registered"):
        register_map("test-constant")(Constant)
    with pytest.raises(InvalidInputError, match="test-constant"):
        get_map("test-constant", colour="red")


def test_contrast_others_is_minus_the_mean_of_the_others():
    x = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(0))
    got = contrast_others(x)
    for k in range(4):
        others = torch.stack([x[j] for j in range(4) if j != k]).mean(0)
        torch.testing.assert_close(got[k], x[k] - others)
    torch.testing.assert_close(contrast_others(x[:1]), x[:1])


def test_decomposition_map_is_the_token_map(random_toy):
    model = random_toy
    g = torch.Generator().manual_seed(3)
    px = torch.randn(2, 3, 64, 64, generator=g)
    texts = ["a red circle", "a blue star", "a green square"]
    directions = model.encode_text(texts)
    emb = TextEmbeddings(directions, tuple(texts))
    got = get_map("decomposition").raw(model, px, emb)
    dec = model.decompose(px, spatial=True).normalized()
    heads = dec.head_terms()  # [B, L, N, H, E], independent of project()/token_map()
    per_token = heads.sum(dim=(1, 3))[:, 1:]  # [B, gh*gw, E]
    want = (per_token @ directions.T).transpose(1, 2).reshape(2, 3, *dec.grid)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    last = get_map("decomposition", layers=[-1]).raw(model, px, emb)
    per_token_last = heads[:, -1:].sum(dim=(1, 3))[:, 1:]
    torch.testing.assert_close(last, (per_token_last @ directions.T).transpose(1, 2).reshape(2, 3, *dec.grid),
                               rtol=1e-4, atol=1e-6)
    # chosen heads: only those (layer, head) terms
    two = get_map("decomposition", heads=[(-1, 0), (2, 3)]).raw(model, px, emb)
    chosen = heads[:, -1, :, 0] + heads[:, 2, :, 3]  # [B, N, E]
    torch.testing.assert_close(two, (chosen[:, 1:] @ directions.T).transpose(1, 2).reshape(2, 3, *dec.grid),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(InvalidInputError, match="does not exist"):
        get_map("decomposition", heads=[(0, 9)]).raw(model, px, emb)


def test_baselines():
    three, two = TextEmbeddings(torch.zeros(3, 8), ("a", "b", "c")), TextEmbeddings(torch.zeros(2, 8), ("a", "b"))
    uni = get_map("uniform").raw(None, torch.zeros(2, 3, 16, 16), three)
    assert uni.shape == (2, 3, 1, 1) and bool((uni == 1).all())
    nothing = get_map("nothing").raw(None, torch.zeros(2, 3, 16, 16), three)
    assert nothing.shape == (2, 3, 1, 1) and bool((nothing < 0).all())
    for H, W in ((64, 64), (48, 64)):
        g = get_map("gaussian").raw(None, torch.zeros(1, 3, H, W), two)[0]
        assert g.shape == (2, H, W) and torch.equal(g[0], g[1])
        torch.testing.assert_close(g[0], g[0].flip(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(g[0], g[0].flip(1), rtol=0, atol=1e-12)
        peak = divmod(int(g[0].argmax()), W)
        assert peak in {(H // 2 - 1, W // 2 - 1), (H // 2 - 1, W // 2), (H // 2, W // 2 - 1), (H // 2, W // 2)}
        # decreasing away from the centre along the middle row and column
        assert (g[0, H // 2, W // 2:].diff() < 0).all() and (g[0, H // 2:, W // 2].diff() < 0).all()
        assert g[0, 0, 0] < 0.2 * g.max()
