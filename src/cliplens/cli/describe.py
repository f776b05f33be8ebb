"""``cliplens describe`` (an image, and its top heads, as a sparse sum of pool texts: SpLiCE) and ``cliplens
heads`` (every head described from its weights alone: the top singular directions of its OV map)."""

from __future__ import annotations

import json
from typing import Any

import click

from cliplens.analyses.pools import POOLS, default_pool, load_pool
from cliplens.cli.common import console, expand_images, load_model, model_options, model_record, weights_note
from cliplens.cli.decompose import image_options
from cliplens.errors import ImageLoadError, InvalidInputError

__all__ = ["COMMANDS", "describe_cmd", "heads_cmd"]

POOL_HELP = f"Text pool: {', '.join(POOLS)} or a file with one text per line (default: toy for the toy CLIP, else general)."


def _pool(pool: str | None, adapter: Any) -> tuple[str, list[str]]:
    name = pool or default_pool({"family": adapter.family})
    return name, load_pool(name)


def _sparsity(l1: float, texts_used: int | None) -> dict[str, Any]:
    return {"l1": None if texts_used else l1, "texts_used": texts_used}


def _head_list(heads: str | None) -> list[tuple[int, int]] | None:
    if not heads:
        return None
    from cliplens.analyses.ablation import parse_components

    comp = parse_components(heads)
    if comp.attention or comp.mlps or comp.embed or comp.cls_to_cls or not comp.heads:
        raise InvalidInputError("--heads takes heads only, e.g. 'L10.H3,L11.H0'")
    return list(comp.heads)


@click.command("describe")
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("--pool", default=None, help=POOL_HELP)
@click.option("--heads", "k", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also describe the K heads with the largest direct effect on each image's embedding.")
@click.option("--l1", type=click.FloatRange(min=0), default=0.25, show_default=True,
              help="SpLiCE's l1 penalty: larger uses fewer texts.")
@click.option("--texts", "texts_used", type=click.IntRange(min=1), default=None,
              help="Use at most this many texts per description (searches the l1 penalty per vector instead).")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Texts to print per line.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@image_options
def describe_cmd(images: tuple[str, ...], model: str, pretrained: str | None, device: str, trust_checkpoint: bool,
                 pool: str | None, k: int, l1: float, texts_used: int | None, top: int, as_json: bool,
                 recursive: bool, skip_bad: bool, max_pixels: int) -> None:
    """Each IMAGE as a sparse sum of pool texts (SpLiCE): "0.31 'a dog' + 0.12 'grass' + …".

    The image embedding (and, with --heads K, the direct effect of its K largest heads, from the exact
    decomposition) written as a non-negative combination of few texts of the pool, with the
    reconstruction's cosine with it and the number of texts used. The image side is centred on the
    pool's mean text embedding (the Python API, cliplens.analyses.sparse, takes an image mean).
    IMAGE may be a file or a folder.
    """
    from cliplens.analyses.sparse import describe_images

    paths = expand_images(images, recursive=recursive)
    if pool is not None and pool not in POOLS:
        load_pool(pool)  # a bad pool file fails before the model loads
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    pool_name, texts = _pool(pool, adapter)
    rep = adapter.preprocess_with_report(paths, skip_bad=True, max_pixels=max_pixels)
    skipped = [{"image": paths[s.index], "error": s.reason} for s in rep.skipped]
    if skipped and not skip_bad:
        raise ImageLoadError(f"cannot load image {skipped[0]['image']!r}: {skipped[0]['error']}. Fix or remove it, or "
                             "pass --skip-bad to leave unreadable images out", source=skipped[0]["image"],
                             reason=skipped[0]["error"])
    kept = [paths[i] for i in rep.kept]
    if not kept:
        raise ImageLoadError(f"none of the {len(paths)} images could be read; first problem: {skipped[0]['image']}: "
                             f"{skipped[0]['error']}", source=skipped[0]["image"], reason=skipped[0]["error"])
    emb = adapter.encode_text(texts)
    res = describe_images(adapter, rep.pixel_values, texts, emb, heads=k, l1=l1, texts_used=texts_used)
    rows = res.to_dicts(top)
    if as_json:
        out = {"command": "describe", **model_record(adapter), "pool": pool_name, "pool_size": len(texts),
               **_sparsity(l1, texts_used), "mean": "pool", "skipped": skipped,
               "images": [{"image": p, **r} for p, r in zip(kept, rows, strict=True)]}
        click.echo(json.dumps(out, indent=2))
        return
    con, err = console(), console(stderr=True)
    for s in skipped:
        err.print(f"[yellow]skipped[/] {s['image']}: {s['error']}", soft_wrap=True)
    con.print(f"[bold]{adapter.name}[/] ({adapter.family}, weights: {adapter.weights}){weights_note(adapter)} · "
              f"pool {pool_name} ({len(texts)} texts)", soft_wrap=True)
    h = 0
    for i, path in enumerate(kept):
        click.echo(f"{path}\n  image   {_line(res.images, i, top)}")
        for name, norm in zip(res.heads[i], res.head_norms[i], strict=True):
            click.echo(f"  {name:<7} |effect| {norm:.3g} · {_line(res.head_texts, h, top)}")
            h += 1


def _line(st: Any, i: int, top: int) -> str:
    return f"cos {float(st.cosine[i]):.2f}, {int(st.count[i])} texts: {st.format(i, top)}"


@click.command("heads")
@model_options
@click.option("--pool", default=None, help=POOL_HELP)
@click.option("--last", type=click.IntRange(min=1), default=4, show_default=True,
              help="Describe every head of the last K layers.")
@click.option("--heads", "heads", default=None, help="Or these heads, e.g. 'L10.H3,L11.H0'.")
@click.option("--pool-heads", is_flag=True,
              help="Describe the pooling head's own heads instead (attention pooling: SigLIP's MAP head, a ResNet's "
                   "attention pool).")
@click.option("--directions", type=click.IntRange(min=1), default=2, show_default=True,
              help="Singular directions per head.")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="Nearest texts per direction and sign.")
