"""Neurons' effects over a store's images: a store built with --neuron-layers keeps the per-image numbers, and
the effects read back from it equal those of the model's forward; stores without them are still read (the
forward route), and old headers are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cliplens
from cliplens.analyses.neurons import second_order, store_effects
from cliplens.datasets import open_dataset
from cliplens.errors import InvalidInputError
from cliplens.images.preprocess import Preprocessor
from cliplens.store import Store, StoreSettings, build_store

SPEC = "toy:n=10,seed=61"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    model = cliplens.load("toy")
    data = open_dataset(SPEC)
    tmp = tmp_path_factory.mktemp("neuron-stores")
    with_n = tmp / "with"
    plain = tmp / "plain"
    build_store(model, data, with_n, settings=StoreSettings(chunk_size=6, batch_size=4, neuron_layers=(1, 3)))
    build_store(model, data, plain, settings=StoreSettings(chunk_size=6, batch_size=4))
    return model, data, Store(with_n), Store(plain), tmp


def test_store_keeps_neuron_factors_and_effects_match_the_forward(stores):
    model, data, st, plain, tmp = stores
    assert st.settings["neuron_layers"] == [1, 3] and "neuron_layers" not in plain.settings
    assert "neuron_weights" in st.fields and "neuron_weights" not in plain.fields
    a = store_effects(st, model, [3, 1], tmp / "a")
    b = store_effects(plain, model, [1, 3], tmp / "b")
    assert (a.source, b.source) == ("store", "forward")
    pre = Preprocessor(model.preprocess_config)
    px = torch.stack([pre.process_one(data[i].image)[0] for i in range(len(data))])
    direct = second_order(model, px, [1, 3])
    for k in (1, 3):
        ref = direct[k].scaled().numpy()
        for res in (a, b):
            got = res.effects(k)
            assert got.shape == ref.shape and isinstance(got, np.memmap)
            assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.array_equal(a.labels, st.labels)


def test_a_subset_of_the_stored_layers_and_rows(stores):
    model, _, st, _, tmp = stores
    res = store_effects(st, model, [3], tmp / "c", images=[2, 5, 7])
    full = np.load(tmp / "a" / "effects-L3.npy")
    assert res.source == "store"
    assert np.allclose(res.effects(3), full[[2, 5, 7]], atol=1e-5 * np.abs(full).max())


def test_files_are_never_overwritten_and_bad_layers_are_refused(stores):
    model, _, st, _, tmp = stores
    with pytest.raises(InvalidInputError, match="already exist"):
        store_effects(st, model, [1], tmp / "a")
    with pytest.raises(InvalidInputError, match="no later attention head"):
        store_effects(st, model, [model.vision.num_layers - 1], tmp / "d")
    with pytest.raises(InvalidInputError, match="no later attention head"):
        build_store(model, open_dataset(SPEC), tmp / "e",
                    settings=StoreSettings(neuron_layers=(model.vision.num_layers - 1,)))
