"""The toy CLIP goes through the same adapter interface as real CLIPs."""

from __future__ import annotations

import pytest
import torch

import cliplens
from cliplens.errors import ModelLoadError
from cliplens.toyworld.tokenizer import ToyTokenizer, build_vocab


@pytest.fixture(scope="module")
def toy_path(random_toy_weights):
    return random_toy_weights


def test_toy_parity_and_exact_decomposition(toy_path):
    model = cliplens.load("toy", pretrained=str(toy_path))
    assert model.family == "toy"
    v = model.vision
    assert v.num_layers >= 6 and v.num_heads >= 4
    x = torch.randn(3, 3, *v.image_size, generator=torch.Generator().manual_seed(1))
    ref = model.source_encode_image(x)
    ours = model.encode_image(x)
    assert (ours - ref).abs().max() <= 1e-5 * ref.norm(dim=-1).max()
    for spatial in (True, False):
        for last in (None, 2):
            assert model.decompose(x, spatial=spatial, last=last).check() < 1e-5


def test_toy_text_side(toy_path):
    model = cliplens.load("toy", pretrained=str(toy_path))
    t = model.encode_text(["a red circle", "two blue squares on a striped background"])
    assert t.shape == (2, model.vision.embed_dim)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))
    with pytest.warns(UserWarning, match="no word"):
        model.encode_text(["a photo of a zebra"])
    with pytest.raises(cliplens.EmptyTextError):
        model.encode_text(["   "])


def test_toy_preprocess_is_the_model_normalisation(toy_path):
    model = cliplens.load("toy", pretrained=str(toy_path))
    s = model.vision.image_size[0]
    img = torch.randint(0, 256, (s, s, 3), dtype=torch.uint8)
    from PIL import Image

    ours = model.preprocess([Image.fromarray(img.numpy())])
    ref = model.model.normalize_pixels(img[None])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_toy_bad_weights_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no toy CLIP weights"):
        cliplens.load("toy", pretrained=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not a valid .safetensors file"):
        cliplens.load("toy", pretrained=str(bad))


def test_toy_tokenizer_and_weights_round_trip(tmp_path, random_toy):
    tok = ToyTokenizer(build_vocab(), context_length=16)
    text = "two red circles, a blue star on a striped background"
    ids = tok.encode([text])
    assert ids.shape == (1, 16)
    assert tok.decode(ids[0]) == text  # <sot>/<eot>/<pad> dropped, the words and punctuation back
    tok.save(tmp_path / "tok.json")
    again = ToyTokenizer.load(tmp_path / "tok.json")
    assert again.vocab == tok.vocab and torch.equal(again.encode([text]), ids)
    # the toy model saved and loaded again gives the same embeddings, bit for bit
    from cliplens.toyworld.model import save_toy_clip

    path = tmp_path / "copy.safetensors"
    save_toy_clip(random_toy.model, str(path), random_toy.tokenizer.vocab)
    copy = cliplens.load("toy", pretrained=str(path))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(copy.encode_image(x), random_toy.encode_image(x))
    assert torch.equal(copy.encode_text([text]), random_toy.encode_text([text]))


def test_project_accepts_texts(toy_path):
    model = cliplens.load("toy", pretrained=str(toy_path))
    x = torch.randn(2, 3, *model.vision.image_size, generator=torch.Generator().manual_seed(2))
    dec = model.decompose(x).normalized()
    by_text = dec.project(["a red circle", "a blue star"])
    by_vec = dec.project(model.encode_text(["a red circle", "a blue star"]))
    torch.testing.assert_close(by_text.heads, by_vec.heads)
    assert by_text.labels == ["a red circle", "a blue star"]
    cos = torch.nn.functional.normalize(model.encode_image(x), dim=-1) @ model.encode_text(["a red circle"]).T
    torch.testing.assert_close(dec.project("a red circle").total, cos, rtol=1e-4, atol=1e-5)
