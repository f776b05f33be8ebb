"""``cliplens tags``: multi-label recognition, each image's classes ranked by score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from cliplens.cli.classes import class_options, resolve_classes
from cliplens.cli.common import (
    console,
    expand_images,
    load_model,
    model_options,
    model_record,
    progress,
    weights_note,
)
from cliplens.cli.decompose import image_options
from cliplens.cli.explain import collected_warnings, print_notes
from cliplens.cli.tables import Column, print_table
from cliplens.errors import ImageLoadError
from cliplens.tasks.choices import MULTILABEL_METHODS as METHODS
from cliplens.text.templates import AUTO, TEMPLATE_SETS


@click.command("tags")
@click.argument("images", nargs=-1, required=True)
@class_options
@click.option("--method", type=click.Choice(METHODS), default="surgery", show_default=True,
              help="surgery: CLIP Surgery's feature surgery on the image embedding (scores relative to the given "
                   "classes; with one class, image · (class − empty prompt), with a warning); global: plain CLIP "
                   "cosine similarity.")
@click.option("--templates", type=click.Choice([AUTO, *sorted(TEMPLATE_SETS)]), default=AUTO, show_default=True,
              help="Prompt ensemble for the class names (auto: CLIP Surgery's 85 templates, or the toy CLIP's own "
                   "'a photo of a {}'; none: the names as they are).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many classes to show per image.")
@click.option("--fit", type=click.Choice(["whole", "squash", "crop"]), default="whole", show_default=True,
              help="whole: the whole image, aspect kept; squash: resized to a square; crop: the model's own "
                   "resize and centre crop.")
@model_options
@image_options
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def tags_cmd(images: tuple[str, ...], classes: tuple[str, ...], classes_file: Path | None, class_list: str | None,
             method: str, templates: str,
             top: int, fit: str, model: str, pretrained: str | None, device: str, trust_checkpoint: bool,
             recursive: bool, skip_bad: bool, max_pixels: int, batch_size: int, as_json: bool) -> None:
    """Rank the given classes for each IMAGE (multi-label recognition).

    IMAGE may be a file or a folder (its image files). With --method surgery (the default) a score
    is CLIP Surgery's: the cosine similarity of image and class, weighted by softmax(2 · similarity)
    over the classes, minus its mean over the classes, so scores are relative to the classes given
    (they sum to 0). With a single class there is nothing to compare with: as CLIP Surgery does for
    one text, its score is image · (class − empty prompt), and a warning says so. With --method
    global it is the plain cosine similarity. An image too large for one forward is refused (use
    --fit crop or squash). A file that cannot be read stops the run with its name, after everything
    before it was printed; --skip-bad skips it instead.
    """
    from cliplens.tasks.multilabel import score_classes

    names = resolve_classes(classes, classes_file, class_list)
    paths = expand_images(images, recursive=recursive)
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    note = weights_note(adapter)
    out, err = console(), console(stderr=True)
    if not as_json:
        out.print(f"[bold]{adapter.name} ({adapter.family}, weights: {adapter.weights}){note}[/]")
        if adapter.random_weights:
            out.print("[bold red]This model has RANDOM weights (--pretrained random): every score below is "
                      "meaningless.[/]")
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    stop: tuple[str, str] | None = None
    settings: dict[str, Any] = {}
    notes: list[str] = []  # warnings (one class, tiny images, unknown words), each shown once
    shown: set[str] = set()
    with progress(len(paths) > batch_size and not as_json) as bar:
        task = bar.add_task("scoring", total=len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            try:
                with collected_warnings(notes):
                    res = score_classes(adapter, chunk, names, method=method, templates=None if templates == "none"
                                        else templates, fit=fit, batch_size=batch_size, max_pixels=max_pixels,
                                        skip_bad=True)
            finally:
                print_notes(notes, shown)
            settings = res.settings
            bad = dict(res.skipped)
            rows = list(range(len(res)))
            if bad and not skip_bad:
                first = next(p for p in chunk if p in bad)
                before = chunk[:chunk.index(first)]
                rows = [r for r in rows if res.sources[r] in before]
                stop = (first, bad[first])
            else:
                for source, reason in res.skipped:
                    skipped.append({"image": source, "error": reason})
                    err.print(f"[yellow]skipped[/] {source}: {reason}")
            for r in rows:
                item = {"image": res.sources[r],
                        "ranked": [{"class": c, "score": s} for c, s in res.ranked(r, top)],
                        "scores": {c: float(v) for c, v in zip(res.classes, res.scores[r].tolist(), strict=True)}}
                results.append(item)
                if not as_json:
                    _print_table(out, item, note)
            bar.update(task, advance=len(chunk))
            if stop is not None:
                break
    if as_json:
        payload = {**model_record(adapter), "method": method, "score": settings.get("score"),
                   **{k: settings[k] for k in ("feature", "feature_used") if k in settings},
                   "templates": settings.get("templates", templates), "fit": fit, "classes": names, "top": top, "results": results,
                   "skipped": skipped, "warnings": notes}
        if stop is not None:
            payload["stopped_at"] = {"image": stop[0], "error": stop[1]}
        click.echo(json.dumps(payload, indent=2))
    elif results:
        out.print(f"score: {settings.get('score')}")
    if stop is not None:
        done = (f"the {len(results)} image(s) before it are done ({'in the JSON above' if as_json else 'printed above'})"
                if results else "no image was finished before it")
        raise ImageLoadError(f"cannot load image {stop[0]!r}: {stop[1]}. Stopped there: {done}. Fix or remove the "
                             "file, or pass --skip-bad to skip images that cannot be loaded.",
                             source=stop[0], reason=stop[1])
    if not results:
        raise ImageLoadError(f"no image could be loaded ({len(skipped)} skipped, see above); first problem: "
                             f"{skipped[0]['image']}: {skipped[0]['error']}",
                             source=skipped[0]["image"], reason=skipped[0]["error"])


def _print_table(con: Any, item: dict[str, Any], note: str) -> None:
    con.print(f"[bold]{escape(item['image'])}[/]{escape(note)}")
    print_table(con, [Column("#", number=True), "class", Column("score", number=True)],
                [(str(i), r["class"], f"{r['score']:+.4f}") for i, r in enumerate(item["ranked"], 1)])


COMMANDS = [tags_cmd]
