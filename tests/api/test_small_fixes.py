"""Issue 18 item 4's small fixes: ``feature_surgery`` refuses an argument its mode ignores, the empty class name
is allowed inside a prompt ensemble, and ``cliplens.wrap(model)`` says which tokenizer it assumed (or refuses)."""

from __future__ import annotations

import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.errors import AssumedTokenizerWarning, EmptyTextError, InvalidInputError, ModelLoadError
from cliplens.maps import Targets, feature_surgery
from tests.conftest import tiny_open_clip


def _feats_texts(T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(2, 5, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(T, 8, generator=g), dim=-1)
    return f, t, F.normalize(torch.randn(8, generator=g), dim=0)


def test_feature_surgery_refuses_empty_in_redundancy_mode():
    f, t, e = _feats_texts(3)
    with pytest.raises(InvalidInputError, match=r"mode='redundancy'.*ignores empty=.*mode='empty'"):
        feature_surgery(f, t, empty=e)
    with pytest.raises(InvalidInputError, match=r"mode='none'.*ignores empty="):
        feature_surgery(f, t, mode="none", empty=e)
    # the variant the user meant, spelled out: f · (t − t_empty)
    torch.testing.assert_close(feature_surgery(f, t, mode="empty", empty=e), f @ (t - e).T)


def test_feature_surgery_refuses_temperature_where_unused():
    f, t, e = _feats_texts(3)
    with pytest.raises(InvalidInputError, match=r"ignore temperature="):
        feature_surgery(f, t, mode="empty", empty=e, temperature=3.0)
    with pytest.raises(InvalidInputError, match=r"ignore temperature="):
        feature_surgery(f[:, :, :], t[:1], empty=e, temperature=3.0)  # one text: the empty-prompt fallback
    # where it is used, it changes the scores (and 2 is the default)
    assert not torch.allclose(feature_surgery(f, t, temperature=5.0), feature_surgery(f, t))
    torch.testing.assert_close(feature_surgery(f, t, temperature=2.0), feature_surgery(f, t))


def test_feature_surgery_one_text_falls_back_to_empty():
    f, t, e = _feats_texts(1)
    torch.testing.assert_close(feature_surgery(f, t, empty=e), f @ (t - e).T)
    with pytest.raises(InvalidInputError, match="empty="):
        feature_surgery(f, t)


@pytest.fixture(scope="module")
def small_clip():
    return cliplens.wrap(tiny_open_clip(), tokenizer=open_clip.get_tokenizer("ViT-B-32", context_length=16))


def test_empty_class_name_in_ensemble_is_the_empty_prompt(small_clip):
    templates = ["a photo of a {}.", "a picture of the {}."]
    emb = Targets.classes(["", "dog"], templates=templates).embed(small_clip).directions
    empty = Targets.classes(["dog"], templates=templates).empty_direction(small_clip)
    torch.testing.assert_close(emb[0], empty.to(emb), rtol=1e-5, atol=1e-6)
    dog = Targets.classes(["dog"], templates=templates).embed(small_clip).directions[0]
    torch.testing.assert_close(emb[1], dog)
    z = cliplens.text.zero_shot_classifier(small_clip, ["", "dog"], templates)
    torch.testing.assert_close(z, emb.to(z))


def test_empty_text_still_refused_where_it_is_the_whole_prompt(small_clip):
    with pytest.raises(EmptyTextError):
        Targets.texts(["", "dog"])
    with pytest.raises(EmptyTextError, match="text 1 is empty"):  # whitespace: a blank line, more likely a mistake
        Targets.classes(["dog", " "], templates=["a photo of a {}."])
    with pytest.raises(EmptyTextError, match=r"class 0 \(''\) in template 1 \('\{\}'\)"):
        cliplens.text.zero_shot_classifier(small_clip, ["", "dog"], ["a photo of a {}.", "{}"])


def test_wrap_without_name_warns_once_naming_the_tokenizer():
    model = cliplens.wrap(tiny_open_clip())
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        model.encode_text(["a dog"])
        model.encode_text(["a cat"])
    said = [w for w in got if issubclass(w.category, AssumedTokenizerWarning)]
    assert len(said) == 1
    msg = str(said[0].message)
    assert "standard CLIP tokenizer" in msg and "name=" in msg and "tokenizer=" in msg
    with warnings.catch_warnings():  # a name, or a tokenizer, given: nothing assumed, nothing said
        warnings.simplefilter("error", AssumedTokenizerWarning)
        cliplens.wrap(tiny_open_clip(), name="ViT-B-32").encode_text(["a dog"])
        cliplens.wrap(tiny_open_clip(), tokenizer=open_clip.get_tokenizer("ViT-B-32")).encode_text(["a dog"])


def test_wrap_without_name_refuses_a_vocabulary_it_cannot_know():
    torch.manual_seed(0)
    m = open_clip.CLIP(32, vision_cfg=dict(image_size=32, patch_size=16, width=64, layers=1, head_width=32),
                       text_cfg=dict(context_length=16, vocab_size=1000, width=32, heads=2, layers=1)).eval()
    model = cliplens.wrap(m)
    assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 32)  # the image side works
    with pytest.raises(ModelLoadError, match=r"vocabulary of 1000 tokens.*cannot know its tokenizer.*name="):
        model.encode_text(["a dog"])
