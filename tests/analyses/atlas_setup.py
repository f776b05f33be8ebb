"""One small toy store, its TEXTSPAN results and its atlas, built once per test session and shared by the
atlas tests (tests/analyses, tests/report, tests/cli)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import cliplens
from cliplens.analyses.atlas import build_atlas
from cliplens.analyses.pools import load_pool
from cliplens.analyses.textspan import textspan
from cliplens.datasets import open_dataset
from cliplens.store import Store, StoreSettings, build_store

#: the data set of the store (reopened from the store's header by the atlas)
SPEC = "toy:label=shape,n=48,seed=5"
#: layer 5's per-token terms are kept in the store; layer 4's maps re-run the model
SPATIAL = (5,)
IMAGES_PER_TEXT = 3

_CACHE: dict[str, SimpleNamespace] = {}


def atlas_setup(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """``model`` (the embedded toy CLIP), ``store`` (48 toy scenes; spatial layer 5), ``spans`` (TEXTSPAN of
    the heads of layers 4 and 5, 3 texts each), ``texts``/``emb`` (the toy pool and its embeddings) and
    ``atlas`` (3 images at each end of each text)."""
    if "setup" not in _CACHE:
        model = cliplens.load("toy")
        out = tmp_path_factory.mktemp("atlas") / "store"
        build_store(model, open_dataset(SPEC), out,
                    settings=StoreSettings(spatial_layers=SPATIAL, chunk_size=32, batch_size=24))
        store = Store(out)
        texts = load_pool("toy")
        emb = model.encode_text(texts)
        spans = textspan(store, texts, emb, last=2, m=3)
        spans.settings.update({"store": str(store.path), "pool": "toy"})
        atlas = build_atlas(store, spans, model, images_per_text=IMAGES_PER_TEXT,
                            text_embeddings=dict(zip(texts, emb, strict=True)))
        _CACHE["setup"] = SimpleNamespace(model=model, store=store, spans=spans, texts=texts, emb=emb, atlas=atlas)
    return _CACHE["setup"]