@click.option("--sparse", is_flag=True, help="Also write each direction as a sparse sum of texts (SpLiCE).")
@click.option("--texts", "texts_used", type=click.IntRange(min=1), default=4, show_default=True,
              help="With --sparse: texts per sparse description.")
@click.option("--factors", is_flag=True,
              help="Toy-world models: compare each head's top direction's text with TEXTSPAN's and with the scene "
                   "factor measured to explain most of its output (an agreement table; builds a store of scenes).")
@click.option("--scenes", type=click.IntRange(min=10), default=2000, show_default=True, help="With --factors: scenes.")
@click.option("--scene-seed", "scene_seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --factors: the scenes' seed.")
@click.option("--objects", type=click.IntRange(1, 4), default=None,
              help="With --factors: objects per scene (default 1 to 4).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def heads_cmd(model: str, pretrained: str | None, device: str, trust_checkpoint: bool, pool: str | None, last: int,
              heads: str | None, pool_heads: bool, directions: int, top: int, sparse: bool, texts_used: int,
              factors: bool, scenes: int, scene_seed: int, objects: int | None, as_json: bool) -> None:
    """What each attention head can write, from its weights alone (no image).

    Each head's output-value map carried into the joint space (value and out-projection, then the
    final LayerNorm's linear part and the projection, as the decomposition maps it); its top singular
    directions, by singular value, each with the pool texts nearest to it on both signs ('+' and '-':
    a head writes along either, depending on its input) and, with --sparse, as a sparse sum of texts.
    """
    from cliplens.analyses.head_descriptions import describe_heads

    head_list = _head_list(heads)
    if pool is not None and pool not in POOLS:
        load_pool(pool)
    adapter = load_model(model, pretrained, device, trust_checkpoint)
    if factors:
        _factors(adapter, scenes, scene_seed, objects, as_json)
        return
    if not pool_heads and adapter.vision.num_layers and last > adapter.vision.num_layers:
        raise InvalidInputError(f"--last {last}: {adapter.name} has {adapter.vision.num_layers} layers; pass "
                                f"1..{adapter.vision.num_layers}")
    pool_name, texts = _pool(pool, adapter)
    emb = adapter.encode_text(texts)
    out = describe_heads(adapter, texts, emb, heads=head_list, last=last, pool_heads=pool_heads,
                         directions=directions, top=top, sparse=sparse, texts_used=texts_used)
    if as_json:
        click.echo(json.dumps({"command": "heads", **model_record(adapter), "pool": pool_name, "pool_size": len(texts),
                               "heads": [h.to_dict() for h in out]}, indent=2))
        return
    console().print(f"[bold]{adapter.name}[/] ({adapter.family}, weights: {adapter.weights}){weights_note(adapter)} · "
                    f"pool {pool_name} ({len(texts)} texts)", soft_wrap=True)
    for h in out:
        click.echo(f"{h.name}  singular values {', '.join(f'{s:.3g}' for s in h.singular_values[:directions])}")
        for d in h.directions:
            for sign, near, sp in (("+", d.positive, d.sparse_positive), ("-", d.negative, d.sparse_negative)):
                texts_line = ", ".join(f"{t!r} {c:.2f}" for t, c in near)
                click.echo(f"  {sign}v{d.rank} ({d.share:.0%}): {texts_line}" + (f"  ≈ {sp}" if sp else ""))


def _factors(adapter: Any, scenes: int, seed: int, objects: int | None, as_json: bool) -> None:
    """``heads --factors``: the agreement table of :mod:`cliplens.experiments.ov_heads`."""
    if adapter.family != "toy":
        raise InvalidInputError(f"--factors compares heads with the toy world's scene factors: it needs a toy-world "
                                f"model (--model toy), not {adapter.name}")
    from cliplens.cli.tables import print_table
    from cliplens.experiments.ov_heads import ov_head_factors

    table = ov_head_factors(adapter, n=scenes, seed=seed, objects=objects, progress=not as_json)
    if as_json:
        click.echo(json.dumps({"command": "heads --factors", **model_record(adapter), **table.to_dict()}, indent=2))
        return
    con = console()
    rows = [(r.name, f"{r.ov_sign}v0 {r.ov_text!r} ({r.ov_cosine:.2f})", r.ov_factor, r.textspan_factor,
             f"{r.measured_factor} ({100 * r.measured_share:.0f}%)") for r in table.rows]
    print_table(con, ["head", "OV: nearest text to the top direction (cosine)", "OV factor", "TEXTSPAN factor",
                      "measured factor (share)"], rows,
                title=f"heads of {adapter.name}{weights_note(adapter)}: from the weights (OV) and from {scenes} scenes "
                      f"of {objects or '1-4'} objects, seed {seed}")
    for label, a in (("all heads", table.agreement()), (f"heads with a factor share >= {table.clear:g}",
                                                       table.agreement(clear_only=True))):
        if a["heads"]:
            con.print(f"agreement over {label} ({a['heads']}): OV vs measured {100 * a['ov_measured']:.0f}%, "
                      f"TEXTSPAN vs measured {100 * a['textspan_measured']:.0f}%, OV vs TEXTSPAN "
                      f"{100 * a['ov_textspan']:.0f}%")


COMMANDS = [describe_cmd, heads_cmd]
