"""``cliplens segment-eval``: map methods over a whole segmentation data set under one protocol
(:mod:`cliplens.evaluation`), resumable, with a table of mIoU, pixel accuracy and per-class IoU.

Ctrl-C (and SIGTERM, e.g. from ``timeout`` or a batch scheduler) stops a run with its progress saved: the same
command resumes it, re-doing only the image that was in flight (see :mod:`cliplens.evaluation.segeval`)."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cliplens.cli.common import (
    console,
    load_model,
    loader_options,
    model_options,
    model_record,
    progress,
    threads_option,
    torch_threads,
    weights_note,
)
from cliplens.cli.explain import collected_warnings, make_methods, param_option, print_notes, resolve_methods
from cliplens.cli.tables import Column, print_table
from cliplens.errors import InvalidInputError, UnsupportedArchitectureError
from cliplens.evaluation.choices import IMAGENET_SEG_DEFAULT_MODE as DEFAULT_MODE
from cliplens.evaluation.choices import IMAGENET_SEG_MODES as MODES
from cliplens.evaluation.choices import PRESET_NAMES
from cliplens.maps.choices import FITS
from cliplens.report.files import fresh_dir, writable_dir
from cliplens.text.templates import TEMPLATE_SETS

if TYPE_CHECKING:
    from cliplens.evaluation.protocol import SegProtocol

__all__ = ["COMMANDS", "segment_eval_cmd"]

DEFAULT_OUT = "cliplens-segment-eval"



def _read_lines(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"--classes-file {path}: cannot be read as UTF-8 text ({e})") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise InvalidInputError(f"--classes-file {path} names no class (one per line)")
    return names


def make_protocol(name: str | None, *, fit: str | None, size: int | None, window: int | None, stride: int | None,
                  whole: bool, logit_scale: float | None, prob_threshold: float | None, templates: str | None,
                  names: str | None, pamr: int | None = None, pamr_dilations: str | None = None,
                  preset: str = "none") -> SegProtocol:
    """The data set's protocol (cliplens's, or a method ``preset``'s) with the options given on the command line
    (``None``: the protocol's)."""
    from cliplens.evaluation.method_presets import preset_protocol
    from cliplens.evaluation.protocol import protocol_for

    base = protocol_for(name) if preset == "none" else preset_protocol(preset, name)
    p = base.replace(fit=fit, size=size, logit_scale=logit_scale, prob_threshold=prob_threshold, templates=templates,
                     names=names)
    if pamr_dilations is not None and not (pamr or p.pamr):
        raise InvalidInputError("--pamr-dilations needs PAMR on: pass --pamr N (iterations; NACLIP uses 10)")
    if pamr is not None or pamr_dilations is not None:
        try:
            dil = p.pamr_dilations if pamr_dilations is None else tuple(int(d) for d in pamr_dilations.split(","))
        except ValueError:
            raise InvalidInputError(f"--pamr-dilations {pamr_dilations!r}: give comma-separated whole numbers "
                                    "(NACLIP: 8,16)") from None
        p = dataclasses.replace(p, pamr=p.pamr if pamr is None else pamr, pamr_dilations=dil)
    if whole:
        if window is not None or stride is not None:
            raise InvalidInputError("--whole sees each fitted image at once: leave out --window and --stride")
        return dataclasses.replace(p, window=None, stride=None)
    if window is not None or stride is not None:
        w = window if window is not None else p.window
        if w is None:
            raise InvalidInputError("--stride needs a window: pass --window too (this data set's preset sees whole "
                                    "images)")
        s = stride if stride is not None else max(1, w // 2)
        return dataclasses.replace(p, window=w, stride=s)
    return p


@contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM (``timeout``, a batch scheduler) stops the run as Ctrl-C does: with its progress saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _saved(folder: Path) -> int | None:
    from cliplens.evaluation.segeval import PROGRESS

    try:
        return int(json.loads((folder / PROGRESS).read_text())["state"]["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_imagenet_overlay(path: Path, view: dict[str, Any], *, image_name: str = "", note: str = "",
                          random_weights: bool = False) -> Path:
    """An ImageNet-segmentation overlay, on the model input's pixels: the normalised map over the image | the
    ground truth as the protocol compares it | the predicted foreground with the ground truth's outline."""
    import numpy as np

    from cliplens.report.plotting import colorbar, heading, new_figure, save

    image, norm, gt, fg = view["image"], np.asarray(view["map"]), np.asarray(view["mask"]), view["foreground"]
    valid = gt != 255
    fig = new_figure(10.5, 4.0)
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    im = axes[0].imshow(norm, cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.6)
    axes[0].set_title(f"map of '{view['class']}' (min–max normalised)", fontsize=8)
    grey = image.mean(-1, keepdims=True) * 0.6 + 0.3
    truth = np.where(gt[..., None] == 1, np.array([0.1, 0.75, 0.2]), grey.repeat(3, -1))
    truth[~valid] = (0.85, 0.85, 0.85)
    axes[1].imshow(truth)
    axes[1].set_title(f"ground truth as compared (mode {view['mode']})", fontsize=8)
    shown = np.where(fg[..., None], np.array([0.95, 0.55, 0.1]), grey.repeat(3, -1))
    axes[2].imshow(shown)
    if (gt == 1).any() and (gt != 1).any():
        axes[2].contour(gt == 1, levels=[0.5], colors="k", linewidths=0.8)
    axes[2].set_title("foreground: map >= its mean (outline: ground truth)", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    colorbar(fig, im, axes[0], "map, min–max")  # as tall as the map
    acc = 100 * float(((fg == (gt == 1)) & valid).sum()) / max(int(valid.sum()), 1)
    heading(fig, f"ImageNet-segmentation: pixel accuracy {acc:.1f} % on this image", image_name=image_name,
            note=note, random_weights=random_weights)
    return save(fig, path)


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


@click.command("segment-eval")
@click.argument("data", required=False)
@click.option("--dataset", "dataset_opt", default=None, metavar="NAME",
              help="The data set's name (voc21, voc20, context60, context59, coco-object, coco-stuff, cityscapes, "
                   "ade20k, imagenet-seg, toy) or spec; the same as DATA.")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="The data's folder (or .mat file) when DATA is a set's name (voc21, ade20k, imagenet-seg, …).")
@model_options
@click.option("--preset", type=click.Choice(["none", *PRESET_NAMES]), default="none", show_default=True,
              help="A paper's own evaluation settings per data set (short side, window, stride, logit scale, "
                   "background threshold, area rule, PAMR, query spellings; its method when --method is not given), "
                   "from its repository's configuration (named in the settings); none: cliplens's protocol. Every "
                   "option below still overrides it.")
@click.option("--method", "methods", multiple=True, default=(), show_default="surgery, or the preset's",
              help="A map method (repeat for several), or all: every text-dependent method. For imagenet-seg also "
                   "text-independent (raw-attention and rollout, the explainability baselines); other sets label "
                   "pixels by comparing the classes' maps, which those methods make all the same.")
@param_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path(DEFAULT_OUT), show_default=True,
              help="Folder of the run (one sub-folder per method). Progress is saved as the run goes and when it "
                   "is stopped (Ctrl-C, SIGTERM): the same command with the same folder resumes it, re-doing only "
                   "the image in flight; a larger --limit (or none) extends it. A folder holding another run (other "
                   "settings or images) is refused, never overwritten or reported as this one.")
@click.option("--new-run", is_flag=True,
              help="Start a fresh run: in --out if it is new or empty, else in a new numbered folder inside it "
                   "(run-2, run-3, …); nothing there is touched.")
@click.option("--split", default=None, help="The data set's split (default: its evaluation split).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A data-set loader option (repeat).")
@click.option("--fit", type=click.Choice(FITS), default=None,
              help="How images are resized (default: the data set's preset; short: the short side to --size, the "
                   "long side capped at 2048, as mmseg does).")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Pixels of the fitted short side (default: preset).")
@click.option("--window", type=click.IntRange(min=1), default=None, help="Sliding-window size in pixels (default: preset).")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Sliding-window stride in pixels (default: preset, or half of --window).")
@click.option("--whole", is_flag=True, help="No sliding window: each fitted image seen at once.")
@click.option("--logit-scale", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Temperature of the per-pixel softmax over the queries (default: preset, 40).")
@click.option("--prob-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Pixels whose best probability is below this become background (default: preset; 0: off).")
@click.option("--templates", type=click.Choice(list(TEMPLATE_SETS)), default=None,
              help="Prompt ensemble of each query name (default: preset, imagenet).")
@click.option("--pamr", type=click.IntRange(min=0), default=None, metavar="N",
              help="Refine the scores with N iterations of PAMR (pixel-adaptive mask refinement, as NACLIP and SCLIP "
                   "apply it: 10) before the labels are taken; 0: off (default: preset, off).")
@click.option("--pamr-dilations", default=None, metavar="D,D",
              help="PAMR's neighbourhood dilations in pixels (default: 8,16, NACLIP's).")
@click.option("--names", default=None,
              help="Query names per class: field (the published synonym lists), plain (the class names), or a file "
                   "with one line of comma-separated names per class (default: preset).")
@click.option("--mode", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True,
              help="ImageNet-segmentation only: 'correct' applies the image's own resize and crop to the mask, so "
                   "mask and map cover the same pixels; 'original' only resizes the mask, as the papers' code does "
                   "(misaligned on non-square images): use it to compare with published numbers.")
@click.option("--classes-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="ImageNet-segmentation only: the zero-shot classes, one per line (default: the 1,000 ImageNet "
                   "classes).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images.")
@click.option("--overlays", type=click.IntRange(min=0), default=4, show_default=True,
              help="Write figures for the first N images in each method's overlays/ folder: photo | ground truth "
                   "| prediction; for imagenet-seg, the map over the model input | the ground truth as compared | "
                   "the predicted foreground. A resumed run draws those of the images it re-does.")
@threads_option(2)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def segment_eval_cmd(data: str | None, dataset_opt: str | None, data_root: Path | None, model: str,
                     pretrained: str | None, device: str, trust_checkpoint: bool, preset: str, methods: tuple[str, ...],
                     params: tuple[str, ...], out_dir: Path, new_run: bool, split: str | None,
                     options: tuple[str, ...], fit: str | None, size: int | None, window: int | None,
                     stride: int | None, whole: bool, logit_scale: float | None, prob_threshold: float | None,
                     templates: str | None, pamr: int | None, pamr_dilations: str | None, names: str | None, mode: str,
                     classes_file: Path | None,
                     limit: int | None, overlays: int, threads: int, as_json: bool, no_progress: bool) -> None:
    """Evaluate map methods on a segmentation data set: DATA (or --dataset) is a set's name with --data-root (voc21, voc20,
    context60, context59, coco-object, coco-stuff, cityscapes, ade20k, imagenet-seg), a spec such as
    'toy:n=100,seed=3', or a folder whose layout is detected.

    Each set has a preset protocol (resize, sliding window, temperature, background rule, query names), printed
    with the results and stored with them; every option overrides one part of it.
    """
    from cliplens.datasets import dataset_entry, open_segmentation
    from cliplens.evaluation.imagenet_seg import evaluate_imagenet_seg
    from cliplens.evaluation.segeval import evaluate_segmentation
    from cliplens.report.maps import save_evaluation_overlay

    if (data is None) == (dataset_opt is None):
        raise InvalidInputError("give the data set once: as DATA (a name, a spec or a folder) or as --dataset NAME "
                                "(e.g. --dataset voc21 --data-root ~/data/VOCdevkit)" if data is None else
                                f"the data set is given twice (DATA {data!r} and --dataset {dataset_opt!r}): give one")
    data = data if data is not None else dataset_opt
    if data == "all":
        return _all_benchmarks(click.get_current_context())
    assert data is not None
    from cliplens.evaluation.method_presets import load_preset, preset_method_params

    if not methods:
        methods = ("surgery",) if preset == "none" else (load_preset(preset)["method"],)
    names_list = [m for value in methods for m in resolve_methods(value)]
    names_list = list(dict.fromkeys(names_list))
    opts = loader_options(options, split=split)
    entry = dataset_entry(data.partition(":")[0], "segmentation")
    if entry is not None and data_root is None and entry.name != "toy":
        raise InvalidInputError(f"DATA {data!r} is a data set's name: pass its folder with --data-root (each set's layout "
                                "is in the documentation's evaluation protocol, docs/evaluation/protocol.md)")
    dataset = open_segmentation(data, root=data_root, **opts)
    is_imagenet_seg = dataset.preset == "imagenet-seg"
    own = {} if preset == "none" or is_imagenet_seg else \
        {load_preset(preset)["method"]: preset_method_params(preset, dataset.preset)}
    objs = make_methods(names_list, params, defaults=own)  # with their --param settings (checked before any work)
    from cliplens.store.writer import distributed

    rank, world = distributed()  # torchrun: each process a share of the images, rank 0 the results
    if world > 1 and is_imagenet_seg:
        raise InvalidInputError("ImageNet-segmentation runs in one process: start it without torchrun")
    if world > 1 and new_run:
        raise InvalidInputError("--new-run picks a fresh folder per process, and the processes of one torchrun "
                                "must share one: pass a new --out instead")
    blind = [m for m in names_list if not objs[m].text_dependent]
    if blind and not is_imagenet_seg:
        raise InvalidInputError(f"{', '.join(blind)} ignore{'s' if len(blind) == 1 else ''} the text: every class "
                                "would get the same map, so every pixel the same class. Segmentation compares the "
                                "classes' maps: use text-dependent methods (all runs every one of them); the "
                                "text-independent ones are baselines for imagenet-seg")
    if is_imagenet_seg and (pamr or pamr_dilations):
        raise InvalidInputError("--pamr refines class scores before the labels are taken; ImageNet-segmentation "
                                "thresholds one map per image instead: leave it out")
    zero_shot = _read_lines(classes_file)
    if zero_shot is not None and not is_imagenet_seg:
        raise InvalidInputError("--classes-file is for ImageNet-segmentation (its zero-shot classes); other sets take "
                                "their classes from the data")
    protocol = None
    if not is_imagenet_seg:
        protocol = make_protocol(dataset.preset, fit=fit, size=size, window=window, stride=stride, whole=whole,
                                 logit_scale=logit_scale, prob_threshold=prob_threshold, templates=templates,
                                 names=names, pamr=pamr, pamr_dilations=pamr_dilations, preset=preset)
    writable_dir(out_dir, "--out")
    if new_run:
        out_dir, note = fresh_dir(out_dir)
        if note:
            console(stderr=True).print(f"note: {note}", markup=False)
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    for name in list(names_list):  # a group ('all') leaves out what cannot run on this model, saying why
        why = objs[name].unsupported(adapter)
        if why and not any(name == value for value in methods):
            names_list.remove(name)
            console(stderr=True).print(f"note: left out {name}: {why}", markup=False)
        elif why:
            raise UnsupportedArchitectureError(why + ".")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    shown: set[str] = set()
    running: tuple[str, Path] | None = None
    for name in names_list:  # every method's folder before any work: one holding another run stops them all now
        if is_imagenet_seg:
            evaluate_imagenet_seg(adapter, objs[name], dataset, mode=mode, class_names=zero_shot,
                                  templates=templates or "imagenet", out_dir=out_dir / name, limit=limit,
                                  check_only=True)
        else:
            evaluate_segmentation(adapter, objs[name], dataset, protocol=protocol, out_dir=out_dir / name, limit=limit,
                                  rank=rank, world=world,
                                  check_only=True)
    try:
        with torch_threads(threads), progress(not (as_json or no_progress) and rank == 0) as bar, _term_as_interrupt():
            for name in names_list:
                sub = out_dir / name
                task = bar.add_task(f"{name}", total=len(range(rank, n, world)))

                def on_image(done: int, total: int, task: Any = task) -> None:
                    bar.update(task, completed=done)

                running = (name, sub)
                with collected_warnings(notes):
                    if is_imagenet_seg:
                        def draw_view(path: Path, i: int, sample: Any, view: dict[str, Any], name: str = name) -> None:
                            save_imagenet_overlay(path, view, image_name=str(sample.id), note=name,
                                                  random_weights=adapter.random_weights)

                        got = evaluate_imagenet_seg(adapter, objs[name], dataset, mode=mode, class_names=zero_shot,
                                                    templates=templates or "imagenet", out_dir=sub, limit=limit,
                                                    overlays=overlays, draw_overlay=draw_view, on_image=on_image)
                        assert got is not None
                        r = got
                    else:
                        def draw(path: Path, i: int, sample: Any, gt: Any, pred: Any, name: str = name) -> None:
                            save_evaluation_overlay(sample.load(), gt, pred, dataset.class_names, path,
                                                    image_name=str(sample.id), background=dataset.background,
                                                    ignore_index=dataset.ignore_index, note=name,
                                                    random_weights=adapter.random_weights)

                        result = evaluate_segmentation(adapter, objs[name], dataset, protocol=protocol, out_dir=sub,
                                                       limit=limit, overlays=overlays, draw_overlay=draw,
                                                       on_image=on_image, rank=rank, world=world)
                        if result is None:  # another rank's share: rank 0 reports the whole set
                            continue
                        r = result.to_dict()
                results[name] = r
                print_notes(notes, shown)
    except KeyboardInterrupt:
        if running is not None and (done := _saved(running[1])) is not None:
            console(stderr=True).print(f"{running[0]}: {done} of {n} images done and saved in {running[1]}; "
                                       f"{_resume_hint(out_dir, new_run)}", markup=False)
        raise
    if rank != 0:
        return
    record = model_record(adapter)
    if as_json:
        click.echo(json.dumps({**record, "dataset": dataset.describe(), "methods": results,
                               "protocol": protocol.to_dict() if protocol else {"name": "imagenet-segmentation",
                                                                                "mode": mode}}, indent=2))
        return
    _print(results, dataset, adapter, protocol, mode, out_dir, is_imagenet_seg, _resume_hint(out_dir, new_run))


#: the field's eight benchmarks, in the column order of its tables
BENCHMARKS = ("voc21", "context60", "coco-object", "voc20", "context59", "coco-stuff", "cityscapes", "ade20k")
_COLUMN = {"voc21": "VOC21", "context60": "Context60", "coco-object": "Object", "voc20": "VOC20",
           "context59": "Context59", "coco-stuff": "Stuff", "cityscapes": "City", "ade20k": "ADE"}


def _all_benchmarks(ctx: click.Context) -> None:
    """``--dataset all --data-root ROOT``: every one of the eight benchmarks found under ROOT, each in its own
    resumable folder (``--out``/NAME), then one table in the field's column order with the mean."""
    import contextlib
    import sys

    from cliplens.datasets import find_segmentation_sets
    from cliplens.jsonio import read_json

    p = dict(ctx.params)
    root = p["data_root"]
    if root is None:
        raise InvalidInputError("--dataset all evaluates the benchmarks found under one folder: pass it with "
                                "--data-root (e.g. mmseg's data/ folder holding VOCdevkit, coco_stuff164k, cityscapes, "
                                "ade)")
    if p["new_run"]:
        raise InvalidInputError("--dataset all keeps one folder per data set under --out: pass a new --out instead of "
                                "--new-run")
    found = find_segmentation_sets(root, BENCHMARKS)
    if not found:
        raise InvalidInputError(f"none of the eight benchmarks ({', '.join(BENCHMARKS)}) was found under {root}; "
                                "the layouts are listed in docs/evaluation/protocol.md")
    err = console(stderr=True)
    for name in BENCHMARKS:
        if name not in found:
            err.print(f"note: {name} not found under {root}: left out (and out of the mean)", markup=False)
    if p["preset"] != "none":  # a preset covers the benchmarks its repository configures (MaskCLIP: five)
        from cliplens.evaluation.method_presets import load_preset

        preset = load_preset(p["preset"])
        for name in [n for n in BENCHMARKS if n in found and n not in preset["datasets"]]:
            why = preset.get("not_configured", {}).get(name, "no settings")
            err.print(f"note: the {p['preset']} preset has no settings for {name} ({why}): left out (and out of the "
                      "mean)", markup=False)
            del found[name]
        if not found:
            raise InvalidInputError(f"the {p['preset']} preset has settings for {', '.join(preset['datasets'])}, and "
                                    f"none of them was found under {root}")
    out_dir: Path = p["out_dir"]
    per: dict[str, dict[str, float]] = {}
    for name in (n for n in BENCHMARKS if n in found):
        err.print(f"{name}: {found[name]}", markup=False)
        args = {**p, "data": name, "dataset_opt": None, "data_root": found[name], "out_dir": out_dir / name,
                "as_json": False}
        with contextlib.redirect_stdout(sys.stderr) if p["as_json"] else contextlib.nullcontext():
            ctx.invoke(segment_eval_cmd, **args)
        for method_dir in sorted(d for d in (out_dir / name).iterdir() if (d / "results.json").is_file()):
            per.setdefault(method_dir.name, {})[name] = float(read_json(method_dir / "results.json")["miou"])
    names = [n for n in BENCHMARKS if n in found]
    table = {m: {**{n: v.get(n) for n in names},
                 "mean": sum(v[n] for n in names if n in v) / len(names) if all(n in v for n in names) else None}
             for m, v in per.items()}
    if p["as_json"]:
        click.echo(json.dumps({"benchmarks": {n: str(found[n]) for n in names}, "miou": table,
                               "column_order": [*names, "mean"]}, indent=2))
        return
    rows = [[m, *(_pct(t[n]) for n in names), _pct(t["mean"])] for m, t in table.items()]
    print_table(console(), ["method", *(Column(_COLUMN[n], number=True) for n in names), Column("mean", number=True)],
                rows, title=f"mIoU % on the benchmarks found under {root} (each data set's settings: its folder "
                            f"under {out_dir})")


def _resume_hint(out_dir: Path, new_run: bool) -> str:
    if new_run:
        return f"to resume, run the same command with --out {out_dir} instead of --new-run"
    return "run the same command to resume"


def _print(results: dict[str, dict[str, Any]], dataset: Any, adapter: Any, protocol: SegProtocol | None, mode: str,
           out_dir: Path, is_imagenet_seg: bool, resume_hint: str) -> None:
    con = console()
    first = next(iter(results.values()))
    images = first["images"]
    cols = ("pixel acc %", "mIoU %", "mAP %") if is_imagenet_seg else ("mIoU %", "pixel acc %")
    rows = []
    for name, r in results.items():
        row = ([r["pixel_accuracy"], r["miou"], r["map"]] if is_imagenet_seg else [r["miou"], r["pixel_accuracy"]])
        rows.append([name, *(_pct(v) for v in row)])
    print_table(con, ["method", *(Column(c, number=True) for c in cols)], rows,
                title=f"{dataset.name}: {images} images, {adapter.name}{weights_note(adapter)}")
    if not is_imagenet_seg:
        absent = 0
        per_rows = []
        for c in dataset.class_names:
            values = [r["per_class_iou"].get(c) for r in results.values()]
            if all(v is None for v in values):
                absent += 1
                continue
            per_rows.append([c, *(_pct(v) for v in values)])
        print_table(con, ["class", *(Column(name, number=True) for name in results)], per_rows,
                    title="IoU per class (%; – where a class is in neither the ground truth nor the prediction)")
        if absent:
            con.print(f"{absent} class{'es' if absent > 1 else ''} in neither the ground truth nor any prediction "
                      "left out (they do not count in the mIoU)")
        assert protocol is not None
        p = protocol
        win = f"window {p.window}, stride {p.stride}" if p.window else "whole image"
        con.print(f"protocol: fit {p.fit} {p.size} px, {win}, logit scale {p.logit_scale:g}, background threshold "
                  f"{p.prob_threshold:g}, templates {p.templates}, query names {p.names}")
    else:
        con.print(f"protocol: ImageNet-segmentation, mode {mode} (predicted class explained; foreground = normalised "
                  "map >= its mean)")
    con.print(f"results and progress in {out_dir} (one folder per method; {resume_hint})")


COMMANDS = [segment_eval_cmd]
