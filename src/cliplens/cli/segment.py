"""``cliplens segment``: label every pixel of each image with one of the given classes or background
(:mod:`cliplens.tasks.segment`), as palette PNGs, pictures with a legend and the class maps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cliplens.cli.classes import class_options, resolve_classes
from cliplens.cli.common import (
    console,
    expand_images,
    load_model,
    model_options,
    model_record,
    output_option,
    progress,
    weights_note,
)
from cliplens.cli.decompose import image_options
from cliplens.cli.explain import (
    collected_warnings,
    make_methods,
    make_targets,
    map_options,
    param_option,
    print_notes,
    resolve_methods,
    run_in_chunks,
    stopped_error,
    surgery_options,
)
from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.report.files import fresh_dir, unique_path, writable_dir
from cliplens.text.templates import AUTO, TEMPLATE_SETS

if TYPE_CHECKING:
    from cliplens.tasks.segment import Segmentation

__all__ = ["COMMANDS", "segment_cmd"]

DEFAULT_OUT = "cliplens-segment"
#: labels 1..254 in a palette PNG (0: background, 255: not seen)
MAX_CLASSES = 254


def _split(values: Sequence[str]) -> list[str]:
    """Comma-separated names (repeated options add up), stripped; empty entries dropped."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _key(name: str) -> str:
    return " ".join(name.lower().split())


@click.command("segment")
@click.argument("images", nargs=-1, required=True)
@model_options
@class_options
@click.option("--background", "backgrounds", multiple=True, default=("background",), show_default=True,
              help="Names of what is not a class (comma-separated, repeatable: sky,wall): a pixel whose best text "
                   "is one of them is background. --background '' for none (then --threshold is needed).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Also background where the top probability, softmax(logit-scale x scores) over the texts, is "
                   "below this (needs two or more texts: classes and background names).")
@click.option("--logit-scale", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="What the scores are multiplied by in that softmax (used with --threshold)  [default: 50]")
@click.option("--method", default="surgery", show_default=True,
              help="Map method that scores the classes: any text-dependent method ('cliplens explain "
                   "--list-methods' lists them).")
@map_options
@surgery_options
@param_option
@click.option("--pamr", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Refine the class scores at each image's size with N iterations of PAMR (pixel-adaptive mask "
                   "refinement, as NACLIP and SCLIP apply it: 10) before the labels are taken; 0: off.")
@click.option("--pamr-dilations", default="8,16", show_default=True, metavar="D,D",
              help="PAMR's neighbourhood dilations in pixels (NACLIP's).")
@click.option("--templates", type=click.Choice([AUTO, *TEMPLATE_SETS]), default=AUTO, show_default=True,
              help="Prompt ensemble each class and background name is put in (auto: CLIP's 80 ImageNet templates, "
                   "or the toy CLIP's own 'a photo of a {}'; none: the names as they are; photo: 'a photo of a {}.'; "
                   "surgery: the 80 and CLIP Surgery's 5).")
@output_option("--out", "out_dir", kind="folder", default=Path(DEFAULT_OUT), show_default=True,
               help="Folder for the label maps, pictures and settings.json.")
