"""The documentation site builds in strict mode (a broken link, anchor or reference fails), its generated pages
hold every command and every module, and strict mode does fail on a broken page. Skipped, with the reason, where
MkDocs, its Material theme or mkdocstrings is not installed (the `test` and `docs` extras install them)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: MkDocs, the Material theme, mkdocstrings and its Python handler, by their import names
MISSING = [name for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
           if importlib.util.find_spec(name) is None]
needs_mkdocs = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (pip install -e '.[docs]')")


def _hooks():
    """tools/docs_hooks.py, imported by path (it is a MkDocs hook, not a package module)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = _build(ROOT / "mkdocs.yml", out)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stderr[-6000:]}"
    return out


@needs_mkdocs
def test_site_builds_strict_with_every_page(site):
    pages = sorted(p.relative_to(ROOT / "docs").with_suffix(".html") for p in (ROOT / "docs").rglob("*.md"))
    for page in pages:
        assert (site / page).is_file(), f"{page} was not built"
    assert (site / "images" / "demo-segmentation.png").is_file()


@needs_mkdocs
def test_cli_reference_is_generated_from_every_command(site):
    import click

    from cliplens.cli import main

    html = (site / "cli" / "reference.html").read_text(encoding="utf-8")
    assert "cliplens:cli" not in html  # the marker was replaced
    for name, cmd in main.all_commands().items():
        paths = [f"cliplens {name}"] + ([f"cliplens {name} {sub}" for sub in cmd.commands]
                                        if isinstance(cmd, click.Group) else [])
        for path in paths:
            assert f'id="{path.replace(" ", "-")}"' in html, f"{path} has no section in the CLI reference"
        assert cmd.get_short_help_str(limit=60).split(" ")[0] in html
    # an option's help, as click prints it
    assert "--components" in html and "--sam-checkpoint" in html


@needs_mkdocs
def test_api_reference_renders_every_module(site):
    hooks = _hooks()
    api = site / "api"
    html = "".join(p.read_text(encoding="utf-8") for p in api.glob("*.html"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "api").glob("*.md"))
    packages = hooks.API_MARKER.findall(text)
    assert len(packages) >= 13, packages
    for package in packages:
        for module in hooks.api_modules(package):
            assert f'id="{module}"' in html, f"{module} is not rendered in the API reference"
    # a docstring's content reaches the page, its Sphinx roles as code linked to the object's section
    assert "Decompose the image embedding into direct effects" in html
    assert ":class:" not in html and ":func:" not in html and ":mod:" not in html
    assert 'href="#cliplens.maps.base.MapMethod"><code>MapMethod</code>' in (api / "maps.html").read_text()


def test_sphinx_roles_become_code_and_optional_cross_references():
    spec = importlib.util.spec_from_file_location("griffe_roles", ROOT / "tools" / "griffe_roles.py")
    if importlib.util.find_spec("griffe") is None:
        pytest.skip("griffe (mkdocstrings' Python handler) is not installed")
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    out = roles.rewrite("See :class:`~cliplens.maps.base.MapMethod`, :func:`cliplens.load` and :meth:`preprocess` "
                        "or :func:`.points_from_map`.")
    assert out == ('See <autoref identifier="cliplens.maps.base.MapMethod" optional><code>MapMethod</code></autoref>, '
                   '<autoref identifier="cliplens.load" optional><code>cliplens.load</code></autoref> and '
                   "`preprocess` or `points_from_map`.")


def test_every_public_module_has_an_api_page():
    """Every module of the package but the command line is on a page of docs/api/ (a marker of its package or an
    explicit `::: module` line), so a new package cannot go undocumented."""
    hooks = _hooks()
    src = ROOT / "src" / "cliplens"
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "api").glob("*.md"))
    documented = {line.removeprefix("::: ").strip() for line in text.splitlines() if line.startswith("::: ")}
    for package in hooks.API_MARKER.findall(text):
        documented |= set(hooks.api_modules(package))
    modules = set()
    for path in src.rglob("*.py"):
        parts = path.relative_to(src.parent).with_suffix("").parts
        if parts[1:2] in (("cli",), ("__main__",)) or any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert not modules - documented, f"modules with no API page: {sorted(modules - documented)}"


def test_cli_reference_markdown_lists_every_command():
    import click

    from cliplens.cli import main

    md = _hooks().cli_reference()
    assert md.startswith("## `cliplens`")
    for name, cmd in main.all_commands().items():
        assert f"## `cliplens {name}`\n" in md
        if isinstance(cmd, click.Group):
            for sub in cmd.commands:
                assert f"## `cliplens {name} {sub}`\n" in md
    assert md.count("```text") == md.count("\n## ") + 1


def test_hook_expands_markers_and_refuses_unknown_packages():
    hooks = _hooks()
    page = "# x\n\n<!-- cliplens:api maps -->\n"
    out = hooks.on_page_markdown(page)
    assert "::: cliplens.maps\n" in out and "::: cliplens.maps.surgery" in out and "cliplens:api" not in out
    assert out.index("::: cliplens.maps\n") < out.index("::: cliplens.maps.base")
    with pytest.raises(ValueError, match="not a package"):
        hooks.api_modules("nothing_here")


@needs_mkdocs
def test_strict_build_fails_on_a_broken_link_anchor_and_reference(tmp_path):
    """The project's own settings (validation, plugins, hooks) on one page with a link to a missing page, an
    anchor no page has and a cross-reference to no object: the build fails, naming each."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the page](other.md#no-such-anchor).\n")
    (docs / "other.md").write_text("# Other\n\nSee [gone](missing.md) and [a class][cliplens.maps.NoSuchThing].\n")
    config.update(docs_dir=str(docs), nav=["index.md", "other.md"], hooks=[str(ROOT / "tools" / "docs_hooks.py")])
    python = config["plugins"][1]["mkdocstrings"]["handlers"]["python"]
    python["paths"] = [str(ROOT / "src")]
    python["options"]["extensions"] = [str(ROOT / "tools" / "griffe_roles.py")]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    run = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert run.returncode != 0
    warnings = [line for line in run.stderr.splitlines() if line.startswith("WARNING")]
    for what in ("missing.md", "no-such-anchor", "cliplens.maps.NoSuchThing"):
        assert any(what in line for line in warnings), f"strict mode did not warn of {what}:\n{run.stderr[-3000:]}"
