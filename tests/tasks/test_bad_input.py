"""User mistakes and edge cases in the tasks: one class for feature surgery, too many tokens for one forward
(tags and points), a probability threshold over one text, an image smaller than one patch, and what
Surgery's settings say it computed."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cliplens.errors import InvalidInputError
from cliplens.maps.base import ImageMaps
from cliplens.maps.inputs import MAX_TOKENS, fit_images, fitted_shape, token_count
from cliplens.maps.surgery import Surgery
from cliplens.tasks.multilabel import score_classes
from cliplens.tasks.points import text_points
from cliplens.tasks.segment import label_map, segment

ONE_CLASS = "one class has nothing to share with"


def _image(h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


# ---- tags: one class ---------------------------------------------------------------------------------

def test_one_class_surgery_scores_against_the_empty_prompt(oc_model):
    """f · (t − t_empty) on the image embedding, t and t_empty computed here from open_clip itself."""
    open_clip = pytest.importorskip("open_clip")
    images = [_image(seed=s) for s in range(3)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = score_classes(oc_model, images, ["red car"], templates="photo", fit="squash", batch_size=2)
    assert sum(ONE_CLASS in str(w.message) for w in caught) == 1  # once, though the images ran in two batches
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    fitted, _ = fit_images(oc_model, images, fit="squash")
    with torch.no_grad():
        f = _unit(oc_model.model.encode_image(torch.stack([x.pixels for x in fitted])))
        t = _unit(oc_model.model.encode_text(tok(["a photo of a red car."])))[0]
        e = _unit(oc_model.model.encode_text(tok(["a photo of a ."])))[0]
    torch.testing.assert_close(res.scores, (f @ (t - e))[:, None], atol=1e-5, rtol=1e-5)
    assert res.settings["feature"] == "redundancy" and res.settings["feature_used"] == "empty"
    assert "empty prompt" in res.settings["score"] and "sum to 0" not in res.settings["score"]
    two = score_classes(oc_model, images[:1], ["red car", "dog"], templates="photo")
    assert two.settings["feature_used"] == "redundancy" and "sum to 0" in two.settings["score"]
    assert "feature_used" not in score_classes(oc_model, images[:1], ["red car"], method="global").settings


# ---- too many tokens ---------------------------------------------------------------------------------

def test_tags_refuse_too_many_tokens_before_any_forward(oc_model, monkeypatch):
    wide = torch.rand(3, 8, 2000)  # 64 x 16000 pixels fitted whole: 8 x 2000 = 16000 tokens
    calls = []
    real = type(oc_model).run
    monkeypatch.setattr(type(oc_model), "run", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    with pytest.raises(InvalidInputError) as err:
        score_classes(oc_model, [torch.rand(3, 64, 64), wide], ["dog", "cat"], templates=None)
    message = " ".join(str(err.value).split())
    assert "16000 tokens for one forward (over 8192)" in message and "<Tensor (3, 8, 2000)>" in message
    assert "fit='crop'" in message and "--fit squash" in message and "--window" not in message
    assert calls == []  # refused before the batch ran
    ok = score_classes(oc_model, [wide], ["dog", "cat"], templates=None, fit="crop")  # the way out
    assert ok.scores.shape == (1, 2)


def test_points_refuse_a_very_wide_image_with_what_fits(random_toy):
    wide = torch.rand(3, 8, 4000)  # toy: 64 px input, 8 px patches -> 64 x 32000 pixels, 32000 tokens
    with pytest.raises(InvalidInputError) as err:
        text_points(random_toy, wide, "a red circle", templates=None)
    message = " ".join(str(err.value).split())
    assert "32000 tokens for one forward" in message and "no sliding window" in message
    assert "--window" not in message and "--fit squash" in message
    size = int(re.search(r"--size (\d+) on the command line", message).group(1))
    # the size suggested is the largest that fits, and leaves a map with 2x2 cells or more
    fits = token_count(fitted_shape(random_toy, (8, 4000), size=size), (8, 8))
    assert fits <= MAX_TOKENS < token_count(fitted_shape(random_toy, (8, 4000), size=size + 1), (8, 8))
    assert min(fitted_shape(random_toy, (8, 4000), size=size)) >= 32
    pts = text_points(random_toy, wide, "a red circle", templates=None, fit="squash")  # the other way out
    assert pts.image_size == (8, 4000) and pts.grid_size == (8, 8) and len(pts) > 0


def test_points_refuse_a_huge_squash_size(random_toy):
    with pytest.raises(InvalidInputError) as err:
        text_points(random_toy, torch.rand(3, 64, 64), "a red circle", templates=None, fit="squash", size=1000)
    message = " ".join(str(err.value).split())
    assert "15625 tokens" in message and "size=724 or less" in message and "720x720 pixels, 8100 tokens" in message and "fit='squash'" not in message


# ---- segment: a threshold over one text ---------------------------------------------------------------

def test_a_threshold_over_one_text_is_refused(random_toy):
    img = torch.rand(3, 64, 64)
    with pytest.raises(InvalidInputError, match="two or more texts") as err:
        segment("surgery", random_toy, [img], ["a red circle"], threshold=0.5, templates=None)
    assert "always 1" in str(err.value) and "background" in str(err.value)
    one = ImageMaps(torch.rand(1, 8, 8), (64, 64), (64, 64), (0.0, 0.0, 64.0, 64.0), "x", "raw")
    with pytest.raises(InvalidInputError, match="two or more texts"):
        label_map(one, 1, threshold=0.5)
    assert (label_map(one, 1) == 1).all()  # without a threshold one class is everywhere, as asked
    # with a background name there are two texts, and the threshold works
    seg = segment("surgery", random_toy, [img], ["a red circle"], background=["a blue square"], threshold=0.99,
                  templates=None)
    assert seg[0].labels.shape == (64, 64) and seg[0].settings["threshold"] == 0.99


# ---- tiny images ---------------------------------------------------------------------------------------

def _tiny_notes(caught) -> list[str]:
    return [str(w.message) for w in caught if "smaller than one" in str(w.message)]


def test_an_image_smaller_than_a_patch_is_kept_with_a_note(random_toy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted, _ = fit_images(random_toy, [torch.rand(3, 5, 3), torch.rand(3, 48, 64)])
    assert fitted[0].pixels.shape[-2:] == (104, 64)  # short side 3 -> 64 (x21.3), long side 5 -> 106.7 -> 104
    (note,) = _tiny_notes(caught)  # only the tiny one
    assert "is 3x5 pixels, smaller than one 8x8 patch" in note and "upscaled ×21.3 to 64x104 pixels" in note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_images(random_toy, [torch.rand(3, 5, 3)], fit="squash", size=64)
    (note,) = _tiny_notes(caught)
    assert "×21.3 in width and ×12.8 in height" in note


def test_maps_note_a_tiny_image_once(random_toy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = Surgery()(random_toy, [torch.rand(3, 5, 3), torch.rand(3, 2, 9)], ["a red circle", "a blue star"])
    notes = _tiny_notes(caught)
    assert len(notes) == 2 and "3x5 pixels" in notes[0] and "9x2 pixels" in notes[1]  # once per image
    assert maps[0].on_image().shape == (2, 5, 3)  # the result is kept


# ---- Surgery says which feature surgery it computed -----------------------------------------------------

def test_surgery_settings_record_the_feature_used(random_toy):
    img = torch.rand(3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = Surgery()(random_toy, [img], ["a red circle"])
    two = Surgery()(random_toy, [img], ["a red circle", "a blue star"])
    assert (one.settings["feature"], one.settings["feature_used"]) == ("redundancy", "empty")
    assert (two.settings["feature"], two.settings["feature_used"]) == ("redundancy", "redundancy")
    keys = list(one.settings)
    assert keys.index("feature_used") == keys.index("feature") + 1  # next to the value asked for
    assert Surgery(feature="none")(random_toy, [img], ["a red circle"]).settings["feature_used"] == "none"
    pts = text_points(random_toy, img, "a red circle", templates=None)
    assert pts.settings["feature"] == pts.settings["feature_used"] == "empty"


def test_points_warn_about_unknown_words_once(random_toy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text_points(random_toy, torch.rand(3, 64, 64), "a red zebra", templates="surgery")
    vocabulary = [str(w.message) for w in caught if "vocabulary" in str(w.message)]
    assert len(vocabulary) == 1 and "'zebra'" in vocabulary[0]
