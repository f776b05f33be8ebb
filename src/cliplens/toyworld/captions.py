"""Caption grammar for toy scenes, the facts each caption claims, and zero-shot prompt sets.

Every caption carries the set of *facts* it claims (hashable tuples). A scene satisfies a
caption when the scene's own facts contain all of the caption's facts, so the trainer can tell,
for every image/caption pair of a batch, whether the caption is true of the image (label-aware
contrastive targets: "a red circle" is a positive for every image with a red circle in it).

Facts:

* ``("obj", colour|None, shape|None, size|None, position|None)``: some object matches;
* ``("count", colour|None, shape|None, n)``: exactly ``n`` objects match (colour, shape);
* ``("bgkind", kind)`` and ``("bgcol", colour)``: the background.

A *full* caption describes every object (size, colour, shape, position), the background kind
and colour, and implies exact counts. *Partial* captions mention a subset: one object with some
attributes, a count, the background, or several objects.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np

from cliplens.toyworld.scenes import (
    BG_COLOURS,
    BG_KINDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    ObjectFactors,
    SceneFactors,
)

__all__ = [
    "Caption", "scene_facts", "full_caption", "sample_caption", "hard_negative",
    "consistency_matrix", "PromptSet", "PROMPT_SETS", "prompt_set",
    "object_phrase", "POSITION_PHRASES", "NUMBER_WORDS", "PLURALS", "describe", "caption_batch",
    "perturb_scene", "EVAL_POSITIONS", "EVAL_COUNTS", "factor_caption", "object_text", "class_texts",
    "background_texts",
]

Fact = tuple
PLURALS = {s: ("crosses" if s == "cross" else s + "s") for s in SHAPES}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
POSITION_PHRASES = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "centre": "in the centre",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
PREFIXES = ("", "a photo of ", "a picture of ", "an image of ", "a drawing of ", "a rendering of ")
GENERIC = ("shape", "object")
GENERIC_PLURAL = {"shape": "shapes", "object": "objects"}


@dataclass(frozen=True)
class Caption:
    text: str
    facts: frozenset


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


# --------------------------------------------------------------------------- facts
def scene_facts(scene: SceneFactors) -> frozenset:
    """Every fact true of ``scene`` (all attribute subsets of every object, exact counts, bg)."""
    facts: set[Fact] = {("bgkind", scene.bg_kind), ("bgcol", scene.bg_colour)}
    counts: Counter = Counter()
    for o in scene.objects:
        attrs = (o.colour, o.shape, o.size, o.position)
        for keep in itertools.product((False, True), repeat=4):
            facts.add(("obj",) + tuple(a if k else None for a, k in zip(attrs, keep, strict=True)))
        for c, s in ((o.colour, o.shape), (o.colour, None), (None, o.shape), (None, None)):
            counts[(c, s)] += 1
    for (c, s), n in counts.items():
        facts.add(("count", c, s, n))
    return frozenset(facts)


def _full_facts(scene: SceneFactors) -> frozenset:
    facts: set[Fact] = {("bgkind", scene.bg_kind), ("bgcol", scene.bg_colour)}
    counts: Counter = Counter()
    for o in scene.objects:
        facts.add(("obj", o.colour, o.shape, o.size, o.position))
        counts[(o.colour, o.shape)] += 1
        counts[(None, None)] += 1
    for (c, s), n in counts.items():
        facts.add(("count", c, s, n))
    return frozenset(facts)


def consistency_matrix(scene_fact_sets: list[frozenset], caption_fact_sets: list[frozenset]) -> np.ndarray:
    """``M[i, j]`` = caption ``j`` is true of scene ``i`` (bool ``[n_scenes, n_captions]``)."""
    index: dict[Fact, int] = {}
    for fs in scene_fact_sets:
        for f in fs:
            index.setdefault(f, len(index))
    n_known = len(index)
    S = np.zeros((len(scene_fact_sets), n_known + 1), dtype=np.float32)
    for i, fs in enumerate(scene_fact_sets):
        S[i, [index[f] for f in fs]] = 1.0
    C = np.zeros((len(caption_fact_sets), n_known + 1), dtype=np.float32)
    for j, fs in enumerate(caption_fact_sets):
        cols = [index.get(f, n_known) for f in fs]  # unknown facts -> a column no scene has
        C[j, cols] = 1.0
    missing = (1.0 - S) @ C.T  # [n_scenes, n_captions]: claimed facts the scene lacks
    return missing == 0


# --------------------------------------------------------------------------- phrases
def object_phrase(
    colour: str | None = None,
    shape: str | None = None,
    size: str | None = None,
    position: str | None = None,
    *,
    noun: str = "shape",
    art: bool = True,
) -> str:
    words = [w for w in (size, colour) if w] + [shape or noun]
    p = " ".join(words)
    if art:
        p = with_article(p)
    if position:
        p += " " + POSITION_PHRASES[position]
    return p


def count_phrase(n: int, colour: str | None, shape: str | None, noun: str = "shape") -> str:
    if n == 1:
        head = shape or noun
    else:
        head = PLURALS[shape] if shape else GENERIC_PLURAL[noun]
    return " ".join([NUMBER_WORDS[n]] + ([colour] if colour else []) + [head])


def bg_phrase(kind: str | None, colour: str | None) -> str:
    words = [w for w in (colour, kind) if w] + ["background"]
    return with_article(" ".join(words))


def object_text(colour: str, shape: str) -> str:
    """``"a red circle"`` / ``"an orange star"``."""
    return object_phrase(colour, shape)


def class_texts() -> list[str]:
    """The toy bench's fixed class set (:mod:`cliplens.experiments.bench`): every colour-shape text (colours outer, shapes inner)."""
    return [object_text(c, s) for c in COLOURS for s in SHAPES]


