"""segment-eval --preset sfp: SFP's own settings per data set, against its repository's configuration files
(Kimsure/SFP@2804f5b, SFP_ICCV/configs/cfg_*.py, the ViT-B/16 values; SFP_segmentor.py's defaults otherwise), its
query spellings (cls_*.txt), and the preset's method on the command line."""

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

SETS = ("voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff", "cityscapes", "ade20k")


@pytest.mark.parametrize("ds, want", [
    # (size, window, stride, logit_scale, prob_threshold, area_threshold, pamr)
    ("voc21", (336, 224, 112, 50.0, 0.15, 0.1, 0)),  # cfg_voc21.py: area_thd=0.1, logit_scale=50, prob_thd=0.15
    ("voc20", (336, 224, 112, 40.0, 0.0, 0.0, 0)),
    ("context60", (336, 224, 112, 40.0, 0.15, 0.0, 0)),  # prob_thd=0.15
    ("context59", (336, 224, 112, 40.0, 0.0, 0.0, 0)),
    ("coco-object", (336, 224, 112, 55.0, 0.35, 0.0, 0)),  # logit_scale=55, prob_thd=0.35
    ("coco-stuff", (336, 224, 112, 40.0, 0.0, 0.0, 0)),  # 336, not SCLIP's 448
    ("cityscapes", (560, 224, 112, 40.0, 0.0, 0.0, 0)),
    ("ade20k", (384, 224, 112, 40.0, 0.0, 0.0, 0)),  # Resize (2048, 384)
])
def test_sfp_preset_settings(ds, want):
    p = preset_protocol("sfp", ds)
    assert (p.size, p.window, p.stride, p.logit_scale, p.prob_threshold, p.area_threshold, p.pamr) == want
    assert p.fit == "short" and p.names == "field"
    assert p.preset.startswith("sfp (github.com/Kimsure/SFP@2804f5b SFP_ICCV/configs/cfg_")


def test_sfp_preset_is_listed_covers_the_eight_sets_and_sets_no_method_parameter():
    assert "sfp" in PRESET_NAMES
    p = load_preset("sfp")
    assert p["method"] == "sfp" and set(p["datasets"]) == set(SETS) and len(p["source"]["commit"]) == 40
    assert all(preset_method_params("sfp", ds) == {} for ds in SETS)  # one ViT-B/16 setting for every set


def test_sfp_query_spellings():
    from cliplens.datasets.ade20k import ADE20K_CLASSES
    from cliplens.datasets.cityscapes import CITYSCAPES_CLASSES
    from cliplens.datasets.voc import VOC_CLASSES

    p = preset_protocol("sfp", "voc21")
    q = class_queries(VOC_CLASSES, p.names, "voc21", p.queries)
    person = q[VOC_CLASSES.index("person")]
    assert len(person) == 7 and person[0] == "people" and all(x.startswith("people") for x in person)
    assert len(q[0]) == 26 and q[VOC_CLASSES.index("boat")] == ["ship"]  # the field's background words, as SCLIP
    p = preset_protocol("sfp", "cityscapes")
    q = class_queries(CITYSCAPES_CLASSES, p.names, "cityscapes", p.queries)
    assert q[CITYSCAPES_CLASSES.index("person")] == ["people"]
    assert q[CITYSCAPES_CLASSES.index("traffic light")] == ["trafficlight"]
    p = preset_protocol("sfp", "ade20k")
    q = class_queries(ADE20K_CLASSES, p.names, "ade20k", p.queries)
    assert sum(c != [name] for c, name in zip(q, ADE20K_CLASSES, strict=True)) == 15  # the 15 glued names


def test_segment_eval_with_the_sfp_preset_runs_sfp(tmp_path):
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root

    root = _voc_root(tmp_path)
    r = run("segment-eval", "--dataset", "voc21", "--data-root", root / "VOCdevkit", "-m", "toy", "--preset", "sfp",
            "--out", tmp_path / "o", "--overlays", 0, "--json", "--window", 64,
            "--size", 128, "--limit", 1)  # one small image: the preset's settings are what is checked
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["methods"]) == ["sfp"]
    s = d["methods"]["sfp"]["settings"]
    p = s["protocol"]
    assert (p["logit_scale"], p["prob_threshold"], p["area_threshold"], p["window"]) == (50.0, 0.15, 0.1, 64)
    assert p["preset"].startswith("sfp (github.com/Kimsure/SFP@2804f5b SFP_ICCV/configs/cfg_voc21.py")
