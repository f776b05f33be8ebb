"""segment-eval --preset maskclip: MaskCLIP's own settings per data set, against its repository's configuration files
(chongzhou96/MaskCLIP@245d31f, configs/maskclip/maskclip_vit16_*.py and configs/_base_/datasets/*.py; ADE20K from
maskclip_r50_512x512_ade20k.py, the only ADE20K config), its class names and templates
(tools/maskclip_utils/prompt_engineering.py), and the preset's method on the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cliplens.errors import InvalidInputError
from cliplens.evaluation.method_presets import (
    PRESET_NAMES,
    load_preset,
    preset_method_params,
    preset_protocol,
)
from cliplens.evaluation.protocol import class_queries
from cliplens.text.templates import TEMPLATE_SETS

CONFIGURED = ("voc20", "context59", "coco-stuff", "cityscapes", "ade20k")


@pytest.mark.parametrize("ds, size", [
    # test_cfg mode='whole' everywhere (no window); Resize keep_ratio to img_scale:
    ("voc20", 512),  # pascal_voc12_aug_20.py: (2048, 512)
    ("context59", 390),  # pascal_context_59.py: (520, 520), the long side: 520x390 for a 500x375 image
    ("coco-stuff", 512),  # coco-stuff164k.py: (2048, 512)
    ("cityscapes", 512),  # maskclip_vit16_1024x512_cityscapes.py: (1024, 512), 2048x1024 -> 1024x512
    ("ade20k", 512),  # ade20k.py: (2048, 512)
])
def test_maskclip_preset_settings(ds, size):
    p = preset_protocol("maskclip", ds)
    assert (p.fit, p.size, p.window, p.stride) == ("short", size, None, None)
    assert (p.prob_threshold, p.area_threshold, p.pamr) == (0.0, 0.0, 0)  # no background threshold, no refinement
    assert p.templates == "surgery" and p.names == "plain"
    assert p.preset.startswith("maskclip (github.com/chongzhou96/MaskCLIP@245d31f configs/maskclip/maskclip_")


def test_the_templates_are_maskclips_85():
    # prompt_engineering.py L33-35: 85 templates, the first and last of which are these
    t = TEMPLATE_SETS["surgery"]
    assert len(t) == 85 and t[0] == "a bad photo of a {}." and t[-1] == "this is one {} in the scene."


def test_maskclip_preset_is_listed_and_covers_only_the_configured_sets():
    assert "maskclip" in PRESET_NAMES
    p = load_preset("maskclip")
    assert p["method"] == "maskclip" and len(p["source"]["commit"]) == 40
    assert set(p["datasets"]) == set(CONFIGURED)
    assert set(p["not_configured"]) == {"voc21", "context60", "coco-object"}
    assert all(preset_method_params("maskclip", ds) == {} for ds in CONFIGURED)  # residual_ffn=True: the official


def test_a_benchmark_without_a_config_is_refused_saying_why():
    with pytest.raises(InvalidInputError, match=r"not for voc21 \(no config evaluates VOC with its background"):
        preset_protocol("maskclip", "voc21")


def test_maskclip_query_spellings():
    from cliplens.datasets.ade20k import ADE20K_CLASSES
    from cliplens.datasets.cityscapes import CITYSCAPES_CLASSES
    from cliplens.datasets.coco import COCO_STUFF_CLASSES
    from cliplens.datasets.voc import CONTEXT59_CLASSES, VOC20_CLASSES

    def queries(classes, ds):
        p = preset_protocol("maskclip", ds)
        return class_queries(classes, p.names, ds, p.queries)

    q = queries(VOC20_CLASSES, "voc20")
    assert q[0] == ["airplane"] and q[VOC20_CLASSES.index("person")] == ["person"]  # no field synonyms
    assert q[VOC20_CLASSES.index("boat")] == ["boat"] and q[VOC20_CLASSES.index("tv monitor")] == ["tv monitor"]
    assert queries(CONTEXT59_CLASSES, "context59")[0] == ["airplane"]
    q = queries(COCO_STUFF_CLASSES, "coco-stuff")
    assert q[COCO_STUFF_CLASSES.index("wall-brick")] == ["brick wall"]
    assert q[COCO_STUFF_CLASSES.index("sky-other")] == ["sky"]
    assert q[COCO_STUFF_CLASSES.index("traffic light")] == ["traffic light"]  # spaced, unlike the SCLIP line
    assert sum(c != [name] for c, name in zip(q, COCO_STUFF_CLASSES, strict=True)) == 29
    assert queries(CITYSCAPES_CLASSES, "cityscapes") == [[c] for c in CITYSCAPES_CLASSES]
    assert queries(ADE20K_CLASSES, "ade20k") == [[c] for c in ADE20K_CLASSES]


def test_segment_eval_with_the_maskclip_preset_runs_maskclip_on_whole_images(tmp_path):
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root

    root = _voc_root(tmp_path)
    r = run("segment-eval", "--dataset", "voc20", "--data-root", root / "VOCdevkit", "-m", "toy", "--preset",
            "maskclip", "--out", tmp_path / "o", "--overlays", 0, "--json", "--size", 64)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["methods"]) == ["maskclip"]
    p = d["methods"]["maskclip"]["settings"]["protocol"]
    assert (p["window"], p["stride"], p["size"], p["templates"], p["names"]) == (None, None, 64, "surgery", "plain")
    assert p["preset"].startswith("maskclip (github.com/chongzhou96/MaskCLIP@245d31f "
                                  "configs/maskclip/maskclip_vit16_512x512_voc12aug_20.py")
    assert d["methods"]["maskclip"]["images"] == 2


def test_the_fields_table_with_the_maskclip_preset_leaves_out_the_sets_it_does_not_configure(tmp_path):
    from tests.cli.conftest import run
    from tests.cli.test_segment_eval import _voc_root

    root = _voc_root(tmp_path)  # VOC2012: voc21 and voc20 are found; the preset configures voc20 only
    r = run("segment-eval", "--dataset", "all", "--data-root", root, "-m", "toy", "--preset", "maskclip", "--out",
            tmp_path / "o", "--overlays", 0, "--json", "--size", 64)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["column_order"] == ["voc20", "mean"] and d["miou"]["maskclip"]["mean"] == d["miou"]["maskclip"]["voc20"]
    assert "the maskclip preset has no settings for voc21 (no config evaluates VOC" in " ".join(r.output.split())
    assert not (tmp_path / "o" / "voc21").exists()


# the page docs/evaluation/maskclip-preset.md: its Python blocks run below
DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation" / "maskclip-preset.md"


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_docs_page_python_runs_and_says_what_the_preset_holds(capsys):
    block = _doc_blocks()[0]
    exec(compile(block, str(DOC), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "390 None surgery plain"
    assert out[1].startswith("maskclip (github.com/chongzhou96/MaskCLIP@245d31f configs/maskclip/")
    assert out[2] == str(sorted(CONFIGURED)) and out[3].startswith("no config evaluates VOC")
    assert len(out) == 4 + len(load_preset("maskclip")["differences"])


@pytest.mark.filterwarnings("ignore:the toy CLIP's vocabulary")  # the 85 templates' words are not the toy's
def test_the_docs_page_map_snippet_runs(random_toy_weights, tmp_path):
    from PIL import Image

    from cliplens.toyworld.scenes import render_scene, sample_scene

    Image.fromarray(render_scene(sample_scene(0, 0))[0]).save(tmp_path / "scene.png")
    block = _doc_blocks()[1]
    code = block.replace('cliplens.load("toy")', f'cliplens.load("toy", pretrained=r"{random_toy_weights}")')
    code = code.replace('"scene.png"', f'r"{tmp_path / "scene.png"}"')
    assert code != block
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    raw = scope["maps"][0].raw
    assert raw.shape[0] == 3 and scope["labels"].shape == raw.shape[1:]
    assert scope["maps"].settings["method"] == "maskclip"
