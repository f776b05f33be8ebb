"""The sc-clip preset (segment-eval --preset sc-clip) against SC-CLIP's configuration files
(github.com/SuleBai/SC-CLIP@0417ba9: configs/cfg_*.py over scclip_segmentor.py's defaults)."""

from __future__ import annotations

import json

import pytest

from cliplens.evaluation.method_presets import (
    PRESET_NAMES,
    load_preset,
    preset_method_params,
    preset_protocol,
)
from cliplens.maps.base import map_class

#: per data set (short side, logit_scale, prob_thd, area_thd) as the configs set them; every set slides a 224 window
#: with stride 112 (the segmentor's defaults), no PAMR (pamr_steps=0)
CONFIGS = {
    "voc21": (336, 50.0, 0.15, 0.1),  # cfg_voc21.py: area_thd=0.1, logit_scale=50, prob_thd=0.15
    "voc20": (336, 40.0, 0.0, 0.0),
    "context60": (336, 40.0, 0.15, 0.0),  # cfg_context60.py: prob_thd=0.15
    "context59": (336, 40.0, 0.0, 0.0),
    "coco-object": (336, 55.0, 0.35, 0.0),  # cfg_coco_object.py: logit_scale=55, prob_thd=0.35
    "coco-stuff": (336, 40.0, 0.0, 0.0),  # Resize (2048, 336), unlike SCLIP's 448
    "cityscapes": (560, 40.0, 0.0, 0.0),  # Resize (2048, 560)
    "ade20k": (336, 40.0, 0.0, 0.0),
}


def test_the_preset_is_offered_and_runs_sc_clip():
    assert "sc-clip" in PRESET_NAMES
    p = load_preset("sc-clip")
    assert map_class(p["method"]).name == "sc-clip"
    assert p["source"]["commit"].startswith("0417ba9") and set(p["datasets"]) == set(CONFIGS)


@pytest.mark.parametrize("dataset", list(CONFIGS))
def test_the_settings_are_the_configs(dataset):
    size, logit_scale, prob, area = CONFIGS[dataset]
    p = preset_protocol("sc-clip", dataset)
    assert (p.fit, p.size, p.window, p.stride) == ("short", size, 224, 112)
    assert (p.logit_scale, p.prob_threshold, p.area_threshold, p.pamr) == (logit_scale, prob, area, 0)
    assert p.names == "field" and p.preset.startswith("sc-clip (github.com/SuleBai/SC-CLIP@0417ba9 configs/cfg_")
    assert preset_method_params("sc-clip", dataset) == {}  # the method's own defaults are the configs' (ViT-B/16)


@pytest.mark.parametrize("dataset", list(CONFIGS))
def test_the_query_spellings_are_sclips(dataset):
    """SC-CLIP ships SCLIP's class-name files byte for byte, so the queries are SCLIP's preset's."""
    assert preset_protocol("sc-clip", dataset).queries == preset_protocol("sclip", dataset).queries


def test_segment_eval_with_the_preset(tmp_path):
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root

    root = _voc_root(tmp_path)
    r = run("segment-eval", "--dataset", "voc21", "--data-root", root / "VOCdevkit", "-m", "toy", "--preset",
            "sc-clip", "--out", tmp_path / "o", "--overlays", 0, "--json", "--window", 64,
            "--size", 128, "--limit", 1)  # one small image: the preset's settings are what is checked
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["methods"]) == ["sc-clip"]
    s = d["methods"]["sc-clip"]["settings"]
    p = s["protocol"]
    assert (p["logit_scale"], p["prob_threshold"], p["area_threshold"], p["window"]) == (50.0, 0.15, 0.1, 64)
    assert p["preset"].startswith("sc-clip (github.com/SuleBai/SC-CLIP@0417ba9 configs/cfg_voc21.py")
