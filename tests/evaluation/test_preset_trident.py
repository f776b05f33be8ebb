"""The Trident preset (segment-eval --preset trident) against configs/ of YuHengsss/Trident@a93b346."""

from __future__ import annotations

import pytest

from cliplens.datasets.ade20k import ADE20K_CLASSES
from cliplens.datasets.coco import COCO_OBJECT_CLASSES
from cliplens.datasets.voc import VOC_CLASSES
from cliplens.evaluation.method_presets import (
    PRESET_NAMES,
    load_preset,
    preset_method_params,
    preset_protocol,
)
from cliplens.evaluation.protocol import class_queries
from cliplens.maps import get_map

SETS = ("voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff", "cityscapes", "ade20k")


def test_names_its_source_and_covers_the_eight_benchmarks():
    assert "trident" in PRESET_NAMES
    p = load_preset("trident")
    assert p["method"] == "trident" and set(p["datasets"]) == set(p["method_params"]) == set(SETS)
    assert p["source"]["repository"] == "github.com/YuHengsss/Trident"
    assert p["source"]["commit"].startswith("a93b346") and len(p["source"]["commit"]) == 40
    for ds in SETS:
        proto = preset_protocol("trident", ds)
        assert proto.preset.startswith("trident (github.com/YuHengsss/Trident@a93b346 configs/cfg_")
        # Trident slides its own windows and stitches them before SAM: no outer window
        assert proto.fit == "short" and proto.window is None and proto.stride is None and proto.pamr == 0
        get_map("trident", **preset_method_params("trident", ds))  # valid parameters of the method


@pytest.mark.parametrize("ds, want", [
    # (short side, prob_thd, slide_stride, cos_fac, refine_neg_cos): cfg_*.py over base_config.py
    ("voc21", (448, 0.2, 224, 1.2, True)),
    ("voc20", (336, 0.0, 112, 0.0, True)),
    ("context60", (576, 0.15, 224, 1.2, True)),
    ("context59", (576, 0.0, 224, 1.2, True)),
    ("coco-object", (448, 0.25, 224, 1.2, True)),
    ("coco-stuff", (448, 0.0, 224, 1.2, True)),
    ("cityscapes", (688, 0.0, 224, 3.0, False)),
    ("ade20k", (576, 0.0, 224, 1.2, False)),
])
def test_settings_are_the_configs(ds, want):
    p = preset_protocol("trident", ds)
    m = preset_method_params("trident", ds)
    assert (p.size, p.prob_threshold, m["slide_stride"], m["cos_fac"], m["refine_neg_cos"]) == want
    assert p.logit_scale == 40.0 and m["slide_crop"] == 336 and (m["beta"], m["gamma"]) == (1.2, 3.0)
    assert m.get("sam_halves", False) == (ds == "cityscapes")  # the original's Cityscapes case


def test_query_names_are_tridents_files():
    def queries(classes, ds):
        p = preset_protocol("trident", ds)
        return class_queries(classes, p.names, ds, p.queries)

    q = queries(VOC_CLASSES, "voc21")
    assert len(q[0]) == 26 and q[0][0] == "sky" and q[VOC_CLASSES.index("boat")] == ["ship"]
    assert q[VOC_CLASSES.index("person")] == ["person"]  # unlike CorrCLIP's "people"
    q = queries(COCO_OBJECT_CLASSES, "coco-object")
    assert len(q[0]) == 16 and "bed" not in q[0] and "lamp" not in q[0] and "rail" in q[0]
    q = queries(ADE20K_CLASSES, "ade20k")
    assert q[ADE20K_CLASSES.index("chest of drawers")] == ["chestofdrawers"]
