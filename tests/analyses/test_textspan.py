"""TEXTSPAN from a store against the naive implementation written straight from the algorithm
(tests/analyses/textspan_naive.py): the same texts in the same order, the same variances."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cliplens.analyses.factors import explained_by_factors, factor_shares
from cliplens.analyses.pools import load_pool
from cliplens.analyses.textspan import textspan
from cliplens.errors import InvalidInputError
from cliplens.store import Store, StoreSettings, build_store
from tests.analyses.textspan_naive import textspan_naive
from tests.store.scenes import Scenes

N = 40


@pytest.fixture(scope="module")
def store(random_toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("textspan") / "s"
    build_store(random_toy, Scenes(N), out, settings=StoreSettings(chunk_size=16, batch_size=8, templates="none"))
    return Store(out)


@pytest.fixture(scope="module")
def pool(random_toy):
    texts = load_pool("toy")
    return texts, random_toy.encode_text(texts)


@pytest.mark.parametrize("rank", [None, 8])
def test_same_texts_and_variances_as_the_naive_algorithm(store, pool, rank):
    texts, R = pool
    res = textspan(store, texts, R, layers=2, m=6, rank=rank)
    assert [h.name for h in res.heads] == [f"L{layer}.H{h}" for layer in (4, 5) for h in range(4)]
    # [K, 2, H, E] in float64 (as textspan computes), independent of textspan's factorised form
    C = store.head_terms(layers=[4, 5], dtype=torch.float64)
    for h in res.heads:
        ref = textspan_naive(C[:, h.layer - 4, h.head].numpy(), R.numpy(), r=rank or store.shape["head_dim"], m=6)
        assert h.indices == list(ref.indices), h.name
        assert h.texts == [texts[j] for j in ref.indices]
        np.testing.assert_allclose(h.variances, ref.variances, rtol=1e-5)
        np.testing.assert_allclose(h.total_variance, ref.total_variance, rtol=1e-5)
        np.testing.assert_allclose(h.fractions, ref.fractions, rtol=1e-5)


def test_rebuilt_representation_equals_a_direct_computation(store, pool):
    texts, R = pool
    res = textspan(store, texts, R, heads=[(5, 0), (5, 3), (4, 1)], m=5)
    C = store.head_terms()  # [K, L, H, E]
    unit = torch.nn.functional.normalize(torch.from_numpy(store.field("embedding")[:]).double(), dim=-1)
    rebuilt = unit.clone()
    for h in res.heads:
        c = C[:, h.layer, h.head].double()
        ref = textspan_naive(c.numpy(), R.numpy(), r=16, m=5)
        rebuilt -= c  # the head's own term out ...
        rebuilt += torch.from_numpy(ref.mean + ref.reconstruction)  # ... its reconstruction in
    rest = unit - sum(C[:, h.layer, h.head].double() for h in res.heads)
    rebuilt = rebuilt - rest + rest.mean(0)  # every other component mean-ablated
    pred = (rebuilt @ store.classifier.double().T).argmax(1).numpy()
    assert res.accuracy == pytest.approx(float((pred == store.labels).mean()))
    assert res.baseline_accuracy == pytest.approx(float(((unit @ store.classifier.double().T).argmax(1).numpy()
                                                        == store.labels).mean()))


def test_outputs_and_errors(store, pool, tmp_path):
    texts, R = pool
    res = textspan(store, texts, R, heads=[(-1, 2)], m=3, images=range(20))
    files = res.write(tmp_path)
    assert [f.name for f in files] == ["textspan.json", "L5.H2.txt"]
    assert len((tmp_path / "L5.H2.txt").read_text().splitlines()) == 3 and res.images == 20
    with pytest.raises(InvalidInputError, match="does not exist"):
        textspan(store, texts, R, heads=[(0, 9)], m=3)
    with pytest.raises(InvalidInputError, match="texts but"):
        textspan(store, texts[:3], R, m=3)


def test_factor_shares_against_a_hand_computation(store):
    g = torch.Generator().manual_seed(0)
    C = torch.randn(6, 4, generator=g)
    values = ["a", "a", "b", "b", "b", "c"]
    mean = C.mean(0)
    between = sum((values.count(v) / 6) * ((C[[i for i, x in enumerate(values) if x == v]].mean(0) - mean) ** 2).sum()
                  for v in set(values))
    assert factor_shares(C, values) == pytest.approx(float(between / ((C - mean) ** 2).sum(1).mean()))
    assert factor_shares(C, ["same"] * 6) == pytest.approx(0.0) and factor_shares(C, list("abcdef")) == pytest.approx(1.0)
    shares = explained_by_factors(store, ["shape", "colour"], [(5, 0), (4, 2)])
    assert [s.name for s in shares] == ["L5.H0", "L4.H2"] and all(0 <= v <= 1 for s in shares for v in s.shares.values())


def test_results_read_back(store, pool, tmp_path):
    from cliplens.analyses.textspan import TextSpanResult

    texts, R = pool
    res = textspan(store, texts, R, heads=[(-1, 2), (4, 0)], m=3)
    res.write(tmp_path)
    back = TextSpanResult.read(tmp_path)
    assert back.to_dict() == json.loads((tmp_path / "textspan.json").read_text())
    assert [h.texts for h in back.heads] == [h.texts for h in res.heads]
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(InvalidInputError, match="not a TEXTSPAN result"):
        TextSpanResult.read(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError, match="cannot read"):
        TextSpanResult.read(tmp_path / "missing.json")


def test_fewer_images_than_the_rank_matches_the_naive_algorithm(store, pool):
    # K = 10 images < d_head: C has only 10 right singular vectors, as the naive SVD finds
    texts, R = pool
    res = textspan(store, texts, R, heads=[(5, 0), (5, 1), (4, 3)], m=6, images=range(10), with_accuracy=False)
    C = store.head_terms(images=range(10), dtype=torch.float64)
    for h in res.heads:
        ref = textspan_naive(C[:, h.layer, h.head].numpy(), R.numpy(), r=store.shape["head_dim"], m=6)
        assert h.indices == list(ref.indices), h.name
        np.testing.assert_allclose(h.variances, ref.variances, rtol=1e-5)
