"""Text validation, batched embedding, zero-shot classifiers and text directions."""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliplens.errors import EmptyTextError, TextTruncatedWarning
from cliplens.models.base import CLIPAdapter
from cliplens.text import (
    IMAGENET_TEMPLATES,
    encode_texts,
    text_directions,
    validate_texts,
    zero_shot_classifier,
)


# ---- a tiny deterministic adapter --------------------------------------------------------------
class FakeAdapter(CLIPAdapter):
    """Word-hash tokenizer (SOT=1, EOT=2, pad=0) and a position-weighted bag-of-embeddings tower."""

    family = "fake"
    SOT, EOT = 1, 2

    def __init__(self, context: int = 8, embed_dim: int = 16) -> None:
        super().__init__(model=None, name="fake")
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(1003, embed_dim, generator=g, dtype=torch.float64)
        self.context = context
        self.embed_dim = embed_dim
        self.calls: list[int] = []

    def _build_vision_view(self):  # pragma: no cover - never needed
        raise NotImplementedError

    @property
    def vision(self):  # only embed_dim is needed by text_directions
        return SimpleNamespace(embed_dim=self.embed_dim)

    @property
    def preprocess_config(self):  # pragma: no cover
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        return self.context

    def _ids(self, text: str) -> list[int]:
        return [self.SOT] + [3 + zlib.crc32(w.encode()) % 1000 for w in text.lower().split()] + [self.EOT]

    def _tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self._ids(t)
            if len(ids) > self.context:  # truncate like open_clip: keep EOT last
                ids = ids[: self.context]
                ids[-1] = self.EOT
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def _count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self._ids(t)) for t in texts]

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(tokens.shape[0])
        weights = torch.arange(1, tokens.shape[1] + 1, dtype=torch.float64) * (tokens != 0)
        return torch.tanh((self.table[tokens] * weights[..., None]).sum(1)).float() * 3

    def source_encode_image(self, pixel_values):  # pragma: no cover
        raise NotImplementedError


@pytest.fixture()
def fake():
    return FakeAdapter()


# ---- templates ---------------------------------------------------------------------------------
def test_imagenet_templates():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."


def test_imagenet_templates_match_open_clip():
    meta = pytest.importorskip("open_clip.zero_shot_metadata")
    theirs = [f("dog") for f in meta.OPENAI_IMAGENET_TEMPLATES]
    assert [t.format("dog") for t in IMAGENET_TEMPLATES] == theirs


# ---- validation ---------------------------------------------------------------------------------
def test_validate_texts_basic(fake):
    assert validate_texts("a cat", fake._count_tokens, 8) == ["a cat"]
    assert validate_texts(("a", "b"), fake._count_tokens, 8) == ["a", "b"]
    assert validate_texts((t for t in ["x"]), None, None) == ["x"]


@pytest.mark.parametrize("texts, index", [(["a cat", ""], 1), (["   \n\t"], 0), ([" ok ", "fine", " "], 2)])
def test_empty_text_error_names_index(fake, texts, index):
    with pytest.raises(EmptyTextError, match=rf"text {index} is empty") as info:
        encode_texts(fake, texts)
    assert "remove it" in str(info.value)


def test_validate_texts_bad_types(fake):
    with pytest.raises(EmptyTextError, match="no texts"):
        encode_texts(fake, [])
    with pytest.raises(TypeError, match="text 1 is a int"):
        encode_texts(fake, ["a", 3])
    with pytest.raises(TypeError):
        encode_texts(fake, torch.zeros(3))
    with pytest.raises(ValueError, match="batch_size"):
        encode_texts(fake, ["a"], batch_size=0)


def test_truncation_warning_once_naming_texts(fake):
    long1 = " ".join(f"word{i}" for i in range(20))
    long2 = "another rather long text that will not fit in eight tokens"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        emb = encode_texts(fake, ["short one", long1, long2])
    trunc = [w for w in rec if issubclass(w.category, TextTruncatedWarning)]
    assert len(trunc) == 1
    msg = str(trunc[0].message)
    assert "2 text(s)" in msg and "#1 'word0 word1" in msg and "(22 tokens)" in msg and "#2" in msg
    assert "8-token context" in msg
    assert emb.shape == (3, 16)
    # the truncated text equals the text cut to its first 6 words (SOT + 6 + EOT = 8)
    cut = " ".join(long1.split()[:6])
    assert torch.equal(emb[1], encode_texts(fake, cut)[0])


