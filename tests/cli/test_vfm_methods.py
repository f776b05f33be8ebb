"""The methods with a second vision backbone from the command line: listed with their parameters, the backbone
given by name or folder with ``--param vfm=...``, an unknown one refused in one paragraph."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import one_line, run, save_image
from tests.models.vfm_models import vfm_saved

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def vfm_folder(tmp_path_factory) -> str:
    return vfm_saved(tmp_path_factory.mktemp("vfm") / "dinov2")


def test_cli_lists_and_takes_the_backbone(tiny_vit, vfm_folder, tmp_path):
    r = run("methods", "proxyclip")
    assert r.exit_code == 0, r.output
    text = one_line(r.output)
    assert "vfm" in text and "dino_vitb8" in text and "beta" in text and "1.2" in text and "Lan et al." in text
    image = save_image(tmp_path / "img.png", 60, 80)
    out = tmp_path / "out"
    r = run("explain", image, "-t", "a cat", "-t", "a dog", "--model", tiny_vit, "--pretrained", "random",
            "--method", "proxyclip", "--param", f"vfm={vfm_folder}", "--param", "gamma=4", "--out", out)
    assert r.exit_code == 0, r.output
    settings = json.loads((out / "settings.json").read_text())["methods"]["proxyclip"]
    assert (settings["vfm"], settings["gamma"], settings["beta"]) == (vfm_folder, 4.0, 1.2)
    r = run("explain", image, "-t", "a cat", "--model", tiny_vit, "--pretrained", "random", "--method", "proxyclip",
            "--param", "vfm=no_such_dino", "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "Unknown vision backbone 'no_such_dino'" in one_line(r.output)
    assert "Traceback" not in r.output


def test_methods_with_a_second_backbone_run_by_name_not_in_all():
    from cliplens.cli.explain import resolve_methods
    from cliplens.maps.base import map_class, map_names

    second = map_names(second_backbone=True)
    assert {"proxyclip", "cass"} <= set(second) and all(map_class(n).second_backbone for n in second)
    assert not set(second) & set(map_names(second_backbone=False))
    assert set(map_names()) == set(second) | set(map_names(second_backbone=False))
    assert not set(second) & set(resolve_methods("all"))
    assert resolve_methods("proxyclip") == ["proxyclip"]


def test_cass_is_listed_with_its_parameters():
    r = run("methods", "cass")
    assert r.exit_code == 0, r.output
    text = one_line(r.output)
    assert all(w in text for w in ("vfm", "dino_vitb8", "h_threshold", "global_semantics_weight", "Kim et al."))
