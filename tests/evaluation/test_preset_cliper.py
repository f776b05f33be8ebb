"""The CLIPer preset (segment-eval --preset cliper) against its repository's ViT-B/16 configs
(github.com/linsun449/cliper.code@c05fa41, scripts/config/vit-b-16/ovs_*.yaml) and README's starred row."""

from __future__ import annotations

import json

import pytest

from cliplens.evaluation.method_presets import (
    PRESET_NAMES,
    load_preset,
    preset_method_params,
    preset_protocol,
)
from cliplens.maps import get_map
from tests.cli.conftest import TINY_VIT
from tests.cli.conftest import tiny_vit as _tiny_vit  # noqa: F401  (the fixture registering TINY_VIT, patch 56)

SETS = ("voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff", "cityscapes", "ade20k")


def test_cliper_preset_names_its_source_and_covers_the_eight_benchmarks():
    assert "cliper" in PRESET_NAMES
    p = load_preset("cliper")
    assert p["method"] == "cliper" and set(p["datasets"]) == set(p["method_params"]) == set(SETS)
    assert p["source"]["repository"] == "github.com/linsun449/cliper.code"
    assert p["source"]["commit"].startswith("c05fa41") and len(p["source"]["commit"]) == 40
    assert any("cam_to_label" in d for d in p["differences"])  # the labelling rule cliplens does not have
    for ds in SETS:
        proto = preset_protocol("cliper", ds)
        assert proto.preset.startswith("cliper (github.com/linsun449/cliper.code@c05fa41 scripts/config/vit-b-16/")
        assert proto.fit == "short" and proto.window is None and proto.prob_threshold == 0.0 and proto.pamr == 0
        method = get_map("cliper", **preset_method_params("cliper", ds))  # valid parameters of the method
        assert method.params["slide_stride"] == 112 and method.params["fuse"] is True


@pytest.mark.parametrize("ds, config, want", [
    # (short side, logit_scale, attention_thr, slide_crop): the config's values; the starred row's window
    ("voc21", "ovs_voc21.yaml", (336, 100.0, 0.1, 336)),
    ("voc20", "ovs_voc20.yaml", (336, 100.0, 0.1, 336)),
    ("context60", "ovs_context.yaml", (336, 100.0, 0.2, 224)),
    ("context59", "ovs_context59.yaml", (336, 100.0, 0.2, 224)),
    ("coco-object", "ovs_coco5k.yaml", (336, 50.0, 0.2, 224)),
    ("coco-stuff", "ovs_stuff164.yaml", (336, 50.0, 0.2, 224)),
    ("cityscapes", "ovs_city.yaml", (560, 100.0, 0.35, 224)),
    ("ade20k", "ovs_ade150.yaml", (336, 100.0, 0.2, 224)),
])
def test_cliper_preset_settings(ds, config, want):
    proto = preset_protocol("cliper", ds)
    params = preset_method_params("cliper", ds)
    assert proto.preset.endswith(config + ")")
    assert (proto.size, params["logit_scale"], params["attention_thr"], params["slide_crop"]) == want


@pytest.mark.usefixtures("_tiny_vit")
def test_segment_eval_with_the_cliper_preset(tmp_path):
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root

    root = _voc_root(tmp_path)
    r = run("segment-eval", "--dataset", "voc21", "--data-root", root / "VOCdevkit", "-m", TINY_VIT, "-p", "random",
            "--preset", "cliper", "--size", 168, "--param", "cliper.slide_crop=112", "--param", "slide_stride=56",
            "--out", tmp_path / "o", "--overlays", 0, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["methods"]) == ["cliper"]  # the preset's method
    s = d["methods"]["cliper"]["settings"]
    assert s["protocol"]["preset"].startswith("cliper (github.com/linsun449/cliper.code@c05fa41")
    assert s["protocol"]["size"] == 168 and s["protocol"]["window"] is None  # --size wins, whole image
    # the preset's method parameters, where --param does not override them
    m = s["method"]
    assert (m["attention_thr"], m["logit_scale"], m["slide_crop"], m["slide_stride"]) == (0.1, 100.0, 112, 56)
    assert d["methods"]["cliper"]["images"] == 2 and 0.0 <= d["methods"]["cliper"]["miou"] <= 100.0
