"""The extras: named so that every pip accepts them, and every place that names one names a real one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cliplens.errors import install_hint

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def test_extra_names_are_already_normalised():
    """pip normalises extra names (PEP 685: lower case, runs of -_. become -); older pips compare the user's
    spelling with the normalised one, so only names that are already normal work everywhere."""
    for name in extras():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name


def test_every_named_extra_exists():
    """install_hint() calls in the package and `.[extra]` in the README and the documentation pages name extras
    that pyproject defines."""
    have = extras()
    named = set()
    for path in (ROOT / "src" / "cliplens").rglob("*.py"):
        named |= set(re.findall(r"install_hint\(\s*['\"][^'\"]+['\"]\s*,\s*['\"]([^'\"]+)['\"]", path.read_text()))
    assert {"open-clip", "transformers", "sam"} <= named  # the hints the loaders and SAM give
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for group in re.findall(r"\.\[([a-z0-9_,-]+)\]", page.read_text()):
            named |= set(group.split(","))
    assert named and named <= have, named - have


def test_install_hint_names_the_library_and_the_extra():
    hint = install_hint("open_clip_torch", "open-clip")
    assert "pip install open_clip_torch" in hint and 'pip install -e ".[open-clip]"' in hint