def background_texts() -> list[str]:
    """One text per background kind (``"a striped background"``, …): the segmentation's background names."""
    return [bg_phrase(kind, None) for kind in BG_KINDS]


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# --------------------------------------------------------------------------- captions
def full_caption(
    scene: SceneFactors,
    rng: np.random.Generator | None = None,
    *,
    prefix: str | None = None,
    shuffle: bool = False,
    form: int | None = None,
) -> Caption:
    """Describe everything: every object (size, colour, shape, position) and the background.

    With ``rng=None`` the caption is canonical (scene order, no prefix, form 0).
    """
    objs = list(scene.objects)
    if rng is not None and shuffle:
        objs = [objs[i] for i in rng.permutation(len(objs))]
    if prefix is None:
        prefix = PREFIXES[int(rng.integers(len(PREFIXES)))] if rng is not None else ""
    if form is None:
        form = int(rng.integers(3)) if rng is not None else 0
    parts = [object_phrase(o.colour, o.shape, o.size, o.position) for o in objs]
    bg = bg_phrase(scene.bg_kind, scene.bg_colour)
    if form == 0:
        text = f"{prefix}{_join(parts)} on {bg}"
    elif form == 1:
        text = f"{prefix}{count_phrase(len(objs), None, None)} on {bg} : {_join(parts)}"
    else:
        text = f"{prefix}{bg} with {_join(parts)}"
    return Caption(text.strip(), _full_facts(scene))


def _partial_object(o: ObjectFactors, rng: np.random.Generator) -> tuple[str, Fact]:
    while True:
        keep = rng.random(4) < np.array([0.6, 0.6, 0.3, 0.3])
        if keep.any():
            break
    c, s, z, p = (a if k else None for a, k in zip((o.colour, o.shape, o.size, o.position), keep, strict=True))
    noun = GENERIC[int(rng.random() < 0.25)]
    return object_phrase(c, s, z, p, noun=noun), ("obj", c, s, z, p)


#: how often :func:`factor_caption` names each factor
FACTOR_CAPTION_WEIGHTS: dict[str, float] = {
    "shape": 0.35, "bg_kind": 0.2, "position": 0.15, "size": 0.1, "count": 0.1, "colour": 0.1,
}


