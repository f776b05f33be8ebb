"""``cliplens retrieve`` and ``cliplens debias``: what heads do, put to use (from a store and TEXTSPAN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cliplens.analyses.pools import DEFAULT_POOL_HELP, POOLS, default_pool
from cliplens.cli.analyses import model_for, store_note, textspan_for, textspan_inputs
from cliplens.cli.common import LayerIndices, console, threads_option, torch_threads
from cliplens.cli.tables import Column, print_table
from cliplens.errors import ImageLoadError, InvalidInputError

if TYPE_CHECKING:
    from cliplens.analyses.properties import HeadChoice
    from cliplens.models import CLIPAdapter
    from cliplens.store import Store


def choice_options(f: Any) -> Any:
    """How heads are chosen: by hand, from TEXTSPAN texts, or from attribute labels."""
    for opt in reversed([
        click.option("--heads", default=None, help="Use these heads, e.g. 'L10.H3,L11.H0' (instead of choosing)."),
        click.option("--by", type=click.Choice(["auto", "text", "attribute"]), default="auto", show_default=True,
                     help="Choose heads from TEXTSPAN texts, or from the data set's labels of the property (auto: "
                          "labels when the store's images have them and neither --textspan nor --describe is "
                          "given, else texts)."),
        click.option("--num-heads", "k", type=click.IntRange(min=1), default=3, show_default=True,
                     help="How many heads to choose."),
        click.option("--describe", default=None,
                     help="Describe the property yourself: texts separated by ';' (for --by text)."),
        click.option("--textspan", "spans_path", type=click.Path(path_type=Path), default=None,
                     help="TEXTSPAN results (textspan.json or its folder, from 'cliplens textspan'); default: "
                          "computed here."),
        click.option("--pool", default=None, help=f"Text pool for TEXTSPAN computed here: {', '.join(POOLS)} or a "
                                                  f"file ({DEFAULT_POOL_HELP})."),
        click.option("--last", "-l", "last", type=click.IntRange(min=1), default=None,
                     help="TEXTSPAN computed here: the heads of the last K layers (default: 4)."),
        click.option("--layers", "layers", type=LayerIndices(), default=None,
                     help="TEXTSPAN computed here: or the heads of these layers (indices, e.g. 10,11 or -1)."),
        click.option("--texts", "m", type=click.IntRange(min=1), default=10, show_default=True,
                     help="TEXTSPAN computed here: texts per head."),
        click.option("--model", "-m", default=None, help="The store's model (default: the one it recorded)."),
        click.option("--pretrained", "-p", default=None),
        click.option("--device", default="cpu", show_default=True),
    ]):
        f = opt(f)
    return f


class _Model:
    """The store's model, loaded once and only when needed (text embeddings, a query image)."""

    def __init__(self, st: Store, model: str | None, pretrained: str | None, device: str) -> None:
        self.args = (st, model, pretrained, device)
        self._adapter: CLIPAdapter | None = None

    def __call__(self) -> CLIPAdapter:
        if self._adapter is None:
            self._adapter = model_for(*self.args)
        return self._adapter