@image_options
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward (and read before their pictures are drawn).")
def segment_cmd(images: tuple[str, ...], model: str, pretrained: str | None, device: str, trust_checkpoint: bool,
                classes: tuple[str, ...], classes_file: Path | None, class_list: str | None,
                backgrounds: tuple[str, ...],
                threshold: float | None, logit_scale: float | None, method: str, fit: str, size: int | None,
                window: int | None, stride: int | None, blocks: int, feature: str, no_architecture: bool,
                params: tuple[str, ...], pamr: int, pamr_dilations: str, templates: str, out_dir: Path, recursive: bool,
                skip_bad: bool, max_pixels: int, batch_size: int) -> None:
    """Label every pixel of each IMAGE with one of the --classes, or background.

    Each pixel takes the class whose raw map (upsampled to the photo) scores highest; it is
    background where the best text is a --background name, or, with --threshold, where the top
    probability is below it. Writes per image: NAME__labels.png (a palette PNG at the photo's
    size: 0 background, 1.. the classes in order, 255 not seen by the model), a picture of the
    labels with a legend, and the class maps; settings.json says how, and what each image holds.
    """
    from cliplens.maps.pamr import image_refiner
    from cliplens.maps.targets import model_targets
    from cliplens.tasks.segment import CLIP_TEMPLATES, Segmentation, label_map

    names = resolve_classes(classes, classes_file, class_list)
    if len(names) > MAX_CLASSES:
        raise InvalidInputError(f"{len(names)} classes: a label PNG holds at most {MAX_CLASSES} (labels 1..{MAX_CLASSES}; "
                                "0 is background, 255 not seen); split them over several runs")
    background = _split(backgrounds)
    if not background and threshold is None:
        raise InvalidInputError("no background names (--background ''): pass --threshold P too, so that a pixel can "
                                "be background where no class is probable enough")
    if threshold is not None and len(names) + len(background) < 2:
        raise InvalidInputError(
            f"--threshold {threshold} needs two or more texts, and there is one ({names[0]!r}, no --background): the "
            "softmax over one text is always 1, so no pixel could fall below the threshold and every pixel would be "
            f"labelled {names[0]!r}. Give background names (--background background, or --background sky,wall) or "
            "more --classes"
        )
    both = [c for c in names if _key(c) in {_key(b) for b in background}]
    if both:
        raise InvalidInputError(f"{', '.join(repr(b) for b in both)} is both a class and a background name: a pixel "
                                "cannot be both. Drop it from --classes, or pass other --background names")
    notes: list[str] = []
    if logit_scale is not None and threshold is None:
        notes.append("--logit-scale only matters with --threshold: ignored")
    scale = 50.0 if logit_scale is None else logit_scale
    try:
        dilations = [int(d) for d in pamr_dilations.split(",") if d.strip()]
    except ValueError:
        raise InvalidInputError(f"--pamr-dilations {pamr_dilations!r}: give comma-separated whole numbers (8,16)") from None
    if not dilations or min(dilations) < 1:
        raise InvalidInputError(f"--pamr-dilations {pamr_dilations!r}: give one or more dilations of at least 1 pixel")
    resolved = resolve_methods(method)
    if len(resolved) != 1:
        raise InvalidInputError(f"--method {method} names {len(resolved)} methods, but segment labels the pixels with "
                                f"one: name one ({', '.join(resolved)}); segment-eval compares several")
    method_name = resolved[0]
    map_method = make_methods([method_name], params, blocks, feature, no_architecture)[method_name]
    if not map_method.text_dependent:
        raise InvalidInputError(f"--method {method_name} ignores the text: every class would get the same map")
    make_targets(names + background, "none", None)  # duplicates and empty names: clear errors here
    paths = expand_images(images, recursive=recursive)
    writable_dir(out_dir, "--out", create=False)  # before any work
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    targets = model_targets(adapter, names + background, templates, clip_default=CLIP_TEMPLATES)
    out, note = fresh_dir(out_dir)
    err, con = console(stderr=True), console()
    if note:
        err.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    con.print(f"[bold]{adapter.name}[/] ({adapter.family}, weights: {adapter.weights}){weights_note(adapter)}",
              soft_wrap=True)
    shown: set[str] = set()
    print_notes(notes, shown)
    C = len(names)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    settings: dict[str, Any] = {}
    def run(chunk: list[str]) -> Any:
        with collected_warnings(notes):
            return map_method(adapter, chunk, targets, fit=fit, size=size, window=window, stride=stride,
                              normalization="raw", batch_size=batch_size, max_pixels=max_pixels, skip_bad=skip_bad)

    def handle(maps: Any, n_paths: int) -> None:
        nonlocal settings
        print_notes(notes, shown)
        for source, reason in maps.skipped:
            skipped.append({"image": source, "error": reason})
            err.print(f"[yellow]skipped[/] {source}: {reason}", soft_wrap=True)
        settings = _settings(maps.settings, background, threshold, scale)
        if pamr:
            settings["pamr"] = {"iterations": pamr, "dilations": dilations}
        for item in maps.images:
            # the rule of cliplens.tasks.segment.segment, on maps computed once for the labels and the pictures
            refine = None if not pamr else image_refiner(adapter, item.source, fit=fit, size=size, window=window,
                                                         image_size=item.image_size, iterations=pamr,
                                                         dilations=dilations)
            seg = Segmentation(label_map(item, C, threshold=threshold, logit_scale=scale, refine=refine), names,
                               item.source, settings)
            record = _save(seg, item, list(targets.names), out, adapter.random_weights, max_pixels)
            records.append(record)
            found = ", ".join(f"{c['class']} {c['percent']:.1f} %" for c in record["classes"]) or "no class"
            con.print(f"{item.source}: {found} (background {record['background_percent']:.1f} %)", soft_wrap=True)
        bar.update(task, advance=n_paths)

    def stop(e: ImageLoadError) -> None:
        if records:
            _write(out, adapter, names, background, settings, records, skipped, notes)
        raise stopped_error(e, len(records), out) from None

    with progress(len(paths) > batch_size and err.is_terminal) as bar:
        task = bar.add_task("segmenting", total=len(paths))
        run_in_chunks(paths, batch_size, run, handle, stop)
    if not records:
        bad = skipped[0] if skipped else {"image": "?", "error": "no image"}
        raise ImageLoadError(f"no image could be read ({len(skipped)} skipped, see above); first problem: "
                             f"{bad['image']}: {bad['error']}", source=bad["image"], reason=bad["error"])
    _write(out, adapter, names, background, settings, records, skipped, notes)
    n = len(records)
    s = "s" if n != 1 else ""
    con.print(f"wrote {n} label map{s} (palette PNG{s}), their pictures and settings.json to {out}", soft_wrap=True)


