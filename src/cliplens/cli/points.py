"""``cliplens points``: where a text is in an image, as point prompts for SAM (and SAM's mask from them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from cliplens.cli.common import console, load_model, model_options, model_record, output_option, weights_note
from cliplens.cli.explain import collected_warnings, print_notes
from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.images.io import DEFAULT_MAX_PIXELS, ImageTooLargeError, load_image
from cliplens.report.files import fresh_dir, writable_dir
from cliplens.tasks.choices import SAM_TYPES
from cliplens.text.templates import AUTO, TEMPLATE_SETS

if TYPE_CHECKING:
    import numpy as np

    from cliplens.tasks.points import Points

#: where --sam-checkpoint writes when --out is not given
DEFAULT_OUT = "cliplens-points"


@click.command("points")
@click.argument("image")
@click.option("--text", "-t", required=True, help="What to find in the image.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="Cells of the min–max normalised map at or above this are positive candidates.")
@click.option("--templates", type=click.Choice([AUTO, *sorted(TEMPLATE_SETS)]), default=AUTO, show_default=True,
              help="Prompt ensemble for the text (auto: CLIP Surgery's 85 templates, or the toy CLIP's own 'a photo "
                   "of a {}'; none: the text as it is).")
@click.option("--fit", type=click.Choice(["whole", "squash"]), default="whole", show_default=True,
              help="whole: the whole image, aspect kept; squash: resized to a square (CLIP Surgery's demo). Both "
                   "cover the whole image, so the points land on it.")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Short side of the model input in pixels (default: the model's input size); smaller for very "
                   "wide or tall images, which one forward cannot take whole.")
@click.option("--blocks", type=click.IntRange(min=1), default=None,
              help="CLIP Surgery's surgical blocks (default: 6, or all of a shallower model).")
@click.option("--sam-checkpoint", type=click.Path(path_type=Path), default=None,
              help="A local Segment Anything checkpoint (.pth): also write SAM's best mask for the points.")
@click.option("--sam-type", type=click.Choice(SAM_TYPES), default="vit_b", show_default=True,
              help="The SAM checkpoint's image encoder.")
@output_option("--out", "out_dir", kind="folder", default=None, fallback=DEFAULT_OUT,
               help=f"Folder for a figure of the points (and SAM's mask); default with --sam-checkpoint: "
                    f"{DEFAULT_OUT}.")
@model_options
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images that decode or resize to more pixels than this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def points_cmd(image: str, text: str, threshold: float, templates: str, fit: str, size: int | None,
               blocks: int | None, sam_checkpoint: Path | None, sam_type: str, out_dir: Path | None, model: str,
               pretrained: str | None, device: str, trust_checkpoint: bool, max_pixels: int, as_json: bool) -> None:
    """Point prompts for SAM of where --text is in IMAGE, from CLIP Surgery's map.

    As CLIP Surgery does: the map (feature surgery against the empty prompt) is downsampled ×2 and
    min–max normalised; k = min(number of cells ≥ --threshold, half the cells); the k best cells are
    positive points, the k worst negative, at cell centres in the image's pixels (x, y). With
    --sam-checkpoint, Segment Anything (pip install segment-anything) is prompted with them and its
    best mask is written as a PNG with a figure of the points. There is no sliding window: an image
    too wide or tall for one forward is refused with the --size (or --fit squash) that fits.
    """
    import numpy as np
    from PIL import Image

    from cliplens.report.plotting import slug
    from cliplens.tasks.points import check_sam_checkpoint, default_method, load_sam, sam_masks, text_points

    try:  # before any work: the one image must be readable
        load_image(image, max_pixels=max_pixels)
    except ImageLoadError as e:
        raise ImageLoadError(f"{str(e).rstrip('. ')}. Nothing was done: pass a readable image file (PNG, JPEG, …)"
                             + (", or raise --max-pixels" if isinstance(e, ImageTooLargeError) else ""),
                             source=e.source, reason=e.reason) from None
    if sam_checkpoint is not None:
        check_sam_checkpoint(sam_checkpoint, sam_type)  # before any work
        out_dir = out_dir or Path(DEFAULT_OUT)
    if out_dir is not None:
        writable_dir(out_dir, "--out", create=False)  # before any work
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    depth = adapter.vision.num_layers
    if blocks is not None and blocks > depth:
        raise InvalidInputError(f"--blocks {blocks}: {adapter.name} has {depth} layers; pass 1..{depth}")
    method = default_method(adapter)
    if blocks is not None:
        method = type(method)(blocks=blocks, feature="empty")
    warned: list[str] = []  # unknown words, a tiny image, …: each shown once, on stderr (and in the JSON)
    try:
        with collected_warnings(warned):
            pts = text_points(adapter, image, text, method=method, threshold=threshold,
                              templates=None if templates == "none" else templates, fit=fit, size=size,
                              max_pixels=max_pixels)
    finally:
        print_notes(warned, set())
    files: list[str] = []
    sam_info: dict[str, Any] | None = None
    notes: list[str] = []
    folder: Path | None = None
    if out_dir is not None:
        folder, note = fresh_dir(out_dir)
        if note:
            notes.append(note)
    rgb = np.asarray(load_image(image, max_pixels=max_pixels)) if folder is not None else None
    if rgb is not None and tuple(rgb.shape[:2]) != tuple(pts.image_size):  # the points are in the map's image pixels
        raise InvalidInputError(f"{image!r} read as {rgb.shape[1]}x{rgb.shape[0]} pixels for the figure but "
                                f"{pts.image_size[1]}x{pts.image_size[0]} for the map: is the file changing?")
    mask = None
    if sam_checkpoint is not None:
        if len(pts):
            sam = load_sam(sam_checkpoint, sam_type, device=adapter.device, trust_checkpoint=trust_checkpoint)
            masks, scores = sam_masks(rgb, pts, sam=sam)
            mask = masks[0].numpy()
            sam_info = {"checkpoint": str(sam_checkpoint), "type": sam_type, "best_score": float(scores[0]),
                        "scores": [float(s) for s in scores]}
            path = folder / f"{slug(text)}__mask.png"  # type: ignore[operator]
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
            files.append(str(path))
        else:
            notes.append("no SAM mask: there are no points to prompt it with")
    if folder is not None:
        path = folder / f"{slug(text)}__points.png"
        _figure(rgb, pts, mask, path, text, Path(image).name, adapter.random_weights)  # type: ignore[arg-type]
        files.append(str(path))
    if as_json:
        payload = {**model_record(adapter), **pts.to_dict(), "sam": sam_info, "files": files, "notes": notes,
                   "warnings": warned}
        click.echo(json.dumps(payload, indent=2))
        return
    out, err = console(), console(stderr=True)
    out.print(f"[bold]{adapter.name} ({adapter.family}, weights: {adapter.weights}){weights_note(adapter)}[/]")
    if adapter.random_weights:
        out.print("[bold red]This model has RANDOM weights (--pretrained random): the points below mean nothing.[/]")
    h, w = pts.image_size
    out.print(f"{escape(image)} ({w}x{h} px) · {escape(repr(text))} · map {pts.map_size[1]}x{pts.map_size[0]} cells · threshold "
              f"{pts.threshold}")
    if not len(pts):
        out.print(f"no points: {pts.message}", markup=False)
    else:
        out.print(f"positive points (x, y), ascending score: {_fmt(pts.positives)}")
        out.print(f"negative points (x, y), ascending score: {_fmt(pts.negatives)}")
    if sam_info is not None:
        out.print(f"SAM ({sam_type}): best mask score {sam_info['best_score']:.3f}")
    for n in notes:
        err.print(f"[yellow]note:[/] {escape(n)}")
    for f in files:
        out.print(f"saved: {f}", markup=False)


def _fmt(points: list[list[int]]) -> str:
    return " ".join(f"({x}, {y})" for x, y in points)


def _figure(rgb: np.ndarray, pts: Points, mask: np.ndarray | None, path: Path, text: str, name: str,
            random_weights: bool) -> None:
    """The image with the points (green: positive, red: negative) over the map, and SAM's mask if any."""
    import numpy as np

    from cliplens.evaluation.segmentation import upsample_map
    from cliplens.report.plotting import heading, new_figure, save

    h, w = rgb.shape[:2]
    panels = 2 if mask is not None else 1
    fig = new_figure(3.4 * panels * max(0.8, min(1.5, w / h)), 3.6)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    raw = pts.raw
    if raw is not None:
        m = upsample_map(raw, (h, w))
        lo, hi = float(m.min()), float(m.max())
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        axes[0].imshow(rgb)
        axes[0].imshow(m, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
        axes[0].set_title("map (min–max) and points", fontsize=8)
    if mask is not None:
        axes[1].imshow(rgb)
        axes[1].imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.6, vmin=0, vmax=1)
        axes[1].set_title("SAM's best mask", fontsize=8)
    for ax in axes:
        pos, neg = np.array(pts.positives).reshape(-1, 2), np.array(pts.negatives).reshape(-1, 2)
        ax.scatter(pos[:, 0], pos[:, 1], marker="*", s=90, c="lime", edgecolors="k", linewidths=0.6, label="positive")
        ax.scatter(neg[:, 0], neg[:, 1], marker="X", s=60, c="red", edgecolors="k", linewidths=0.6, label="negative")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_axis_off()
    heading(fig, f"{text!r}: point prompts (green: positive, red: negative)", image_name=name,
            random_weights=random_weights)
    save(fig, path)


COMMANDS = [points_cmd]
