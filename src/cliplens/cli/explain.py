"""``cliplens explain``: where each text is in each image, by one map method or all of them, as
pictures over the photos, with the raw maps and every setting saved next to them."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

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
from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.maps.choices import FEATURE_MODES, FITS, NORMALIZATIONS
from cliplens.report.files import fresh_dir, unique_path, writable_dir
from cliplens.text.templates import TEMPLATE_SETS

if TYPE_CHECKING:
    import numpy as np

    from cliplens.maps import MapMethod, Maps, Surgery, Targets

R = TypeVar("R")

__all__ = ["COMMANDS", "explain_cmd", "map_options", "resolve_methods", "text_methods"]

DEFAULT_OUT = "cliplens-explain"
CONTRAST_CHOICES = ("default", "none", "others", "empty")


def text_methods(text_dependent: bool = True) -> list[str]:
    """The registered map methods that ``--method all`` runs: every one whose map depends on the text
    (:attr:`MapMethod.text_dependent`) and reads CLIP alone (the methods with a second backbone, whose weights are a
    download of their own, run by name); with ``text_dependent=False``, what ``--method text-independent`` runs:
    those that look at the image but not at the text (raw attention, rollout; the baselines, which look at
    neither, are named one by one)."""
    from cliplens.maps import get_map, map_names

    out = []
    for name in map_names(text_dependent=text_dependent, baseline=False, second_backbone=False):
        try:
            get_map(name)
        except InvalidInputError:  # a method that needs parameters: not run by a group
            continue
        out.append(name)
    return out


def _list_methods(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--list-methods``: every registered map method, what it reads and its summary (the class's docstring)."""
    if not value or ctx.resilient_parsing:
        return
    from cliplens.cli.tables import print_table
    from cliplens.maps.base import map_class, map_names

    rows = []
    for name in map_names():
        cls = map_class(name)
        reads = "nothing (a baseline)" if cls.baseline else "text and image" if cls.text_dependent else "image only"
        rows.append((name, reads, (cls.__doc__ or "").strip().split("\n")[0]))
    print_table(console(), ["method", "reads", "what it is"], rows,
                title="map methods: --method NAME (all: every method that reads the text)")
    ctx.exit()


#: ``--method`` values that stand for several methods
METHOD_GROUPS = ("all", "text-independent")


def resolve_methods(method: str, option: str = "--method") -> list[str]:
    """``"all"`` -> every text-dependent method; ``"text-independent"`` -> raw attention and rollout (and any
    other registered method that ignores the text but looks at the image); a registered name -> itself; else a
    clear error."""
    from cliplens.maps import map_names

    if method == "all":
        return text_methods()
    if method == "text-independent":
        return text_methods(text_dependent=False)
    if method not in map_names():
        raise InvalidInputError(f"{option} {method!r} is not a map method; use one of "
                                f"{', '.join(map_names())}, all (every text-dependent method) or text-independent "
                                f"({', '.join(text_methods(text_dependent=False))})")
    return [method]


def applicable(methods: dict[str, MapMethod], adapter: Any, asked: str, err: Any) -> dict[str, MapMethod]:
    """For a group (``all``, ``text-independent``): the methods that run on ``adapter``, a note on ``err`` for each
    left out (:meth:`cliplens.maps.base.MapMethod.unsupported`); a method asked by name is kept (it refuses)."""
    if asked not in METHOD_GROUPS:
        return methods
    kept = {}
    for name, m in methods.items():
        why = m.unsupported(adapter)
        if why:
            err.print(f"[yellow]note:[/] left out {name}: {why}", soft_wrap=True)
        else:
            kept[name] = m
    return kept


def map_options(f: Any) -> Any:
    """``--fit``, ``--size``, ``--window``, ``--stride`` and ``--templates``: how images and texts become maps."""
    f = click.option("--stride", type=click.IntRange(min=1), default=None,
                     help="Step of the sliding window in pixels (default: half the window).")(f)
    f = click.option("--window", type=click.IntRange(min=1), default=None,
                     help="Slide a window of this many pixels (a multiple of the patch size) over each fitted image "
                          "and average the windows' maps: for large images.")(f)
    f = click.option("--size", type=click.IntRange(min=1), default=None,
                     help="Pixels of the fitted image's short side (whole, crop) or side (squash); default: the "
                          "model's input size.")(f)
    f = click.option("--fit", type=click.Choice(FITS), default="whole", show_default=True,
                     help="whole: the whole image, short side --size, aspect kept; squash: resized to --size x "
                          "--size; crop: the model's own centre crop (no map outside it).")(f)
    return f


