"""``cliplens report``: an HTML page for the user's own images and texts."""

from __future__ import annotations

from pathlib import Path

import click

from cliplens.cli.common import (
    console,
    expand_images,
    layer_options,
    load_model,
    model_options,
    output_option,
    progress,
)
from cliplens.cli.decompose import check_last_layers, image_options
from cliplens.report.files import REPORT_DIR as DEFAULT_OUT
from cliplens.report.files import writable_dir


@click.command("report")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("--text", "-t", "texts", multiple=True, required=True, help="A text to explain (repeat for several).")
@output_option("--out", "out_dir", kind="folder", default=Path(DEFAULT_OUT), show_default=True,
               help="Folder for the page and figures.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many top layers and heads to list per image and text.")
@layer_options("Split attention per head and region (head grids and maps) only")
@click.option("--pool", default=None,
              help="Also describe each image as a sparse sum of this pool's texts (SpLiCE, as 'cliplens describe'): "
                   "general, toy or a file with one text per line.")
@image_options
def report_cmd(images: tuple[str, ...], model: str, pretrained: str | None, device: str, trust_checkpoint: bool,
               texts: tuple[str, ...], out_dir: Path, top: int, last: int | None, layers: tuple[int, ...] | None,
               pool: str | None, recursive: bool, skip_bad: bool, max_pixels: int) -> None:
    """Write an HTML page explaining which layers, heads and image regions of the model carry each
    --text for each IMAGE, with maps over each image.

    IMAGE may be a file or a folder (its image files). The page explains what a direct effect is
    and how parts are named (L5.H0 is layer 5, head 0; indices start at 0). Every image is read
    before anything is written; an unreadable one stops the report, naming it, unless --skip-bad.
    """
    from cliplens.report.page import format_summary, make_report

    paths = expand_images(images, recursive=recursive)
    if pool is not None:
        from cliplens.analyses.pools import load_pool

        load_pool(pool)  # a bad pool fails before any work
    writable_dir(out_dir, "--out", create=False)  # before any work
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    check_last_layers(layers, last, adapter)
    err = console(stderr=True)
    with progress(len(paths) > 1 and err.is_terminal) as bar:
        task = bar.add_task("drawing figures", total=len(paths))
        result = make_report(adapter, paths, texts, out_dir, top=top, last=last,
                             layers=None if layers is None else list(layers), skip_bad=skip_bad,
                             max_pixels=max_pixels, on_progress=lambda done, _: bar.update(task, completed=done),
                             pool=pool)
    if result.note:
        err.print(f"[yellow]note:[/] {result.note}", markup=True)
    for s in result.skipped:
        err.print(f"[yellow]skipped[/] {s['image']}: {s['error']}")
    click.echo(format_summary(result))


COMMANDS = [report_cmd]
