"""TEXTSPAN from a store against the naive implementation written straight from the algorithm
(tests/analyses/textspan_naive.py): the same texts in the same order, the same scores, and the same share of
variance removed by each text's direction (measured there by removing it)."""

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
    res = textspan(store, texts, R, last=2, m=6, rank=rank)
    assert [h.name for h in res.heads] == [f"L{layer}.H{h}" for layer in (4, 5) for h in range(4)]
    # [K, 2, H, E] in float64 (as textspan computes), independent of textspan's factorised form
    C = store.head_terms(layers=[4, 5], dtype=torch.float64)
    for h in res.heads:
        ref = textspan_naive(C[:, h.layer - 4, h.head].numpy(), R.numpy(), r=rank or store.shape["head_dim"], m=6)
        assert h.indices == list(ref.indices), h.name
        assert h.texts == [texts[j] for j in ref.indices]
        np.testing.assert_allclose(h.scores, ref.variances, rtol=1e-5)
        np.testing.assert_allclose(h.total_variance, ref.total_variance, rtol=1e-5)
        # the share of the head's variance each text's direction removed, and their running sum
        np.testing.assert_allclose(h.fractions, ref.shares, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(h.removed, ref.removed, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(h.cumulative, np.cumsum(ref.shares), rtol=1e-5, atol=1e-12)
        residual = ref.reconstruction - (C[:, h.layer - 4, h.head].numpy() - ref.mean)  # what the texts leave
        assert h.explained == pytest.approx(1 - np.sum(residual ** 2) / (N - 1) / ref.total_variance, rel=1e-6)
        assert all(f >= s / h.total_variance - 1e-12 for f, s in zip(h.fractions, h.scores, strict=True))


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
    lines = (tmp_path / "L5.H2.txt").read_text().splitlines()
    assert lines[0].startswith("# text\tshare of the head's variance removed\tcumulative share") and res.images == 20
    h = res.heads[0]
    assert [line.split("\t") for line in lines[1:]] == [
        [t, f"{f:.4f}", f"{c:.4f}", f"{v:.6g}"] for t, f, c, v in zip(h.texts, h.fractions, h.cumulative, h.scores,
                                                                       strict=True)]
    d = json.loads((tmp_path / "textspan.json").read_text())
    assert d["heads"][0]["share_removed"] == h.fractions and d["heads"][0]["cumulative_share"][-1] == h.explained
    assert d["heads"][0]["pick_scores"] == h.scores and "not a share" in d["columns"]["pick_scores"]
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
    # a result of an earlier cliplens (its "fractions" were pick scores) is refused, saying why
    old = json.loads((tmp_path / "textspan.json").read_text())
    for h in old["heads"]:
        h["variances"] = h.pop("pick_scores")
        h["fractions"] = [v / h["total_variance"] for v in h["variances"]]
        del h["share_removed"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(InvalidInputError, match="earlier cliplens.*run 'cliplens textspan"):
        TextSpanResult.read(tmp_path / "old.json")


def test_fewer_images_than_the_rank_matches_the_naive_algorithm(store, pool):
    # K = 10 images < d_head: C has only 10 right singular vectors, as the naive SVD finds
    texts, R = pool
    res = textspan(store, texts, R, heads=[(5, 0), (5, 1), (4, 3)], m=6, images=range(10), with_accuracy=False)
    C = store.head_terms(images=range(10), dtype=torch.float64)
    for h in res.heads:
        ref = textspan_naive(C[:, h.layer, h.head].numpy(), R.numpy(), r=store.shape["head_dim"], m=6)
        assert h.indices == list(ref.indices), h.name
        np.testing.assert_allclose(h.scores, ref.variances, rtol=1e-5)
        np.testing.assert_allclose(h.fractions, ref.shares, rtol=1e-5, atol=1e-12)