def surgery_options(f: Any) -> Any:
    """CLIP Surgery's switches: ``--blocks``, ``--feature``, ``--no-architecture``."""
    f = click.option("--no-architecture", "no_architecture", is_flag=True,
                     help="CLIP Surgery without architecture surgery (the model's own tokens, feature surgery only).")(f)
    f = click.option("--feature", type=click.Choice(FEATURE_MODES), default="redundancy", show_default=True,
                     help="CLIP Surgery's feature surgery: redundancy (the original), empty (minus the empty "
                          "prompt) or none.")(f)
    f = click.option("--blocks", type=click.IntRange(min=1), default=6, show_default=True,
                     help="CLIP Surgery: how many of the last blocks get the v-v side path.")(f)
    return f


def surgery_method(blocks: int, feature: str, no_architecture: bool, **params: Any) -> Surgery:
    """The Surgery the switches ask for (``params``, from ``--param``, on top of them)."""
    from cliplens.maps import get_map

    return get_map("surgery", **{"blocks": blocks, "architecture": not no_architecture, "feature": feature,
                                 **params})  # type: ignore[return-value]


def param_option(f: Any) -> Any:
    """``--param NAME=VALUE`` (repeatable): any parameter of the chosen map methods (:mod:`cliplens.maps.params`)."""
    return click.option("--param", "params", multiple=True, metavar="[METHOD.]NAME=VALUE",
                        help="Set a parameter of the map method(s), e.g. --param sigma=3 --param gem.blocks=4 "
                             "--param positional=bicubic (repeat for several); `cliplens methods NAME` lists them.")(f)


def make_methods(names: Sequence[str], params: Sequence[str], blocks: int = 6, feature: str = "redundancy",
                 no_architecture: bool = False, defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, MapMethod]:
    """The map methods ``names`` with their ``--param`` settings over ``defaults`` (a preset's; Surgery's switches
    under both)."""
    from cliplens.maps import get_map
    from cliplens.maps.params import parse_params

    given = parse_params(params, names)
    given = {n: {**(defaults or {}).get(n, {}), **given[n]} for n in names}
    return {n: surgery_method(blocks, feature, no_architecture, **given[n]) if n == "surgery"
            else get_map(n, **given[n]) for n in names}


def templates_option(default: str) -> Any:
    return click.option("--templates", type=click.Choice(list(TEMPLATE_SETS)), default=default, show_default=True,
                        help="Prompt ensemble each text is put in (none: the texts as they are; photo: 'a photo of a "
                             "{}.'; imagenet: CLIP's 80 templates; surgery: those and CLIP Surgery's 5).")


def make_targets(names: Sequence[str], templates: str, contrast: str | None) -> Targets:
    from cliplens.maps import Targets

    if templates == "none":
        return Targets.texts(list(names), contrast=contrast)  # type: ignore[arg-type]
    return Targets.classes(list(names), templates=templates, contrast=contrast)  # type: ignore[arg-type]


