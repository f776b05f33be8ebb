"""The store: what it holds equals the decomposition, reuse and refusal, unreadable images, dtypes, reading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.store import Store, StoreSettings, build_store
from cliplens.toyworld.scenes import SHAPES
from tests.store.scenes import Scenes

SETTINGS = StoreSettings(chunk_size=8, batch_size=4, templates="none")


@pytest.fixture(scope="module")
def built(random_toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "s"
    build_store(random_toy, Scenes(20), out, settings=SETTINGS)
    return out


def test_the_store_holds_the_decomposition(built, random_toy):
    st = Store(built)
    assert len(st) == 20 and st.class_names == list(SHAPES)
    assert list(st.indices) == list(range(20)) and st.ids[3] == "scene-3"
    data = Scenes(20)
    assert list(st.labels) == [data[i].label for i in range(20)]
    assert st.attributes("shape")[:4] == [data[i].attributes["shape"] for i in range(4)]
    px = random_toy.preprocess([data[i].image for i in range(20)])
    dec = random_toy.decompose(px, spatial=False)
    torch.testing.assert_close(torch.from_numpy(st.field("heads")[:]), dec.heads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(st.field("mlp_out")[:]), dec.mlp_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(st.field("attn_out")[:]), dec.attn_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(st.field("embedding")[:]), dec.embedding, rtol=1e-5, atol=1e-6)
    # joint-space head terms from the store alone equal the decomposition's (normalised form)
    torch.testing.assert_close(st.head_terms(layers=[-2, -1]), dec.normalized().head_terms()[:, -2:],
                               rtol=1e-4, atol=1e-6)
    # CLS -> CLS terms equal the spatial decomposition's source token 0
    sp = random_toy.decompose(px, spatial=True)
    torch.testing.assert_close(torch.from_numpy(st.field("cls_heads")[:]), sp.heads[:, :, :, 0], rtol=1e-5, atol=1e-6)
    # the store's classifier is the model's zero-shot classifier of the class names
    torch.testing.assert_close(st.classifier, random_toy.encode_text(list(SHAPES)), rtol=1e-5, atol=1e-6)


def test_a_complete_store_is_reused_and_another_is_refused(built, random_toy, tmp_path):
    again = build_store(random_toy, Scenes(20), built, settings=SETTINGS)
    assert again.chunks_written == [] and again.chunks_reused == 3
    with pytest.raises(InvalidInputError, match="another model, data set or settings") as info:
        build_store(random_toy, Scenes(20), built, settings=StoreSettings(chunk_size=8, batch_size=4, dtype="float16",
                                                                         templates="none"))
    assert "dtype" in str(info.value) and "nothing" not in str(info.value).split("What differs")[0]
    assert (built / "manifest.json").exists()  # untouched
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("my notes")
    with pytest.raises(InvalidInputError, match="is not a cliplens store"):
        build_store(random_toy, Scenes(4), other, settings=SETTINGS)
    assert (other / "notes.txt").read_text() == "my notes"


def test_unreadable_images_stop_the_run_or_are_recorded(random_toy, tmp_path):
    data = Scenes(12, bad=(9,), tmp=tmp_path)
    with pytest.raises(ImageLoadError, match="broken-9.png") as info:
        build_store(random_toy, data, tmp_path / "a", settings=SETTINGS)
    assert "--skip-bad" in str(info.value)
    assert (tmp_path / "a" / "chunk-000000.safetensors").exists()  # the finished chunk is kept
    assert not (tmp_path / "a" / "manifest.json").exists()
    res = build_store(random_toy, data, tmp_path / "b", settings=SETTINGS, skip_bad=True)
    st = Store(tmp_path / "b")
    assert len(st) == 11 and 9 not in st.indices and res.skipped[0]["index"] == 9
    assert st.skipped == [{"index": 9, "id": "scene-9", "reason": res.skipped[0]["reason"]}]


def test_float16_halves_the_size_and_spatial_layers_are_kept(random_toy, tmp_path):
    sizes = {}
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        build_store(random_toy, Scenes(8), out, settings=StoreSettings(chunk_size=8, batch_size=4, dtype=dtype,
                                                                       templates="none"))
        sizes[dtype] = sum(p.stat().st_size for p in out.glob("chunk-*.safetensors"))
    assert 0.45 < sizes["float16"] / sizes["float32"] < 0.6
    out = tmp_path / "spatial"
    build_store(random_toy, Scenes(8), out, settings=StoreSettings(chunk_size=8, batch_size=4, spatial_layers=(-1,),
                                                                   templates="none"))
    st = Store(out)
    assert st.field("spatial").shape == (8, 1, 1, 65, 4, 16)  # images, readouts, layers, tokens, heads, dh
    px = random_toy.preprocess([Scenes(8)[i].image for i in range(8)])
    sp = random_toy.decompose(px, spatial=True, layers=[-1])
    torch.testing.assert_close(torch.from_numpy(st.field("spatial")[:]), sp.heads, rtol=1e-5, atol=1e-6)
    assert json.loads((out / "store.json").read_text())["settings"]["spatial_layers"] == [5]


def test_reading_is_memory_mapped_block_by_block(built):
    st = Store(built)
    parts = st.field("heads").parts
    assert all(isinstance(p, np.memmap) for p in parts) and len(parts) == 3
    rows = [b["heads"].shape[0] for b in st.blocks(["heads", "scale"])]
    assert rows == [8, 8, 4]
    np.testing.assert_array_equal(st.field("heads")[[19, 0, 8]], np.stack([st.field("heads")[i] for i in (19, 0, 8)]))
    with pytest.raises(InvalidInputError, match="no field 'spatial'"):
        st.field("spatial")
    with pytest.raises(InvalidInputError, match="not a cliplens store"):
        Store(built.parent)


def test_a_killed_runs_temporary_chunk_is_cleaned_and_a_file_is_no_folder(random_toy, tmp_path):
    out = tmp_path / "s"
    build_store(random_toy, Scenes(12), out, settings=SETTINGS)
    (out / "manifest.json").unlink()  # as a run killed while writing chunk 1 leaves the folder
    (out / "chunk-000001.safetensors").unlink()
    stale = out / "chunk-000001.safetensors.tmp12345"
    stale.write_bytes(b"half a chunk")
    build_store(random_toy, Scenes(12), out, settings=SETTINGS)
    assert not stale.exists() and len(Store(out)) == 12
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        build_store(random_toy, Scenes(4), tmp_path / "afile", settings=SETTINGS)
