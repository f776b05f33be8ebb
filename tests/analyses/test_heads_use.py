"""Heads put to use: choosing heads for a property (by attribute labels, by TEXTSPAN texts), retrieval through
heads and spurious-cue removal, each against a direct computation written here from the definitions; and the
toy world's ground truth with the shipped models (the toy waterbirds, retrieval by colour, shape, background)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cliplens
from cliplens.analyses.ablation import Ablation, evaluate
from cliplens.analyses.pools import load_pool
from cliplens.analyses.properties import (
    HeadChoice,
    attribute_name,
    catalogue_for,
    heads_by_attribute,
    heads_by_text,
    parse_heads,
    property_name,
    random_head_sets,
    toy_properties,
)
from cliplens.analyses.retrieval import head_features, nearest, precision_at_k, query_features
from cliplens.analyses.spurious import debias, groups_of
from cliplens.analyses.textspan import HeadSpan, textspan
from cliplens.datasets import load_toy
from cliplens.errors import InvalidInputError
from cliplens.store import Store, StoreSettings, build_store

#: the toy waterbirds as a data set: circles and squares on striped or dotted backgrounds, groups balanced
WATERBIRDS = "toy:label=shape,shapes=circle|square,bg_kind=striped|dotted,sizes=small,n={n},seed={seed}"


def _eta2(C: np.ndarray, values: list) -> float:
    """Between-value over total variance, written out."""
    mean = C.mean(0)
    total = sum(float(((c - mean) ** 2).sum()) for c in C)
    between = 0.0
    for v in set(values):
        rows = [i for i, x in enumerate(values) if x == v]
        between += len(rows) * float(((C[rows].mean(0) - mean) ** 2).sum())
    return between / total


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    """The shipped toy CLIP over 240 single-object scenes (labels: shape; attributes: every factor)."""
    model = cliplens.load("toy")
    out = tmp_path_factory.mktemp("heads") / "toy"
    build_store(model, load_toy("toy:label=shape,n=240,seed=5"), out,
                settings=StoreSettings(chunk_size=100, batch_size=60))
    return model, Store(out)


@pytest.fixture(scope="module")
def spans(toy_store):
    model, st = toy_store
    texts = load_pool("toy")
    return textspan(st, texts, model.encode_text(texts), last=6, m=8, with_accuracy=False)


# ---- choosing heads ------------------------------------------------------------------------------------------
def test_heads_by_attribute_are_the_largest_eta2(toy_store):
    _, st = toy_store
    choice = heads_by_attribute(st, "background", k=3)  # alias: the toy world's bg_kind
    assert choice.details["attribute"] == "bg_kind" and choice.by == "attribute"
    values = st.attributes("bg_kind")
    T = st.head_terms().double().numpy()
    want = {f"L{layer}.H{h}": _eta2(T[:, layer, h], values) for layer in range(6) for h in range(4)}
    assert set(choice.scores) == set(want)
    for name, v in want.items():
        assert choice.scores[name] == pytest.approx(v, rel=1e-6, abs=1e-9)
    best = sorted(want, key=lambda n: -want[n])[:3]
    assert sorted(choice.names) == sorted(best)


def test_heads_by_text_against_a_direct_assignment():
    # three properties, orthogonal descriptions; the span texts sit near one property each
    E = 8
    basis = torch.eye(E)
    emb = {"red thing": basis[0], "blue thing": basis[1], "a circle": basis[2], "a square": basis[3],
           "on stripes": basis[4], "reddish": basis[0] * 0.9 + basis[5] * 0.1, "roundish": basis[2] + 0.2 * basis[6],
           "stripy": basis[4] + 0.3 * basis[7], "mixed": basis[0] * 0.6 + basis[2] * 0.8}
    catalogue = {"colour": ("red thing", "blue thing"), "shape": ("a circle", "a square"), "background": ("on stripes",)}
    spans = [HeadSpan(0, 0, ["reddish", "roundish"], [3.0, 1.0], [0.5, 0.2], 6.0),
             HeadSpan(0, 1, ["stripy", "mixed"], [2.0, 1.0], [0.4, 0.3], 5.0),
             HeadSpan(1, 0, ["roundish", "stripy"], [2.0, 1.0], [0.6, 0.1], 3.0)]
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.stack([emb[t] for t in texts])

    choice = heads_by_text(spans, "shape", encode, k=2, catalogue=catalogue)
    # direct: "mixed" is closer to "a circle" (0.8) than to "red thing" (0.6): a shape text
    assert choice.scores == pytest.approx({"L0.H0": 0.2, "L0.H1": 0.3, "L1.H0": 0.6})
    assert choice.names == ["L0.H1", "L1.H0"] and choice.by == "text"
    colour = heads_by_text(spans, "color", encode, k=5, catalogue=catalogue)  # alias
    assert colour.property == "colour" and colour.names == ["L0.H0"]  # only heads with a positive score
    own = heads_by_text(spans, "stripes", encode, k=1, catalogue=catalogue, descriptions=["on stripes"])
    assert own.names == ["L0.H1"]  # "stripy" (0.4) beats L1.H0's (0.1)
    with pytest.raises(InvalidInputError, match="unknown property 'smell'"):
        heads_by_text(spans, "smell", encode, catalogue=catalogue)


def test_toy_text_choice_finds_the_measured_heads(toy_store, spans):
    # on the shipped toy CLIP, heads chosen from TEXTSPAN texts alone are heads whose measured factor
    # (largest eta^2 over the true scene factors) is that property
    model, st = toy_store
    T = st.head_terms().double().numpy()
    factors = ["shape", "colour", "bg_kind", "bg_colour", "position", "size"]
    values = {f: st.attributes(f) for f in factors}
    measured = {f"L{layer}.H{h}": max(factors, key=lambda f: _eta2(T[:, layer, h], values[f]))
                for layer in range(6) for h in range(4)}
    for prop, factor in (("colour", "colour"), ("shape", "shape"), ("background", "bg_kind")):
        choice = heads_by_text(spans, prop, model.encode_text, k=2, catalogue=catalogue_for(st))
        assert len(choice.heads) == 2
        assert all(measured[n] == factor for n in choice.names), (prop, choice.names, measured)


def test_names_and_parsing(toy_store):
    _, st = toy_store
    assert parse_heads("L5.H0, l-1.h2,L0.H3", st) == [(0, 3), (5, 0), (5, 2)]
    for bad, msg in (("L6.H0", "does not exist"), ("L0.H4", "does not exist"), ("5.0", "cannot read"),
                     ("", "no heads")):
        with pytest.raises(InvalidInputError, match=msg):
            parse_heads(bad, st)
    assert attribute_name(st, "background") == "bg_kind" and attribute_name(st, "color") == "colour"
    assert attribute_name(st, "texture") is None
    assert property_name("location", toy_properties()) == "position"
    assert catalogue_for(st)["colour"][0] == "a photo of a red shape"
    with pytest.raises(InvalidInputError, match="no attribute 'texture'"):
        heads_by_attribute(st, "texture")
    sets = random_head_sets([(0, 0), (0, 1), (1, 0), (1, 1)], 2, 5, seed=3)
    assert sets == random_head_sets([(1, 1), (0, 1), (1, 0), (0, 0)], 2, 5, seed=3)
    assert all(len(set(s)) == 2 for s in sets) and len({tuple(s) for s in sets}) > 1


# ---- retrieval ---------------------------------------------------------------------------------------------------
def test_head_features_and_precision_against_direct_computations(toy_store):
    _, st = toy_store
    heads = [(3, 1), (5, 1)]
    T = st.head_terms().double()
    want = T[:, 3, 1] + T[:, 5, 1]
    got = head_features(st, heads)
    assert torch.allclose(got.double(), want, atol=1e-5)
    emb = head_features(st, None)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(st)), atol=1e-5)
    values = st.attributes("colour")
    f = torch.nn.functional.normalize(want, dim=-1).numpy()
    hits = 0
    for i in range(len(st)):  # every image queries the others
        sims = f @ f[i]
        sims[i] = -np.inf
        top = np.argsort(-sims, kind="stable")[:10]
        hits += sum(values[j] == values[i] for j in top)
    assert precision_at_k(got, values, 10) == pytest.approx(hits / (10 * len(st)), abs=1e-3)
    with pytest.raises(InvalidInputError, match="needs more than"):
        precision_at_k(got[:5], values[:5], 10)


def test_query_image_equals_its_store_row(toy_store, tmp_path):
    model, st = toy_store
    data = load_toy("toy:label=shape,n=240,seed=5")
    path = tmp_path / "q.png"
    data[7].load().save(path)
    heads = [(3, 1), (1, 2)]
    feats = head_features(st, heads)
    q = query_features(model, model.preprocess([str(path)]), heads)[0]
    assert torch.allclose(q, feats[7], atol=1e-4)
    nb = nearest(st, feats, q, k=3)
    assert nb.rows[0] == 7 and nb.similarity[0] == pytest.approx(1.0, abs=1e-5)
    nb = nearest(st, feats, feats[7], k=3, exclude=7)
    assert 7 not in nb.rows and len(nb.rows) == 3 and list(nb.similarity) == sorted(nb.similarity, reverse=True)
    row = nb.to_list(st, "colour")[0]
    assert row["colour"] == st.attributes("colour")[nb.rows[0]] and row["rank"] == 1


def test_toy_retrieval_by_property_beats_the_full_embedding(toy_store, spans):
    # ground truth: through heads chosen from TEXTSPAN texts, precision@10 for the property is clearly higher
    model, st = toy_store
    full = head_features(st, None)
    for prop, attr in (("colour", "colour"), ("shape", "shape"), ("background", "bg_kind")):
        choice = heads_by_text(spans, prop, model.encode_text, k=3, catalogue=catalogue_for(st))
        values = st.attributes(attr)
        through, baseline = precision_at_k(head_features(st, choice.heads), values), precision_at_k(full, values)
        assert through > baseline + 0.1, (prop, through, baseline)


# ---- spurious cues ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def waterbirds(tmp_path_factory):
    model = cliplens.load("toy-spurious")
    out = tmp_path_factory.mktemp("heads") / "waterbirds"
    build_store(model, load_toy(WATERBIRDS.format(n=400, seed=11)), out,
                settings=StoreSettings(chunk_size=200, batch_size=100))
    return Store(out)


def test_groups_and_accuracies_against_a_direct_computation(waterbirds):
    st = waterbirds
    group, names = groups_of(st, "bg_kind")
    assert names == ["circle on dotted", "circle on striped", "square on dotted", "square on striped"]
    heads = [(2, 2), (4, 2)]
    res = debias(st, HeadChoice("bg_kind", "hand", heads), "bg_kind", random_sets=4, seed=1)
    # direct: joint-space head terms replaced by their mean over the data set, then the classifier
    T = st.head_terms(normalized=False, dtype=torch.float64)
    emb = torch.from_numpy(st.field("embedding")[:]).double()
    W = st.classifier.double()
    labels, bg = st.labels, st.attributes("bg_kind")

    def accs(hs):
        e = emb.clone()
        for layer, h in hs:
            e -= T[:, layer, h] - T[:, layer, h].mean(0)
        pred = (e @ W.T).argmax(1).numpy()
        return {f"{st.class_names[c]} on {b}": float((pred[(labels == c) & (np.array(bg) == b)] == c).mean())
                for c in range(2) for b in ("dotted", "striped")}

    assert res.before.groups == pytest.approx(accs([]))
    assert res.after.groups == pytest.approx(accs(heads))
    assert res.after.average == pytest.approx(np.mean(list(accs(heads).values())))
    assert res.after.worst == pytest.approx(min(accs(heads).values()))
    assert res.before.overall == pytest.approx(float((evaluate(st).predictions == labels).mean()))
    assert len(res.random) == 4 and all(len(hs) == 2 for hs, _ in res.random)
    for hs, acc in res.random:
        assert acc.groups == pytest.approx(accs(hs))
    assert res.best_random[1].worst == max(a.worst for _, a in res.random)
    d = res.to_dict()
    assert d["after"]["worst_group"] == res.after.worst_group and d["heads"]["heads"] == ["L2.H2", "L4.H2"]
    with pytest.raises(InvalidInputError, match="no attribute 'place'"):
        groups_of(st, "place")
    with pytest.raises(InvalidInputError, match="no heads were chosen"):
        debias(st, HeadChoice("x", "text", []), "bg_kind")
    assert evaluate(st, Ablation(heads=tuple(heads))).predictions.shape == (len(st),)


def test_toy_waterbirds_repaired_by_background_heads(waterbirds):
    # ground truth: the planted cue (shape captions on their usual background) is removed by mean-ablating the
    # heads the background attribute explains most; worst group +15 points or more, average not down by more
    # than 3, and better than the best of 5 random sets of as many heads
    st = waterbirds
    choice = heads_by_attribute(st, "background", k=3)
    res = debias(st, choice, "background", random_sets=5, seed=0)
    assert res.before.worst < 0.6 < res.before.average
    assert res.after.worst >= res.before.worst + 0.15
    assert res.after.average >= res.before.average - 0.03
    assert res.after.worst > res.best_random[1].worst
