"""Random weights are drawn from a seed (default 0): the same seed gives the same model, a different seed another
one, the caller's random state is left alone, and the seed is recorded; other weights have no seed."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

import cliplens  # noqa: E402
from cliplens.models.base import DEFAULT_SEED  # noqa: E402

TINY = "cliplens-test-seed-vit"
_CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                           "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("oc_config")
    (d / f"{TINY}.json").write_text(json.dumps(_CONFIG))
    open_clip.add_model_config(d)


def load(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cliplens.load(TINY, pretrained="random", **kw)


def test_the_same_seed_gives_the_same_weights():
    a, b = load(), load(seed=DEFAULT_SEED)
    assert DEFAULT_SEED == 0 and a.fingerprint() == b.fingerprint()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the text tower too, not only the image tower
    c, d = load(seed=1), load(seed=1)
    assert c.fingerprint() == d.fingerprint() != a.fingerprint()
    assert a.seed == 0 and c.seed == 1
    assert a.describe()["seed"] == 0 and c.describe()["seed"] == 1 and a.describe()["random_weights"] is True


def test_the_callers_random_state_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    load(seed=5)
    assert torch.equal(torch.rand(4), expected)


def test_the_seed_is_announced_with_the_random_weights():
    with pytest.warns(cliplens.RandomWeightsWarning, match="seed 3"):
        cliplens.load(TINY, pretrained="random", seed=3)


def test_other_weights_have_no_seed():
    toy = cliplens.load("toy", seed=4)  # ignored: the weights are fixed
    assert toy.seed is None and "seed" not in toy.describe()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(TINY, pretrained=None)
    wrapped = cliplens.wrap(model)
    assert wrapped.seed is None and "seed" not in wrapped.describe() and wrapped.weights == "wrapped"
