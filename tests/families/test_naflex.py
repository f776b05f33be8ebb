"""SigLIP 2 NaFlex (variable resolution) against transformers' own processor, embeddings and padded batches.

With ``naflex`` on, cliplens resizes each image as ``Siglip2ImageProcessor`` does (aspect kept, at most
``max_num_patches`` patches), runs it at its own token grid with the positional table resized as
``Siglip2VisionEmbeddings`` does (bilinear, antialiased, float32), and decomposes it there. The source runs a
*padded* batch (keys masked); cliplens runs each image unpadded, and the results agree.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from tests.families import models, reference

transformers = pytest.importorskip("transformers")

PARITY_TOL = 1e-5
SHAPES = [(37, 120), (200, 64), (90, 90), (1, 500), (640, 480), (16, 16)]


def _image(h: int, w: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def naflex_case():
    import cliplens

    model = models.hf_siglip2(layers=2, with_text=False)  # float64, biases and LayerNorms moved
    processor = transformers.Siglip2ImageProcessor(patch_size=16, max_num_patches=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = cliplens.wrap(model, preprocess=processor, naflex=True)
    return model, processor, adapter


@pytest.mark.parametrize("max_patches", [64, 256, 1024])
def test_the_resize_target_is_the_processors(max_patches):
    from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

    from cliplens.images.config import naflex_size

    for h, w in SHAPES + [(3000, 7), (224, 224), (513, 1025)]:
        assert naflex_size(h, w, 16, max_patches) == get_image_size_for_max_num_patches(h, w, 16, max_patches)


def test_the_positional_table_is_resized_as_siglip2_resizes_it(naflex_case):
    from cliplens.core.forward import positional_embedding_for

    model, _, adapter = naflex_case
    view = adapter.vision
    assert view.positional == "bilinear_antialias"
    emb = getattr(model, "vision_model", model).embeddings
    table = emb.position_embedding.weight.reshape(emb.position_embedding_size, emb.position_embedding_size, -1)
    for gh, gw in [(3, 7), (16, 16), (5, 5), (1, 40), (20, 12), (8, 8)]:
        want = emb.resize_positional_embeddings(table, torch.tensor([[gh, gw]]), max_length=gh * gw)[0]
        got = positional_embedding_for(view, (gh, gw))
        assert reference.rel_err(got, want) <= 1e-6, (gh, gw)


def test_each_image_is_preprocessed_as_the_processor_patchifies_it(naflex_case):
    _, processor, adapter = naflex_case
    images = [_image(h, w, i) for i, (h, w) in enumerate(SHAPES)]
    want = processor(images, return_tensors="pt")
    for i, img in enumerate(images):
        px = adapter.preprocess(img)
        gh, gw = (s // 16 for s in px.shape[-2:])
        assert [gh, gw] == want["spatial_shapes"][i].tolist()
        n = gh * gw
        patches = px[0].reshape(3, gh, 16, gw, 16).permute(1, 3, 2, 4, 0).reshape(n, -1)
        torch.testing.assert_close(patches.float(), want["pixel_values"][i, :n].float(), rtol=0, atol=1e-6)
        assert int(want["pixel_attention_mask"][i].sum()) == n


def test_embeddings_equal_the_sources_padded_batch(naflex_case):
    """The source pads every image to 64 patches and masks the keys; cliplens runs each at its own grid."""
    import cliplens

    model, processor, _ = naflex_case
    f32 = copy.deepcopy(model).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = cliplens.wrap(f32, preprocess=processor, naflex=64)
    images = [_image(h, w, 10 + i) for i, (h, w) in enumerate(SHAPES)]
    with torch.no_grad():
        want = f32(**processor(images, return_tensors="pt")).pooler_output
    for i, img in enumerate(images):
        got = adapter.encode_image(adapter.preprocess(img))
        assert reference.rel_err(got[0], want[i]) <= PARITY_TOL, SHAPES[i]


def test_the_decomposition_at_each_images_grid_equals_the_padded_reference(naflex_case):
    """float64: the NaFlex reference (padded batch, masked keys and probe) against cliplens per image, unpadded.
    The source resizes its positional table in float32 (so does cliplens, by another route): 1e-7."""
    model, processor, adapter = naflex_case
    shapes = [(37, 120), (200, 64)]
    images = [_image(h, w, 20 + i) for i, (h, w) in enumerate(shapes)]
    inputs = processor(images, return_tensors="pt")
    r = reference.reference_siglip2_hf(model, inputs["pixel_values"], inputs["pixel_attention_mask"],
                                       inputs["spatial_shapes"])
    for i, img in enumerate(images):
        px = adapter.preprocess(img).double()
        dec = adapter.decompose(px, dtype=torch.float64)
        assert dec.factored and dec.check() <= 1e-10
        gh, gw = dec.grid
        n = gh * gw
        assert [gh, gw] == inputs["spatial_shapes"][i].tolist()
        assert reference.rel_err(dec.embedding[0], r["embedding"][i]) <= 1e-7
        assert reference.rel_err(dec.nonlinear_term()[0], r["mlp_term"][i]) <= 1e-7
        pool = dec.pool_terms()[0]  # [R, n, E]: the reference's real tokens come first, then padding (α = 0)
        c = r["constants"][i]
        want = r["pool_terms"][i, :, :n] + r["pool_attn"][i, :, :n, None] * c / pool.shape[0]
        assert reference.rel_err(pool, want) <= 1e-7
        assert n == r["pool_terms"].shape[2] or float(r["pool_terms"][i, :, n:].abs().max()) == 0.0
        assert dec.token_terms().shape == (1, n, dec.embedding.shape[-1])


def test_images_of_different_shapes_do_not_batch(naflex_case):
    from cliplens.errors import PixelValueError

    _, _, adapter = naflex_case
    with pytest.raises(PixelValueError, match="NaFlex keeps each image's aspect ratio"):
        adapter.preprocess([_image(40, 100, 0), _image(100, 40, 1)])
    same = adapter.preprocess([_image(40, 100, 0), _image(40, 100, 1)])  # the same shape batches
    assert same.shape[0] == 2


def test_naflex_is_siglip2s_only_and_changes_the_fingerprint(naflex_case):
    import cliplens
    from cliplens.errors import InvalidInputError

    _, _, adapter = naflex_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InvalidInputError, match="SigLIP 2"):
            cliplens.wrap(models.hf_siglip(layers=1, with_text=False), naflex=True)
        with pytest.raises(InvalidInputError, match="SigLIP 2"):
            cliplens.load("toy", naflex=True)
        with pytest.raises(InvalidInputError, match="number of patches"):
            adapter.naflex = -3
    before = adapter.fingerprint()
    adapter.naflex = False
    try:
        assert adapter.preprocess_config.resize_mode == "squash" and adapter.fingerprint() != before
        assert adapter.preprocess(_image(40, 100, 0)).shape[-2:] == adapter.vision.image_size
    finally:
        adapter.naflex = True
    assert adapter.naflex == 64 and adapter.fingerprint() == before  # the processor's max_num_patches


def test_a_naflex_folder_loads_with_naflex(tmp_path):
    import cliplens

    model = models.hf_siglip2(layers=1, num_patches=64, with_text=False)
    model.save_pretrained(tmp_path)
    transformers.Siglip2ImageProcessor(patch_size=16, max_num_patches=64).save_pretrained(tmp_path)
    a = cliplens.load(tmp_path, naflex=True)
    cfg = a.preprocess_config
    assert (cfg.resize_mode, cfg.max_patches, cfg.patch, cfg.crop) == ("max_patches", 64, 16, "none")
    assert "max_patches" not in cliplens.load(tmp_path).preprocess_config.to_dict()  # off: the fixed native grid
    px = a.preprocess(_image(30, 300, 3))
    assert tuple(px.shape[-2:]) == (48, 336)  # 3 × 21 = 63 patches: sides rounded up, within 64
    assert a.decompose(px.to(a.vision.dtype)).check() <= 1e-5
