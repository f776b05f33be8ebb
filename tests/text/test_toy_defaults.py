"""Model-aware prompt templates: the toy CLIP gets its own prompt form by default (every word in its vocabulary),
real CLIPs CLIP's ensembles; so the toy's vocabulary warning names only words the user typed."""

from __future__ import annotations

import json
import warnings

import pytest

from cliplens.tasks.multilabel import score_classes
from cliplens.tasks.points import text_points
from cliplens.text import IMAGENET_TEMPLATES, SURGERY_TEMPLATES, TEMPLATE_SETS, default_templates
from tests.cli.conftest import one_line, run, save_image


@pytest.fixture(scope="module")
def toy_args(random_toy_weights):
    return ["-m", "toy", "-p", str(random_toy_weights)]


def test_default_templates_follow_the_model(random_toy):
    assert default_templates(random_toy, "surgery") == "toy" and TEMPLATE_SETS["toy"] == ("a photo of a {}",)
    assert random_toy.tokenizer.unknown_words(list(TEMPLATE_SETS["toy"])) == ["{", "}"]  # only the placeholder
    assert random_toy.tokenizer.unknown_words(list(IMAGENET_TEMPLATES))  # what the toy CLIP was spared
    from cliplens.models.base import CLIPAdapter

    assert CLIPAdapter.prompt_templates is None  # real CLIPs: the command's own default
    assert default_templates(object(), "imagenet") == "imagenet"


def test_api_defaults(random_toy):
    img = save_image_tensor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = score_classes(random_toy, [img], ["red circle", "blue square"])
        pts = text_points(random_toy, img, "red circle")
    assert res.settings["templates"] == "toy" and pts.settings["templates"] == 1
    assert not [w for w in caught if "vocabulary" in str(w.message)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CLIP Surgery's words: not in the toy vocabulary
        explicit = score_classes(random_toy, [img], ["red circle", "blue square"], templates="surgery")
    assert explicit.settings["templates"] == "surgery"


def test_api_defaults_for_a_real_clip():
    open_clip = pytest.importorskip("open_clip")
    import torch

    import cliplens

    torch.manual_seed(0)
    model = open_clip.CLIP(16, vision_cfg=dict(image_size=32, patch_size=16, width=32, layers=1, head_width=16),
                           text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    adapter = cliplens.wrap(model)
    res = score_classes(adapter, [torch.rand(3, 32, 32)], ["cat", "dog"])
    assert res.settings["templates"] == "surgery" and len(SURGERY_TEMPLATES) == 85


def save_image_tensor():
    import torch

    return torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("command", ["tags", "segment", "points"])
def test_commands_on_the_toy_model_warn_only_about_typed_words(command, toy_args, tmp_path):
    image = save_image(tmp_path / "img.png")

    def call(words: str, *extra: str):
        if command == "tags":
            return run("tags", image, "--classes", words, *toy_args, *extra)
        if command == "segment":
            return run("segment", image, "--classes", words, *toy_args, "--out", tmp_path / f"seg{len(extra)}", *extra)
        return run("points", image, "--text", words.replace(",", " "), *toy_args, *extra)

    r = call("red circle,blue square")
    assert r.exit_code == 0, r.output
    assert "vocabulary" not in one_line(r.stderr), r.stderr  # the toy words, in the toy's own prompt form
    r = call("red zebra,blue square")
    assert r.exit_code == 0, r.output
    err = one_line(r.stderr)
    assert err.count("vocabulary") == 1 and "has no word 'zebra';" in err, err  # the typed word, and only it
    r = call("red circle,blue square", "--templates", "imagenet")  # asked for: CLIP's words, warned about
    assert r.exit_code == 0, r.output
    assert "'sculpture'" in one_line(r.stderr)


def test_tags_json_reports_the_templates_used(toy_args, tmp_path):
    image = save_image(tmp_path / "img.png")
    r = run("tags", image, "--classes", "red circle,blue square", "--json", *toy_args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["templates"] == "toy" and out["warnings"] == []
