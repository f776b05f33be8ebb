"""CASS's preset (segment-eval --preset cass) against its repository's configuration
(github.com/MICV-yonsei/CASS@228ecdd configs/cfg_*.py, cass_segmentor.py defaults, eval_all.sh's --pamr off)."""

from __future__ import annotations

import json

import pytest

from cliplens.evaluation.method_presets import (
    PRESET_NAMES,
    load_preset,
    preset_method_params,
    preset_protocol,
)
from cliplens.evaluation.protocol import class_queries

#: (size, window, stride, logit_scale, prob_threshold) and (global_semantics_weight, mean_vector_weight,
#: h_threshold, rescale) per set, as the configs and the segmentor's defaults say
WANT = {
    "voc21": ((336, None, None, 40.0, 0.1), (0.1, 0.03, 0.10, True)),
    "voc20": ((336, 224, 112, 40.0, 0.0), (0.4, 0.02, 0.10, False)),
    "context60": ((336, 224, 112, 40.0, 0.1), (0.25, 0.04, 0.09, True)),
    "context59": ((336, 224, 112, 40.0, 0.0), (0.25, 0.04, 0.09, True)),
    "coco-object": ((336, 224, 112, 40.0, 0.1), (0.25, 0.01, 0.10, True)),
    "coco-stuff": ((336, 224, 112, 40.0, 0.0), (0.2, 0.02, 0.02, True)),
    "cityscapes": ((560, 224, 112, 40.0, 0.0), (0.1, 0.03, 0.14, False)),
    "ade20k": ((336, 224, 112, 40.0, 0.0), (0.3, 0.05, 0.06, True)),
}


def test_the_preset_is_registered_and_names_its_source():
    assert "cass" in PRESET_NAMES
    p = load_preset("cass")
    assert p["method"] == "cass" and p["source"]["commit"].startswith("228ecdd") and set(p["datasets"]) == set(WANT)


@pytest.mark.parametrize("ds", sorted(WANT))
def test_settings_and_method_parameters_per_data_set(ds):
    from cliplens.maps import get_map

    p = preset_protocol("cass", ds)
    assert (p.size, p.window, p.stride, p.logit_scale, p.prob_threshold) == WANT[ds][0]
    assert p.fit == "short" and p.pamr == 0 and p.area_threshold == 0.0 and p.templates == "imagenet"
    params = preset_method_params("cass", ds)
    method = get_map("cass", **params)  # the preset's parameters are the method's
    got = tuple(method.params[k] for k in ("global_semantics_weight", "mean_vector_weight", "h_threshold", "rescale"))
    assert got == WANT[ds][1]


def test_query_names_are_the_fields():
    from cliplens.datasets.voc import VOC_CLASSES

    p = preset_protocol("cass", "voc21")
    q = class_queries(VOC_CLASSES, p.names, "voc21", p.queries)
    assert len(q[0]) == 26 and len(q[VOC_CLASSES.index("person")]) == 7  # NACLIP's class files, the same here


def test_segment_eval_runs_the_preset_with_a_given_backbone(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("scipy")
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root
    from tests.models.vfm_models import vfm_saved

    root = _voc_root(tmp_path)
    vfm = vfm_saved(tmp_path / "dino", "dino", width=128, heads=4)  # the toy CLIP's width and heads
    r = run("segment-eval", "--dataset", "voc20", "--data-root", root / "VOCdevkit", "-m", "toy", "--preset", "cass",
            "--param", f"vfm={vfm}", "--out", tmp_path / "o", "--overlays", 0, "--json", "--window", 64,
            "--size", 128, "--limit", 1)  # one small image: the preset's settings are what is checked
    assert r.exit_code == 0, r.output
    settings = json.loads(r.stdout)["methods"]["cass"]["settings"]
    assert settings["method"]["vfm"] == vfm and settings["method"]["global_semantics_weight"] == 0.4
    assert settings["method"]["rescale"] is False
