"""The toy world's ground truth for TEXTSPAN: each head's text factor next to its measured factor."""

from __future__ import annotations

import warnings

import pytest
import torch

from cliplens.analyses.factors import factor_shares
from cliplens.analyses.pools import toy_pool_factors
from cliplens.datasets.toy import FACTORS, ToyDataset
from cliplens.errors import InvalidInputError
from cliplens.experiments.heads import head_factors
from cliplens.store import Store, StoreSettings, build_store


@pytest.fixture(scope="module")
def toy_adapter():
    import cliplens

    return cliplens.load("toy")  # the shipped toy-clip: the ground truth is about a trained model


@pytest.fixture(scope="module")
def table(toy_adapter, tmp_path_factory):
    path = tmp_path_factory.mktemp("heads") / "store"
    return head_factors(toy_adapter, n=150, seed=11, last=2, m=3, store_dir=path), Store(path)


def test_every_head_gets_its_texts_factor_and_measured_factor(table):
    t, store = table
    assert [h.name for h in t.heads] == [f"L{layer}.H{h}" for layer in (4, 5) for h in range(4)]
    factors = toy_pool_factors()
    terms = store.head_terms(layers=[4, 5])  # [K, 2, H, E]
    attrs = {f: store.attributes(f) for f in FACTORS}
    for h in t.heads:
        assert len(h.texts) == 3 and h.text_factor == factors[h.texts[0]][0]
        direct = {f: factor_shares(terms[:, h.layer - 4, h.head], attrs[f]) for f in FACTORS}
        assert h.shares == pytest.approx(direct)
        assert h.measured_factor == max(direct, key=direct.get)
        assert all(0.0 <= v <= 1.0 + 1e-9 for v in h.shares.values())
    assert t.agreement == sum(h.text_factor == h.measured_factor for h in t.heads) / len(t.heads)
    d = t.to_dict()
    assert d["settings"]["scenes"] == 150 and len(d["heads"]) == 8


def test_the_shipped_toy_model_has_heads_whose_texts_name_what_they_follow(table):
    t, _ = table
    # the last two layers of toy-clip: every head's variance is led by a scene factor its first text names
    assert t.agreement >= 0.75, [(h.name, h.texts[0], h.measured_factor) for h in t.heads]


def test_store_classifier_uses_the_toy_worlds_own_prompts(toy_adapter, tmp_path):
    data = ToyDataset(4, seed=1, label="colour")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unknown word" warning: the prompts are in the toy vocabulary
        build_store(toy_adapter, data, tmp_path / "s", settings=StoreSettings(chunk_size=4))
    st = Store(tmp_path / "s")
    assert st.header["classifier"] == {"names": data.class_prompts, "templates": ["{}"]}
    assert data.class_prompts[0] == "a photo of a red shape"
    expect = toy_adapter.encode_text(data.class_prompts)
    assert torch.allclose(st.classifier.float(), expect / expect.norm(dim=-1, keepdim=True), atol=1e-5)


def test_too_few_scenes_or_layers_are_refused(toy_adapter):
    with pytest.raises(InvalidInputError, match="at least 10 scenes"):
        head_factors(toy_adapter, n=3)
    with pytest.raises(InvalidInputError, match="1..6"):
        head_factors(toy_adapter, n=20, last=9)