def test_unknown_counts_do_not_warn(fake):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_texts(["x " * 50], lambda ts: [0] * len(ts), 8)


# ---- encoding ----------------------------------------------------------------------------------
def test_encode_texts_normalisation_and_batching(fake):
    texts = [f"a photo of thing number {i}" for i in range(23)]
    raw = encode_texts(fake, texts, normalize=False)
    assert raw.dtype == torch.float32 and raw.shape == (23, 16)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(23))
    normed = encode_texts(fake, texts)
    assert torch.allclose(normed.norm(dim=-1), torch.ones(23), atol=1e-6)
    assert torch.allclose(normed, F.normalize(raw, dim=-1))
    fake.calls.clear()
    small = encode_texts(fake, texts, batch_size=5)
    assert fake.calls == [5, 5, 5, 5, 3]
    assert torch.equal(small, normed)
    assert torch.equal(fake.encode_text(texts, batch_size=4), normed)  # the adapter method


def test_progress_bar(fake):
    out = encode_texts(fake, [f"text {i}" for i in range(10)], batch_size=3, progress=True)
    assert out.shape == (10, 16)
    z = zero_shot_classifier(fake, ["cat", "dog"], ["a {}", "the {}"], progress=True)
    assert z.shape == (2, 16)


# ---- zero-shot -----------------------------------------------------------------------------------
def test_zero_shot_classifier_recipe(fake):
    names = ["cat", "dog", "tabby cat", "fish"]
    templates = ["a photo of a {}.", "a drawing of the {}.", "{} in the wild"]
    z = zero_shot_classifier(fake, names, templates)
    assert z.shape == (4, 16) and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-6)
    for c, name in enumerate(names):
        per_template = encode_texts(fake, [t.format(name) for t in templates])  # normalised
        want = F.normalize(per_template.mean(0), dim=-1)
        assert torch.allclose(z[c], want, atol=1e-6)
    # callables give the same; so does any batch size (chunks across classes)
    calls = [lambda n, t=t: t.format(n) for t in templates]
    assert torch.allclose(zero_shot_classifier(fake, names, calls), z, atol=1e-7)
    assert torch.allclose(zero_shot_classifier(fake, names, templates, batch_size=2), z, atol=1e-7)
    assert torch.allclose(zero_shot_classifier(fake, names, templates, batch_size=7), z, atol=1e-7)
    # the default templates: 80 per class
    wide = FakeAdapter(context=16)
    zero_shot_classifier(wide, ["cat"], batch_size=1000)
    assert wide.calls == [80]


def test_zero_shot_classifier_errors(fake):
    with pytest.raises(EmptyTextError, match="text 1 is empty"):
        zero_shot_classifier(fake, ["cat", " "], ["a {}"])
    with pytest.raises(ValueError, match="no '{}' placeholder"):
        zero_shot_classifier(fake, ["cat"], ["a photo"])
    with pytest.raises(ValueError, match="cannot be filled"):
        zero_shot_classifier(fake, ["cat"], ["a {} {x}"])
    with pytest.raises(ValueError, match="no templates"):
        zero_shot_classifier(fake, ["cat"], [])
    single = zero_shot_classifier(fake, "cat", "a photo of a {}.")
    assert torch.allclose(single, encode_texts(fake, "a photo of a cat."), atol=1e-6)


