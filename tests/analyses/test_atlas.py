"""The head atlas's data against independent computations: the images shown are the store's extremes along
each text (numpy from the store's head terms and the text embeddings), and each map is the head's per-token
terms of a direct spatial decomposition projected on the text."""

from __future__ import annotations

import numpy as np
import pytest

from cliplens.analyses.atlas import build_atlas, store_dataset
from cliplens.analyses.textspan import HeadSpan, TextSpanResult
from cliplens.errors import InvalidInputError, ModelLoadError
from tests.analyses.atlas_setup import IMAGES_PER_TEXT, SPEC, atlas_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return atlas_setup(tmp_path_factory)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_shown_images_are_the_extremes_along_each_text(setup):
    store, atlas = setup.store, setup.atlas
    C = store.head_terms(layers=[4, 5]).double().numpy()  # [K, 2, H, E]
    emb = dict(zip(setup.texts, setup.emb.double().numpy(), strict=True))
    assert [h.name for h in atlas.heads] == [f"L{layer}.H{h}" for layer in (4, 5) for h in range(4)]
    for head in atlas.heads:
        assert len(head.texts) == 3
        for t in head.texts:
            scores = C[:, head.layer - 4, head.head] @ _unit(emb[t.text])
            order = np.argsort(scores)
            assert [s.row for s in t.top] == list(order[::-1][:IMAGES_PER_TEXT])
            assert [s.row for s in t.bottom] == list(order[:IMAGES_PER_TEXT])
            np.testing.assert_allclose([s.score for s in t.top], scores[order[::-1][:IMAGES_PER_TEXT]], rtol=1e-5)
            assert t.top[-1].score > np.sort(scores)[-IMAGES_PER_TEXT - 1] or np.isclose(
                t.top[-1].score, np.sort(scores)[-IMAGES_PER_TEXT - 1])
            # rows, data-set indices and ids agree with the store
            for s in (*t.top, *t.bottom):
                assert s.index == store.indices[s.row] and s.id == store.ids[s.row]


@pytest.mark.parametrize("layer", [4, 5])  # 4: the model re-run on the images shown; 5: the store's spatial field
def test_a_map_equals_a_direct_spatial_decomposition(setup, layer):
    model, store, atlas = setup.model, setup.store, setup.atlas
    assert atlas.map_source == {4: "model", 5: "store"}
    dataset = store_dataset(store)
    head = atlas.heads_of(layer)[2]
    text = head.texts[1]
    shown = text.bottom[0]
    px = model.preprocess([dataset[shown.index].image])
    terms = model.decompose(px, spatial=True, layers=[layer]).normalized().head_terms()  # [1, 1, N, H, E]
    direct = terms[0, 0, :, head.head].double().numpy() @ _unit(dict(zip(setup.texts, setup.emb.double().numpy(),
                                                                        strict=True))[text.text])
    gh, gw = atlas.grid
    assert (gh, gw) == (8, 8) and shown.map.shape == (gh, gw)
    np.testing.assert_allclose(shown.map, direct[1:].reshape(gh, gw), atol=2e-6, rtol=1e-4)
    assert shown.cls == pytest.approx(float(direct[0]), abs=2e-6)
    # the patches and the CLS token add up to the image's score
    assert shown.map.sum() + shown.cls == pytest.approx(shown.score, abs=1e-5)
    # the image shown is the model's input
    view = atlas.views[shown.row]
    assert view.shape == (64, 64, 3) and view.dtype == np.uint8


def test_the_data_set_is_reopened_from_the_store_or_checked(setup):
    store = setup.store
    assert store_dataset(store).fingerprint() == store.header["dataset"]["fingerprint"]
    assert store_dataset(store, SPEC).fingerprint() == store.header["dataset"]["fingerprint"]
    with pytest.raises(InvalidInputError, match="is not the one the store was made from"):
        store_dataset(store, SPEC.replace("seed=5", "seed=6"))


def test_refusals(setup, random_toy):
    store, spans = setup.store, setup.spans
    with pytest.raises(ModelLoadError, match="not the one the store was made with"):
        build_atlas(store, spans, random_toy)
    alien = TextSpanResult([HeadSpan(9, 0, ["a circle"], [1.0], [0.5], 2.0)], 32, 1, 48, 160)
    with pytest.raises(InvalidInputError, match=r"heads that the store's model does not have \(L9.H0"):
        build_atlas(store, alien, setup.model)
    with pytest.raises(InvalidInputError, match="computed on 500 images but the store holds 48"):
        build_atlas(store, TextSpanResult(spans.heads, 32, 3, 500, 160), setup.model)
    with pytest.raises(InvalidInputError, match="images per text must be at least 1"):
        build_atlas(store, spans, setup.model, images_per_text=0)
