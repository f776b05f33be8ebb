"""``cliplens ablate`` and ``cliplens textspan``: the first seed paper's analyses, read from a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cliplens.analyses.pools import DEFAULT_POOL_HELP, POOLS, default_pool, load_pool
from cliplens.cli.common import (
    check_device,
    console,
    layer_options,
    output_option,
    overwrite_option,
    threads_option,
    torch_threads,
)
from cliplens.cli.tables import Column, print_table
from cliplens.errors import InvalidInputError, ModelLoadError
from cliplens.report.files import claim_output, fresh_dir, unique_path, writable_dir, written_then_renamed

if TYPE_CHECKING:
    from torch import Tensor

    from cliplens.analyses.textspan import TextSpanResult
    from cliplens.models import CLIPAdapter
    from cliplens.store import Store


def store_note(st: Store, weights: bool = True) -> str:
    """The store, its size and model (and, unless ``weights`` is false, a RANDOM WEIGHTS note when it has them)."""
    m = st.header["model"]
    note = f"{st.path}: {len(st)} images, model {m['name']} ({m['weights']})"
    return note + (" · RANDOM WEIGHTS (scores mean nothing)" if weights and m.get("random_weights") else "")


@click.command("ablate")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--components", "-c", default=None,
              help="Mean-ablate these and report the accuracy, e.g. 'L10.H3,L11.H0' (heads), 'L3' (an attention "
                   "layer), 'MLP4', 'embed', 'CLS5' (a layer's CLS→CLS term), 'pool-mlp' (an attention-pooled head's lumped MLP). "
                   "Default: the paper's study.")
@click.option("--groups", default=None, help="Also report the accuracy per value of this attribute (e.g. group).")
@output_option("--plot", "plot", kind="file", default=None,
               help="Save the study's layer curve as a PNG here (default: ablation-curve.png in the store, with "
                    "-2, -3, … added to the name when one is there).")
@overwrite_option("--plot")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ablate_cmd(store: Path, components: str | None, groups: str | None, plot: Path | None, overwrite: bool,
               as_json: bool) -> None:
    """Which layers, heads and terms matter: zero-shot accuracy with components mean-ablated (from the store,
    without re-running the model). Labels come from the data set."""
    from cliplens.analyses.ablation import evaluate, parse_components, standard_study
    from cliplens.report.plotting import save_ablation_curve
    from cliplens.store import Store

    if plot is not None and components:
        raise InvalidInputError("--plot draws the layer curve of the standard study: leave out --components to "
                                "run the study, or --plot")
    if plot is not None:
        plot = claim_output(plot, overwrite=overwrite, option="--plot")  # before any work
    st = Store(store)
    con = console()
    if components:
        base = evaluate(st, groups=groups)
        res = evaluate(st, parse_components(components), groups=groups)
        payload = {"store": str(st.path), "baseline": base.to_dict(), "ablated": res.to_dict()}
        if as_json:
            click.echo(json.dumps(payload, indent=2))
            return
        con.print(store_note(st))
        con.print(f"as it is: {100 * base.accuracy:.1f} %   mean-ablated ({res.ablation.describe()}): "
                  f"{100 * res.accuracy:.1f} %")
        for g in res.group_accuracy:
            con.print(f"  {groups}={g}: {100 * base.group_accuracy[g]:.1f} % → {100 * res.group_accuracy[g]:.1f} %")
        return
    study = standard_study(st, groups=groups)
    payload = {"store": str(st.path), "baseline": study["baseline"].to_dict(),
               "curve": [r.to_dict() for r in study["curve"]], "mlps_and_embed": study["mlps_and_embed"].to_dict(),
               "cls_to_cls": None if study["cls_to_cls"] is None else study["cls_to_cls"].to_dict()}
    extra = {"all MLPs + embedding term": study["mlps_and_embed"].accuracy}
    if study["cls_to_cls"] is not None:
        extra["CLS→CLS terms of every layer"] = study["cls_to_cls"].accuracy
    path = plot if plot is not None else _default_plot(st.path)
    if path is not None:
        accs = [r.accuracy for r in study["curve"]]
        classes = len(st.class_names)
        with written_then_renamed(path, overwrite=overwrite, option="--plot") as tmp:
            save_ablation_curve(accs, study["baseline"].accuracy, tmp, title=store_note(st, weights=False),
                                extra=extra,
                                chance=1 / classes if classes else None,
                                random_weights=bool(st.header["model"].get("random_weights")))
    payload["plot"] = None if path is None else str(path)
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    con.print(store_note(st))
    rows = [("nothing (the model as it is)", f"{100 * study['baseline'].accuracy:.1f}")]
    rows += [(f"attention of layers 0..{i}", f"{100 * r.accuracy:.1f}") for i, r in enumerate(study["curve"])]
    rows += [("all MLPs and the embedding term", f"{100 * study['mlps_and_embed'].accuracy:.1f}")]
    if study["cls_to_cls"] is not None:
        rows += [("the CLS→CLS terms of every layer", f"{100 * study['cls_to_cls'].accuracy:.1f}")]
    print_table(con, ["mean-ablated", Column("accuracy %", number=True)], rows,
                title="zero-shot accuracy with components mean-ablated")
    con.print(f"plot: {path}" if path is not None else
              f"no plot: the store's folder {st.path} cannot be written to; pass --plot FILE")


def _default_plot(folder: Path) -> Path | None:
    """Where the study's plot goes without --plot: ablation-curve.png in the store's folder, under a new
    numbered name if one is there (``None``: the folder cannot be written to, as a shared read-only store)."""
    try:
        writable_dir(folder, "the store's folder")
    except InvalidInputError:
        return None
    return unique_path(folder / "ablation-curve.png")


def model_for(st: Store, model: str | None, pretrained: str | None, device: str) -> CLIPAdapter:
    """The store's model (by the name, weights and random-weight seed it recorded, or the ones given), checked
    by fingerprint."""
    from cliplens.models import load
    from cliplens.models.hub import DEFAULT_SEED

    m = st.header["model"]
    name = model or m["name"]
    weights = pretrained if model or pretrained else (None if m["weights"] in ("default", m["name"]) else m["weights"])
    if model is None and m["weights"] == "wrapped":
        raise InvalidInputError("the store was made with a model object passed to cliplens.wrap, which cannot be "
                                "loaded by name: pass --model and --pretrained to embed the texts")
    random_store = m.get("random_weights") or m["weights"] == "random"
    seed = m.get("seed")
    adapter = load(name, pretrained=weights, device=check_device(device),
                   seed=DEFAULT_SEED if seed is None else int(seed))
    if adapter.fingerprint() != m["fingerprint"]:
        same = random_store and weights == "random" and name == m["name"]
        if same and seed is None:
            raise ModelLoadError(f"the store was built with random weights of {name} drawn before cliplens seeded "
                                 "them (its header records no seed), so they cannot be drawn again: build the store "
                                 "again (with --pretrained random its weights now come from --seed, default "
                                 f"{DEFAULT_SEED}, and every analysis reloads them)")
        if same:
            raise ModelLoadError(f"{name} with random weights drawn from seed {seed}, as the store records, is not the "
                                 "model the store was made with (its fingerprint differs): the installed open_clip "
                                 "or cliplens draws random weights differently from the one that built the store; "
                                 "build the store again")
        raise ModelLoadError(f"{name} ({weights}) is not the model the store was made with (its fingerprint "
                             f"differs): pass the store's model with --model/--pretrained")
    return adapter


def textspan_inputs(pool: str, heads: str | None) -> tuple[list[str], list[tuple[int, int]] | None]:
    """What ``--pool`` and ``--heads`` name, checked before any model is loaded: the pool's texts, and the
    heads (``None``: every head of ``--layers`` or the ``--last`` K layers)."""
    from cliplens.analyses.ablation import parse_components

    head_list = None
    if heads:
        comp = parse_components(heads)
        if comp.attention or comp.mlps or comp.embed or comp.cls_to_cls or not comp.heads:
            raise InvalidInputError("--heads takes heads only, e.g. 'L10.H3,L11.H0'")
        head_list = list(comp.heads)
    return load_pool(pool), head_list


def textspan_for(st: Store, adapter: CLIPAdapter, texts: list[str], *, pool: str,
                 layers: tuple[int, ...] | None = None, last: int | None = None,
                 heads: list[tuple[int, int]] | None = None, m: int = 20, rank: int | None = None,
                 n_images: int | None = None, progress: bool = False, with_accuracy: bool = True
                 ) -> tuple[TextSpanResult, dict[str, Tensor]]:
    """TEXTSPAN on the fly, as ``cliplens textspan`` computes it: the pool's ``texts`` (from
    :func:`textspan_inputs`) embedded by ``adapter``, the heads of ``layers`` (indices) or of the ``last`` k
    layers (default: the last 4, or all if fewer), or ``heads``,
    ``m`` texts per head, over the first ``n_images`` images (default all). Returns the result (its settings
    name the store and the pool) and each pool text's embedding."""
    from cliplens.analyses.textspan import DEFAULT_LAST, textspan

    emb = adapter.encode_text(texts, progress=progress)
    images = None if n_images is None else range(min(n_images, len(st)))
    if layers is None and last is None and not heads:
        last = min(DEFAULT_LAST, st.shape["layers"]) or None
    res = textspan(st, texts, emb, layers=None if layers is None else list(layers), last=last, heads=heads, m=m,
                   rank=rank, images=images,
                   with_accuracy=with_accuracy)
    res.settings.update({"store": str(st.path), "pool": pool})
    return res, dict(zip(texts, emb, strict=True))


