"""``cliplens decompose``: which layers, heads and image regions push each image toward each text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cliplens.cli.common import (
    console,
    expand_images,
    layer_options,
    load_model,
    model_options,
    model_record,
    output_option,
    progress,
    weights_note,
)
from cliplens.cli.tables import Column, print_table
from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.report.files import fresh_dir, unique_path, writable_dir

if TYPE_CHECKING:
    import torch

    from cliplens.images import SkippedImage
    from cliplens.models import CLIPAdapter


def image_options(f: Any) -> Any:
    """``--recursive``, ``--skip-bad``, ``--max-pixels`` for commands that take IMAGE... arguments."""
    from cliplens.images import DEFAULT_MAX_PIXELS

    f = click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse images that decode or resize to more pixels than this.")(f)
    f = click.option("--skip-bad", is_flag=True, help="Skip images that cannot be read instead of stopping.")(f)
    f = click.option("--recursive", "-r", is_flag=True, help="Also take the images in sub-folders of a folder.")(f)
    return f


def check_last_layers(layers: tuple[int, ...] | None, last: int | None, adapter: Any) -> None:
    """``--layers`` (indices) or ``--last K`` against the model's depth: one clear message."""
    depth = adapter.vision.num_layers
    if (layers is not None or last is not None) and depth == 0:  # an opaque trunk (ResNet): no layers to split
        from cliplens.core.trunk import needs_blocks

        needs_blocks("--layers" if layers is not None else "--last", adapter.vision)
    if last is not None and not 1 <= last <= depth:
        raise InvalidInputError(f"--last {last}: {adapter.name} has {depth} layers; pass 1..{depth} (the last K "
                                "layers whose attention is split per head and region), or leave --last out for all.")
    if layers is not None:
        from cliplens.core.plan import select_layers

        try:
            select_layers(depth, list(layers), last)
        except InvalidInputError as e:
            raise InvalidInputError(f"--layers {','.join(map(str, layers))}: {e}") from None


@click.command("decompose")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("--text", "-t", "texts", multiple=True, required=True, help="A text to explain (repeat for several).")
@layer_options("Split attention per head and region only")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many layers/heads/regions to show.")
@click.option("--relative", is_flag=True,
              help="Rank the parts by their score minus its mean over the given texts (needs 2+ texts).")
@output_option("--maps", "maps_dir", kind="folder", default=None,
               help="Also save a heatmap PNG per image and text in this folder.")