def _write(out: Path, adapter: Any, names: list[str], background: list[str], settings: dict[str, Any],
           records: list[dict[str, Any]], skipped: list[dict[str, str]], notes: list[str]) -> None:
    """settings.json: the classes, their labels and colours, the settings and what each image holds."""
    from cliplens.report.maps import PALETTE
    from cliplens.tasks.segment import IGNORE

    C = len(names)
    summary = {
        "command": "segment", **model_record(adapter), "classes": names, "background": background,
        "labels": {"0": "background", **{str(i + 1): c for i, c in enumerate(names)}, str(IGNORE): "not seen"},
        "palette": {str(i): "#{:02x}{:02x}{:02x}".format(*PALETTE[i]) for i in [0, *range(1, C + 1), IGNORE]},
        "settings": settings, "images": records, "skipped": skipped, "warnings": notes,
    }
    (out / "settings.json").write_text(json.dumps(summary, indent=2) + "\n")


def _settings(maps_settings: dict[str, Any], background: list[str], threshold: float | None,
              scale: float) -> dict[str, Any]:
    rule = ("argmax of the raw class maps upsampled bilinearly to the image; background where the best text is a "
            "background name" if background else "argmax of the raw class maps upsampled bilinearly to the image")
    if threshold is not None:
        rule += (" or" if background else "; background where") + (" the top probability of softmax(logit_scale · "
                                                                    "scores) is below the threshold")
    return {**maps_settings, "background": background, "threshold": threshold,
            "logit_scale": scale if threshold is not None else None, "rule": rule}


def _save(seg: Segmentation, item: Any, texts: list[str], out: Path, random_weights: bool, max_pixels: int
          ) -> dict[str, Any]:
    """One image's label PNG, its picture with a legend and its class maps (saying RANDOM WEIGHTS when the model
    has them); its record for settings.json."""
    import numpy as np

    from cliplens.images import load_image
    from cliplens.report.maps import save_label_png, save_map_grid, save_segmentation
    from cliplens.tasks.segment import IGNORE

    original = load_image(seg.source, max_pixels=max_pixels)
    name, stem = Path(seg.source).name, Path(seg.source).stem
    labels = seg.labels.numpy()
    counts = np.bincount(labels.ravel(), minlength=256)
    seen = max(1, int(counts[:IGNORE].sum()))
    png = save_label_png(labels, unique_path(out / f"{stem}__labels.png"))
    pic = save_segmentation(original, seg, unique_path(out / f"{stem}__segmentation.png"), image_name=name,
                            random_weights=random_weights, settings=seg.settings)
    grid = save_map_grid(original, item, texts, unique_path(out / f"{stem}__class-maps.png"),
                         settings=item_settings(seg.settings), image_name=name, random_weights=random_weights,
                         title="each text's raw map: a pixel takes the class (or background) that scores highest",
                         captions=[repr(t) + (" (background)" if k >= len(seg.classes) else "")
                                   for k, t in enumerate(texts)])
    present = [{"class": c, "label": seg.classes.index(c) + 1, "pixels": int(counts[seg.classes.index(c) + 1]),
                "percent": 100 * int(counts[seg.classes.index(c) + 1]) / seen} for c in seg.present()]
    return {"image": seg.source, "size": [int(labels.shape[1]), int(labels.shape[0])], "labels": png.name,
            "figures": [pic.name, grid.name], "classes": present, "background_percent": 100 * int(counts[0]) / seen,
            "not_seen_pixels": int(counts[IGNORE])}


def item_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The maps' settings as the class-maps picture states them (raw scores: what the argmax compares)."""
    return {k: v for k, v in settings.items() if k not in ("background", "threshold", "logit_scale", "rule")}


COMMANDS = [segment_cmd]