def factor_caption(scene: SceneFactors, rng: np.random.Generator, factor: str | None = None,
                   prefix: str = "") -> Caption:
    """A caption about a single factor ("a star", "a star and a heart", "a shape on the left",
    "a small shape", "three shapes", "a striped background", "a red shape") — the forms the
    zero-shot prompt sets use, so each factor gets a direct, classification-like signal."""
    if factor is None:
        names = list(FACTOR_CAPTION_WEIGHTS)
        w = np.array([FACTOR_CAPTION_WEIGHTS[k] for k in names])
        factor = names[int(rng.choice(len(names), p=w / w.sum()))]
    objs = scene.objects
    o = objs[int(rng.integers(len(objs)))]
    noun = GENERIC[int(rng.random() < 0.2)]
    facts: set[Fact] = set()
    if factor == "shape":
        shapes = sorted({x.shape for x in objs})
        if len(shapes) > 1 and rng.random() < 0.3:
            pick = [shapes[i] for i in rng.permutation(len(shapes))[:2]]
            text = _join([object_phrase(shape=s) for s in pick])
            facts |= {("obj", None, s, None, None) for s in pick}
        elif rng.random() < 0.25:
            n = sum(x.shape == o.shape for x in objs)
            text = count_phrase(n, None, o.shape)
            facts.add(("count", None, o.shape, n))
        else:
            text = object_phrase(shape=o.shape)
            facts.add(("obj", None, o.shape, None, None))
    elif factor == "bg_kind":
        text = bg_phrase(scene.bg_kind, None)
        facts.add(("bgkind", scene.bg_kind))
        if rng.random() < 0.3:
            text = f"{GENERIC_PLURAL[noun] if len(objs) > 1 else with_article(noun)} on {text}"
    elif factor == "position":
        text = object_phrase(position=o.position, noun=noun)
        facts.add(("obj", None, None, None, o.position))
    elif factor == "size":
        text = object_phrase(size=o.size, noun=noun)
        facts.add(("obj", None, None, o.size, None))
    elif factor == "count":
        text = count_phrase(len(objs), None, None, noun)
        facts.add(("count", None, None, len(objs)))
    elif factor == "colour":
        text = object_phrase(o.colour, noun=noun)
        facts.add(("obj", o.colour, None, None, None))
    else:
        raise ValueError(f"unknown factor {factor!r}")
    return Caption((prefix + text).strip(), frozenset(facts))


def sample_caption(
    scene: SceneFactors,
    rng: np.random.Generator,
    p_full: float = 0.5,
    p_factor: float = 0.5,
) -> Caption:
    """A random caption of ``scene``: full with probability ``p_full``; otherwise a single-factor
    caption (:func:`factor_caption`) with probability ``p_factor``, else another partial one."""
    if rng.random() < p_full:
        return full_caption(scene, rng, shuffle=rng.random() < 0.5)
    prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
    objs = scene.objects
    if rng.random() < p_factor:
        return factor_caption(scene, rng, prefix=prefix)
    kind = int(rng.choice(5, p=[0.3, 0.2, 0.15, 0.25, 0.1]))
    facts: set[Fact] = set()
    if kind == 0:  # one object, some attributes
        o = objs[int(rng.integers(len(objs)))]
        text, f = _partial_object(o, rng)
        facts.add(f)
    elif kind == 1:  # a count
        o = objs[int(rng.integers(len(objs)))]
        c = o.colour if rng.random() < 0.35 else None
        s = o.shape if rng.random() < 0.35 else None
        n = sum((c is None or x.colour == c) and (s is None or x.shape == s) for x in objs)
        noun = GENERIC[int(rng.random() < 0.25)]
        text = count_phrase(n, c, s, noun)
        facts.add(("count", c, s, n))
        if rng.random() < 0.3:
            text = f"{text} on {bg_phrase(scene.bg_kind, None)}"
            facts.add(("bgkind", scene.bg_kind))
    elif kind == 2:  # the background
        k = scene.bg_kind if rng.random() < 0.8 else None
        col = scene.bg_colour if (k is None or rng.random() < 0.4) else None
        text = bg_phrase(k, col)
        facts |= {f for f in (("bgkind", k) if k else None, ("bgcol", col) if col else None) if f}
    elif kind == 3:  # several objects, some attributes each
        m = int(rng.integers(1, len(objs) + 1))
        chosen = [objs[i] for i in rng.permutation(len(objs))[:m]]
        parts = []
        for o in chosen:
            t, f = _partial_object(o, rng)
            parts.append(t)
            facts.add(f)
        text = _join(parts)
        if rng.random() < 0.4:
            k = scene.bg_kind if rng.random() < 0.7 else None
            col = scene.bg_colour if (k is None or rng.random() < 0.5) else None
            text = f"{text} on {bg_phrase(k, col)}"
            facts |= {f for f in (("bgkind", k) if k else None, ("bgcol", col) if col else None) if f}
    else:  # count + background
        n = len(objs)
        text = f"{count_phrase(n, None, None)} on {bg_phrase(scene.bg_kind, scene.bg_colour)}"
        facts |= {("count", None, None, n), ("bgkind", scene.bg_kind), ("bgcol", scene.bg_colour)}
    return Caption((prefix + text).strip(), frozenset(facts))


def _other(rng: np.random.Generator, options: tuple[str, ...], current: str) -> str:
    rest = [x for x in options if x != current]
    return rest[int(rng.integers(len(rest)))]


