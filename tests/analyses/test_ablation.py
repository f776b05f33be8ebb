"""Mean-ablation from a store against a direct computation from the model's own decomposition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliplens.analyses.ablation import Ablation, evaluate, layer_curve, parse_components, standard_study
from cliplens.errors import InvalidInputError
from cliplens.store import Store, StoreSettings, build_store
from tests.store.scenes import Scenes

N = 24


@pytest.fixture(scope="module")
def store(random_toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "s"
    build_store(random_toy, Scenes(N), out, settings=StoreSettings(chunk_size=10, batch_size=6, templates="none"))
    return Store(out)


@pytest.fixture(scope="module")
def reference(random_toy, store):
    """Joint-space components from model.decompose (spatial), the classifier, and a direct mean-ablation."""
    data = Scenes(N)
    dec = random_toy.decompose(random_toy.preprocess([data[i].image for i in range(N)]), spatial=True)
    heads = dec.head_terms()  # [n, L, T, H, E]
    comps = {"attn": dec.attention_layer_terms(), "mlp": dec.mlp_terms(), "heads": heads.sum(2), "cls": heads[:, :, 0]}
    W = store.classifier.double()

    def ablated_logits(a: Ablation) -> torch.Tensor:
        emb = dec.embedding.double().clone()

        def swap(t):  # replace by its mean over the data set
            nonlocal emb
            emb = emb - (t - t.mean(0)).double()

        for layer in a.attention:
            swap(comps["attn"][:, layer])
        for layer, h in a.heads:
            swap(comps["heads"][:, layer, h])
        for layer in a.mlps:
            swap(comps["mlp"][:, layer + 1])
        if a.embed:
            swap(comps["mlp"][:, 0])
        for layer in a.cls_to_cls:
            swap(comps["cls"][:, layer].sum(1))
        return emb @ W.T

    return ablated_logits


ABLATIONS = [
    Ablation(),
    Ablation(attention=(0, 1, 2)),
    Ablation(attention=(-1,)),
    Ablation(heads=((5, 1), (3, 0), (3, 2))),
    Ablation(mlps=tuple(range(6)), embed=True),
    Ablation(cls_to_cls=tuple(range(6))),
    Ablation(attention=(5,), heads=((2, 2),), mlps=(1,), cls_to_cls=(3,), embed=True),
]


@pytest.mark.parametrize("ablation", ABLATIONS, ids=[a.describe()[:40] for a in ABLATIONS])
def test_ablation_equals_a_direct_computation(store, reference, ablation):
    got = evaluate(store, ablation)
    want = reference(ablation.resolved(6, 4)).argmax(1).numpy()
    np.testing.assert_array_equal(got.predictions, want)
    assert got.accuracy == pytest.approx(float((want == store.labels).mean()))


def test_the_standard_study_and_groups(store):
    study = standard_study(store)
    assert [r.ablation.attention for r in study["curve"]] == [tuple(range(i + 1)) for i in range(6)]
    assert study["baseline"].ablation.is_empty() and study["mlps_and_embed"].ablation.embed
    assert len(layer_curve(store)) == 6
    grouped = evaluate(store, groups="colour")
    assert set(grouped.group_accuracy) == set(store.attributes("colour"))
    json_ready = grouped.to_dict()
    assert json_ready["n"] == N and "groups" in json_ready


def test_components_by_name_and_errors(store):
    a = parse_components("L5.H1, L3, MLP4, embed, CLS-1")
    assert a == Ablation(attention=(3,), heads=((5, 1),), mlps=(4,), embed=True, cls_to_cls=(-1,))
    with pytest.raises(InvalidInputError, match="cannot read component"):
        parse_components("head 3")
    with pytest.raises(InvalidInputError, match="does not exist"):
        evaluate(store, Ablation(heads=((0, 7),)))
    with pytest.raises(InvalidInputError, match="ablated whole"):
        evaluate(store, Ablation(attention=(2,), heads=((2, 1),)))
    with pytest.raises(InvalidInputError, match="counted twice"):
        evaluate(store, Ablation(attention=(-1,), cls_to_cls=(5,)))