@contextlib.contextmanager
def collected_warnings(notes: list[str]) -> Iterator[None]:
    """User warnings raised inside the block (a method's fallback, unknown words, truncated texts), each added
    once to ``notes`` (shown to the user as one line each); other warnings pass on as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for w in caught:
        if not issubclass(w.category, UserWarning) or issubclass(w.category, (DeprecationWarning, FutureWarning)):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            continue
        line = " ".join(str(w.message).split())
        if line not in notes:
            notes.append(line)


def print_notes(notes: Sequence[str], shown: set[str]) -> None:
    """Each note not yet shown, on one line of stderr."""
    err = console(stderr=True)
    for n in notes:
        if n not in shown:
            err.print(f"[yellow]warning:[/] {n}", soft_wrap=True)
            shown.add(n)


def stopped_error(e: ImageLoadError, done: int, out: Path) -> ImageLoadError:
    """An unreadable image stopped the run: say what was finished and where, and what to do."""
    advice = "Fix or remove the file, or pass --skip-bad to skip images that cannot be read."
    if not done:
        with contextlib.suppress(OSError):
            out.rmdir()  # the folder this run made, if nothing was written into it
        return ImageLoadError(f"{str(e).rstrip('. ')}. Stopped there, before any image was done (nothing was "
                              f"written). {advice}", source=e.source, reason=e.reason)
    s = "s" if done > 1 else ""
    return ImageLoadError(f"{str(e).rstrip('. ')}. Stopped there: the {done} image{s} before it "
                          f"{'are' if done > 1 else 'is'} done, their files in {out}. {advice}", source=e.source,
                          reason=e.reason)


def run_in_chunks(paths: Sequence[str], batch_size: int, run: Callable[[list[str]], R],
                  handle: Callable[[R, int], None], stop: Callable[[ImageLoadError], None]) -> None:
    """``handle(run(chunk), len(chunk))`` for each chunk of ``paths``. When a chunk holds an unreadable image
    (``run`` raises :class:`ImageLoadError`), its images are run one by one, so that every image before the
    bad one is handled; then ``stop(error)`` is called and the error raised."""
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start:start + batch_size])
        try:
            handle(run(chunk), len(chunk))
            continue
        except ImageLoadError as e:
            if len(chunk) == 1:
                stop(e)
                raise
        for path in chunk:
            try:
                result = run([path])
            except ImageLoadError as e:
                stop(e)
                raise
            handle(result, 1)


@click.command("explain")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("--text", "-t", "texts", multiple=True, required=True, help="A text to map (repeat for several).")
@click.option("--method", default="surgery", show_default=True,
              help="Map method: a method's name (--list-methods lists them); all (every text-dependent method, side "
                   "by side); text-independent (raw attention and rollout: they ignore the text); or a baseline by "
                   "name.")
@click.option("--list-methods", is_flag=True, is_eager=True, expose_value=False, callback=_list_methods,
              help="List the map methods (what each does, whether it reads the text) and exit.")
@click.option("--by-head", is_flag=True,
              help="CLIP Surgery only: split each map over the heads of its surgical layers (the parts sum to the "
                   "map) and draw the heads that make it.")
@click.option("--top", type=click.IntRange(min=1), default=4, show_default=True,
              help="With --by-head: how many of the largest parts to draw.")
@map_options
@surgery_options
@param_option
@templates_option("none")
@click.option("--contrast", type=click.Choice(CONTRAST_CHOICES), default="default", show_default=True,
              help="Subtract from each map: nothing (none), the mean of the other texts' maps (others), the empty "
                   "prompt's map (empty); default: the method's own (surgery: none; decomposition and "
                   "token-similarity: others).")
@click.option("--normalization", type=click.Choice(NORMALIZATIONS), default="minmax", show_default=True,
              help="How the pictures show each map: minmax (0..1 per map) or raw (scores, centred on 0).")
@output_option("--out", "out_dir", kind="folder", default=Path(DEFAULT_OUT), show_default=True,
               help="Folder for the pictures, maps.npz and settings.json.")
@image_options
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward (and read before their pictures are drawn).")
def explain_cmd(images: tuple[str, ...], model: str, pretrained: str | None, device: str, trust_checkpoint: bool,
                texts: tuple[str, ...], method: str, by_head: bool, top: int, fit: str, size: int | None,
                window: int | None, stride: int | None, blocks: int, feature: str, no_architecture: bool,
                params: tuple[str, ...],
                templates: str, contrast: str, normalization: str,
                out_dir: Path, recursive: bool, skip_bad: bool, max_pixels: int, batch_size: int) -> None:
    """Where each --text is in each IMAGE: a map per image and text, over the photo.

    IMAGE may be a file or a folder (its image files). Writes, into a fresh folder: a picture per
    image, method and text; a grid of every text per image and method; with --method all, the
    methods side by side; with --by-head, which heads make CLIP Surgery's map; maps.npz (the raw
    maps: img0__surgery is image 0's [texts, rows, columns], before normalisation) and
    settings.json (every setting, and which image each array is).
    """
    import numpy as np


    names = resolve_methods(method)
    if by_head and "surgery" not in names:
        raise InvalidInputError(f"--by-head splits CLIP Surgery's map over its heads: use it with --method surgery "
                                f"(or all), not {method}")
    if by_head and window is not None:
        raise InvalidInputError("--by-head works on one forward per image: leave out --window (or use a smaller --size)")
    asked = None if contrast == "default" else contrast
    if asked == "empty" and "surgery" in names and feature != "none":
        raise InvalidInputError("--contrast empty does not apply to surgery: its feature surgery already removes what "
                                "the texts share (or, for one text, subtracts the empty prompt). Use --contrast "
                                "default, or another --method.")
    targets = make_targets(texts, templates, asked)
    paths = expand_images(images, recursive=recursive)
    methods = make_methods(names, params, blocks, feature, no_architecture)
    writable_dir(out_dir, "--out", create=False)  # before any work
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    out, note = fresh_dir(out_dir)
    err, con = console(stderr=True), console()
    if note:
        err.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    methods = applicable(methods, adapter, method, err)
    names = list(methods)
    con.print(f"[bold]{adapter.name}[/] ({adapter.family}, weights: {adapter.weights}){weights_note(adapter)}",
              soft_wrap=True)
    fig_notes = {n: method_note(n, m, targets) for n, m in methods.items()}
    notes: list[str] = []
    shown: set[str] = set()
    arrays: dict[str, np.ndarray] = {"texts": np.array(list(targets.names))}
    records: list[dict[str, Any]] = []
    settings: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, str]] = []
    part_labels: list[str] | None = None
    def run(chunk: list[str]) -> dict[str, Maps]:
        with collected_warnings(notes):
            return {n: m(adapter, chunk, targets, fit=fit, size=size, window=window, stride=stride,
                         normalization=normalization, batch_size=batch_size, max_pixels=max_pixels, skip_bad=skip_bad)
                    for n, m in methods.items()}

    def handle(results: dict[str, Maps], n_paths: int) -> None:
        nonlocal part_labels
        print_notes(notes, shown)
        first = results[names[0]]
        for source, reason in first.skipped:
            skipped.append({"image": source, "error": reason})
            err.print(f"[yellow]skipped[/] {source}: {reason}", soft_wrap=True)
        for n in names:
            settings[n] = results[n].settings
        for j, item in enumerate(first.images):
            i = len(records)
            per = {n: results[n].images[j] for n in names}
            record = _explain_image(adapter, item.source, per, targets, settings, out, i, fig_notes, max_pixels,
                                    arrays)
            if by_head:
                part_labels = _by_head(adapter, item.source, per["surgery"], methods["surgery"], targets,
                                       settings["surgery"], out, i, fig_notes["surgery"], max_pixels, fit, size, top,
                                       arrays, record)
            records.append(record)
            con.print(f"{item.source}: {len(record['figures'])} pictures", soft_wrap=True)
        bar.update(task, advance=n_paths)

    def stop(e: ImageLoadError) -> None:
        if records:
            _write(out, arrays, part_labels, adapter, targets, settings, by_head, records, skipped, notes)
        raise stopped_error(e, len(records), out) from None

    with progress(len(paths) > batch_size and err.is_terminal) as bar:
        task = bar.add_task("mapping", total=len(paths))
        run_in_chunks(paths, batch_size, run, handle, stop)
    if not records:
        first_bad = skipped[0] if skipped else {"image": "?", "error": "no image"}
        raise ImageLoadError(f"no image could be read ({len(skipped)} skipped, see above); first problem: "
                             f"{first_bad['image']}: {first_bad['error']}", source=first_bad["image"],
                             reason=first_bad["error"])
    _write(out, arrays, part_labels, adapter, targets, settings, by_head, records, skipped, notes)
    n_fig = sum(len(r["figures"]) for r in records)
    con.print(f"wrote {n_fig} pictures, maps.npz and settings.json to {out}", soft_wrap=True)


def _write(out: Path, arrays: dict[str, np.ndarray], part_labels: list[str] | None, adapter: Any, targets: Targets,
           settings: dict[str, dict[str, Any]], by_head: bool, records: list[dict[str, Any]],
           skipped: list[dict[str, str]], notes: list[str]) -> None:
    """maps.npz and settings.json, for the images done."""
    import numpy as np

    if part_labels is not None:
        arrays["surgery_part_labels"] = np.array(part_labels)
    np.savez_compressed(out / "maps.npz", **arrays)
    summary = {
        "command": "explain", **model_record(adapter), "texts": list(targets.names), "methods": settings,
        "by_head": by_head, "images": records, "skipped": skipped, "warnings": notes,
        "arrays": "maps.npz: 'texts'; per image i and method M, 'img{i}__{M}': the raw maps [texts, rows, columns] "
                  "on the token grid (after the contrast, before normalisation)"
                  + ("; with --by-head, 'img{i}__surgery__parts': [texts, parts, rows, columns], summing over parts "
                     "to 'img{i}__surgery', the parts named by 'surgery_part_labels'" if by_head else ""),
    }
    (out / "settings.json").write_text(json.dumps(summary, indent=2) + "\n")


def method_note(name: str, method: MapMethod, targets: Targets) -> str:
    """What a picture of ``method``'s maps must say besides its settings (``""``: nothing)."""
    if name == "surgery" and len(targets) == 1 and method.params.get("feature") == "redundancy":
        return "one text: feature surgery subtracted the empty prompt instead (t − t_empty)"
    return ""


