"""ProxyCLIP's preset (segment-eval --preset proxyclip) against its repository's configuration
(github.com/mc-lan/ProxyCLIP@e7b767f configs/cfg_*.py, cls_*.txt, proxyclip_segmentor.py defaults)."""

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

#: (size, window, stride, logit_scale, prob_threshold) per set, as the configs and the segmentor's defaults say
WANT = {
    "voc21": (336, 336, 112, 40.0, 0.2),
    "voc20": (336, 336, 112, 40.0, 0.0),
    "context60": (336, 336, 112, 40.0, 0.15),
    "context59": (336, 336, 112, 40.0, 0.0),
    "coco-object": (336, 336, 112, 40.0, 0.25),
    "coco-stuff": (336, 336, 112, 40.0, 0.0),
    "cityscapes": (448, 224, 112, 40.0, 0.0),
    "ade20k": (448, 336, 112, 40.0, 0.0),
}


def test_the_preset_is_registered_and_names_its_source():
    assert "proxyclip" in PRESET_NAMES
    p = load_preset("proxyclip")
    assert p["method"] == "proxyclip" and p["source"]["commit"].startswith("e7b767f")
    assert set(p["datasets"]) == set(WANT)


@pytest.mark.parametrize("ds", sorted(WANT))
def test_settings_per_data_set(ds):
    p = preset_protocol("proxyclip", ds)
    assert (p.size, p.window, p.stride, p.logit_scale, p.prob_threshold) == WANT[ds]
    assert p.fit == "short" and p.pamr == 0 and p.area_threshold == 0.0 and p.templates == "imagenet"
    assert p.preset.startswith("proxyclip (github.com/mc-lan/ProxyCLIP@e7b767f configs/cfg_")
    assert preset_method_params("proxyclip", ds) == {}  # beta, gamma and the backbone: the method's defaults


def test_query_spellings_follow_the_class_files():
    from cliplens.datasets.coco import COCO_OBJECT_CLASSES
    from cliplens.datasets.voc import VOC_CLASSES

    p = preset_protocol("proxyclip", "voc21")
    q = class_queries(VOC_CLASSES, p.names, "voc21", p.queries)
    assert len(q[0]) == 26 and q[0][0] == "sky" and q[0][-1] == "fence"  # cls_voc21.txt's first line
    assert q[VOC_CLASSES.index("boat")] == ["ship"] and q[VOC_CLASSES.index("person")] == ["person"]
    p = preset_protocol("proxyclip", "coco-object")
    q = class_queries(COCO_OBJECT_CLASSES, p.names, "coco-object", p.queries)
    assert len(q[0]) == 16 and "bed" not in q[0] and q[COCO_OBJECT_CLASSES.index("bed")] == ["bed"]
    assert "floor" in q[0] and "lamp" not in q[0]  # this repository's 17 words (less 'bed'), not the 26


def test_segment_eval_runs_the_preset_with_a_given_backbone(tmp_path):
    pytest.importorskip("transformers")
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root
    from tests.models.vfm_models import vfm_saved

    root = _voc_root(tmp_path)
    vfm = vfm_saved(tmp_path / "dino")
    r = run("segment-eval", "--dataset", "voc21", "--data-root", root / "VOCdevkit", "-m", "toy", "--preset",
            "proxyclip", "--param", f"vfm={vfm}", "--out", tmp_path / "o", "--overlays", 0, "--json", "--window", 64,
            "--size", 128, "--limit", 1)  # one small image: the preset's settings are what is checked
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["methods"]) == ["proxyclip"]
    settings = d["methods"]["proxyclip"]["settings"]
    assert (settings["protocol"]["logit_scale"], settings["protocol"]["prob_threshold"]) == (40.0, 0.2)
    assert settings["method"]["vfm"] == vfm and settings["method"]["beta"] == 1.2
