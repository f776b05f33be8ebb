"""``cliplens toy``: train, evaluate and benchmark the toy world's CLIP."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import click

from cliplens.cli.common import (
    console,
    load_model,
    model_record,
    output_option,
    overwrite_option,
    threads_option,
    torch_threads,
    weights_note,
)
from cliplens.cli.tables import Column, print_table
from cliplens.errors import InvalidInputError
from cliplens.experiments.choices import BENCH_N, BENCH_SEED
from cliplens.report.files import claim_output, fresh_dir, writable_dir, writable_file, written_then_renamed

__all__ = ["toy"]


@click.group(name="toy")
def toy() -> None:
    """The toy world: train and evaluate the small CLIP trained on procedural scenes."""


class CountWeights(click.ParamType):
    """Four comma-separated non-negative numbers, not all zero: how often a scene has 1, 2, 3, 4 objects."""

    name = "w1,w2,w3,w4"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            weights = tuple(float(x) for x in str(value).split(","))
        except ValueError:
            weights = ()
        if len(weights) != 4 or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            self.fail(f"{value!r} is not four comma-separated weights for 1, 2, 3 and 4 objects per scene (numbers "
                      "0 or more, not all 0), e.g. 0.25,0.25,0.25,0.25", param, ctx)
        return weights


POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
FRACTION = click.FloatRange(0.0, 1.0)
POSITIVE_FLOAT = click.FloatRange(min=0.0, min_open=True)


@toy.command("train")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Run directory: checkpoints, logs, summary.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@click.option("--steps", type=POSITIVE, default=3000, show_default=True, help="Planned steps (sets the LR schedule).")
@click.option("--minutes", type=POSITIVE_FLOAT, default=None, help="Hard wall-clock cap; stops early and exports.")
@click.option("--decay-start", type=NON_NEGATIVE, default=None,
              help="Step where the LR decay begins (default: at 70% of --steps, or of --minutes when set). "
                   "Pass the value recorded in a run's JSON to replay it step for step without --minutes.")
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True,
              help="Scenes per batch (2 or more: the loss contrasts the scenes of a batch).")
@click.option("--lr", type=POSITIVE_FLOAT, default=1e-3, show_default=True)
@click.option("--warmup", type=NON_NEGATIVE, default=150, show_default=True)
@click.option("--p-full", type=FRACTION, default=0.35, show_default=True, help="Fraction of full captions.")
@click.option("--p-factor", type=FRACTION, default=0.5, show_default=True,
              help="Of the partial captions, the fraction naming a single factor.")
@click.option("--twin-frac", type=FRACTION, default=0.4, show_default=True,
              help="Fraction of each batch that are one-factor-changed twins of other scenes.")
@click.option("--neg-frac", type=FRACTION, default=0.25, show_default=True,
              help="Hard-negative captions per batch (fraction of batch size).")
@click.option("--text-lr-mult", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Text-tower LR multiplier for the first --text-lr-hold steps (then ramps to 1).")
@click.option("--text-lr-hold", type=NON_NEGATIVE, default=0, show_default=True)
@click.option("--init-logit-scale", type=float, default=None, help="Initial log logit scale (default log(1/0.07)).")
@click.option("--prompt-bank", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Weight of the prompt-bank term (image vs. all single-factor prompts); 0: off.")
@click.option("--count-weights", type=CountWeights(), default="0.25,0.25,0.25,0.25", show_default=True,
              help="Probabilities of 1,2,3,4 objects per training scene.")
@click.option("--bank-center/--no-bank-center", default=False, show_default=True,
              help="Centre and normalise each prompt group in the prompt-bank term.")
@click.option("--bank-pairs", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Weight of the mirror-pair term (image vs. the two prompts of each pair of mirrored cells: left | "
                   "right, top left | top right, ..., top | bottom, ...); with --bank-center it teaches the image "
                   "tower left from right; 0: off.")
@click.option("--width", type=POSITIVE, default=128, show_default=True)
@click.option("--layers", type=POSITIVE, default=6, show_default=True)
@click.option("--heads", type=POSITIVE, default=4, show_default=True)
@click.option("--patch", type=POSITIVE, default=8, show_default=True)
@click.option("--image-size", type=POSITIVE, default=64, show_default=True)
@click.option("--mlp-ratio", type=POSITIVE_FLOAT, default=4.0, show_default=True)
@click.option("--embed-dim", type=POSITIVE, default=128, show_default=True)
@click.option("--text-width", type=POSITIVE, default=128, show_default=True)
@click.option("--text-layers", type=POSITIVE, default=3, show_default=True)
@click.option("--text-mlp-ratio", type=POSITIVE_FLOAT, default=4.0, show_default=True)
@click.option("--context-length", type=POSITIVE, default=48, show_default=True)
@threads_option(2)
@click.option("--workers", type=NON_NEGATIVE, default=1, show_default=True,
              help="Data worker processes (0: load batches in the main process).")
@click.option("--checkpoint-every", type=POSITIVE, default=200, show_default=True)
@click.option("--eval-every", type=NON_NEGATIVE, default=0, show_default=True,
              help="Quick eval every N steps (0: off).")
@click.option("--eval-n", type=NON_NEGATIVE, default=1000, show_default=True,
              help="Scenes per factor in the final eval (0: no final eval).")
@click.option("--eval-seed", type=NON_NEGATIVE, default=12345, show_default=True)
@click.option("--export", type=click.Path(dir_okay=False), default=None,
              help="Write final weights here (.safetensors; a .json sidecar goes next to it).")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in --out (its config wins over the options); a new run if it holds none.")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier run in --out (its state, log, config and summary are deleted first) and an "
                   "existing --export file. Without it (or --resume) such a folder or file is refused.")
@click.option("--trust-checkpoint", is_flag=True,
              help="With --resume: allow the pickled checkpoint.pt of an older cliplens (unpickling can run code "
                   "stored in the file: only for a run you made). The run then saves its state as safetensors.")
@click.option("--init-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from these ToyCLIP weights (.safetensors) instead of a random initialisation; their "
                   "architecture wins over --width, --layers and the other shape options.")
@click.option("--pool", type=click.Choice(["cls", "map"]), default="cls", show_default=True,
              help="Image pooling: 'cls' (CLIP: the CLS token) or 'map' (SigLIP: attention pooling with a learned "
                   "probe, no CLS token). With --init-weights of the other kind, the blocks and text tower carry "
                   "over and the new pooling starts random.")
@click.option("--loss", type=click.Choice(["softmax", "sigmoid"]), default="softmax", show_default=True,
              help="'softmax' (CLIP's InfoNCE) or 'sigmoid' (SigLIP's pairwise sigmoid loss with a learned bias).")
@click.option("--name", default="toy-clip", show_default=True)
@click.option("--no-progress", is_flag=True)
def train_cmd(out_dir: str, seed: int, steps: int, minutes: float | None, decay_start: int | None,
              batch_size: int, lr: float, warmup: int, bank_center: bool, bank_pairs: float, count_weights: tuple[float, ...],
              prompt_bank: float, text_lr_mult: float, text_lr_hold: int, init_logit_scale: float | None,
              p_full: float, p_factor: float, twin_frac: float, neg_frac: float, width: int, layers: int,
              heads: int, patch: int, image_size: int, mlp_ratio: float, embed_dim: int, text_width: int,
              text_layers: int, text_mlp_ratio: float, context_length: int, threads: int, workers: int,
              checkpoint_every: int, eval_every: int, eval_n: int, eval_seed: int, export: str | None,
              resume: bool, overwrite: bool, trust_checkpoint: bool, init_weights: str | None, pool: str,
              loss: str, name: str, no_progress: bool) -> None:
    """Train a ToyCLIP from scratch, or from --init-weights (symmetric InfoNCE, label-aware targets).

    The run's state (safetensors + JSON, no pickle) is saved in --out every --checkpoint-every steps; --resume
    continues it exactly as an uninterrupted run would have gone on."""
    from cliplens.experiments.train import TrainConfig, current_command, train
    from cliplens.toyworld.model import ToyCLIPConfig

    mcfg = ToyCLIPConfig(name=name, image_size=image_size, patch_size=patch, width=width, layers=layers,
                         heads=heads, mlp_ratio=mlp_ratio, embed_dim=embed_dim, text_width=text_width,
                         text_layers=text_layers, text_mlp_ratio=text_mlp_ratio,
                         context_length=context_length, pool=pool, loss=loss)
    for option, size, n_heads in (("--width", width, heads), ("--text-width", text_width, mcfg.text_heads)):
        if size % n_heads:
            raise InvalidInputError(f"{option} {size} does not split into {n_heads} attention heads: pass a multiple "
                                    f"of {n_heads}" + (" or change --heads" if option == "--width" else ""))
    if patch > image_size:
        raise InvalidInputError(f"--patch {patch} is larger than --image-size {image_size}: pass a patch size of at "
                                f"most {image_size}")
    if init_logit_scale is not None:
        mcfg.init_logit_scale = init_logit_scale
    cfg = TrainConfig(seed=seed, steps=steps, minutes=minutes, decay_start=decay_start, batch_size=batch_size,
                      lr=lr, warmup=warmup, count_weights=count_weights, prompt_bank=prompt_bank,
                      bank_center=bank_center, bank_pairs=bank_pairs, text_lr_mult=text_lr_mult, text_lr_hold=text_lr_hold, p_full=p_full,
                      p_factor=p_factor, twin_frac=twin_frac, neg_frac=neg_frac, threads=threads,
                      num_workers=workers, checkpoint_every=checkpoint_every, eval_every=eval_every, model=mcfg,
                      init_weights=init_weights)
    writable_dir(Path(out_dir), "--out")
    if export is not None:
        writable_file(Path(export), "--export")
    with torch_threads(threads):
        summary = train(cfg, out_dir, resume=resume, overwrite=overwrite, trust_checkpoint=trust_checkpoint,
                        export=export, eval_n=eval_n, eval_seed=eval_seed, progress=not no_progress,
                        command=current_command())
    metrics = summary.pop("metrics", None)
    summary.pop("train_config", None)
    click.echo(json.dumps(summary, indent=2))
    if metrics:
        _print_table(metrics)


@toy.command("eval")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A toy-clip .safetensors file (default: the shipped weights).")
@click.option("-n", "n", type=POSITIVE, default=1000, show_default=True, help="Held-out scenes per factor.")
@click.option("--n-retrieval", type=NON_NEGATIVE, default=1000, show_default=True,
              help="Scenes for the retrieval recall (0: skip it).")
@click.option("--seed", type=NON_NEGATIVE, default=12345, show_default=True,
              help="Evaluation seed (held-out stream).")
@threads_option(2)
@output_option("--json-out", kind="file", default=None, help="Also write the metrics as JSON to this file.")
@overwrite_option("--json-out")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
def eval_cmd(weights: str | None, n: int, n_retrieval: int, seed: int, threads: int, json_out: Path | None,
             overwrite: bool, as_json: bool) -> None:
    """Zero-shot accuracy per factor and retrieval recall on held-out scenes."""
    from cliplens.experiments.evaluate import evaluate
    from cliplens.models.toy import load_toy

    if json_out is not None:
        json_out = claim_output(json_out, overwrite=overwrite, option="--json-out")  # before any work
    toy_clip = load_toy(weights)
    with torch_threads(threads):
        metrics = evaluate(toy_clip.model, toy_clip.tokenizer, n=n, seed=seed, n_retrieval=n_retrieval)
    if json_out is not None:
        with written_then_renamed(json_out, overwrite=overwrite, option="--json-out") as tmp:
            tmp.write_text(json.dumps(metrics, indent=2))
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        _print_table(metrics)


@toy.command("spurious")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Model to fine-tune (default: the shipped toy-clip).")
@output_option("--out", "out_dir", kind="folder", required=True,
               help="Folder for the fine-tuning run (checkpoint, log, summary).")
@click.option("--steps", type=POSITIVE, default=40, show_default=True,
              help="Fine-tuning steps (the defaults replay the shipped toy-clip-spurious).")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True,
              help="Scenes per batch (2 or more: the loss contrasts the scenes of a batch).")
@click.option("--lr", type=POSITIVE_FLOAT, default=1e-4, show_default=True)
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@threads_option(2)
@output_option("--export", kind="file", default=None,
               help="Write the fine-tuned weights here (.safetensors; a .json sidecar goes next to it).")
@overwrite_option("--export")
def spurious_cmd(weights: str | None, out_dir: Path, steps: int, batch_size: int, lr: float, seed: int,
                 threads: int, export: Path | None, overwrite: bool) -> None:
    """Fine-tune on the biased "toy waterbirds" mix; print group accuracies before and after."""
    from cliplens.experiments.train import current_command, finetune_spurious
    from cliplens.models.toy import load_toy

    load_toy(weights)  # a clean error for a file that is not toy-clip weights, before any work
    if export is not None:
        export = claim_output(export, overwrite=overwrite, option="--export", companions=(".json",))
    out, note = fresh_dir(out_dir, "--out")
    if note:
        console(stderr=True).print(f"[yellow]note:[/] {note}", soft_wrap=True)
    with torch_threads(threads), contextlib.ExitStack() as stack:
        tmp = None if export is None else stack.enter_context(
            written_then_renamed(export, overwrite=overwrite, option="--export", companions=(".json",)))
        s = finetune_spurious(weights, str(out), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                              export=None if tmp is None else str(tmp), progress=False, command=current_command(),
                              threads=threads)
    sp = s["spurious"]
    for when in ("before", "after"):
        r = sp[when]
        groups = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in r["groups"].items())
        click.echo(f"{when}: average {100 * r['average']:.1f}%, worst {100 * r['worst']:.1f}% "
                   f"({r['worst_group']}), gap {100 * r['gap']:.1f} points | {groups}")


def _print_table(metrics: dict) -> None:
    from cliplens.experiments.evaluate import format_table

    print_table(console(), ["metric", Column("value", number=True), Column("target", number=True),
                            "prompts / protocol"], format_table(metrics),
                title=f"toy-clip held-out metrics (eval seed {metrics.get('seed')}, n={metrics.get('n')} per factor)")


@toy.command("bench")
@click.option("--model", "-m", "model", default="toy", show_default=True,
              help="Model to benchmark (the toy-world scenes are rendered at its input size).")
@click.option("--pretrained", "-p", default=None, help="Weights: for 'toy', a .safetensors file from 'toy train'.")
@click.option("-n", "n", type=click.IntRange(min=1), default=BENCH_N, show_default=True, help="Held-out scenes.")
@click.option("--seed", type=click.IntRange(min=0), default=BENCH_SEED, show_default=True,
              help="Scene seed (the 'test' stream, never used in training).")
@click.option("--method", "methods", multiple=True, metavar="NAME",
              help="Only this row of the table (repeat for several; default: every row: CLIP Surgery and its "
                   "ablations, each map method, the baselines), or any method "
                   "registered in cliplens.maps.")
@click.option("--contrast", type=click.Choice(["classes", "scene"]), default="classes", show_default=True,
              help="Score each object's text among all 56 colour-shape texts, or among the scene's own object "
                   "texts only (an oracle that knows which objects are there).")
@click.option("--ap", "ap_backend", type=click.Choice(["numpy", "sklearn"]), default="numpy", show_default=True,
              help="Average precision: cliplens's own (checked against scikit-learn when installed) or "
                   "scikit-learn's for every object (much slower).")
@threads_option(1, help="Torch threads (the toy model's per-image work is small: 1 is usually fastest).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_cmd(model: str, pretrained: str | None, n: int, seed: int, methods: tuple[str, ...], contrast: str,
              ap_backend: str, threads: int, device: str, as_json: bool) -> None:
    """Ground-truth benchmark: every map method against the toy world's true object masks (per-object
    IoU, pixel accuracy, AP; open-vocabulary segmentation mIoU), next to baselines that ignore the text."""
    from cliplens.experiments.bench import DEFAULT_ROWS, format_rows, run_bench
    from cliplens.maps import map_names

    unknown = [m for m in methods if m not in map_names() and m not in DEFAULT_ROWS]
    if unknown:
        raise click.BadParameter(f"unknown map method(s) {', '.join(unknown)}; rows: {', '.join(DEFAULT_ROWS)}; "
                                 f"methods: {', '.join(map_names())}", param_hint="--method")
    adapter = load_model(model, pretrained, device)
    with torch_threads(threads):
        res = run_bench(adapter, n=n, seed=seed, methods=list(methods) or None, contrast=contrast,
                        ap_backend=ap_backend, progress=not as_json)
    if as_json:
        click.echo(json.dumps({**res, **model_record(adapter)}, indent=2))
        return
    con = console()
    print_table(con, ["method", *(Column(c, number=True) for c in ("mIoU %", "mIoU fg/bg %", "pixel acc %", "mAP %",
                                                                   "seg mIoU %", "seg pixel acc %")),
                      "beats baselines"], format_rows(res),
                title=f"toy-world segmentation, {res['model']}{weights_note(adapter)}: {res['n']} held-out scenes "
                      f"(stream '{res['stream']}', seed {res['seed']}), {res['n_objects']} objects, "
                      f"contrast: {res['contrast']}")
    for row, why in res.get("left_out", {}).items():
        con.print(f"left out {row}: {why}", soft_wrap=True)
    con.print(f"decomposition exactness: max relative error {res['exactness']:.2e} over {res['n']} scenes")
    con.print(f"protocol: {res['protocol']}; {res['seconds']:.1f} s")

@toy.command("heads")
@click.option("--model", "-m", "model", default="toy", show_default=True, help="A toy-world model.")
@click.option("--pretrained", "-p", default=None, help="Weights: for 'toy', a .safetensors file from 'toy train'.")
@click.option("-n", "n", type=click.IntRange(min=10), default=2000, show_default=True,
              help="Scenes (the 'test' stream) the heads are measured on.")
@click.option("--objects", type=click.IntRange(1, 4), default=None,
              help="Objects per scene (default: 1 to 4). With 1, each object factor is the scene's, so colour, "
                   "shape, size and position heads can be measured.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True, help="Scene seed.")
@click.option("--last", type=POSITIVE, default=None, help="Only the last K layers (default: every layer).")
@click.option("--texts", "m", type=POSITIVE, default=3, show_default=True, help="TEXTSPAN texts per head.")
@click.option("--clear", type=FRACTION, default=0.3, show_default=True,
              help="A head 'clearly follows' a factor when that factor explains at least this share of its variance.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Keep the decompositions in this store (reused when complete) instead of a temporary folder.")
@threads_option(2)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def heads_cmd(model: str, pretrained: str | None, n: int, objects: int | None, seed: int, last: int | None, m: int,
              clear: float, store_dir: str | None, threads: int, as_json: bool) -> None:
    """TEXTSPAN against ground truth: each head's texts (toy pool) next to the scene factor that measurably
    explains most of its output variance, and how often the two agree."""
    from cliplens.experiments.heads import head_factors

    adapter = load_model(model, pretrained, "cpu")
    with torch_threads(threads):
        table = head_factors(adapter, n=n, seed=seed, last=last, m=m, clear=clear, store_dir=store_dir,
                             objects=objects, progress=not as_json)
    if as_json:
        click.echo(json.dumps({**table.to_dict(), **model_record(adapter)}, indent=2))
        return
    con = console()
    rows = []
    for h in table.heads:
        texts = "; ".join(f"{x} ({100 * f:.0f}%)" for x, f in zip(h.texts, h.fractions, strict=True))
        rows.append((h.name, texts, h.text_factor,
                     f"{h.measured_factor} ({100 * h.shares[h.measured_factor]:.0f}%)", "yes" if h.agrees else "no"))
    print_table(con, ["head", "top texts (variance explained)", "text factor", "measured factor (share)", "agree"],
                rows, title=f"heads of {adapter.name}{weights_note(adapter)}: TEXTSPAN (toy pool, {m} texts) vs. the "
                            f"measured factor ({n} scenes of {objects or '1-4'} objects, seed {seed})")
    clear_part = (f"; over the {len(table.clear_heads)} heads that clearly follow one factor (share >= {clear:g}): "
                  f"{100 * table.clear_agreement:.0f}%" if table.clear_agreement is not None else
                  f"; no head has a factor share >= {clear:g}")
    con.print(f"agreement: {100 * table.agreement:.0f}% of {len(table.heads)} heads{clear_part}")


COMMANDS = [toy]