def choose(st: Store, prop: str | None, *, heads: str | None, by: str, k: int, describe: str | None,
           spans_path: Path | None, pool: str | None, last: int | None,
           layers: tuple[int, ...] | None, m: int, model: _Model,
           quiet: bool) -> HeadChoice | None:
    """The heads to use (``None``: no property and no heads: the full embedding)."""
    from cliplens.analyses.properties import (
        HeadChoice,
        attribute_name,
        catalogue_for,
        heads_by_attribute,
        heads_by_text,
        parse_heads,
    )
    from cliplens.analyses.textspan import TextSpanResult

    if heads:
        return HeadChoice(prop or "heads given by hand", "hand", parse_heads(heads, st))
    if prop is None:
        return None
    if by == "auto":
        by = "attribute" if attribute_name(st, prop) is not None and describe is None and spans_path is None \
            else "text"
    if by == "attribute":
        return heads_by_attribute(st, prop, k=k)
    if spans_path is not None:
        spans = TextSpanResult.read(spans_path)
    else:
        name = pool or default_pool(st.header["model"])
        texts, _ = textspan_inputs(name, None)
        spans, _ = textspan_for(st, model(), texts, pool=name, last=last, layers=layers, m=m,
                                progress=not quiet, with_accuracy=False)
    L, H = st.shape["layers"], st.shape["heads"]
    bad = [h.name for h in spans.heads if not (0 <= h.layer < L and 0 <= h.head < H)]
    if bad:
        raise InvalidInputError(f"the TEXTSPAN results name heads the store's model does not have ({', '.join(bad)})"
                                ": were they made from another store?")
    descriptions = [d for d in describe.split(";")] if describe else None
    return heads_by_text(spans, prop, lambda t: model().encode_text(t), k=k, catalogue=catalogue_for(st),
                         descriptions=descriptions)


def _print_choice(con: Any, choice: HeadChoice) -> None:
    if not choice.scores:  # heads given by hand: nothing was scored
        con.print(f"heads for {choice.property!r} ({choice.by}): {', '.join(choice.names)}", markup=False)
        return
    rows = [(name, f"{s:.3f}", "yes" if name in choice.names else "")
            for name, s in sorted(choice.scores.items(), key=lambda kv: -kv[1])[:max(8, len(choice.heads))]]
    print_table(con, ["head", Column("score", number=True), "chosen"], rows,
                title=f"heads for {choice.property!r} ({choice.by})")


@click.command("retrieve")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--query", "-q", "query", type=click.Path(path_type=Path), default=None,
              help="A query image file (goes through the store's model once).")
@click.option("--query-index", type=int, default=None, help="Or the store's image at this row (0-based).")
@click.option("--property", "prop", default=None,
              help="Retrieve by this property only (colour, shape, location, background, count, texture, …) "
                   "through the heads that carry it.")
@choice_options
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbours to list.")
@click.option("--evaluate", "evaluate_attr", default=None,
              help="Also measure precision@top over the whole store for this attribute (every image queries the "
                   "others), through the heads and with the full embedding.")
