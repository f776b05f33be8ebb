"""What the explorer shows for one image and its texts: each *view* is a set of PNG figures drawn by the same
figure code as the commands (:mod:`cliplens.report`), written into the run's folder and listed with a caption.

Views (:data:`VIEWS`):

* ``maps``: each chosen map method's maps of every text over the photo (``cliplens explain``'s grid), and,
  with several methods, the methods side by side (one row per text);
* ``bars``: the exact decomposition of the image–text cosine similarity: every layer's direct effect (bars)
  and every head's (a layers × heads grid), as ``cliplens report`` draws them;
* ``head-maps``: the token maps of the heads that add most to each text's similarity (each image region's
  direct effect through that one head);
* ``surgery-heads``: CLIP Surgery's map split exactly over the heads of its surgical layers (``cliplens
  explain --by-head``);
* ``segment``: open-vocabulary segmentation with the texts as classes (and background names), with a legend,
  by the first chosen method (``cliplens segment``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cliplens.errors import CliplensError, InvalidInputError

__all__ = ["VIEWS", "Request", "draw"]

#: every view the explorer draws, in the order it draws them
VIEWS = ("maps", "bars", "head-maps", "surgery-heads", "segment")
#: how many heads ``head-maps`` and ``surgery-heads`` draw per text
TOP_HEADS = 4


@dataclass(frozen=True)
class Request:
    """One run: an image file, texts, map methods, views; ``templates`` (``"none"``: the texts as they are, or a
    prompt-ensemble name), ``background`` (segmentation's background names) and ``params`` (method -> its
    constructor parameters, as :func:`cliplens.maps.params.parse_params` reads ``--param``)."""

    image: str
    name: str
    texts: tuple[str, ...]
    methods: tuple[str, ...]
    views: tuple[str, ...]
    templates: str = "none"
    background: tuple[str, ...] = ("background",)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def method(self, name: str) -> Any:
        """The map method ``name`` with this run's parameters."""
        from cliplens.maps import get_map

        return get_map(name, **self.params.get(name, {}))


Figure = dict[str, str]
Step = Callable[[str], None]


class Figures:
    """The figures drawn so far, ``{view, title, url}`` each (``url``: ``link(file name)``), appended to
    ``shown`` as well when given (what a page shows while the rest is drawn)."""

    def __init__(self, link: Callable[[str], str], shown: list[Figure] | None) -> None:
        self.items: list[Figure] = []
        self.link, self.shown = link, shown

    def add(self, view: str, title: str, path: Path | str) -> None:
        f = {"view": view, "title": title, "url": self.link(Path(path).name)}
        self.items.append(f)
        if self.shown is not None:
            self.shown.append(f)


def _targets(texts: Sequence[str], templates: str) -> Any:
    from cliplens.maps import Targets

    return Targets.texts(list(texts)) if templates == "none" else Targets.classes(list(texts), templates=templates)


def draw(adapter: Any, req: Request, out: Path, step: Step, figures: list[Figure] | None = None,
         link: Callable[[str], str] = str) -> dict[str, Any]:
    """Every view of ``req`` drawn into ``out``: ``{"figures": [{view, title, url}], "notes": [...],
    "similarity": {text: cosine}}`` (the similarity when ``bars`` or ``head-maps`` ran); ``url`` is ``link(file
    name)``. ``step(message)`` is called before each piece of work; each figure is appended to ``figures`` (when
    given) as soon as it is drawn, so that a page can show it while the rest is drawn. A method that cannot run on
    this model (or refuses these inputs) becomes a note, and the other views go on."""
    from cliplens.images import load_image
    from cliplens.images.io import DEFAULT_MAX_PIXELS

    original = load_image(req.image, max_pixels=DEFAULT_MAX_PIXELS)
    drawn = Figures(link, figures)
    notes: list[str] = []
    result: dict[str, Any] = {"figures": drawn.items, "notes": notes}
    targets = _targets(req.texts, req.templates)
    maps: dict[str, Any] = {}
    if "maps" in req.views or "surgery-heads" in req.views:
        maps = _maps(adapter, req, targets, original, out, step, drawn, notes)
    if "bars" in req.views or "head-maps" in req.views:
        result["similarity"] = _decomposition(adapter, req, original, out, step, drawn)
    if "surgery-heads" in req.views:
        _surgery_heads(adapter, req, targets, maps.get("surgery"), original, out, step, drawn, notes)
    if "segment" in req.views:
        _segment(adapter, req, original, out, step, drawn, notes)
    return result


def _maps(adapter: Any, req: Request, targets: Any, original: Any, out: Path, step: Step, figures: Figures,
          notes: list[str]) -> dict[str, Any]:
    """Each method's maps (and the methods side by side); the ImageMaps of each method that ran."""
    from cliplens.report.maps import display_name, map_grid_figure, methods_figure

    names = list(req.methods)
    if "surgery-heads" in req.views and "surgery" not in names:
        names.append("surgery")  # where the split's map lies on the photo
    done: dict[str, Any] = {}
    settings: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        step(f"{display_name(name)}: mapping {len(req.texts)} text{'s' if len(req.texts) > 1 else ''}")
        try:
            method = req.method(name)
            why = method.unsupported(adapter)
            if why:
                raise InvalidInputError(why)
            result = method(adapter, [req.image], targets)
        except CliplensError as e:
            notes.append(f"{display_name(name)}: {e}")
            continue
        done[name], settings[name] = result.images[0], result.settings
        if name not in req.methods or "maps" not in req.views:
            continue
        step(f"{display_name(name)}: drawing")
        fig = map_grid_figure(original, result.images[0], list(req.texts), settings=result.settings,
                              image_name=req.name, random_weights=adapter.random_weights)
        _saved(figures, fig, out, f"maps-{i:02d}-{name}", "maps",
                              f"{display_name(name)}: where it puts each text")
    shown = [n for n in req.methods if n in done]
    if "maps" in req.views and len(shown) > 1:
        step("the methods side by side")
        fig = methods_figure(original, {n: done[n] for n in shown}, list(req.texts),
                             settings={n: settings[n] for n in shown}, image_name=req.name,
                             random_weights=adapter.random_weights)
        _saved(figures, fig, out, "methods", "maps", "the methods side by side")
    return done


