"""The architecture can be read off the tree: every package has its place in one order, bottom to top, and
imports only what its rule names (function-level imports, module names in strings and the tables that
``importlib`` loads from included); no import cycles; nothing imports ``cli/``; optional dependencies are
imported only when used; no module grows past 700 lines; the repository root holds only what it should."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cliplens

SRC = Path(cliplens.__file__).resolve().parent
ROOT = SRC.parents[1]

#: the shared modules at the top of the package, bottom to top: every package may import them, and each may
#: import only those before it
SHARED = ("errors", "lazy", "jsonio", "progress", "checkpoints")

#: every package, bottom to top: a package may import only packages before it (and the shared modules)
ORDER = ("core", "text", "images", "toyworld", "decomposition", "models", "maps", "datasets", "evaluation", "tasks",
         "store", "analyses", "report", "experiments", "explore", "cli")

#: what each package may import (besides itself and the shared modules); each set names only packages before
#: it in ORDER, so no import runs upward
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "text": set(),
    "images": {"core"},
    "toyworld": {"core"},  # the generator: scenes, captions, tokenizer, the toy CLIP on core's views
    "decomposition": {"core", "text"},
    "models": {"core", "images", "text", "decomposition", "toyworld"},
    "maps": {"core", "images", "text", "decomposition", "models"},
    "datasets": {"images", "toyworld"},
    "evaluation": {"core", "text", "maps", "datasets"},
    "tasks": {"core", "images", "text", "models", "maps", "evaluation"},
    "store": {"core", "images", "text", "decomposition"},
    "analyses": {"core", "text", "decomposition", "datasets", "store"},
    "report": {"core", "images", "toyworld", "decomposition", "models", "maps", "evaluation", "analyses"},
    "experiments": {"core", "toyworld", "models", "maps", "datasets", "evaluation", "store", "analyses"},
    # the local web app: draws with report/, runs maps, decompositions, tasks and the atlas of a store
    "explore": {"core", "text", "images", "toyworld", "decomposition", "models", "maps", "datasets", "tasks",
                "store", "analyses", "report"},
    "cli": set(ORDER[:-1]),
}

#: the modules that call ``importlib.import_module`` with a name they compute, and the table each reads its
#: names from: ``(module, table, prefix)``; the graph counts the table's entries as the module's imports
DYNAMIC_IMPORTS = (
    ("cliplens.lazy", None, ""),  # a package's ``_LAZY`` table: full module names, seen as strings below
    ("cliplens.models.families", "BUILTIN_MODULES", ""),
    ("cliplens.maps.base", "BUILTIN_MODULES", "cliplens.maps."),
    ("cliplens.cli", "COMMAND_MODULES", "cliplens.cli."),
)

#: what the repository root may hold (tracked or not ignored); the first four it must hold
ROOT_REQUIRED = {"README.md", "pyproject.toml", "src", "tests"}
ROOT_ENTRIES = ROOT_REQUIRED | {".ci", ".gitignore", "benchmarks", "tools", "docs", "mkdocs.yml", "LICENSE"}

MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _table(path: Path, name: str) -> list[str]:
    """The string entries of the module-level table ``name`` (a tuple, a list, or a dict's values)."""
    for node in ast.parse(path.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign)
                                                                        else None)
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            value = ast.literal_eval(node.value)
            return [str(v) for v in (value.values() if isinstance(value, dict) else value)]
    raise AssertionError(f"{path} has no table {name}")