@click.option("--json", "as_json", is_flag=True)
@threads_option(2)
def retrieve_cmd(store: Path, query: Path | None, query_index: int | None, prop: str | None, heads: str | None,
                 by: str, k: int, describe: str | None, spans_path: Path | None, pool: str | None, last: int | None,
                 layers: tuple[int, ...] | None,
                 m: int, model: str | None, pretrained: str | None, device: str, top: int,
                 evaluate_attr: str | None, as_json: bool, threads: int) -> None:
    """Nearest neighbours of a query image in a store, by one property (through the heads that carry it) and
    by the full embedding, side by side."""
    from cliplens.analyses.properties import attribute_name
    from cliplens.analyses.retrieval import (
        describe_row,
        head_features,
        nearest,
        precision_at_k,
        query_features,
        zero_shot_label,
    )
    from cliplens.images import load_image
    from cliplens.store import Store

    st = Store(store)
    if (query is None) == (query_index is None) and evaluate_attr is None:
        raise InvalidInputError("give a query: --query IMAGE or --query-index N (a row of the store)")
    if query is not None and query_index is not None:
        raise InvalidInputError("give one query: --query IMAGE or --query-index N, not both")
    if query_index is not None and not -len(st) <= query_index < len(st):
        raise InvalidInputError(f"--query-index {query_index}: the store has {len(st)} images (rows 0..{len(st) - 1})")
    if query is not None:
        try:  # before any work: the query must be readable
            load_image(str(query))
        except ImageLoadError as e:
            raise ImageLoadError(f"--query {str(query)!r} cannot be read: {e.reason.rstrip('. ')}. Nothing was done: "
                                 "pass a readable image file (PNG, JPEG, …), or --query-index N for an image of the "
                                 "store", source=e.source, reason=e.reason) from None
    get_model = _Model(st, model, pretrained, device)
    with torch_threads(threads):
        choice = choose(st, prop, heads=heads, by=by, k=k, describe=describe, spans_path=spans_path, pool=pool,
                        last=last, layers=layers, m=m, model=get_model, quiet=as_json)
        hs = None if choice is None else choice.heads
        if choice is not None and not hs:
            raise InvalidInputError(f"no head scored above 0 for {choice.property!r}; name heads with --heads")
        result: dict[str, Any] = {"store": str(st.path), "choice": None if choice is None else choice.to_dict()}
        feats = {"heads": head_features(st, hs) if hs else None, "embedding": head_features(st, None)}
        if query is not None or query_index is not None:
            if query is not None:
                adapter = get_model()
                px = adapter.preprocess([str(query)])
                q = {"heads": query_features(adapter, px, hs)[0] if hs else None,
                     "embedding": query_features(adapter, px, None)[0]}
                exclude = None
            else:
                row = query_index % len(st)
                q = {name: None if f is None else f[row] for name, f in feats.items()}
                exclude = row
            shown = attribute_name(st, prop) if prop else None
            if query is not None:  # an image from outside the store: its label is unknown, the classifier's guess
                result["query"] = {"file": str(query), "label": None,
                                   "zero_shot_label": zero_shot_label(st, q["embedding"])}
            else:
                result["query"] = describe_row(st, exclude, shown)
            result["neighbours"] = {name: nearest(st, feats[name], q[name], top, exclude).to_list(st, shown)
                                    for name in feats if feats[name] is not None}
        if evaluate_attr is not None:
            attr = attribute_name(st, evaluate_attr)
            if attr is None:
                raise InvalidInputError(f"--evaluate {evaluate_attr}: the store's images have no such attribute "
                                        f"(they have: {', '.join(st.header.get('attribute_names') or []) or 'none'})")
            values = st.attributes(attr)
            result["precision"] = {"attribute": attr, "k": top,
                                   **{name: precision_at_k(f, values, top) for name, f in feats.items()
                                      if f is not None}}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    con = console()
    con.print(store_note(st))
    if choice is not None:
        _print_choice(con, choice)
    if "neighbours" in result:
        qd = result["query"]
        if "file" in qd:
            what = f"{qd['file']} (label unknown; the store's zero-shot classifier says {qd['zero_shot_label']})"
        else:
            own = " · ".join(str(v) for k, v in qd.items() if k not in ("row", "id"))
            what = f"row {qd['row']} ({qd['id']}; {own})"
        lists = list(result["neighbours"].values())
        extra = [k for k in lists[0][0] if k not in ("rank", "row", "id", "similarity", "label")] if lists[0] else []
        columns: list[Column | str] = [Column("rank", number=True)]
        for name in result["neighbours"]:
            label = "through the heads" if name == "heads" else "full embedding"
            columns += [f"{label}: id", " · ".join(["label", *extra]), Column("cos", number=True)]
        rows = []
        for i in range(len(lists[0])):
            cells = [str(i + 1)]
            for lst in lists:
                r = lst[i] if i < len(lst) else None
                cells += ([r["id"], " · ".join(str(r[c]) for c in ["label", *extra]), f"{r['similarity']:.3f}"]
                          if r else ["", "", ""])
            rows.append(cells)
        print_table(con, columns, rows, title=f"nearest to {what}")
    if "precision" in result:
        p = result["precision"]
        line = f"precision@{top} for {p['attribute']}: full embedding {100 * p['embedding']:.1f} %"
        if "heads" in p:
            line += f", through the heads {100 * p['heads']:.1f} %"
        con.print(line)


