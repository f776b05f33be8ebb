"""Documentation that names things names things that exist: every dotted ``cliplens.…`` reference in a
docstring, a comment, the README or a documentation page resolves to a module or an attribute, and every
example that picks an attention strategy or a map method by name (``attention="…"``, ``get_attention("…")``,
``get_map("…")``, ``method="…"``) picks a registered one (or one the same text registers)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import re
import tokenize
from pathlib import Path

import cliplens

SRC = Path(cliplens.__file__).resolve().parent
ROOT = SRC.parents[1]

_REFERENCE = re.compile(r"\bcliplens(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_PICKED = re.compile(r"""\b(attention|get_attention|get_map|method)\s*[=(]\s*["']([A-Za-z0-9_-]+)["']""")
_REGISTERED = re.compile(r"""register_(attention|map)\(\s*["']([A-Za-z0-9_-]+)["']""")


def _prose(path: Path) -> str:
    """What a reader reads in ``path``: a markdown file whole; of a module, its docstrings and comments."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return text
    parts = [ast.get_docstring(node, clean=False) or "" for node in ast.walk(ast.parse(text))
             if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    parts += [tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline) if tok.type == tokenize.COMMENT]
    return "\n".join(parts)


def _documents() -> list[Path]:
    return [*sorted(SRC.rglob("*.py")), ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _resolves(reference: str) -> bool:
    parts = reference.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
            if name in fields and not hasattr(obj, name):
                return name == parts[-1]  # a dataclass field without a class-level default
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _unresolved(text: str) -> set[str]:
    return {ref for ref in (m.group(0).rstrip(".") for m in _REFERENCE.finditer(text)) if not _resolves(ref)}


def _unregistered(text: str) -> set[str]:
    from cliplens.core.attention import attention_names
    from cliplens.maps import map_names

    own = {(kind, name) for kind, name in _REGISTERED.findall(text)}
    known = {"attention": set(attention_names()) | {n for k, n in own if k == "attention"},
             "map": set(map_names()) | {n for k, n in own if k == "map"}}
    out = set()
    for what, name in _PICKED.findall(text):
        kind = "attention" if "attention" in what else "map"
        if name not in known[kind]:
            out.add(f"{what}={name!r}")
    return out


def test_the_checks_catch_what_they_should():
    """The two checks themselves: a stale module, a missing name and an unregistered strategy are caught; a
    dataclass field, a name the text registers itself and the registered names are not."""
    assert _unresolved("see cliplens.toyworld.bench and cliplens.models.view.apply_activation") == {
        "cliplens.toyworld.bench", "cliplens.models.view.apply_activation"}
    assert not _unresolved("cliplens.maps.Maps.settings, cliplens.core.layers.apply_activation, cliplens.toyworld.")
    assert _unregistered('SidePath("surgery", attention="vv") and get_map("surgery")') == {"attention='vv'"}
    assert not _unregistered('@register_attention("sharpened") ... attention="sharpened", method="naclip"')


def test_references_to_cliplens_names_resolve():
    bad = {f"{path.relative_to(ROOT)}: {ref}" for path in _documents() for ref in _unresolved(_prose(path))}
    assert not bad, "references to names that do not exist:\n" + "\n".join(sorted(bad))


def test_examples_pick_registered_strategies_and_methods():
    bad = {f"{path.relative_to(ROOT)}: {pick}" for path in _documents() for pick in _unregistered(_prose(path))}
    assert not bad, "examples that pick what is not registered:\n" + "\n".join(sorted(bad))
