"""MkDocs hooks that write the generated parts of the documentation site at build time (``mkdocs.yml``:
``hooks: [tools/docs_hooks.py]``), so no hand-written copy can go stale.

* ``<!-- cliplens:cli -->`` in a page becomes the command-line reference: every command and sub-command of
  ``cliplens.cli.main``, walked from its click groups, each with its summary and its full ``--help`` text.
* ``<!-- cliplens:api PACKAGE -->`` becomes one mkdocstrings block (``::: module``) per public module of
  ``cliplens.PACKAGE`` (the package itself first, then its modules and sub-packages in name order), found by
  walking the source tree: a module added to a package appears in the API reference without an edit here.

Run as a script, it prints the command-line reference (``python tools/docs_hooks.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import click

SRC = Path(__file__).resolve().parents[1] / "src" / "cliplens"
CLI_MARKER = "<!-- cliplens:cli -->"
API_MARKER = re.compile(r"<!-- cliplens:api ([a-z_.]+) -->")
#: the width the ``--help`` texts are written at (the site's code blocks show about 85 columns)
HELP_WIDTH = 84


def _commands() -> list[tuple[str, click.Command, click.Context]]:
    """Every command as ``(path, command, context)``, groups before their sub-commands, in name order."""
    from cliplens.cli import main

    out: list[tuple[str, click.Command, click.Context]] = []

    def walk(cmd: click.Command, name: str, parent: click.Context | None) -> None:
        ctx = click.Context(cmd, info_name=name, parent=parent, terminal_width=HELP_WIDTH, max_content_width=HELP_WIDTH)
        out.append((ctx.command_path, cmd, ctx))
        if isinstance(cmd, click.Group):
            for sub in sorted(cmd.list_commands(ctx)):
                walk(cmd.get_command(ctx, sub), sub, ctx)  # type: ignore[arg-type]

    root = click.Context(main, info_name="cliplens", terminal_width=HELP_WIDTH, max_content_width=HELP_WIDTH)
    out.append(("cliplens", main, root))
    for name, cmd in sorted(main.all_commands().items()):
        walk(cmd, name, root)
    return out


def cli_reference() -> str:
    """The command-line reference in Markdown: one section per command, its summary and its ``--help``."""
    parts = []
    for path, cmd, ctx in _commands():
        kind = "group" if isinstance(cmd, click.Group) else "command"
        summary = cmd.get_short_help_str(limit=200)
        parts.append(f"## `{path}`\n\n*{kind}* — {summary}\n\n```text\n{cmd.get_help(ctx).rstrip()}\n```\n")
    return "\n".join(parts)


def api_modules(package: str) -> list[str]:
    """The dotted names of ``cliplens.PACKAGE`` and every module under it (private ones, ``_*``, left out)."""
    root = SRC.joinpath(*package.split("."))
    if not (root / "__init__.py").is_file():
        raise ValueError(f"cliplens.{package} is not a package under {SRC}")
    names = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("").parts
        if any(p.startswith("_") and p != "__init__" for p in rel):
            continue
        names.append(".".join(rel[:-1] if rel[-1] == "__init__" else rel))
    return sorted(names, key=lambda n: (n != f"cliplens.{package}", n))


def api_reference(package: str) -> str:
    """The mkdocstrings blocks of one package's modules: the package's own docstring (its members are re-exports,
    documented in the modules that define them), then each module in full."""
    package_only = "\n    options:\n      members: false"
    return "\n\n".join(f"::: {name}{package_only if name == f'cliplens.{package}' else ''}"
                         for name in api_modules(package)) + "\n"


def on_page_markdown(markdown: str, **kwargs) -> str:  # noqa: ANN003 (the hook's signature is MkDocs')
    """MkDocs hook: expand the markers of this module in a page."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return API_MARKER.sub(lambda m: api_reference(m.group(1)), markdown)


if __name__ == "__main__":
    print(cli_reference())
