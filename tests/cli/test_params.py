"""Every map method's parameters from the command line (``--param``) and their listing (``cliplens methods``)."""

from __future__ import annotations

import json

import pytest

from cliplens.errors import InvalidInputError
from cliplens.maps import get_map
from cliplens.maps.params import method_parameters, parse_params, parse_value
from tests.cli.conftest import one_line, run, save_image


def test_values_are_read_as_the_obvious_types():
    assert [parse_value(v) for v in ("true", "False", "none", "3", "-2", "0.5", "4,6", "bicubic", "1e-3")] == \
        [True, False, None, 3, -2, 0.5, [4, 6], "bicubic", 1e-3]


def test_a_parameter_goes_to_every_method_that_has_it_or_to_the_one_named():
    got = parse_params(["sigma=3", "gem.blocks=4", "positional=bicubic"], ["naclip", "gem", "resclip"])
    assert got == {"naclip": {"sigma": 3, "positional": "bicubic"}, "gem": {"blocks": 4, "positional": "bicubic"},
                   "resclip": {"sigma": 3, "positional": "bicubic"}}
    with pytest.raises(InvalidInputError, match="no method run here has a parameter 'sigmaa'.*naclip: gaussian"):
        parse_params(["sigmaa=3"], ["naclip"])
    with pytest.raises(InvalidInputError, match="gem has no parameter 'sigma'; its parameters: blocks"):
        parse_params(["gem.sigma=3"], ["gem", "naclip"])
    with pytest.raises(InvalidInputError, match="'sclip' is not one of the methods run here"):
        parse_params(["sclip.positional=bicubic"], ["naclip"])
    with pytest.raises(InvalidInputError, match="NAME=VALUE"):
        parse_params(["sigma"], ["naclip"])


def test_every_method_lists_its_parameters_and_a_bad_value_is_a_clear_error():
    names = {p.name: p.default for p in method_parameters("resclip")}
    assert names == {"tau": 2.0, "lam": 0.3, "sigma": 5.0, "reference_layers": None, "positional": "bicubic_dino"}
    with pytest.raises(InvalidInputError, match="map method 'naclip'"):
        get_map("naclip", sigma="wide")


def test_explain_takes_any_parameter_and_records_it(toy_args, tmp_path):
    image = save_image(tmp_path / "img.png")
    out = tmp_path / "out"
    r = run("explain", image, "-t", "a red circle", "-t", "a blue square", *toy_args, "--method", "naclip",
            "--param", "sigma=2.5", "--param", "naclip.gaussian=false", "--param", "positional=bicubic", "--out", out)
    assert r.exit_code == 0, r.output
    settings = json.loads((out / "settings.json").read_text())["methods"]["naclip"]
    assert (settings["sigma"], settings["gaussian"], settings["positional"]) == (2.5, False, "bicubic")
    r = run("explain", image, "-t", "a red circle", *toy_args, "--method", "naclip", "--param", "blocks=3",
            "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "no method run here has a parameter 'blocks'" in one_line(r.output)
    assert "Traceback" not in r.output


def test_segment_eval_takes_parameters_into_its_settings(toy_args, tmp_path):
    r = run("segment-eval", "toy:n=2,seed=3", *toy_args, "--method", "gem", "--param", "blocks=2",
            "--out", tmp_path / "o", "--overlays", 0, "--json")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "o" / "gem" / "progress.json").read_text())
    assert saved["settings"]["method"]["blocks"] == 2 and saved["settings"]["method"]["positional"] == \
        "bicubic_antialias"


def test_the_methods_command_lists_parameters_papers_and_code():
    r = run("methods")
    assert r.exit_code == 0, r.output
    text = one_line(r.output)
    assert "naclip" in text and "sigma=5.0" in text and "Hajimiri et al., (WACV 2025)" in text
    r = run("methods", "gem", "--json")
    d = json.loads(r.stdout)
    assert d["positional"] == "bicubic_antialias" and "WalBouss/GEM" in d["code"]
    assert {p["name"]: p["default"] for p in d["parameters"]}["blocks"] == 6
    r = run("methods", "nope")
    assert r.exit_code == 2 and "no map method 'nope'" in one_line(r.output)
