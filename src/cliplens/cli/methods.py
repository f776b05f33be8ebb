"""``cliplens methods``: every map method, its parameters and their defaults, its paper and the code it follows."""

from __future__ import annotations

import json
import re

import click

from cliplens.cli.common import console
from cliplens.errors import InvalidInputError

__all__ = ["COMMANDS", "methods_cmd"]


def _show(value: object) -> str:
    return "None" if value is None else repr(value) if isinstance(value, str) else str(value)


@click.command("methods")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def methods_cmd(name: str | None, as_json: bool) -> None:
    """The map methods (or one, NAME): their parameters with defaults (set any with --param NAME=VALUE in explain,
    segment and segment-eval), the positional rule each uses at another token grid, the paper, and the code whose
    defaults it follows."""
    from cliplens.cli.tables import print_table
    from cliplens.maps.base import map_class, map_names
    from cliplens.maps.params import method_parameters

    names = map_names()
    if name is not None and name not in names:
        raise InvalidInputError(f"no map method {name!r}; the methods: {', '.join(names)}")
    chosen = [name] if name else names
    records = []
    for n in chosen:
        cls = map_class(n)
        records.append({"method": n, "summary": (cls.__doc__ or "").strip().split("\n")[0],
                        "parameters": [{"name": p.name, "default": p.default, "type": p.annotation}
                                       for p in method_parameters(n)],
                        "positional": cls.own_positional, "paper": cls.paper, "code": cls.code})
    con = console()
    if as_json:
        click.echo(json.dumps(records if name is None else records[0], indent=2, default=str))
        return
    if name is None:
        # the paper (authors, venue) before the parameters: the table gives spare width to columns in order, and a
        # method with many parameters (corrclip) would otherwise squeeze every paper into fragments
        rows = [(r["method"], re.sub(r'\s*"[^"]*",?\s*', " ", r["paper"]).strip() or "–",
                 ", ".join(f"{p['name']}={_show(p['default'])}" for p in r["parameters"]) or "–") for r in records]
        print_table(con, ["method", "paper", "parameters (defaults)"], rows,
                    title="map methods: --method NAME; any parameter with --param NAME=VALUE "
                          "(cliplens methods NAME for one in full)")
        return
    r = records[0]
    con.print(f"[bold]{r['method']}[/]: {r['summary']}", soft_wrap=True)
    con.print(f"paper: {r['paper'] or '–'}", soft_wrap=True, markup=False)
    con.print(f"code its defaults follow: {r['code'] or '–'}", soft_wrap=True, markup=False)
    con.print(f"positional rule at another grid: {r['positional'] or 'the model’s own'}", soft_wrap=True,
              markup=False)
    print_table(con, ["parameter", "default", "type"],
                [(p["name"], _show(p["default"]), p["type"]) for p in r["parameters"]])


COMMANDS = [methods_cmd]
