"""The ``cliplens`` command line: one module per command group.

Errors a user can cause (cliplens errors and click's usage errors) end as one readable paragraph on
stderr and exit code 2, never a traceback; anything unexpected says it is a bug (``CLIPLENS_DEBUG=1``
shows the traceback).
"""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import Any

import click

from cliplens.cli import (
    analyses,
    atlas,
    decompose,
    demo,
    explain,
    heads,
    models,
    points,
    report,
    segeval,
    segment,
    store,
    tags,
    toy,
)
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


@click.group(cls=Group)
@click.version_option(package_name="cliplens")
def main() -> None:
    """Open up CLIP image encoders and explain, with text, what every part contributes."""
    _warnings_to_stderr()


for _module in (models, decompose, explain, segment, segeval, tags, points, demo, report, store, analyses, atlas, heads,
                toy):
    for _command in _module.COMMANDS:
        main.add_command(_command)