# ---- directions ----------------------------------------------------------------------------------
def test_text_directions(fake):
    d = text_directions(fake, ["a cat", "a dog"])
    assert d.shape == (2, 16) and torch.allclose(d.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert text_directions(fake, "a cat").shape == (1, 16)
    v = torch.randn(16, dtype=torch.float64) * 5
    out = text_directions(fake, v)
    assert out.shape == (1, 16) and out.dtype == torch.float32 and torch.allclose(out[0], v.float())
    assert text_directions(fake, np.ones((3, 16))).shape == (3, 16)
    with pytest.raises(ValueError, match=r"\[T, E\] or \[E\]"):
        text_directions(fake, torch.zeros(2, 3, 16))
    with pytest.raises(ValueError, match="embedding dimension is 16"):
        text_directions(fake, torch.zeros(2, 12))
    with pytest.raises(ValueError, match="NaN"):
        text_directions(fake, torch.full((1, 16), float("nan")))
    with pytest.raises(TypeError):
        text_directions(fake, 3.0)


# ---- a real (random-weight) open_clip model ------------------------------------------------------
@pytest.fixture(scope="module")
def open_clip_text():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    # ViT-B-32's tokenizer and text context (77 tokens, the full BPE vocabulary) with a small text tower
    text_cfg = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    vision_cfg = dict(image_size=32, patch_size=16, width=32, layers=1, head_width=16)
    model = open_clip.CLIP(32, vision_cfg=vision_cfg, text_cfg=text_cfg).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    try:
        from cliplens.models.openclip import OpenCLIPAdapter

        adapter = OpenCLIPAdapter(model, "ViT-B-32", tokenizer=tokenizer)
    except ImportError:  # pragma: no cover - the adapter module is optional here
        adapter = _MinimalOpenCLIP(model, tokenizer)
    return model, tokenizer, adapter


class _MinimalOpenCLIP(CLIPAdapter):  # pragma: no cover - fallback only
    def __init__(self, model, tokenizer):
        super().__init__(model, "ViT-B-32")
        self.tokenizer = tokenizer

    def _build_vision_view(self):
        raise NotImplementedError

    @property
    def vision(self):
        return SimpleNamespace(embed_dim=int(self.model.text_projection.shape[1]))

    @property
    def preprocess_config(self):
        raise NotImplementedError

    @property
    def context_length(self):
        return self.tokenizer.context_length

    def _tokenize(self, texts):
        return self.tokenizer(list(texts))

    def _count_tokens(self, texts):
        return [len(self.tokenizer.encode(t)) + 2 for t in texts]

    def _encode_tokens(self, tokens):
        return self.model.encode_text(tokens)

    def source_encode_image(self, pixel_values):
        raise NotImplementedError


def test_open_clip_encode_matches_source(open_clip_text):
    model, tokenizer, adapter = open_clip_text
    texts = ["a photo of a cat.", "a diagram", "two dogs playing in the snow at night"]
    with torch.no_grad():
        ref = model.encode_text(tokenizer(texts))
    out = encode_texts(adapter, texts, normalize=False)  # each batch runs only up to its longest text
    assert float((out - ref).abs().max() / ref.norm(dim=-1).max()) <= 1e-6
    assert torch.allclose(encode_texts(adapter, texts), F.normalize(ref, dim=-1), atol=1e-6)


def test_open_clip_batching_is_identical(open_clip_text):
    _, _, adapter = open_clip_text
    texts = [f"a photo of object number {i}, seen from the side" for i in range(11)]
    one = encode_texts(adapter, texts, batch_size=256)
    many = encode_texts(adapter, texts, batch_size=3)
    assert float((one - many).abs().max()) <= 1e-6


def test_open_clip_truncation_keeps_eot(open_clip_text):
    model, tokenizer, adapter = open_clip_text
    long_text = " ".join(["word"] * 200)
    with pytest.warns(TextTruncatedWarning, match=r"#0 'word word .*\(202 tokens\)"):
        emb = encode_texts(adapter, [long_text], normalize=False)
    tokens = tokenizer([long_text])
    eot = tokenizer.eot_token_id
    assert tokens.shape == (1, 77) and int(tokens[0, -1]) == eot  # the source keeps EOT last
    with torch.no_grad():
        ref = model.encode_text(tokens)
    assert torch.equal(emb, ref)
    # EOT pooling: the truncated text embeds like its 75-word prefix (SOT + 75 + EOT = 77)
    with torch.no_grad():
        prefix = model.encode_text(tokenizer([" ".join(["word"] * 75)]))
    assert torch.allclose(emb, prefix, atol=1e-5)


def test_open_clip_zero_shot(open_clip_text):
    _, _, adapter = open_clip_text
    z = zero_shot_classifier(adapter, ["cat", "dog", "car"], IMAGENET_TEMPLATES[:8], batch_size=10)
    assert z.shape == (3, 32)
    assert torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert text_directions(adapter, z).shape == (3, 32)
    with pytest.raises(ValueError, match="dimension 768 but the model.s embedding dimension is 32"):
        text_directions(adapter, torch.zeros(2, 768))
