"""``cliplens store build``: decompose every image of a data set into a store (resumable, several processes);
``cliplens store info``: what a store holds, and (``--verify``) whether every file of it is intact."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from cliplens.cli.common import (
    console,
    load_model,
    loader_options,
    model_options,
    threads_option,
    torch_threads,
)
from cliplens.errors import InvalidInputError
from cliplens.images.io import DEFAULT_MAX_PIXELS
from cliplens.store.schema import FIELDS
from cliplens.text.templates import TEMPLATE_SETS


def _layers(value: str | None, option: str = "--spatial-layers") -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InvalidInputError(f"{option} takes layer indices separated by commas (e.g. 10,11 or -2,-1), "
                                f"got {value!r}") from None


def command_record(ctx: click.Context, always: tuple[str, ...] = ("model", "out_dir")) -> dict[str, Any]:
    """The command being run, as typed (its arguments, then every option given on the command line or by the
    environment, and the ``always`` ones), with the working folder: what a store records so that a message
    about a damaged store can say the command that repairs it."""
    args: list[str] = []
    opts: list[str] = []
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if isinstance(p, click.Argument):
            args += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            continue
        if not isinstance(p, click.Option) or value is None:
            continue
        if ctx.get_parameter_source(p.name) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) \
                and p.name not in always:
            continue
        name = next((o for o in p.opts if o.startswith("--")), p.opts[0])
        if p.is_flag:
            if value:
                opts.append(name)
            elif p.secondary_opts:
                opts.append(p.secondary_opts[0])
        elif p.multiple:
            for v in value:
                opts += [name, str(v)]
        else:
            opts += [name, str(value)]
    names, c = [], ctx
    while c.parent is not None:  # the subcommands' names (the program's own name left out)
        names.insert(0, str(c.info_name))
        c = c.parent
    return {"argv": [*names, *args, *opts], "cwd": os.getcwd()}



@click.group("store")
def store_group() -> None:
    """Stores of decompositions for whole data sets (build one, then ablate, textspan, …)."""


@store_group.command("build")
@click.argument("data")
@model_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="The store's folder: new or empty, or a store of the same model and settings (then it resumes).")
@click.option("--layout", default=None, help="Data layout (default: detected): imagefolder, csv, waterbirds, imagenet, "
                                              "images, toy.")
@click.option("--split", default=None, help="A split of the data set (e.g. test for Waterbirds).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A loader option (repeat).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Precision of the stored terms (float16 halves the size).")
@click.option("--spatial-layers", default=None, help="Also keep per-token terms for these layers (e.g. -2,-1).")
@click.option("--neuron-layers", default=None,
              help="Also keep what the second-order effects of these MLP layers' neurons need (e.g. 8,9,10; "
                   "read by 'cliplens neurons').")
@click.option("--chunk-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Images per chunk file (a crash loses at most the chunk in flight).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes that read and preprocess images.")
@click.option("--templates", type=click.Choice(["auto", *sorted(TEMPLATE_SETS)]), default="auto", show_default=True,
              help="Prompt ensemble of the zero-shot classifier stored with the decompositions (auto: the data "
                   "set's own class prompts where it has them, as the toy world does, else imagenet).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (recorded in the manifest) instead of stopping.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True)
@threads_option(2)
def build_cmd(data: str, model: str, pretrained: str | None, device: str, trust_checkpoint: bool, out_dir: Path,
              layout: str | None, split: str | None, options: tuple[str, ...], dtype: str, spatial_layers: str | None,
              neuron_layers: str | None, chunk_size: int, batch_size: int, workers: int, templates: str, skip_bad: bool, max_pixels: int,
              threads: int) -> None:
    """Decompose every image of DATA (a folder, a CSV, 'toy:…') into a store at --out.

    Run the same command again after a crash to resume; under `torchrun --nproc_per_node N -m cliplens store
    build …` the processes share the chunks.
    """
    from cliplens.datasets import open_dataset
    from cliplens.store import StoreSettings, build_store
    from cliplens.store.writer import distributed

    rank, world = distributed()
    dataset = open_dataset(data, layout=layout, **loader_options(options, split=split))
    settings = StoreSettings(dtype, _layers(spatial_layers), chunk_size, batch_size, templates,
                             _layers(neuron_layers, "--neuron-layers"))
    with torch_threads(threads):
        adapter = load_model(model, pretrained, device, trust_checkpoint)
        res = build_store(adapter, dataset, out_dir, settings=settings, skip_bad=skip_bad, num_workers=workers,
                          max_pixels=max_pixels, progress=rank == 0,
                          command=command_record(click.get_current_context()))
    if rank != 0:
        return
    con = console()
    con.print(f"store {res.path}: {res.images} images from {data} ({dataset.describe().get('layout', layout)}), "
              f"model {adapter.name} ({adapter.weights}); chunks written {len(res.chunks_written)}, reused "
              f"{res.chunks_reused}" + (f" (this process; {world} processes)" if world > 1 else ""))
    for r in res.repaired:
        con.print(f"  repaired: {r['file']} (it was damaged: {r['reason']})")
    for s in res.skipped:
        con.print(f"  skipped {s['id']}: {s['reason']}")
    con.print(f"{res.seconds:.1f} s; read it with cliplens.store.Store({str(res.path)!r}), analyse it with "
              f"'cliplens ablate {res.path}' and 'cliplens textspan {res.path}'")


@store_group.command("info")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True,
              help="Check every file of the store in full (every checksum) and name each damaged one; exit code 1 "
                   "when anything is damaged.")
@click.option("--json", "as_json", is_flag=True)
def info_cmd(store: Path, verify: bool, as_json: bool) -> None:
    """What a store holds: model, data set, settings, fields, bytes per image; with --verify, whether every file
    of it is intact."""
    from cliplens.store import Store

    if verify:
        _verify(store, as_json)
        return
    st = Store(store)
    size = sum(p.stat().st_size for p in st.path.glob("chunk-*.safetensors"))
    info = {"path": str(st.path), "images": len(st), "model": st.header["model"], "dataset": st.header["dataset"],
            "settings": st.settings, "fields": {f: FIELDS.get(f, ("", ""))[0] for f in st.fields},
            "bytes": size, "bytes_per_image": size / max(len(st), 1), "skipped": len(st.skipped),
            "checksums": st.checksums}
    if len(st) == 0:
        info["note"] = st.empty_message()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    con = console()
    if len(st) == 0:
        con.print(f"{st}\n  {info['note']}")
        return
    con.print(f"{st}\n  {info['bytes_per_image'] / 1024:.1f} KiB per image, {size / 2**20:.1f} MiB in all; "
              f"{info['skipped']} skipped; fields: {', '.join(st.fields)}"
              + ("" if st.checksums else "; no checksums (built before cliplens recorded them)"))


def _verify(store: Path, as_json: bool) -> None:
    from cliplens.store.integrity import verify_store

    v = verify_store(store)
    if as_json:
        click.echo(json.dumps(v.to_dict(), indent=2))
    else:
        con = console()
        checked = (f"{len(v.checked)} files checked in full ({v.bytes / 2**20:.1f} MiB in {v.seconds:.2f} s)"
                   if v.checked else "no file checked in full")
        con.print(f"store {v.path}: " + ("every file intact; " if v.ok else f"{len(v.damaged)} damaged; ") + checked)
        for name, reason in v.damaged:
            con.print(f"  damaged: {name}: {reason}")
        if v.unchecked:
            con.print(f"  checksums absent in {len(v.unchecked)} file(s) ({', '.join(v.unchecked[:3])}"
                      f"{' …' if len(v.unchecked) > 3 else ''}; the store was built before cliplens recorded them): "
                      "their sizes and structure were checked, their contents cannot be")
        if not v.ok:
            con.print(f"repair: {v.command}  (checks every file and computes only the damaged ones again)")
    if not v.ok:
        sys.exit(1)


COMMANDS = [store_group]
