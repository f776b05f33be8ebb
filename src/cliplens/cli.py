"""The ``cliplens`` command line: one subcommand per job."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cliplens.errors import CliplensError

DEFAULT_MODEL = "toy"


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _warn_to_stderr() -> None:
    err = _console(stderr=True)

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        err.print(f"[yellow]warning:[/] {message}")

    warnings.showwarning = show


class _Group(click.Group):
    """Turns cliplens errors into one readable line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliplensError as e:
            _console(stderr=True).print(f"[bold red]error:[/] {e}")
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="cliplens")
def main() -> None:
    """Open up CLIP image encoders and explain, with text, what every part contributes."""
    _warn_to_stderr()


def _load(model: str, pretrained: str | None, device: str):
    from cliplens.models import load

    return load(model, pretrained=pretrained, device=device)


@main.command("models")
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
    from rich.table import Table

    table = Table(title="Models cliplens can load" + ("" if show_all else " and decompose (--all for the rest)"))
    for col in ("name", "family", "pretrained", "decomposable", "note"):
        table.add_column(col, overflow="fold")
    for m in infos:
        tags = ", ".join(m.pretrained[:4]) + (f" (+{len(m.pretrained) - 4})" if len(m.pretrained) > 4 else "")
        table.add_row(m.name, m.family, tags, "yes" if m.decomposable else "no", m.note)
    _console().print(table)
    _console().print("Load one with: cliplens decompose IMAGE --model NAME [--pretrained TAG_OR_FILE], "
                     "or a local folder/file with --model /path.")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _expand_images(paths: Sequence[str]) -> list[str]:
    """Folders stand for the image files directly inside them (sorted); other paths are kept as given."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise click.BadParameter(f"folder {p!r} has no image files ({', '.join(IMAGE_SUFFIXES)})",
                                         param_hint="IMAGES")
            out += found
        else:
            out.append(p)
    return out


def _batches(seq: Sequence[Any], size: int):
    for i in range(0, len(seq), size):
        yield i, seq[i : i + size]


@main.command("decompose")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
              help="Model name: 'toy', an open_clip name (ViT-B-16), 'hf-hub:…', a transformers id "
                   "(openai/clip-vit-base-patch16) or a local folder/file.")
@click.option("--pretrained", "-p", default=None, help="open_clip pretrained tag or checkpoint file.")
@click.option("--text", "-t", "texts", multiple=True, required=True, help="A text to explain (repeat for several).")
@click.option("--layers", "-l", type=int, default=None,
              help="Split attention per head and region only in the last K layers (default: all layers).")
@click.option("--top", type=int, default=5, show_default=True, help="How many layers/heads/regions to show.")
@click.option("--relative", is_flag=True, help="Rank by score minus the mean over the given texts.")
@click.option("--maps", "maps_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also save a heatmap PNG per image and text in this folder.")
@click.option("--skip-bad", is_flag=True, help="Skip images that cannot be read instead of stopping.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def decompose_cmd(images: tuple[str, ...], model: str, pretrained: str | None, texts: tuple[str, ...],
                  layers: int | None, top: int, relative: bool, maps_dir: Path | None, skip_bad: bool,
                  batch_size: int, device: str, as_json: bool) -> None:
    """Which layers, heads and image regions push each IMAGE's embedding toward each --text.

    IMAGE may be a file or a folder (its image files). Scores are contributions to the cosine
    similarity of image and text; over all components they add up to it exactly.
    """
    import torch

    from cliplens.explain import explain

    if batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch-size")
    images = tuple(_expand_images(images))
    adapter = _load(model, pretrained, device)
    directions = adapter.encode_text(list(texts))
    results: list[dict[str, Any]] = []
    worst = 0.0
    progress = _progress(len(images) > batch_size and not as_json)
    with progress:
        task = progress.add_task("decomposing", total=len(images))
        for _, chunk in _batches(list(images), batch_size):
            report = adapter.preprocess_with_report(list(chunk), skip_bad=skip_bad)
            for s in report.skipped:
                results.append({"image": s.source, "error": s.reason})
            if report.pixel_values.shape[0]:
                with torch.no_grad():
                    dec = adapter.decompose(report.pixel_values, spatial=True, layers=layers)
                worst = max(worst, dec.check())
                expl = explain(dec, directions, list(texts), top=top, relative=relative)
                for row, idx in enumerate(report.kept):
                    path = chunk[idx]
                    item: dict[str, Any] = {"image": path, "texts": [e.to_dict() for e in expl[row]]}
                    if maps_dir is not None:
                        item["maps"] = _save_maps(adapter, dec, directions, texts, row, path, maps_dir)
                    results.append(item)
            progress.update(task, advance=len(chunk))
    payload = {"model": adapter.name, "family": adapter.family, "texts": list(texts),
               "exactness_relative_error": worst, "results": _order(results, images)}
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        _print_tables(payload, top)
    if any("error" in r for r in results):
        sys.exit(1 if not skip_bad else 0)


def _order(results: list[dict[str, Any]], images: Sequence[str]) -> list[dict[str, Any]]:
    rank = {p: i for i, p in enumerate(images)}
    return sorted(results, key=lambda r: rank.get(r["image"], len(rank)))


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=_console(stderr=True), disable=not enabled)


def _save_maps(adapter, dec, directions, texts, row, image_path, out_dir: Path) -> list[str]:
    from cliplens.plotting import save_overlay, slug, unnormalize

    cfg = adapter.preprocess_config
    scores = dec.normalized().project(directions)
    grid = scores.token_map()[row]  # [T, gh, gw]
    # the decomposition keeps the pixels it was given only implicitly: re-preprocess this one image
    img = unnormalize(adapter.preprocess([image_path])[0], cfg.mean, cfg.std)
    stem = Path(str(image_path)).stem
    paths = []
    for t, text in enumerate(texts):
        p = _unique(out_dir / f"{stem}__{slug(text)}.png")
        save_overlay(img, grid[t], p, title=f"{text!r}: direct effect per region")
        paths.append(str(p))
    return paths




def _unique(path: Path) -> Path:
    """Never overwrite a file that is already there: add -2, -3, … to the name."""
    if not path.exists():
        return path
    for i in range(2, 10_000):
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not cand.exists():
            return cand
    raise CliplensError(f"too many files named like {path}")


def _print_tables(payload: dict[str, Any], top: int) -> None:
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{payload['model']}[/] ({payload['family']}); parts sum to the embedding within "
              f"{payload['exactness_relative_error']:.1e} (relative)")
    for res in payload["results"]:
        if "error" in res:
            con.print(f"[red]skipped[/] {res['image']}: {res['error']}")
            continue
        for t in res["texts"]:
            table = Table(title=f"{res['image']}  ·  {t['text']!r}  ·  cosine similarity {t['similarity']:+.4f}",
                          title_justify="left")
            table.add_column("top layers")
            table.add_column("score", justify="right")
            table.add_column("top heads")
            table.add_column("score", justify="right")
            table.add_column("top regions (model-input px)")
            table.add_column("score", justify="right")
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
                table.add_row(*row)
            con.print(table)
        for p in res.get("maps", []):
            con.print(f"  map saved: {p}")


def _mount_optional() -> None:
    """Subcommand groups that live with their feature."""
    from cliplens.demo import demo

    main.add_command(demo)
    try:
        from cliplens.toyworld.cli import toy
    except ImportError:  # pragma: no cover - the toy world ships with the package
        return
    main.add_command(toy)


_mount_optional()
