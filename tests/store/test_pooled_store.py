"""A store of an attention-pooled tower (no CLS token; SigLIP's MAP head): what it holds equals the decomposition,
and the store's analyses (ablation, TEXTSPAN, head terms) run on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliplens.analyses.ablation import Ablation, evaluate, standard_study
from cliplens.analyses.textspan import textspan
from cliplens.store import Store, StoreSettings, build_store
from tests.pooled_towers import pooled_toy
from tests.store.scenes import Scenes


@pytest.fixture(scope="module")
def case(random_toy_weights, tmp_path_factory):
    model = pooled_toy(random_toy_weights, "map")
    out = tmp_path_factory.mktemp("pooled") / "s"
    build_store(model, Scenes(12), out, settings=StoreSettings(chunk_size=8, batch_size=4, templates="none"))
    return model, Store(out)


def test_the_store_of_a_map_tower_holds_its_decomposition(case):
    model, st = case
    assert st.header["pooling"]["kind"] == "map" and st.shape["readouts"] == 4 and st.shape["prefix_tokens"] == 0
    assert "cls_heads" not in st.fields and "nonlinear" in st.fields
    data = Scenes(12)
    px = model.preprocess([data[i].image for i in range(12)])
    dec = model.decompose(px, spatial=False)
    dec.check()
    torch.testing.assert_close(torch.from_numpy(st.field("heads")[:]), dec.heads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(st.field("nonlinear")[:]), dec.nonlinear, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(st.field("embedding")[:]), model.encode_image(px),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.head_terms(layers=[-1]), dec.normalized().head_terms()[:, -1:], rtol=1e-4,
                               atol=1e-6)


def test_ablation_and_textspan_run_on_a_map_tower(case):
    model, st = case
    study = standard_study(st)
    assert study["cls_to_cls"] is None and len(study["curve"]) == model.vision.num_layers
    # ablating nothing predicts from the stored embeddings
    base = evaluate(st)
    W = st.classifier.float()
    np.testing.assert_array_equal(base.predictions, (torch.from_numpy(st.field("embedding")[:]) @ W.T).argmax(1))
    L, H = st.shape["layers"], st.shape["heads"]
    every = evaluate(st, Ablation(heads=tuple((layer, h) for layer in range(L) for h in range(H))))
    assert every.predictions.shape == base.predictions.shape
    texts = ["red", "blue", "circle", "square", "small", "large", "left", "right"]
    emb = F.normalize(torch.randn(len(texts), model.vision.embed_dim, generator=torch.Generator().manual_seed(0)),
                      dim=-1)
    res = textspan(st, texts, emb, last=1, m=3, with_accuracy=False)
    assert len(res.heads) == H and all(len(h.texts) == 3 for h in res.heads)


def test_the_pooling_heads_lumped_mlp_can_be_mean_ablated(case, random_toy, tmp_path):
    """pool-mlp replaces the head's lumped MLP by its data-set mean in the joint space (naive: the stored
    embedding minus the stored lumped term plus its mean); an affine head has none."""
    from cliplens.analyses.ablation import parse_components
    from cliplens.errors import InvalidInputError

    _, st = case
    W = st.classifier.float()
    emb = torch.from_numpy(st.field("embedding")[:]).double()
    nl = torch.from_numpy(st.field("nonlinear")[:]).double()
    want = ((emb - nl + nl.mean(0)) @ W.double().T).argmax(1).numpy()
    a = parse_components("pool-mlp")
    assert a.pool_mlp and "pooling head's MLP" in a.describe()
    np.testing.assert_array_equal(evaluate(st, a).predictions, want)
    cls_store = tmp_path / "cls"
    build_store(random_toy, Scenes(4), cls_store, settings=StoreSettings(chunk_size=4, batch_size=4, templates="none"))
    with pytest.raises(InvalidInputError, match="affine"):
        evaluate(Store(cls_store), a)