def perturb_scene(scene: SceneFactors, rng: np.random.Generator) -> SceneFactors:
    """A copy of ``scene`` with one factor changed (colour, shape, binding swap, size, position,
    background kind or colour, one object more or fewer)."""
    s = copy.deepcopy(scene)
    objs = s.objects
    n = len(objs)
    choices = ["colour", "shape", "size", "position", "bgkind", "bgcol", "count"]
    if n >= 2:
        choices += ["swap_colour", "swap_shape", "swap_colour"]
    what = choices[int(rng.integers(len(choices)))]
    i = int(rng.integers(n))
    if what == "colour":
        objs[i].colour = _other(rng, COLOURS, objs[i].colour)
    elif what == "shape":
        objs[i].shape = _other(rng, SHAPES, objs[i].shape)
    elif what == "size":
        objs[i].size = _other(rng, SIZES, objs[i].size)
    elif what == "position":
        objs[i].position = _other(rng, POSITIONS, objs[i].position)
    elif what == "bgkind":
        s.bg_kind = _other(rng, BG_KINDS, s.bg_kind)
    elif what == "bgcol":
        s.bg_colour = _other(rng, BG_COLOURS, s.bg_colour)
    elif what == "count":
        if n > 1 and (n == 4 or rng.random() < 0.5):
            del objs[i]
        else:
            o = copy.deepcopy(objs[i])
            o.colour = COLOURS[int(rng.integers(len(COLOURS)))]
            o.shape = SHAPES[int(rng.integers(len(SHAPES)))]
            o.position = POSITIONS[int(rng.integers(len(POSITIONS)))]
            objs.append(o)
    else:
        j = int(rng.integers(n - 1))
        j = j + (j >= i)
        attr = "colour" if what == "swap_colour" else "shape"
        a, b = getattr(objs[i], attr), getattr(objs[j], attr)
        if a == b:  # nothing to swap: change one instead
            setattr(objs[i], attr, _other(rng, COLOURS if attr == "colour" else SHAPES, a))
        else:
            setattr(objs[i], attr, b)
            setattr(objs[j], attr, a)
    return s


def hard_negative(scene: SceneFactors, rng: np.random.Generator) -> Caption:
    """A full caption of ``scene`` with one factor changed (usually false of the scene)."""
    return full_caption(perturb_scene(scene, rng), rng, shuffle=rng.random() < 0.5)


# --------------------------------------------------------------------------- prompt sets
@dataclass(frozen=True)
class PromptSet:
    """Zero-shot classification prompts for one factor: ``texts[i]`` names ``classes[i]``."""

    factor: str
    template: str
    classes: tuple[str, ...]
    texts: tuple[str, ...]


def _ps(factor: str, template: str, classes: tuple[str, ...], texts: list[str]) -> PromptSet:
    return PromptSet(factor, template, tuple(classes), tuple(texts))


EVAL_POSITIONS = ("left", "right", "top", "bottom")
EVAL_COUNTS = ("1", "2", "3", "4")

PROMPT_SETS: dict[str, PromptSet] = {
    "colour": _ps("colour", "a photo of a {colour} shape", COLOURS,
                  ["a photo of " + object_phrase(c) for c in COLOURS]),
    "shape": _ps("shape", "a photo of a {shape}", SHAPES,
                 ["a photo of " + object_phrase(shape=s) for s in SHAPES]),
    "count": _ps("count", "a photo of {n} shape(s)", EVAL_COUNTS,
                 ["a photo of " + count_phrase(int(n), None, None) for n in EVAL_COUNTS]),
    "position": _ps("position", "a photo of a shape {on the left|on the right|at the top|at the bottom}",
                    EVAL_POSITIONS, ["a photo of " + object_phrase(position=p) for p in EVAL_POSITIONS]),
    "background": _ps("background", "a photo of a {kind} background", BG_KINDS,
                      ["a photo of " + bg_phrase(k, None) for k in BG_KINDS]),
    "size": _ps("size", "a photo of a {size} shape", SIZES,
                ["a photo of " + object_phrase(size=z) for z in SIZES]),
}


def prompt_set(factor: str) -> PromptSet:
    try:
        return PROMPT_SETS[factor]
    except KeyError:
        raise KeyError(f"no prompt set for {factor!r}; known: {sorted(PROMPT_SETS)}") from None


def describe(scene: SceneFactors) -> str:
    """The canonical full caption (scene order, no prefix)."""
    return full_caption(scene).text


def caption_batch(
    scenes: list[SceneFactors], rng: np.random.Generator, p_full: float = 0.5
) -> list[Caption]:
    return [sample_caption(s, rng, p_full) for s in scenes]
