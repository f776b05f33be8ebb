"""The toy world's ground truth for neurons: which scene factor each neuron's second-order effect follows, measured
from the scenes' true factors (η², as :mod:`cliplens.analyses.factors` measures heads), next to what its sparse text
description says (the factor of its first text in the toy pool's factor table)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliplens.analyses.factors import factor_shares
from cliplens.analyses.neurons import describe, principal_components, second_order
from cliplens.analyses.pools import load_pool, toy_pool_factors
from cliplens.datasets.toy import FACTORS, ToyDataset

LAYERS = (2, 4)
TOP = 20


@pytest.fixture(scope="module")
def measured():
    import cliplens

    model = cliplens.load("toy")  # the shipped toy-clip: the ground truth is about a trained model
    data = ToyDataset(160, seed=73, label="shape")
    px = model.preprocess([data[i].image for i in range(len(data))])
    attrs = {f: [data[i].attributes[f] for i in range(len(data))] for f in FACTORS}
    texts = load_pool("toy")
    emb = model.encode_text(texts)
    with torch.no_grad():
        effects = second_order(model, px, LAYERS)
    out = {}
    for k in LAYERS:
        e = effects[k].scaled()
        var = ((e - e.mean(0)) ** 2).sum(-1).mean(0)  # each neuron's variance over the scenes
        comp = principal_components(e.numpy(), layer=k, top_k=32)
        desc, _ = describe(comp, texts, emb, n_texts=4)
        rows = []
        for n in var.argsort(descending=True)[:TOP].tolist():
            shares = {f: factor_shares(e[:, n], attrs[f]) for f in FACTORS}
            rows.append((n, shares, desc[n], float(comp.explained[n])))
        out[k] = rows
    return out


def test_neurons_descriptions_name_the_factor_their_effects_follow(measured):
    factors = toy_pool_factors()
    for k, rows in measured.items():
        agree = [max(s, key=s.get) == factors[d.texts[0]][0] for _, s, d, _ in rows]
        assert np.mean(agree) >= 0.7, (k, [(n, max(s, key=s.get), d.texts[0]) for n, s, d, _ in rows])


def test_neurons_specialise_and_are_close_to_rank_one(measured):
    for k, rows in measured.items():
        best = [max(s.values()) for _, s, _, _ in rows]
        assert sum(b > 0.6 for b in best) >= 6, (k, best)  # many top neurons follow one factor
        assert np.median([x for *_, x in rows]) > 0.8  # one direction carries most of a neuron's top effects
    # layer 4's strongest neurons carry the label factor (shape) the model was trained to read; layer 2's several
    followed = {k: {max(s, key=s.get) for _, s, _, _ in rows[:8]} for k, rows in measured.items()}
    assert "shape" in followed[4] and len(followed[2]) >= 3, followed