def _explain_image(adapter: Any, source: str, per: dict[str, Any], targets: Targets,
                   settings: dict[str, dict[str, Any]], out: Path, i: int, notes: dict[str, str], max_pixels: int,
                   arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """One image's pictures and arrays (every method), and its record for settings.json."""
    import numpy as np

    from cliplens.images import load_image
    from cliplens.report.maps import save_map_grid, save_map_overlay, save_methods
    from cliplens.report.plotting import slug

    random_weights = adapter.random_weights  # every picture of a random-weight model says so
    original = load_image(source, max_pixels=max_pixels)
    name, stem = Path(source).name, Path(source).stem
    labels = list(targets.names)
    figures: list[str] = []
    first = next(iter(per.values()))
    for n, im in per.items():
        arrays[f"img{i}__{n}"] = im.raw.numpy().astype(np.float32)
        for t, text in enumerate(labels):
            p = save_map_overlay(original, im, t, unique_path(out / f"{stem}__{n}__{slug(text)}.png"), text=text,
                                 settings=settings[n], image_name=name, note=notes[n], random_weights=random_weights)
            figures.append(p.name)
        p = save_map_grid(original, im, labels, unique_path(out / f"{stem}__{n}__all-texts.png"),
                          settings=settings[n], image_name=name, note=notes[n], random_weights=random_weights)
        figures.append(p.name)
    if len(per) > 1:
        p = save_methods(original, per, labels, unique_path(out / f"{stem}__methods.png"), settings=settings,
                         image_name=name, note=" · ".join(dict.fromkeys(notes[n] for n in per if notes[n])),
                         random_weights=random_weights)
        figures.append(p.name)
    return {"image": source, "key": f"img{i}", "image_size": list(first.image_size),
            "input_size": list(first.input_size), "box": list(first.box),
            "arrays": {n: f"img{i}__{n}" for n in per}, "figures": figures}


def _by_head(adapter: Any, source: str, maps: Any, method: MapMethod, targets: Targets, settings: dict[str, Any],
             out: Path, i: int, note: str, max_pixels: int, fit: str, size: int | None, top: int,
             arrays: dict[str, np.ndarray], record: dict[str, Any]) -> list[str]:
    """CLIP Surgery's map of each text split over its parts (the start and every head), saved and drawn."""
    import numpy as np
    import torch

    from cliplens.images import load_image
    from cliplens.maps import contrast_others, surgery_parts
    from cliplens.maps.inputs import fit_images
    from cliplens.report.maps import save_surgery_parts
    from cliplens.report.plotting import slug

    fitted, _ = fit_images(adapter, [source], fit=fit, size=size, max_pixels=max_pixels)
    px = fitted[0].pixels[None].to(adapter.device, adapter.dtype)
    params = method.params
    emb = targets.embed(adapter, with_empty=True)
    with torch.no_grad():
        sp = surgery_parts(adapter, px, emb, blocks=params["blocks"], feature=params["feature"],
                           temperature=params["temperature"], positional=params["positional"])
    parts = sp.parts[0].float().cpu()  # [T, P, gh, gw]
    if settings.get("contrast") == "others":  # linear: the parts of each map minus the mean of the others'
        parts = contrast_others(parts, dim=0)
    arrays[f"img{i}__surgery__parts"] = parts.numpy().astype(np.float32)
    record["arrays"]["surgery_parts"] = f"img{i}__surgery__parts"
    original = load_image(source, max_pixels=max_pixels)
    name, stem = Path(source).name, Path(source).stem
    for t, text in enumerate(targets.names):
        p = save_surgery_parts(original, maps, parts[t], sp.labels,
                               unique_path(out / f"{stem}__surgery__by-head__{slug(text)}.png"), text=text, top=top,
                               settings=settings, image_name=name, note=note, random_weights=adapter.random_weights)
        record["figures"].append(p.name)
    return list(sp.labels)


COMMANDS = [explain_cmd]
