"""OpenAI's ``clip.load`` names load the open_clip architecture they name: the configs of CLIP Surgery, SCLIP,
ClearCLIP and NACLIP say ``"ViT-B/32"`` and ``"ViT-L/14@336px"``. The latter was read as a Hugging Face id
(refused with ``pretrained=``, looked up on the Hub without it)."""

from __future__ import annotations

import pytest

open_clip = pytest.importorskip("open_clip")

import cliplens  # noqa: E402
from cliplens.errors import ModelLoadError, PretrainedRequiredError  # noqa: E402
from cliplens.models.openclip import from_openai_name  # noqa: E402
from tests.models.shapes import load_open_clip  # noqa: E402

#: ``clip.available_models()`` of OpenAI's package
OPENAI_NAMES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px")


def test_every_openai_name_is_an_open_clip_architecture():
    names = set(open_clip.list_models())
    assert {n: from_openai_name(n) in names for n in OPENAI_NAMES} == dict.fromkeys(OPENAI_NAMES, True)
    assert from_openai_name("ViT-L/14@336px") == "ViT-L-14-336"
    assert from_openai_name("ViT-B/32") == "ViT-B-32" and from_openai_name("ViT-H-14") == "ViT-H-14"


@pytest.mark.parametrize("spelling", ["ViT-L/14@336px", "open_clip:ViT-L/14@336px"])
def test_openai_l14_336_name_loads_the_336_px_model(spelling):
    model = load_open_clip("ViT-L-14-336", layers=1, as_name=spelling)
    assert model.name == "ViT-L-14-336" and model.vision.grid_size == (24, 24)
    assert model.vision.patch_size == (14, 14) and model.preprocess_config.image_size == (336, 336)


def test_openai_l14_336_name_without_weights_lists_its_tags():
    with pytest.raises(PretrainedRequiredError, match="ViT-L-14-336 needs weights") as info:
        cliplens.load("ViT-L/14@336px")
    assert "openai" in str(info.value)


def test_openai_l14_336_with_openai_weights_is_quickgelu(monkeypatch):
    seen = {}

    def fake_create(name, pretrained=None, **kw):
        seen.update(kw, name=name, pretrained=pretrained)
        raise RuntimeError("stop before any download")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ModelLoadError):
        cliplens.load("ViT-L/14@336px", pretrained="openai")
    assert seen["name"] == "ViT-L-14-336" and seen["pretrained"] == "openai" and seen["force_quick_gelu"] is True