def _imports(source: str, modules: dict[str, Path]) -> set[str]:
    """Every cliplens module the code ``source`` imports: at module level or inside functions, by ``import``
    statements or by a string that names a module (a lazy table, ``importlib.import_module("...")``,
    ``importlib.resources.files("...")``; the top package's name alone reads its data files)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import submodule" imports the submodule; "from pkg import name" the package
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            names = [node.value] if node.value in modules else []  # "cliplens" alone: the package's data
        for name in names:
            if not name.startswith("cliplens"):
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules:
                out.add(name)
    return out


def _loaded(modules: dict[str, Path]) -> dict[str, set[str]]:
    """What each registry of DYNAMIC_IMPORTS loads on first use: the modules named in its table."""
    return {module: {prefix + entry for entry in _table(modules[module], table)}
            for module, table, prefix in DYNAMIC_IMPORTS if table is not None}


def _graph(*, registries: bool = True) -> dict[str, set[str]]:
    """``module -> the modules it imports``; ``registries=False`` leaves out what a registry loads on first use
    (its entries import the registry to register themselves: a loop by design, run once, after both exist)."""
    modules = _modules()
    # a module's own packages are imported before it (``resources.files("cliplens.toyworld")`` in its model)
    graph = {name: {d for d in _imports(path.read_text(), modules) if not (name + ".").startswith(d + ".")}
             for name, path in modules.items()}
    for module, entries in _loaded(modules).items():
        graph[module] = graph[module] | entries if registries else graph[module] - entries
    return graph


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _dynamic_import_calls(source: str) -> list[tuple[int, bool]]:
    """``(line, literal)`` for each ``import_module(...)`` / ``__import__(...)`` call: literal when its argument
    is a plain string (which the graph sees)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
            literal = bool(node.args) and isinstance(node.args[0], ast.Constant)
            out.append((node.lineno, literal))
    return out


def test_every_package_has_its_place():
    """A new package or top-level module must be given its place (and its rule) here."""
    tops = {_package(m) for m in _modules()} - {""}
    expected = set(ORDER) | set(SHARED) | {"__main__"}
    assert tops == expected, f"packages without a place: {sorted(tops - expected)}; gone: {sorted(expected - tops)}"
    assert set(ALLOWED) == set(ORDER)
    for i, package in enumerate(ORDER):
        upward = ALLOWED[package] - set(ORDER[:i])
        assert not upward, f"{package} may import {sorted(upward)}, which stand above it in ORDER"


