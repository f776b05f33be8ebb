"""``cliplens explore``: the interactive explorer (:mod:`cliplens.explore`) in the browser, on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import click

from cliplens.cli.common import load_model, model_options

__all__ = ["COMMANDS", "explore_cmd"]


@click.command("explore")
@model_options
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="A store (from 'cliplens store build') whose atlas the explorer builds and shows; without "
                   "--model, the explorer also uses the store's model.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a browser (print its address only).")
@click.option("--verbose", is_flag=True, help="Log every request on the terminal.")
def explore_cmd(model: str, pretrained: str | None, device: str, trust_checkpoint: bool, store: Path | None,
                port: int, no_browser: bool, verbose: bool) -> None:
    """Explore a model in the browser: maps of your texts over a photo, layers and heads, a store's atlas.

    Starts a local web app on 127.0.0.1 (only this machine can reach it): pick a toy-world scene or upload a
    photo, type texts or classes, pick one map method or several side by side, and see the maps over the photo,
    the decomposition's layer and head bars, the top heads' maps, CLIP Surgery by head and a segmentation with
    its legend. The model is loaded once; Ctrl-C stops the explorer and removes its temporary files.
    """
    from cliplens.cli.analyses import model_for, store_note
    from cliplens.cli.common import console
    from cliplens.explore import Explorer, serve

    ctx = click.get_current_context()
    st = store_model = None
    err = console(stderr=True)
    if store is not None:
        from cliplens.store import Store

        st = Store(store)
        store_model = model_for(st, None, None, device)
        err.print(store_note(st), soft_wrap=True)
    given = ctx.get_parameter_source("model") is not click.core.ParameterSource.DEFAULT or pretrained is not None
    adapter = load_model(model, pretrained, device, trust_checkpoint) if given or store_model is None else store_model
    serve(Explorer(adapter, store=st, store_model=store_model), port, open_browser=not no_browser, verbose=verbose)


COMMANDS = [explore_cmd]
