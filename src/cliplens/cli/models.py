"""``cliplens models``: what can be loaded, and whether it decomposes."""

from __future__ import annotations

import json

import click

from cliplens.cli.common import console
from cliplens.cli.tables import print_table


@click.command("models")
@click.option("--family", type=click.Choice(["embedded", "open_clip", "transformers"]), default=None,
              help="Only this family.")
@click.option("--all", "show_all", is_flag=True, help="Also list architectures cliplens cannot decompose.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(family: str | None, show_all: bool, as_json: bool) -> None:
    """List the models cliplens can load (embedded, open_clip names and tags, Hugging Face ids)."""
    from cliplens.models import list_models

    infos = [m for m in list_models() if (family is None or m.family == family) and (show_all or m.decomposable)]
    if as_json:
        click.echo(json.dumps([
            {"name": m.name, "family": m.family, "pretrained": list(m.pretrained), "decomposable": m.decomposable,
             "note": m.note} for m in infos], indent=2))
        return
    rows = []
    for m in infos:
        tags = ", ".join(m.pretrained[:4]) + (f" (+{len(m.pretrained) - 4})" if len(m.pretrained) > 4 else "")
        rows.append((m.name, m.family, tags, "yes" if m.decomposable else "no", m.note))
    con = console()
    print_table(con, ["name", "family", "pretrained", "decomposable", "note"], rows,
                title="Models cliplens can load" + ("" if show_all else " and decompose (--all for the rest)"))
    con.print("Load one with: cliplens decompose IMAGE --model NAME --pretrained TAG_OR_FILE (open_clip names "
              "need --pretrained: a tag, a checkpoint file, or 'random'), or a local folder with --model /path.")


COMMANDS = [models_cmd]
