"""The CorrCLIP preset (segment-eval --preset corrclip) against CorrCLIPv1/configs of zdk258/CorrCLIP@103bc18."""

from __future__ import annotations

import pytest

from cliplens.datasets.ade20k import ADE20K_CLASSES
from cliplens.datasets.coco import COCO_OBJECT_CLASSES
from cliplens.datasets.voc import VOC_CLASSES
from cliplens.evaluation.method_presets import PRESET_NAMES, load_preset, preset_protocol
from cliplens.evaluation.protocol import class_queries

SETS = ("voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff", "cityscapes", "ade20k")


def test_names_its_source_and_covers_the_eight_benchmarks():
    assert "corrclip" in PRESET_NAMES
    p = load_preset("corrclip")
    assert p["method"] == "corrclip" and set(p["datasets"]) == set(SETS)
    assert p["source"]["repository"] == "github.com/zdk258/CorrCLIP" and p["source"]["commit"].startswith("103bc18")
    for ds in SETS:
        proto = preset_protocol("corrclip", ds)
        assert proto.preset.startswith("corrclip (github.com/zdk258/CorrCLIP@103bc18 CorrCLIPv1/configs/cfg_")


@pytest.mark.parametrize("ds, want", [
    # (short side, window, stride, logit scale, prob_thd): cfg_*.py, and corrclip_segmentor.py's defaults
    ("voc21", (336, 336, 112, 40.0, 0.2)),
    ("voc20", (336, 336, 112, 40.0, 0.0)),
    ("context60", (336, 336, 112, 40.0, 0.15)),
    ("context59", (336, 336, 112, 40.0, 0.0)),
    ("coco-object", (336, 336, 112, 40.0, 0.25)),
    ("coco-stuff", (336, 336, 112, 40.0, 0.0)),
    ("cityscapes", (448, 224, 112, 40.0, 0.0)),
    ("ade20k", (448, 336, 112, 40.0, 0.0)),
])
def test_settings_are_the_configs(ds, want):
    p = preset_protocol("corrclip", ds)
    assert (p.size, p.window, p.stride, p.logit_scale, p.prob_threshold) == want
    assert p.fit == "short" and p.pamr == 0 and p.area_threshold == 0.0


def test_query_names_are_corrclips_files():
    def queries(classes, ds):
        p = preset_protocol("corrclip", ds)
        return class_queries(classes, p.names, ds, p.queries)

    q = queries(VOC_CLASSES, "voc21")
    assert len(q[0]) == 26 and q[0][0] == "sky" and q[VOC_CLASSES.index("person")] == ["people"]
    assert q[VOC_CLASSES.index("boat")] == ["ship"] and q[VOC_CLASSES.index("dining table")] == ["table"]
    q = queries(COCO_OBJECT_CLASSES, "coco-object")
    assert len(q[0]) == 16 and "bed" not in q[0] and q[1] == ["people"]  # CorrCLIP's own, shorter stuff list
    q = queries(ADE20K_CLASSES, "ade20k")
    assert q[ADE20K_CLASSES.index("chest of drawers")] == ["chestofdrawers"] and q[ADE20K_CLASSES.index("wall")] == ["wall"]