@image_options
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def decompose_cmd(images: tuple[str, ...], model: str, pretrained: str | None, device: str, trust_checkpoint: bool,
                  texts: tuple[str, ...], last: int | None, layers: tuple[int, ...] | None, top: int, relative: bool, maps_dir: Path | None,
                  recursive: bool, skip_bad: bool, max_pixels: int, batch_size: int, as_json: bool) -> None:
    """Which layers, heads and image regions push each IMAGE's embedding toward each --text.

    IMAGE may be a file or a folder (its image files; hidden files are skipped). Scores are
    contributions to the cosine similarity of image and text; over all components they add up
    to it exactly. A file that cannot be read stops the run with its name, after everything
    before it was printed and saved; --skip-bad skips it instead.
    """
    from cliplens.decomposition import resolve_layers, summarize
    from cliplens.images import SkippedImage

    paths = expand_images(images, recursive=recursive)
    if maps_dir is not None:
        maps_dir = writable_dir(maps_dir, "--maps", create=False)  # before any work
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    check_last_layers(layers, last, adapter)
    if maps_dir is not None:
        maps_dir, maps_note = fresh_dir(maps_dir, "--maps")
        if maps_note:
            console(stderr=True).print(f"[yellow]note:[/] {maps_note}", soft_wrap=True)
    depth = adapter.vision.num_layers
    head_layers = (resolve_layers(None if layers is None else list(layers), depth, last=last)
                   if layers is not None or last is not None else None)
    directions = adapter.encode_text(list(texts))
    notes: list[str] = []
    if relative and len(texts) < 2:
        notes.append("--relative does nothing with one text: it ranks each part by its score minus the part's mean "
                     "score over the given texts. Pass two or more --text.")
        relative = False
    err = console(stderr=True)
    for n in notes:
        err.print(f"[yellow]note:[/] {n}")
    out = console()
    header = (f"{adapter.name} ({adapter.family}, weights: {adapter.weights}){weights_note(adapter)}")
    if not as_json:
        out.print(f"[bold]{header}[/]")
        if adapter.random_weights:
            out.print("[bold red]This model has RANDOM weights (--pretrained random): every score below is "
                      "meaningless.[/]")
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    worst = 0.0
    stop: SkippedImage | None = None
    with progress(len(paths) > batch_size and not as_json) as bar:
        task = bar.add_task("decomposing", total=len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            report = adapter.preprocess_with_report(chunk, skip_bad=True, max_pixels=max_pixels)
            bad, kept = report.skipped, list(report.kept)
            rows = list(range(len(kept)))
            if bad and not skip_bad:
                first = bad[0].index
                rows = [r for r in rows if kept[r] < first]
                stop = SkippedImage(first, chunk[first], bad[0].reason)
            elif bad:
                skipped += [{"image": chunk[s.index], "error": s.reason} for s in bad]
                for s in bad:
                    err.print(f"[yellow]skipped[/] {chunk[s.index]}: {s.reason}")
            if rows:
                px = report.pixel_values[rows]
                dec = adapter.decompose(px, spatial=True, layers=head_layers)
                worst = max(worst, dec.check())
                summary = summarize(dec, directions, list(texts), top=top, relative=relative)
                for r in rows:
                    path = chunk[kept[r]]
                    item: dict[str, Any] = {"image": path, "texts": [e.to_dict() for e in summary[r]]}
                    if maps_dir is not None:
                        item["maps"] = _save_maps(adapter, dec, directions, texts, r, path, px[r], maps_dir,
                                                  max_pixels)
                    results.append(item)
                    if not as_json:
                        _print_tables(out, item, top, weights_note(adapter), relative)
            bar.update(task, advance=len(chunk))
            if stop is not None:
                break
    if as_json:
        payload = {**model_record(adapter), "texts": list(texts), "relative": relative,
                   "part_scores": ("relative: each part's score minus its mean over the texts" if relative else
                                   "each part's score: its direct effect · the text (they sum to the similarity)"),
                   "exactness_relative_error": worst, "results": results, "skipped": skipped, "notes": notes}
        if stop is not None:
            payload["stopped_at"] = {"image": stop.source, "error": stop.reason}
        click.echo(json.dumps(payload, indent=2))
    elif results:
        out.print(f"parts sum to the embedding within {worst:.1e} (relative) for every image above")
    if stop is not None:
        raise _stopped(stop, len(results), maps_dir, as_json)
    if not results:
        raise ImageLoadError(f"no image could be loaded ({len(skipped)} skipped, see above); first problem: "
                             f"{skipped[0]['image']}: {skipped[0]['error']}",
                             source=skipped[0]["image"], reason=skipped[0]["error"])


def _stopped(bad: SkippedImage, done: int, maps_dir: Path | None, as_json: bool) -> ImageLoadError:
    """The error that ends a run at an image that cannot be loaded, saying what was finished before it."""
    if done:
        where = "in the JSON above" if as_json else "printed above"
        if maps_dir is not None:
            where += f", their maps in {maps_dir}"
        finished = f"the {done} image{'s' if done > 1 else ''} before it {'are' if done > 1 else 'is'} done ({where})"
    else:
        finished = "no image was finished before it"
    return ImageLoadError(f"cannot load image {bad.source!r}: {bad.reason}. Stopped there: {finished}. Fix or remove "
                          "the file, or pass --skip-bad to skip images that cannot be loaded.",
                          source=bad.source, reason=bad.reason)


def _save_maps(adapter: CLIPAdapter, dec: Any, directions: torch.Tensor, texts: tuple[str, ...], row: int,
               image_path: str, pixels: torch.Tensor, out_dir: Path, max_pixels: int) -> list[str]:
    import numpy as np

    from cliplens.images import load_image
    from cliplens.report.plotting import save_token_map, slug, unnormalize

    cfg = adapter.preprocess_config
    scores = dec[row].normalized().project(directions)
    grid = scores.token_map()[0]  # [T, gh, gw]
    shown = unnormalize(pixels, cfg.mean, cfg.std)
    original = np.asarray(load_image(image_path, max_pixels=max_pixels))
    box = cfg.input_box(*original.shape[:2])
    stem = Path(str(image_path)).stem
    paths = []
    for t, text in enumerate(texts):
        p = unique_path(out_dir / f"{stem}__{slug(text)}.png")
        save_token_map(grid[t], p, model_input=shown, original=original, box=box,
                       title=f"{text!r}: direct effect of each region (all heads, all layers)",
                       image_name=Path(image_path).name, random_weights=adapter.random_weights)
        paths.append(str(p))
    return paths


def _print_tables(con: Any, res: dict[str, Any], top: int, note: str, relative: bool = False) -> None:
    score = Column("rel. score" if relative else "score", number=True)
    for t in res["texts"]:
        title = f"{res['image']}  ·  {t['text']!r}  ·  cosine similarity {t['similarity']:+.4f}"
        if "relative_score" in t:
            title += f"  ·  relative score {t['relative_score']:+.4f} (similarity minus its mean over the texts)"
        title += note
        rows: list[list[str]] = []
        for i in range(top):
            row: list[str] = []
            for key in ("layers", "heads", "regions"):
                items = t[key]
                if i < len(items):
                    it = items[i]
                    label = it["name"]
                    if key == "regions" and it.get("box"):
                        x0, y0, x1, y1 = it["box"]
                        label += f" x{x0}-{x1} y{y0}-{y1}"
                    row += [label, f"{it['score']:+.4f}"]
                else:
                    row += ["", ""]
            rows.append(row)
        print_table(con, ["top layers", score, "top heads", score, "top regions (model-input px)", score], rows,
                    title=title, keys=0)
    for p in res.get("maps", []):
        con.print(f"  map saved: {p}")


COMMANDS = [decompose_cmd]
