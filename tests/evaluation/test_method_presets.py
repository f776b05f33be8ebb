"""Method presets (segment-eval --preset) and SCLIP's area rule, against the repositories' settings and formula."""

from __future__ import annotations

import json

import pytest
import torch

from cliplens.errors import InvalidInputError
from cliplens.evaluation.method_presets import (
    PRESET_NAMES,
    load_preset,
    preset_method_params,
    preset_protocol,
)
from cliplens.evaluation.protocol import class_queries, predict_labels
from cliplens.maps.base import ImageMaps

SETS = ("voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff", "cityscapes", "ade20k")


def test_every_preset_names_its_source_and_covers_the_eight_benchmarks():
    for name in PRESET_NAMES:
        p = load_preset(name)
        missing = p.get("not_configured", {})  # benchmarks the repository has no configuration for, each with why
        assert p["method"] == name and set(p["datasets"]) | set(missing) == set(SETS)
        assert not set(p["datasets"]) & set(missing) and all(missing.values())
        assert p["source"]["repository"].startswith("github.com/") and len(p["source"]["commit"]) == 40
        for ds in p["datasets"]:
            proto = preset_protocol(name, ds)
            assert proto.preset.startswith(f"{name} (github.com/") and p["datasets"][ds]["config"] in proto.preset


@pytest.mark.parametrize("name, ds, want", [
    # (size, window, stride, logit_scale, prob_threshold, area_threshold, pamr): the configs, README of each repo
    ("naclip", "voc21", (336, None, None, 40.0, 0.1, 0.0, 10)),
    ("naclip", "cityscapes", (560, 224, 112, 40.0, 0.0, 0.0, 10)),
    ("sclip", "voc21", (336, 224, 112, 65.0, 0.1, 0.1, 0)),
    ("sclip", "context60", (336, 224, 112, 50.0, 0.1, 0.0, 0)),
    ("sclip", "coco-stuff", (448, 224, 112, 40.0, 0.0, 0.0, 0)),
    ("clearclip", "voc21", (448, 448, 224, 50.0, 0.5, 0.0, 0)),
    ("clearclip", "cityscapes", (448, 224, 224, 50.0, 0.0, 0.0, 0)),
    ("clearclip", "coco-object", (448, 448, 224, 50.0, 0.4, 0.0, 0)),
    ("resclip", "voc20", (336, None, None, 40.0, 0.0, 0.0, 0)),
])
def test_preset_settings(name, ds, want):
    p = preset_protocol(name, ds)
    assert (p.size, p.window, p.stride, p.logit_scale, p.prob_threshold, p.area_threshold, p.pamr) == want
    assert p.fit == "short" and (not p.pamr or p.pamr_dilations == (8, 16))


def test_preset_query_spellings():
    from cliplens.datasets.ade20k import ADE20K_CLASSES
    from cliplens.datasets.voc import VOC_CLASSES

    q = class_queries(VOC_CLASSES, preset_protocol("clearclip", "voc21").names, "voc21",
                      preset_protocol("clearclip", "voc21").queries)
    assert q[0] == ["background"] and q[VOC_CLASSES.index("boat")] == ["ship"]
    assert q[VOC_CLASSES.index("tv monitor")] == ["tvmonitor"] and q[VOC_CLASSES.index("person")] == ["person"]
    q = class_queries(VOC_CLASSES, "field", "voc21", preset_protocol("naclip", "voc21").queries)
    assert len(q[0]) == 26 and len(q[VOC_CLASSES.index("person")]) == 7  # the field's lists, as the repository
    p = preset_protocol("sclip", "ade20k")
    q = class_queries(ADE20K_CLASSES, p.names, "ade20k", p.queries)
    assert q[ADE20K_CLASSES.index("chest of drawers")] == ["chestofdrawers"]
    assert sum(c != [name] for c, name in zip(q, ADE20K_CLASSES, strict=True)) == 15  # the 15 glued names only
    assert preset_method_params("resclip", "voc20") == {"tau": 2.0, "lam": 0.6}


def test_a_preset_refuses_a_data_set_it_has_no_settings_for():
    with pytest.raises(InvalidInputError, match="has settings for voc21"):
        preset_protocol("naclip", "toy")
    with pytest.raises(InvalidInputError, match="no preset 'surgery'"):
        load_preset("surgery")


def _naive_area_rule(logits, query_class, background, area, prob_threshold):
    """SCLIP's postprocess_result (clip_segmentor.py@b56bd30 L151–170), written out: softmax over queries; a class's
    probability is the max over its queries; argmax; zero every non-background class with at most area × the
    non-background pixels; argmax; below prob_threshold → background."""
    probs = logits.softmax(0)
    C = max(query_class) + 1
    cls = torch.stack([probs[[i for i, c in enumerate(query_class) if c == k]].max(0).values for k in range(C)])
    pred = cls.argmax(0)
    total = sum(int((pred == k).sum()) for k in range(C) if k != background)
    for k in range(C):
        if k != background and int((pred == k).sum()) <= area * total:
            cls[k] = 0
    top, lab = cls.max(0)
    lab[top < prob_threshold] = background
    return lab


def test_area_rule_is_sclips():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(6, 5, 7, generator=g) * 0.2
    raw[2, :3] += 1.0  # class 2 wins a few pixels only
    query_class = [0, 0, 1, 2, 3, 3]
    maps = ImageMaps(raw=raw, input_size=(5, 7), image_size=(5, 7), box=(0.0, 0.0, 5.0, 7.0), source="x")
    for area, thd in ((0.1, 0.0), (0.3, 0.2), (0.0001, 0.0)):
        got = predict_labels(maps, query_class, logit_scale=65.0, prob_threshold=thd, background=0, area_threshold=area)
        want = _naive_area_rule(65.0 * raw, query_class, 0, area, thd)
        assert torch.equal(got, want), (area, thd)
    plain = predict_labels(maps, query_class, logit_scale=65.0, prob_threshold=0.0, background=0)
    assert not torch.equal(plain, predict_labels(maps, query_class, logit_scale=65.0, prob_threshold=0.0, background=0,
                                                 area_threshold=0.3))


def test_segment_eval_with_a_preset(tmp_path):
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root

    root = _voc_root(tmp_path)
    r = run("segment-eval", "--dataset", "voc21", "--data-root", root / "VOCdevkit", "-m", "toy", "--preset",
            "sclip", "--out", tmp_path / "o", "--overlays", 0, "--json", "--window", 64)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["methods"]) == ["sclip"]  # the preset's method
    p = d["methods"]["sclip"]["settings"]["protocol"]
    assert (p["logit_scale"], p["area_threshold"], p["window"], p["stride"]) == (65.0, 0.1, 64, 32)  # --window wins
    assert p["preset"].startswith("sclip (github.com/wangf3014/SCLIP@b56bd30 configs/cfg_voc21.py")
    r = run("segment-eval", "toy:n=2,seed=3", "--preset", "naclip", "--out", tmp_path / "t")
    assert r.exit_code == 2 and "use --preset none" in " ".join(r.output.split())
