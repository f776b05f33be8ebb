"""``cliplens neurons``: the second-order effects of MLP neurons over a store's images (Gandelsman et al., ICLR
2025): their principal components, sparse text descriptions, ablations with zero-shot accuracy, and atlas pages."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cliplens.analyses.pools import DEFAULT_POOL_HELP, POOLS, default_pool, load_pool
from cliplens.cli.analyses import model_for, store_note
from cliplens.cli.common import console, loader_options, output_option, threads_option, torch_threads
from cliplens.cli.tables import Column, print_table
from cliplens.errors import InvalidInputError
from cliplens.report.files import fresh_dir, writable_dir

#: the rows of the ablation table, in the paper's order
ABLATIONS = {
    "baseline": "nothing (the model as it is)",
    "mean_ablated": "every neuron's effect mean-ablated",
    "without_significant": "only the significant neurons mean-ablated",
    "without_insignificant": "only the insignificant neurons mean-ablated",
    "principal_components": "each effect rebuilt from its principal component",
    "texts": "each effect rebuilt from its text description",
}


def parse_layers(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise InvalidInputError(f"--layers takes MLP layer indices separated by commas (e.g. 8,9,10 or -4,-3), "
                                f"got {value!r}") from None
    if not out:
        raise InvalidInputError("--layers names no layer: give MLP layer indices, e.g. 8,9,10")
    return out


@click.command("neurons")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--layers", "-l", required=True, help="MLP layers whose neurons to analyse, e.g. 8,9,10 (negatives "
                                                     "count from the end; the last layer has no later head).")
@click.option("--images", "n_images", type=click.IntRange(min=2), default=None,
              help="Use the first N images of the store (default all).")
@click.option("--top-k", type=click.IntRange(min=2), default=100, show_default=True,
              help="Images with the largest effect per neuron that its principal component is taken from.")
@click.option("--pool", default=None,
              help=f"Text pool for the descriptions: {', '.join(POOLS)}, or a file with one text per line "
                   f"({DEFAULT_POOL_HELP}).")
@click.option("--texts", "n_texts", type=click.IntRange(min=1), default=32, show_default=True,
              help="Texts per neuron description (orthogonal matching pursuit).")
@click.option("--show", type=click.IntRange(min=1), default=10, show_default=True,
              help="Neurons per layer in the tables and atlas pages (those with the largest effects).")
@click.option("--atlas", is_flag=True, help="Also write atlas pages: each shown neuron's top images with where it "
                                             "fires (re-runs the model on those images only).")
@click.option("--data", default=None,
              help="The store's data set (the spec or folder given to 'cliplens store build'), needed for --atlas and "
                   "for a store built without --neuron-layers; default: reopened from the store's header. Checked "
                   "against the store's record either way.")
@click.option("--layout", default=None, help="With --data: its layout (default: detected).")
@click.option("--split", default=None, help="With --data: its split.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="With --data: a loader option (repeat).")
@click.option("--fp16", is_flag=True, help="Write the effects in float16 (half the disk).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@output_option("--out", "out_dir", kind="folder", default=Path("cliplens-neurons"), show_default=True,
               help="Folder for effects-L*.npy, components-L*.npz, neurons.json, ablation.png and the atlas.")
@click.option("--model", "-m", default=None, help="The store's model (default: the one it recorded).")
@click.option("--pretrained", "-p", default=None)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@threads_option(2)
def neurons_cmd(store: Path, layers: str, n_images: int | None, top_k: int, pool: str | None, n_texts: int,
                show: int, atlas: bool, data: str | None, layout: str | None, split: str | None,
                options: tuple[str, ...], fp16: bool, batch_size: int, out_dir: Path, model: str | None,
                pretrained: str | None, device: str, as_json: bool, threads: int) -> None:
    """Second-order effects of MLP neurons (through the later attention heads): each neuron's principal direction,
    its sparse text description, and the zero-shot accuracy with the neurons mean-ablated (from the store; a
    store built with --neuron-layers needs no forward)."""
    import numpy as np
    import torch

    from cliplens.analyses.atlas import store_dataset
    from cliplens.analyses.neurons import (
        ablation_study,
        check_neuron_layers,
        describe,
        principal_components,
        store_effects,
    )
    from cliplens.report.plotting import save_bars
    from cliplens.store import Store

    st = Store(store)
    wanted = parse_layers(layers)
    pool = pool or default_pool(st.header["model"])
    texts = load_pool(pool)
    if (layout or split or options) and data is None:
        raise InvalidInputError("--layout, --split and --option describe the data set given with --data")
    writable_dir(out_dir, "--out", create=False)
    with torch_threads(threads):
        adapter = model_for(st, model, pretrained, device)
        chosen = check_neuron_layers(adapter.vision, wanted)
        stored = set(st.settings.get("neuron_layers", ()))
        dataset = None
        if atlas or not set(chosen) <= stored:  # the images are read again: the data set, checked, before any work
            dataset = store_dataset(st, data, layout=layout, **loader_options(options, split=split))
        out, note = fresh_dir(out_dir)
        n = len(st) if n_images is None else min(n_images, len(st))
        res = store_effects(st, adapter, chosen, out, images=range(n), batch_size=batch_size,
                            dtype="float16" if fp16 else "float32", dataset=dataset, progress=not as_json)
        text_emb = adapter.encode_text(texts, progress=not as_json)
        labelled = bool((res.labels >= 0).all()) and len(st.class_names) > 1
        report: dict = {"store": str(st.path), "images": n, "source": res.source, "pool": pool,
                        "pool_size": len(texts), "top_k": top_k, "texts_per_neuron": n_texts, "layers": {}}
        comps, descs = {}, {}
        for k in chosen:
            eff = res.effects(k)
            comp = principal_components(eff, layer=k, top_k=top_k)
            desc, recon = describe(comp, texts, text_emb, n_texts=n_texts)
            np.savez(out / f"components-L{k}.npz", mean=comp.mean, pcs=comp.pcs, norms=comp.norms,
                     explained=comp.explained, top_images=res.rows[comp.top_images], reconstructions=recon.numpy())
            acc = ablation_study(eff, res.embeddings, res.labels, st.classifier, comp,
                                 reconstructions=recon) if labelled else {}
            order = np.argsort(-comp.norms[:, -1])
            report["layers"][str(k)] = {
                "ablation": acc,
                "neurons": [{"neuron": int(comp.neurons[i]), "peak": float(comp.norms[i, -1]),
                             "threshold": float(comp.threshold[i]), "rank1": float(comp.explained[i]),
                             "cosine": desc[i].cosine, "texts": desc[i].texts, "weights": desc[i].weights,
                             "top_images": [int(res.rows[j]) for j in comp.top_images[i, :10]]}
                            for i in order]}
            comps[k], descs[k] = comp, desc
    (out / "neurons.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    files = [out / "neurons.json"]
    if labelled:
        labels = [f"L{k}: {ABLATIONS[name]}" for k in chosen for name in report["layers"][str(k)]["ablation"]]
        values = [100 * v for k in chosen for v in report["layers"][str(k)]["ablation"].values()]
        files.append(save_bars(labels, values, out / "ablation.png", xlabel="zero-shot accuracy %",
                               title="zero-shot accuracy with neurons' second-order effects changed",
                               random_weights=bool(st.header["model"].get("random_weights"))))
    if atlas:
        from cliplens.report.neurons import neuron_cards, write_neuron_atlas

        cards = {k: neuron_cards(comps[k], descs[k], top=show, images=5, rows=res.rows) for k in chosen}
        with torch_threads(threads), torch.no_grad():
            files.append(write_neuron_atlas(cards, adapter, dataset, st.indices, out, note=store_note(st)))
    if as_json:
        click.echo(json.dumps({**report, "files": [str(f) for f in files]}, indent=1))
        return
    con = console()
    if note:
        con.print(note)
    con.print(store_note(st))
    source = "read from the store" if res.source == "store" else "from the model re-run on the store's data set"
    con.print(f"{n} images; effects {source}; descriptions from {len(texts)} texts ({pool}), {n_texts} per neuron")
    for k in chosen:
        rows = [(f"N{r['neuron']}", f"{r['peak']:.3g}", f"{100 * r['rank1']:.1f}", f"{r['cosine']:.2f}",
                 " + ".join(f"{w:.3g} {t!r}" for t, w in zip(r["texts"][:3], r["weights"][:3], strict=True)))
                for r in report["layers"][str(k)]["neurons"][:show]]
        print_table(con, ["neuron", Column("peak", number=True), Column("rank-1 %", number=True),
                          Column("cosine", number=True), "description (first texts)"], rows,
                    title=f"layer {k}: the {min(show, len(rows))} neurons with the largest second-order effects")
        acc = report["layers"][str(k)]["ablation"]
        if acc:
            print_table(con, ["layer " + str(k), Column("accuracy %", number=True)],
                        [(ABLATIONS[name], f"{100 * v:.1f}") for name, v in acc.items()],
                        title=f"layer {k}: zero-shot accuracy (means and thresholds from the same {n} images)")
    if not labelled:
        con.print("no ablation table: the store's images are unlabelled or it has one class")
    con.print(f"written to {out}: " + ", ".join(f.name for f in files) + ", effects-L*.npy, components-L*.npz")


COMMANDS = [neurons_cmd]
