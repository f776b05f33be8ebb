"""The one progress bar of the package: always on stderr, so that stdout carries only results (tables, JSON)
and stays clean in a pipe (``cliplens … --json | jq``).

Every progress bar (the command line's, the store writer's, the text encoder's, toy training's) is built
here; core modules reach it without importing the command line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar", "stderr_console"]


def stderr_console() -> Any:
    """A rich console on stderr (no syntax highlighting of numbers and paths)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def progress_bar(*columns: Any, enabled: bool = True, transient: bool = True) -> Any:
    """A rich :class:`~rich.progress.Progress` on stderr (a no-op when not ``enabled``). Without ``columns``:
    the description, a bar, done/total and the time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not columns:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=stderr_console(), disable=not enabled, transient=transient)
