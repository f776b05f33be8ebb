"""``cliplens atlas``: a browsable, offline HTML atlas of every head TEXTSPAN analysed in a store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cliplens.analyses.pools import DEFAULT_POOL_HELP, POOLS, default_pool
from cliplens.cli.analyses import model_for, store_note, textspan_for, textspan_inputs
from cliplens.cli.common import (
    console,
    layer_options,
    loader_options,
    output_option,
    progress,
    threads_option,
    torch_threads,
)
from cliplens.errors import InvalidInputError
from cliplens.report.files import writable_dir


@click.command("atlas")
@click.argument("store", type=click.Path(path_type=Path))
@output_option("--out", "out_dir", kind="folder", default=Path("cliplens-atlas"), show_default=True,
               help="Folder for the atlas (index.html, a page per layer, the images and maps).")
@click.option("--textspan", "textspan_path", type=click.Path(path_type=Path), default=None,
              help="TEXTSPAN results to show (textspan.json or its folder, from 'cliplens textspan STORE --out DIR'); "
                   "default: computed now with --pool, --last or --layers, and --texts.")
@click.option("--pool", default=None,
              help=f"Text pool when TEXTSPAN is computed now: {', '.join(POOLS)}, or a file with one text per line "
                   f"({DEFAULT_POOL_HELP}).")
@layer_options("When TEXTSPAN is computed now: every head", default="the last 4, or all if fewer")
@click.option("--heads", default=None, help="Or these heads only, e.g. 'L10.H3,L11.H0'.")
@click.option("--texts", "m", type=click.IntRange(min=1), default=10, show_default=True,
              help="Texts per head when TEXTSPAN is computed now.")
@click.option("--rank", type=click.IntRange(min=1), default=None, help="Span rank (default: the head dimension).")
@click.option("--images-per-text", "images_per_text", type=click.IntRange(min=1), default=5, show_default=True,
              help="Images shown at each end of each text's direction (highest and lowest scores).")
@click.option("--data", default=None,
              help="The store's data set (the spec or folder given to 'cliplens store build'); default: reopened "
                   "from the store's header. Checked against the store's record either way.")
@click.option("--layout", default=None, help="With --data: its layout (default: detected).")
@click.option("--split", default=None, help="With --data: its split.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="With --data: a loader option (repeat).")
@click.option("--model", "-m", default=None, help="The store's model (default: the one it recorded).")
@click.option("--pretrained", "-p", default=None)
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images run through the model at once (only the images shown are).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@threads_option(2)
def atlas_cmd(store: Path, out_dir: Path, textspan_path: Path | None, pool: str | None, last: int | None,
              layers: tuple[int, ...] | None,
              heads: str | None, m: int, rank: int | None, images_per_text: int, data: str | None, layout: str | None,
              split: str | None, options: tuple[str, ...], model: str | None, pretrained: str | None, device: str,
              batch_size: int, as_json: bool, threads: int) -> None:
    """Write a browsable HTML atlas of the heads of STORE: per head its TEXTSPAN texts and variances, the images
    scoring highest and lowest along each text, and each image's map of the regions that drive it.

    Opens offline from the folder (index.html). Only the images shown are run through the model again.
    """
    from cliplens.analyses.atlas import build_atlas, check_heads, store_dataset
    from cliplens.analyses.textspan import TextSpanResult
    from cliplens.report.atlas import write_atlas
    from cliplens.store import Store

    st = Store(store)
    if textspan_path is not None and (pool or heads or layers or last or rank):
        raise InvalidInputError("--textspan shows results computed before: --pool, --last, --layers, --heads and "
                                "--rank only "
                                "apply when TEXTSPAN is computed now (leave --textspan out)")
    if (layout or split or options) and data is None:
        raise InvalidInputError("--layout, --split and --option describe the data set given with --data")
    spans = TextSpanResult.read(textspan_path) if textspan_path is not None else None
    if spans is not None:
        check_heads(st, spans)
    else:
        if pool is None:
            pool = default_pool(st.header["model"])
        texts, head_list = textspan_inputs(pool, heads)
    dataset = store_dataset(st, data, layout=layout, **loader_options(options, split=split))
    writable_dir(out_dir, "--out", create=False)  # before the work: a folder that cannot be written is said now
    con = console(stderr=True)
    with torch_threads(threads):
        adapter = model_for(st, model, pretrained, device)
        embeddings = None
        if spans is None:
            if not as_json:
                con.print(f"TEXTSPAN: {m} texts per head from the pool {pool!r} …")
            spans, embeddings = textspan_for(st, adapter, texts, pool=str(pool), layers=layers, last=last,
                                             heads=head_list, m=m,
                                             rank=rank, progress=not as_json)
        with progress(not as_json) as bar:
            task = bar.add_task("mapping the images shown", total=None)
            atlas = build_atlas(st, spans, adapter, dataset, images_per_text=images_per_text,
                                text_embeddings=embeddings, batch_size=batch_size,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
            task = bar.add_task("writing the atlas", total=None)
            files = write_atlas(atlas, out_dir, progress=lambda done, total: bar.update(task, completed=done,
                                                                                          total=total))
    n_maps = sum(len({s.index for s in (*t.top, *t.bottom)}) for h in atlas.heads for t in h.texts)
    payload = {"folder": str(files.folder), "index": str(files.index), "pages": [str(p) for p in files.pages],
               "heads": [h.name for h in atlas.heads], "layers": atlas.layers, "images": len(atlas.views),
               "maps": n_maps, "map_source": {str(k): v for k, v in atlas.map_source.items()},
               "note": files.note}
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    out = console()
    if files.note:
        out.print(files.note)
    out.print(store_note(st))
    out.print(f"atlas of {len(atlas.heads)} heads in layers {', '.join(map(str, atlas.layers))}: "
              f"{len(files.pages)} pages, {len(atlas.views)} images, {n_maps} maps; open {files.index}")


COMMANDS = [atlas_cmd]