@click.command("textspan")
@click.argument("store", type=click.Path(path_type=Path))
@layer_options("Analyse every head", default="the last 4")
@click.option("--heads", default=None, help="Or these heads only, e.g. 'L10.H3,L11.H0'.")
@click.option("--texts", "m", type=click.IntRange(min=1), default=20, show_default=True, help="Texts per head.")
@click.option("--rank", type=click.IntRange(min=1), default=None, help="Span rank (default: the head dimension).")
@click.option("--pool", default=None,
              help=f"Text pool: {', '.join(POOLS)}, or a file with one text per line ({DEFAULT_POOL_HELP}).")
@click.option("--images", "n_images", type=click.IntRange(min=2), default=None,
              help="Use the first N images of the store (default all).")
@output_option("--out", "out_dir", kind="folder", default=Path("cliplens-textspan"), show_default=True,
               help="Folder for textspan.json and one text file per head.")
@click.option("--model", "-m", default=None, help="The store's model (default: the one it recorded).")
@click.option("--pretrained", "-p", default=None)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@threads_option(2)
def textspan_cmd(store: Path, last: int | None, layers: tuple[int, ...] | None, heads: str | None, m: int, rank: int | None, pool: str | None,
                 n_images: int | None, out_dir: Path, model: str | None, pretrained: str | None, device: str,
                 as_json: bool, threads: int) -> None:
    """Label heads with the texts that span their output (TEXTSPAN), with the share of each head's variance each
    text's direction removes (and the cumulative share), and the zero-shot accuracy of the representation
    rebuilt from them."""
    from cliplens.analyses.textspan import resolve_heads
    from cliplens.store import Store

    st = Store(store)
    pool = pool or default_pool(st.header["model"])
    texts, head_list = textspan_inputs(pool, heads)
    resolve_heads(st, None if layers is None else list(layers), head_list,  # heads or layers the store does not
                  last=last)  # have: refused before any work
    writable_dir(out_dir, "--out", create=False)  # and a folder that cannot be written
    with torch_threads(threads):
        adapter = model_for(st, model, pretrained, device)
        res, _ = textspan_for(st, adapter, texts, pool=pool, layers=layers, last=last, heads=head_list, m=m, rank=rank,
                              n_images=n_images, progress=not as_json)
    out, note = fresh_dir(out_dir)
    files = res.write(out)
    if as_json:
        click.echo(json.dumps({**res.to_dict(), "files": [str(f) for f in files]}, indent=2))
        return
    con = console()
    if note:
        con.print(note)
    con.print(store_note(st))
    con.print("removed %: the share of the head's variance over the images that removing the text's direction "
              "removed (after the texts above it); cumulative %: their running sum")
    for h in res.heads:
        print_table(con, ["text", Column("removed %", number=True), Column("cumulative %", number=True)],
                    [(text, f"{100 * f:.2f}", f"{100 * c:.2f}")
                     for text, f, c in zip(h.texts, h.fractions, h.cumulative, strict=True)],
                    title=f"{h.name}: its {len(h.texts)} texts remove {100 * h.explained:.1f} % of its variance")
    if res.heads and len(res.heads[0].texts) < m:
        con.print(f"note: {len(res.heads[0].texts)} texts per head, not {m}: a head's span has rank "
                  f"{min(res.rank, res.images)} (the rank, at most the number of images), and each text removes one "
                  "of its directions")
    con.print(f"zero-shot accuracy: {100 * res.baseline_accuracy:.1f} % as it is, {100 * res.accuracy:.1f} % rebuilt "
              f"from the texts of {len(res.heads)} heads (the rest mean-ablated); written to {out}")


COMMANDS = [ablate_cmd, textspan_cmd]
