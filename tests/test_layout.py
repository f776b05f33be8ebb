"""The architecture can be read off the tree: no import cycles, core/ imports nothing above it, nothing
imports cli/, and optional dependencies are imported only when used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cliplens

SRC = Path(cliplens.__file__).resolve().parent

#: what each top-level package may import (besides itself and the shared errors, jsonio, checkpoints, progress
#: and lazy)
ALLOWED = {
    "core": set(),
    "images": {"core"},
    "text": set(),
    "decomposition": {"core", "text"},
    "models": {"core", "images", "text", "decomposition", "toyworld"},
    "maps": {"core", "images", "text", "decomposition", "models"},
    "evaluation": {"maps", "text", "datasets"},
    "datasets": {"images", "toyworld"},
    "store": {"core", "images", "text", "decomposition"},
    "analyses": {"core", "decomposition", "store", "text", "datasets"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every cliplens module ``path`` imports, at module level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import submodule" imports the submodule; "from pkg import name" the package
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        for name in names:
            if not name.startswith("cliplens"):
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = _imports(path, modules) - {name}
    return graph


def test_no_import_cycles():
    graph = _graph()
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
    bad = []
    for name, deps in _graph().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in ALLOWED:
            continue
        own = parts[1]
        for d in deps:
            top = d.split(".")[1] if d.count(".") else ""
            if top in ("errors", "jsonio", "checkpoints", "progress", "lazy", own) or top in ALLOWED[own]:
                continue
            if own == "models" and top == "toyworld" and d.split(".")[2] not in ("model", "tokenizer"):
                bad.append((name, d))
            elif not (own == "models" and top == "toyworld"):
                bad.append((name, d))
    assert not bad, bad
    users_of_cli = [n for n, deps in _graph().items() if any(d.startswith("cliplens.cli") for d in deps)
                    and not n.startswith("cliplens.cli") and n != "cliplens.__main__"]
    assert not users_of_cli, users_of_cli


def test_optional_dependencies_are_imported_lazily():
    code = ("import sys, cliplens, cliplens.cli, cliplens.toyworld.bench, cliplens.report.demo; "
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