@click.command("debias")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--spurious", required=True,
              help="The spurious cue: an attribute of the store's images (bg_kind, place) or a property to "
                   "find by TEXTSPAN texts (background, colour, …).")
@click.option("--groups", "groups_attr", default=None,
              help="The attribute that forms the groups with the class (default: the spurious attribute).")
@choice_options
@click.option("--random-sets", type=click.IntRange(min=0), default=5, show_default=True,
              help="Random head sets of the same size to compare with (the best is shown).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random sets.")
@click.option("--pool-mlp", is_flag=True,
              help="Also mean-ablate the pooling head's lumped MLP (attention-pooled models: SigLIP, PE-Core), which "
                   "head ablation cannot reach.")
@click.option("--json", "as_json", is_flag=True)
@threads_option(2)
def debias_cmd(store: Path, spurious: str, groups_attr: str | None, heads: str | None, by: str, k: int,
               describe: str | None, spans_path: Path | None, pool: str | None, last: int | None,
               layers: tuple[int, ...] | None, m: int,
               model: str | None, pretrained: str | None, device: str, random_sets: int, seed: int, pool_mlp: bool,
               as_json: bool, threads: int) -> None:
    """Remove a spurious cue by mean-ablating the heads that carry it: per-group, average and worst-group
    zero-shot accuracy before and after, next to the best of random head sets of the same size."""
    from cliplens.analyses.properties import attribute_name
    from cliplens.analyses.spurious import debias
    from cliplens.store import Store

    st = Store(store)
    groups = groups_attr or spurious
    if attribute_name(st, groups) is None:
        have = ", ".join(st.header.get("attribute_names") or []) or "none"
        raise InvalidInputError(f"the groups need an attribute of the store's images: {groups!r} is none of them "
                                f"(they have: {have}); pass --groups ATTRIBUTE")
    with torch_threads(threads):
        choice = choose(st, spurious, heads=heads, by=by, k=k, describe=describe, spans_path=spans_path, pool=pool,
                        last=last, layers=layers, m=m, model=_Model(st, model, pretrained, device), quiet=as_json)
        assert choice is not None
        res = debias(st, choice, groups, random_sets=random_sets, seed=seed, pool_mlp=pool_mlp)
    if as_json:
        click.echo(json.dumps({"store": str(st.path), **res.to_dict()}, indent=2))
        return
    con = console()
    con.print(store_note(st))
    _print_choice(con, choice)
    best = res.best_random
    ablated = "heads + pool MLP ablated" if res.pool_mlp else "heads ablated"
    columns = ["group", *(Column(c, number=True) for c in ["images", "as it is", ablated,
                                                           *([f"best of {len(res.random)} random"] if best else [])])]
    rows: list[list[str]] = []

    def row(label: str, n: str, get: Any) -> None:
        rows.append([label, n, f"{100 * get(res.before):.1f}", f"{100 * get(res.after):.1f}",
                     *([f"{100 * get(best[1]):.1f}"] if best else [])])

    for g in res.before.groups:
        row(g, str(res.before.sizes[g]), lambda a, g=g: a.groups[g])
    row("average (mean over groups)", "", lambda a: a.average)
    row("overall", str(sum(res.before.sizes.values())), lambda a: a.overall)
    row("worst group", "", lambda a: a.worst)
    print_table(con, columns, rows, title=f"zero-shot accuracy % by group ({res.attribute} × class)")
    con.print(f"heads ablated: {', '.join(choice.names)}" + (f"; the best random set: "
              f"{', '.join(f'L{a}.H{b}' for a, b in best[0])}" if best else ""))
    con.print(f"worst group: {res.before.worst_group} {100 * res.before.worst:.1f} % → {res.after.worst_group} "
              f"{100 * res.after.worst:.1f} % ({100 * (res.after.worst - res.before.worst):+.1f} points); average "
              f"{100 * (res.after.average - res.before.average):+.1f} points")


COMMANDS = [retrieve_cmd, debias_cmd]
