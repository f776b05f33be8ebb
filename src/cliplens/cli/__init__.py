"""The ``cliplens`` command line: one module per command group.

Errors a user can cause (cliplens errors and click's usage errors) end as one readable paragraph on
stderr and exit code 2, never a traceback; anything unexpected says it is a bug (``CLIPLENS_DEBUG=1``
shows the traceback).
"""

from __future__ import annotations

import ast
import importlib
import sys
import traceback
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import click

from cliplens.cli.common import console, env_flag
from cliplens.errors import CliplensError


def _warnings_to_stderr() -> None:
    err = console(stderr=True)

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        err.print(f"[yellow]warning:[/] {message}")

    warnings.showwarning = show


#: click >= 8.2 raises this (a UsageError that shows the help) for a group called without a command
_NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class Group(click.Group):
    """Turns cliplens errors and click's usage errors (a bad option value, a missing option, …) into one
    readable paragraph and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliplensError as e:
            _print_error(str(e))
            sys.exit(2)
        except _NO_ARGS_HELP:
            raise
        except click.UsageError as e:
            path = e.ctx.command_path if e.ctx is not None else ctx.command_path
            message = e.format_message().rstrip()
            _print_error(f"{message}{'' if message.endswith(('.', '?', '!')) else '.'} See '{path} --help'.")
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            console(stderr=True).print("interrupted")
            sys.exit(130)
        except Exception as e:  # a bug: say so in one paragraph
            if env_flag("CLIPLENS_DEBUG"):
                traceback.print_exc()
            _print_error(f"unexpected {type(e).__name__}: {e}. This looks like a bug in cliplens; rerun with "
                         "CLIPLENS_DEBUG=1 to see the traceback, and please report it.")
            sys.exit(3)


def _print_error(message: str) -> None:
    err = console(stderr=True)
    err.print("[bold red]error:[/] ", end="")
    err.print(message, markup=False)


#: every command: name -> the module of ``cliplens.cli`` that defines it (in its ``COMMANDS`` list). A module is
#: imported only when its command runs or shows its help, so ``cliplens --help`` loads no model code.
COMMAND_MODULES: dict[str, str] = {
    "ablate": "analyses", "atlas": "atlas", "debias": "heads", "decompose": "decompose", "demo": "demo",
    "describe": "describe", "explain": "explain", "explore": "explore", "heads": "describe", "methods": "methods",
    "models": "models", "neurons": "neurons", "points": "points", "report": "report", "retrieve": "heads",
    "segment": "segment", "segment-eval": "segeval", "store": "store", "tags": "tags", "textspan": "analyses",
    "toy": "toy",
}


@cache
def _docstrings(module: str) -> dict[str, str]:
    """The docstring of each command a module defines, read from its source without importing it: the
    decorator ``@click.command("NAME")`` / ``@click.group("NAME")`` names the command."""
    path = Path(__file__).with_name(f"{module}.py")
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr in
                    ("command", "group") and isinstance(deco.func.value, ast.Name) and deco.func.value.id == "click"):
                continue
            names = [a for a in deco.args[:1]] + [k.value for k in deco.keywords if k.arg == "name"]
            for name in names:
                if isinstance(name, ast.Constant):
                    out[str(name.value)] = ast.get_docstring(node) or ""
    return out


class LazyGroup(Group):
    """The top-level group: commands are imported on first use; the command list in ``--help`` is written
    from the commands' docstrings (read from source), so it costs no import."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        mod = importlib.import_module(f"cliplens.cli.{module}")
        return next(c for c in mod.COMMANDS if c.name == cmd_name)

    def all_commands(self) -> dict[str, click.Command]:
        """Every command, imported (for tests and documentation tools that walk the command tree)."""
        return {name: self.get_command(click.Context(self), name) for name in COMMAND_MODULES}  # type: ignore[misc]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(n) for n in COMMAND_MODULES)
        rows = [(name, click.utils.make_default_short_help(_docstrings(module).get(name, ""), limit))
                for name, module in sorted(COMMAND_MODULES.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="cliplens")
def main() -> None:
    """Open up CLIP image encoders and explain, with text, what every part contributes."""
    _warnings_to_stderr()
