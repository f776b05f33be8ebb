"""Tables that stay readable at any width: in a terminal of 80 columns and in a pipe (where rich assumes 80).

A value is never cut: numbers and single words (ids, heads, class names) keep their whole width; longer texts
wrap between words. A table too wide for the console is split into parts that repeat its key columns (the
first ``keys``), rather than squeezed into cells of "0…"; one that would need more than two parts and holds
texts is printed as records instead (the keys on a line, then one "column: value" line each). Every command
that prints a table also has ``--json``, which gives the same values to read by a program.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "print_table"]

#: a text column wraps between words, but is never made narrower than this (unless all of it is narrower)
TEXT_MIN = 12
#: a single word longer than this may be folded in a text column (paths, long ids)
WORD_CAP = 40


@dataclass(frozen=True)
class Column:
    """A column: its header, and whether it holds numbers (right-aligned, never wrapped)."""

    header: str
    number: bool = False


def _longest_word(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=0)


def _bounds(col: Column, cells: Sequence[str]) -> tuple[int, int]:
    """(narrowest, natural) width of a column: the narrowest shows every value whole (words whole)."""
    full = max([cell_len(col.header), *(cell_len(c) for c in cells)])
    header_word = _longest_word(col.header)
    if col.number:
        return max([header_word, *(cell_len(c) for c in cells)]), full
    word = min(WORD_CAP, max((_longest_word(c) for c in cells), default=0))
    return min(full, max(header_word, word, TEXT_MIN)), full


def _table_width(widths: Sequence[int]) -> int:
    """A rich table's width with the default box and padding: one space each side of a cell, and borders."""
    return sum(widths) + 3 * len(widths) + 1


def _parts(keys: list[int], rest: list[int], low: list[int], width: int) -> list[list[int]]:
    """The columns after the keys, in groups that fit ``width`` next to the keys (at least one per group)."""
    parts: list[list[int]] = []
    current: list[int] = []
    for i in rest:
        if current and _table_width([low[j] for j in keys + current + [i]]) > width:
            parts.append(current)
            current = []
        current.append(i)
    parts.append(current)
    return parts


def print_table(con: Console, columns: Sequence[Column | str], rows: Sequence[Sequence[object]], *,
                title: str = "", keys: int = 1) -> None:
    """Print ``rows`` under ``columns`` (a :class:`Column` or a text column's header) on ``con``, fitted to its
    width: each value whole, the table split into parts that repeat the first ``keys`` columns when it cannot
    fit. ``title`` is printed above (wrapped to the console, not to the table)."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    bounds = [_bounds(col, [r[i] for r in cells]) for i, col in enumerate(cols)]
    low = [b[0] for b in bounds]
    keys = min(keys, len(cols))
    key_idx, rest = list(range(keys)), list(range(keys, len(cols)))
    parts = _parts(key_idx, rest, low, con.width) if rest else [[]]
    if len(parts) > 2 and key_idx and not all(cols[i].number for i in rest):
        _print_records(con, cols, cells, title, key_idx, rest)
        return
    for n, part in enumerate(parts, 1):
        shown = key_idx + part
        widths = {i: low[i] for i in shown}
        spare = con.width - _table_width(list(widths.values()))
        for number_first in (True, False):  # then the spare width: numbers' headers first, then texts
            for i in shown:
                if cols[i].number == number_first and spare > 0:
                    grow = min(spare, bounds[i][1] - widths[i])
                    widths[i] += grow
                    spare -= grow
        if title:
            label = title if len(parts) == 1 else f"{title} (part {n} of {len(parts)})"
            con.print(Text(label, style="italic"))
        table = Table()
        for i in shown:
            table.add_column(Text(cols[i].header), justify="right" if cols[i].number else "left", width=widths[i],
                             overflow="fold")
        for r in cells:
            table.add_row(*(Text(r[i]) for i in shown))
        con.print(table)


def _print_records(con: Console, cols: list[Column], cells: list[list[str]], title: str, key_idx: list[int],
                   rest: list[int]) -> None:
    """Each row as a record: its key values on one line, then a "header: value" line per other column."""
    if title:
        con.print(Text(title, style="italic"))
    for r in cells:
        con.print(Text(" · ".join(r[i] for i in key_idx), style="bold"))
        for i in rest:
            if r[i]:
                line = textwrap.fill(f"{cols[i].header}: {r[i]}", width=max(20, con.width), initial_indent="  ",
                                     subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
                con.print(Text(line), soft_wrap=True)
