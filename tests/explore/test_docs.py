"""The explorer's documentation page (docs/tutorials/explore.md): its Python blocks run, in order, in one scope (the
toy model swapped for the small random one), so the page cannot drift from the API; its picture is there."""

from __future__ import annotations

import re
from pathlib import Path

import cliplens

PAGE = Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "explore.md"


def test_the_page_python_blocks_run(random_toy_weights, capsys):
    text = PAGE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    scope: dict = {}
    for block in blocks:
        code = block.replace('cliplens.load("toy")', f'cliplens.load("toy", pretrained=r"{random_toy_weights}")')
        exec(compile(code, str(PAGE), "exec"), scope)
    result = scope["result"]
    assert set(result["similarity"]) == {"a red cross", "a pink circle"}
    assert {f["view"] for f in result["figures"]} == {"maps", "bars"}
    out = capsys.readouterr().out
    assert "'no-such-method' is not a map method" in out and "200" in out
    assert not scope["explorer"].folder.exists()  # close() removed the temporary files
    assert isinstance(scope["explorer"].model, cliplens.CLIPAdapter)
    for picture in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (PAGE.parent / picture).stat().st_size < 150_000


def test_the_explorer_page_is_package_data():
    """The server reads static/index.html from the installed package: pyproject ships every static file."""
    import fnmatch

    import pytest

    tomllib = pytest.importorskip("tomllib")
    root = PAGE.parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cliplens"]
    static = [p.relative_to(root / "src" / "cliplens").as_posix()
              for p in (root / "src" / "cliplens" / "explore" / "static").iterdir()]
    assert static and all(any(fnmatch.fnmatch(s, pattern) for pattern in data) for s in static), (static, data)
