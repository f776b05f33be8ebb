"""Method presets: each paper's own evaluation settings per data set (``segment-eval --preset NAME``).

cliplens's protocol (:mod:`cliplens.evaluation.protocol`) is one set of settings for every method. A method's
paper reports numbers under its repository's configuration instead: its short side, window and stride, logit
scale, background threshold, SCLIP's area rule, PAMR, and the spelling of its query names. A preset is one JSON
file per method (``cliplens/data/preset_<name>.json``), written for cliplens from the repository's configuration
files, naming the repository, the commit and the files it follows, and the differences that remain (what
cliplens does not implement, or implements otherwise). A preset covers the benchmarks its repository configures;
``not_configured`` says, per other benchmark, why it has none (the error names it). :func:`preset_protocol` turns it into the
:class:`~cliplens.evaluation.protocol.SegProtocol` of one data set; every option given on the command line still
overrides it, and the settings are printed and saved next to every number.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from cliplens.errors import InvalidInputError
from cliplens.evaluation.choices import PRESET_NAMES
from cliplens.evaluation.protocol import SegProtocol

__all__ = ["PRESET_NAMES", "load_preset", "preset_method_params", "preset_protocol"]

_FIELDS = ("fit", "size", "window", "stride", "logit_scale", "prob_threshold", "templates", "names", "pamr",
           "pamr_dilations", "area_threshold")


@cache
def load_preset(name: str) -> dict[str, Any]:
    """The preset file of method ``name`` (see the module docs)."""
    if name not in PRESET_NAMES:
        raise InvalidInputError(f"no preset {name!r}; the presets: {', '.join(PRESET_NAMES)} (or none: cliplens's own "
                                "protocol)")
    text = (resources.files("cliplens") / "data" / f"preset_{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def _settings(name: str, dataset: str | None) -> dict[str, Any]:
    preset = load_preset(name)
    sets = preset["datasets"]
    if dataset not in sets:
        why = preset.get("not_configured", {}).get(dataset)  # a benchmark the repository has no configuration for
        note = f" ({why})" if why else ""
        raise InvalidInputError(f"the {name} preset has settings for {', '.join(sets)} (the papers' benchmarks), not "
                                f"for {dataset or 'this data set'}{note}: use --preset none (cliplens's protocol) here")
    return sets[dataset]


def preset_protocol(name: str, dataset: str | None) -> SegProtocol:
    """The protocol of preset ``name`` for ``dataset`` (a preset key: ``voc21``, ``ade20k``, …), its source recorded in
    ``preset``."""
    cfg = _settings(name, dataset)
    src = load_preset(name)["source"]
    fields: dict[str, Any] = {k: cfg[k] for k in _FIELDS if k in cfg}
    if "pamr_dilations" in fields:
        fields["pamr_dilations"] = tuple(fields["pamr_dilations"])
    queries = tuple((c, q) for c, q in cfg.get("queries", []))
    where = f"{src['repository']}@{src['commit'][:7]} {cfg.get('config', '')}".strip()
    return SegProtocol(**fields, queries=queries, preset=f"{name} ({where})")


def preset_method_params(name: str, dataset: str | None) -> dict[str, Any]:
    """The method's own parameters the preset sets for ``dataset`` (e.g. ResCLIP's per-set λ)."""
    _settings(name, dataset)
    return dict(load_preset(name).get("method_params", {}).get(dataset, {}))