def test_no_import_cycles():
    """No cycle, counting imports inside functions and modules named in strings; a registry's loading of its
    built-in entries is the one loop allowed (each entry registers itself with it), and only as a table in
    DYNAMIC_IMPORTS."""
    graph = _graph(registries=False)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_layers():
    """No import runs upward: each package imports only what ALLOWED names, the shared modules only those
    before them; nothing imports ``cli/`` but the entry point."""
    bad = []
    for name, deps in _graph().items():
        own = _package(name)
        for d in deps:
            top = _package(d)
            if top == own:
                continue
            if own in SHARED:
                ok = top in SHARED[:SHARED.index(own)]
            elif own in ALLOWED:
                ok = top in SHARED or top in ALLOWED[own]
            else:  # the package's front (cliplens/__init__.py) and python -m cliplens
                ok = top != "cli" or name == "cliplens.__main__"
            if not ok:
                bad.append(f"{name} -> {d}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_dynamic_imports_are_seen():
    """``importlib.import_module`` takes a plain string the graph sees, or a name from one of the tables in
    DYNAMIC_IMPORTS, whose entries the graph counts; no other module computes what it imports."""
    computed = sorted(_module_name(p) for p in SRC.rglob("*.py")
                      if any(not literal for _, literal in _dynamic_import_calls(p.read_text())))
    assert computed == sorted(m for m, _, _ in DYNAMIC_IMPORTS), computed
    graph, modules = _graph(), _modules()
    for module, entries in _loaded(modules).items():
        assert entries and entries <= set(modules) and entries <= graph[module], (module, entries - set(modules))


def test_the_graph_sees_every_kind_of_import():
    """The checker itself: an import inside a function, a module named in a string (a lazy table,
    ``importlib.import_module``) and ``from package import submodule`` are all edges; prose is not."""
    modules = _modules()
    source = (
        '"""Mentions cliplens.cli.toy in prose."""\n'
        "import importlib\n"
        "_LAZY = {'Store': 'cliplens.store.reader'}\n"
        "def f():\n"
        "    from cliplens.maps.base import MapMethod\n"
        "    from cliplens.datasets import toy\n"
        "    return importlib.import_module('cliplens.analyses.atlas')\n"
    )
    assert _imports(source, modules) == {"cliplens.store.reader", "cliplens.maps.base", "cliplens.datasets.toy",
                                         "cliplens.analyses.atlas"}
    assert _dynamic_import_calls("import importlib\nm = importlib.import_module(f'cliplens.{x}')\n") == [(2, False)]


def test_no_module_is_longer_than_the_limit():
    """A module past MAX_LINES lines holds more than one idea: split it along a real seam."""
    long = {_module_name(p): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def _root_entries() -> set[str]:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    return {f.split("/", 1)[0] for f in files if (ROOT / f).exists()}


def test_repository_root_holds_only_expected_entries():
    """What a newcomer sees first: the package, its tests, the docs and a few tools; no stray outputs (a
    snippet's file, a run folder) committed or left unignored at the root."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an installed package): the root is not ours to check")
    entries = _root_entries()
    assert ROOT_REQUIRED <= entries, sorted(ROOT_REQUIRED - entries)
    assert entries <= ROOT_ENTRIES, f"unexpected at the repository root: {sorted(entries - ROOT_ENTRIES)}"


def test_optional_dependencies_are_imported_lazily():
    code = ("import sys, cliplens, cliplens.cli, cliplens.experiments.bench, cliplens.report.demo; "
            "print(*(m in sys.modules for m in ('sklearn', 'open_clip', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"] * 3


def _lazy_packages() -> list[Path]:
    return sorted(p for p in SRC.rglob("__init__.py") if "_LAZY = {" in p.read_text())


def test_lazy_exports_agree_with_their_type_checking_imports():
    """A package's lazy table and its ``if TYPE_CHECKING:`` imports name the same things from the same modules,
    every name resolves, and ``__all__`` lists only what the package has."""
    import importlib

    assert len(_lazy_packages()) >= 9
    for path in _lazy_packages():
        tree = ast.parse(path.read_text())
        checking = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
        typed = {a.name: node.module for node in checking.body for a in node.names}
        table = next(n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "_LAZY")
        assert ast.literal_eval(table.value) == typed, path
        package = importlib.import_module(_module_name(path))
        for name in [*typed, *getattr(package, "__all__", [])]:
            assert getattr(package, name) is not None, (path, name)



def test_help_imports_no_model_code():
    """``cliplens --help`` and each command's ``--help`` answer without importing torch (or matplotlib), so they
    take a fraction of a second: the command modules import the heavy code inside their functions."""
    from cliplens.cli import COMMAND_MODULES

    commands = [[]] + [[name] for name in COMMAND_MODULES] + [["store", "build"], ["toy", "train"]]
    code = ("import sys\nfrom click.testing import CliRunner\nfrom cliplens.cli import main\n"
            "args = sys.argv[1:]\nr = CliRunner().invoke(main, [*args, '--help'])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(*(m in sys.modules for m in ('torch', 'matplotlib', 'numpy')))")
    for args in commands:
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
        assert out.split()[:2] == ["False", "False"], (args, out)


PAGE = ROOT / "docs" / "development" / "import-order.md"  # the page docs/development/import-order.md


def test_the_layout_page_states_the_order_and_runs():
    """The documentation page's table is ORDER and ALLOWED, row by row, and its Python blocks run."""
    import re

    rows = re.findall(r"^\| `(\w+)/` \| .*? \| (.*?) \|$", PAGE.read_text(encoding="utf-8"), flags=re.M)
    assert [name for name, _ in rows] == list(ORDER)
    for name, allowed in rows[:-1]:
        assert (set() if allowed == "nothing" else set(allowed.split(", "))) == ALLOWED[name], name
    scope: dict[str, object] = {}
    for block in re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S):
        exec(compile(block, str(PAGE), "exec"), scope)
    assert scope["embedding_width"](scope["model"]) == scope["model"].vision.embed_dim  # type: ignore[operator]
    assert scope["image"].shape == (64, 64, 3) and len(scope["scenes"]) == 2  # type: ignore[attr-defined]
    assert all(len(s.texts) >= 2 for s in scope["scenes"])  # type: ignore[attr-defined]