def _saved(figures: Figures, fig: Any, out: Path, stem: str, view: str, title: str) -> None:
    from cliplens.report.plotting import save

    figures.add(view, title, save(fig, out / f"{stem}.png"))


def _decomposition(adapter: Any, req: Request, original: Any, out: Path, step: Step,
                   figures: Figures) -> dict[str, float]:
    """The layer bars and head grids of each text (``bars``) and the top heads' token maps (``head-maps``)."""
    import torch

    from cliplens.decomposition import summarize
    from cliplens.report.page import save_text_figures, text_results
    from cliplens.report.plotting import save_token_map, slug, unnormalize

    step("decomposing the image embedding over layers, heads and tokens")
    texts = list(dict.fromkeys(req.texts))
    with torch.no_grad():
        px = adapter.preprocess([req.image])
        dec = adapter.decompose(px, spatial=True)
        directions = adapter.encode_text(texts)
        scores = dec.normalized().project(directions, labels=texts)
        per_text = text_results(scores, summarize(dec, directions, texts, top=TOP_HEADS)[0], 0)
    cfg = adapter.preprocess_config
    box = cfg.input_box(original.height, original.width)
    shown = unnormalize(px[0], cfg.mean, cfg.std)
    rw = adapter.random_weights
    for t, r in enumerate(per_text):
        stem = f"{t:02d}-{slug(r.text)}"
        if "bars" in req.views:
            step(f"{r.text!r}: drawing the layers and heads")
            save_text_figures(r, out, stem, image_name=req.name, random_weights=rw)
            figures.add("bars", f"{r.text!r}: each layer's direct effect", r.figures["layers"])
            figures.add("bars", f"{r.text!r}: each head's direct effect", r.figures["heads"])
        if "head-maps" in req.views and scores.spatial:
            step(f"{r.text!r}: the maps of its top heads")
            for c in [c for c in r.top_heads if c.head is not None][:TOP_HEADS]:
                li = list(scores.head_layers).index(c.layer)
                grid = scores.heads[0, li, scores.prefix:, c.head, t].reshape(*scores.grid)
                path = save_token_map(grid, out / f"head-{stem}-{slug(c.name)}.png", model_input=shown,
                                      original=original, box=box, image_name=req.name, random_weights=rw,
                                      title=f"{r.text!r}: direct effect of each image region through head {c.name} "
                                            f"(the head adds {c.score:+.4f} to the similarity, its class token "
                                            "included)")
                figures.add("head-maps", f"{r.text!r}: head {c.name}", path)
    return {r.text: r.similarity for r in per_text}


def _surgery_heads(adapter: Any, req: Request, targets: Any, maps: Any, original: Any, out: Path, step: Step,
                   figures: Figures, notes: list[str]) -> None:
    """CLIP Surgery's map of each text split over its heads (the parts sum to the raw map)."""
    import torch

    from cliplens.maps import surgery_parts
    from cliplens.maps.inputs import fit_images
    from cliplens.report.maps import surgery_parts_figure
    from cliplens.report.plotting import slug

    if maps is None:
        return  # Surgery itself could not run: its note says why
    step("CLIP Surgery: splitting the maps over heads")
    params = req.method("surgery").params
    try:
        fitted, _ = fit_images(adapter, [req.image])
        px = fitted[0].pixels[None].to(adapter.device, adapter.dtype)
        with torch.no_grad():
            sp = surgery_parts(adapter, px, targets.embed(adapter, with_empty=True), blocks=params["blocks"],
                               feature=params["feature"], temperature=params["temperature"],
                               positional=params["positional"])
    except CliplensError as e:
        notes.append(f"CLIP Surgery by head: {e}")
        return
    parts = sp.parts[0].float().cpu()
    for t, text in enumerate(targets.names):
        step(f"{text!r}: drawing CLIP Surgery's heads")
        fig = surgery_parts_figure(original, maps, parts[t], sp.labels, text=text, top=TOP_HEADS,
                                   image_name=req.name, random_weights=adapter.random_weights)
        _saved(figures, fig, out, f"surgery-heads-{t:02d}-{slug(text)}", "surgery-heads",
                              f"{text!r}: which heads make CLIP Surgery's map")


def _segment(adapter: Any, req: Request, original: Any, out: Path, step: Step, figures: Figures,
             notes: list[str]) -> None:
    """Each pixel labelled with one of the texts (as classes) or background, by the first method."""
    from cliplens.report.maps import display_name, segmentation_figure
    from cliplens.tasks.segment import segment

    method = req.methods[0]
    step(f"segmenting with {display_name(method)}")
    classes = list(dict.fromkeys(req.texts))
    background = [b for b in req.background if b not in classes]
    try:
        seg = segment(req.method(method), adapter, [req.image], classes, background=background,
                      templates="auto" if req.templates == "none" else req.templates)[0]
    except CliplensError as e:
        notes.append(f"segmentation by {display_name(method)}: {e}")
        return
    fig = segmentation_figure(original, seg, image_name=req.name, settings=seg.settings,
                              random_weights=adapter.random_weights)
    _saved(figures, fig, out, "segmentation", "segment",
                          f"segmentation by {display_name(method)}: {', '.join(seg.present()) or 'no class'} found")
