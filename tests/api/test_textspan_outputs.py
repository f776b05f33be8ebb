"""``cliplens.textspan`` on any head outputs (issue 18 item 4): the same engine and the same text normalisation
as the store route, the reconstruction returned; and the store route's results unchanged by the refactor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cliplens
from cliplens.analyses.pools import load_pool
from cliplens.analyses.textspan import Span, textspan
from cliplens.errors import InvalidInputError
from cliplens.store import Store, StoreSettings, build_store
from tests.analyses.textspan_naive import textspan_naive
from tests.store.scenes import Scenes

N = 30


@pytest.fixture(scope="module")
def store(random_toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("api-textspan") / "s"
    build_store(random_toy, Scenes(N), out, settings=StoreSettings(chunk_size=16, batch_size=8, templates="none"))
    return Store(out)


@pytest.fixture(scope="module")
def pool(random_toy):
    texts = load_pool("toy")[:60]
    return texts, random_toy.encode_text(texts)


def test_outputs_route_against_the_naive_algorithm(store, pool):
    texts, R = pool
    C = store.head_terms(layers=[5], dtype=torch.float64)[:, 0, 2]  # [N, E]: head L5.H2
    span = cliplens.textspan(C, texts, R, rank=8, m=5)
    ref = textspan_naive(C.numpy(), torch.nn.functional.normalize(R.double(), dim=-1).numpy(), r=8, m=5)
    assert isinstance(span, Span) and span.indices == list(ref.indices)
    assert span.texts == [texts[j] for j in ref.indices]
    np.testing.assert_allclose(span.fractions, ref.shares, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(span.scores, ref.variances, rtol=1e-6)
    # the reconstruction: the mean plus the centred outputs' projection on the chosen directions
    np.testing.assert_allclose(span.reconstruction.numpy(), ref.reconstruction + ref.mean, rtol=1e-6, atol=1e-10)
    q = span.quality(C)
    residual = C.numpy() - span.reconstruction.numpy()
    assert q["explained"] == pytest.approx(1 - np.sum((residual - residual.mean(0)) ** 2) / (N - 1)
                                           / span.total_variance, rel=1e-6)
    assert q["relative_error"] == pytest.approx(np.linalg.norm(residual) / np.linalg.norm(C.numpy()), rel=1e-9)
    cos = np.sum(C.numpy() * span.reconstruction.numpy(), 1) / (np.linalg.norm(C.numpy(), axis=1)
                                                                 * np.linalg.norm(span.reconstruction.numpy(), axis=1))
    assert q["cosine"] == pytest.approx(cos.mean(), rel=1e-9)


def test_store_route_equals_the_outputs_route(store, pool):
    """The store route (factorised ``C = Z Q``) and the route on ``Store.head_terms`` (``C`` as given) choose the
    same texts with the same shares: one engine, one normalisation; the store route is unchanged (it still
    matches the naive algorithm in tests/analyses/test_textspan.py)."""
    texts, R = pool
    res = textspan(store, texts, R, last=1, m=4, with_accuracy=False)
    C = store.head_terms(layers=[-1], dtype=torch.float64)[:, 0]  # [N, H, E]
    spans = cliplens.textspan(C, texts, R, rank=store.shape["head_dim"], m=4)
    assert len(spans) == len(res.heads) == store.shape["heads"]
    for head, span in zip(res.heads, spans, strict=True):
        assert head.texts == span.texts
        np.testing.assert_allclose(head.fractions, span.fractions, rtol=1e-6, atol=1e-12)
        assert head.total_variance == pytest.approx(span.total_variance, rel=1e-9)


def test_texts_are_normalised_by_one_rule_in_both_routes(store, pool):
    """Text embeddings of any length give the same result (each is L2-normalised, as the store route always did);
    without that rule a long text would win by its length."""
    texts, R = pool
    scale = torch.linspace(0.1, 10.0, R.shape[0])[:, None]
    C = store.head_terms(layers=[4], dtype=torch.float64)[:, 0, 1]
    a, b = cliplens.textspan(C, texts, R, m=4), cliplens.textspan(C, texts, R * scale, m=4)
    assert a.texts == b.texts and np.allclose(a.fractions, b.fractions, rtol=1e-5)
    s1 = textspan(store, texts, R, heads=[(4, 1)], m=4, with_accuracy=False).heads[0]
    s2 = textspan(store, texts, R * scale, heads=[(4, 1)], m=4, with_accuracy=False).heads[0]
    assert s1.texts == s2.texts and np.allclose(s1.fractions, s2.fractions, rtol=1e-5)


def test_texts_as_strings_with_a_model_or_as_embeddings(store, pool, random_toy):
    texts, R = pool
    C = store.head_terms(layers=[5], dtype=torch.float64)[:, 0, 0]
    by_model = cliplens.textspan(C, texts, model=random_toy, m=3)
    by_emb = cliplens.analyses.textspan.textspan(C, R, m=3)  # embeddings alone: labelled by row
    assert by_model.indices == by_emb.indices and by_emb.texts == [f"text {i}" for i in by_emb.indices]
    # the default rank is C's numerical rank; a single-head tensor of [N, 1, E] is a list of one
    assert cliplens.textspan(C[:, None], texts, R, m=3)[0].texts == by_model.texts


def test_outputs_route_refuses_what_it_cannot_use(store, pool):
    texts, R = pool
    C = store.head_terms(layers=[5])[:, 0, 0]
    with pytest.raises(InvalidInputError, match="dimension"):
        cliplens.textspan(C[:, :10], texts, R)
    with pytest.raises(InvalidInputError, match="last="):
        cliplens.textspan(C, texts, R, last=2)
    with pytest.raises(InvalidInputError, match="text_embeddings= or model="):
        cliplens.textspan(C, texts)
    with pytest.raises(InvalidInputError, match="3 texts but"):
        cliplens.textspan(C, texts[:3], R)
    with pytest.raises(InvalidInputError, match=r"\[images, dim\]"):
        cliplens.textspan(C[0], texts, R)
