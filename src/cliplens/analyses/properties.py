"""Which heads carry a property (colour, shape, location, background, …): chosen from TEXTSPAN texts or from
attribute labels, for retrieval by property and for removing a spurious cue.

Two ways to choose, both returning a :class:`HeadChoice` with a score for every candidate head:

* ``by="text"`` — from TEXTSPAN results alone (no labels). A *catalogue* names properties, each with a few
  descriptions ("a red object", "a photo taken on a beach", …). Every text TEXTSPAN chose for a head is given
  to the property with the description closest to it (cosine similarity of the text embeddings, the best
  description of each property); a head's score for a property is the share of its variance explained by the
  texts given to that property (the sum of their TEXTSPAN variance fractions). The heads with the highest
  scores are chosen. Built-in catalogues: the toy world's factors (for the toy CLIP, whose vocabulary has only
  its own words; descriptions are its zero-shot prompts) and a general one written for real CLIP models; a
  user may describe a property of their own.
* ``by="attribute"`` — from a data set's labels of the property (the toy world's factors, Waterbirds'
  ``place``): a head's score is the share of its output variance that the attribute explains (η², between-value
  over total variance; :func:`cliplens.analyses.factors.factor_shares`). No class labels and no accuracies are
  used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.analyses.factors import explained_by_factors
from cliplens.analyses.textspan import HeadSpan, TextSpanResult
from cliplens.datasets.toy import FACTORS, class_prompt, factor_values
from cliplens.errors import InvalidInputError
from cliplens.store.reader import Store

__all__ = ["GENERAL_PROPERTIES", "HeadChoice", "attribute_name", "catalogue_for", "choose_heads",
           "heads_by_attribute", "heads_by_text", "head_name", "parse_heads", "property_name", "random_head_sets",
           "toy_properties"]

#: descriptions of common visual properties, for real CLIP models (written for this project)
GENERAL_PROPERTIES: dict[str, tuple[str, ...]] = {
    "colour": ("a red object", "a blue object", "a green object", "a yellow object", "an orange object",
               "a purple object", "a pink object", "a black object", "a white object", "a brown object",
               "a grey object", "a colourful photo", "a black and white photo"),
    "shape": ("a round object", "a square object", "a triangular shape", "a star shape", "a heart shape",
              "a rectangular object", "an oval shape", "a cross shape", "a spiral shape", "a curved line"),
    "texture": ("a striped pattern", "a dotted pattern", "a checkered pattern", "a furry texture",
                "a rough surface", "a smooth surface", "a woven texture", "a wrinkled texture"),
    "material": ("made of wood", "made of metal", "made of glass", "made of plastic", "made of stone",
                 "made of paper", "made of fabric", "made of leather"),
    "location": ("an object on the left of the image", "an object on the right of the image",
                 "an object at the top of the image", "an object at the bottom of the image",
                 "an object in the centre of the image", "an object in the corner of the image",
                 "a close-up", "seen from far away"),
    "count": ("one object", "two objects", "three objects", "four objects", "many objects", "a pair of things",
              "a crowd", "a single thing"),
    "background": ("on a plain background", "in front of a forest", "on a beach", "on the water",
                   "in a field of grass", "in a city street", "indoors in a room", "in the snow", "in the desert",
                   "under a blue sky", "on a lake", "in the mountains"),
    "animal": ("a dog", "a cat", "a bird", "a horse", "a fish", "an insect", "a cow", "a bear", "a snake",
               "a wild animal"),
    "person": ("a man", "a woman", "a child", "a group of people", "a person smiling", "a person's face",
               "an old person", "a person walking"),
    "size": ("a tiny object", "a small object", "a large object", "a huge object"),
    "lighting": ("a photo at night", "a bright sunny photo", "a dark photo", "a photo in soft light",
                 "a photo with strong shadows", "a backlit photo"),
    "style": ("a painting", "a sketch", "a cartoon", "a photograph", "a 3D render", "a watercolour",
              "a pixel art image", "a blurry photo"),
    "text": ("the letter A", "a word written on a sign", "printed text", "handwriting", "a number",
             "a logo with letters"),
}

#: names users say -> the name of the property (or toy factor)
_ALIASES = {"color": "colour", "colours": "colour", "colors": "colour", "shapes": "shape", "position": "location",
            "place": "background", "scene": "background", "number": "count", "counting": "count",
            "textures": "texture", "people": "person", "animals": "animal"}
_TOY_ALIASES = {"color": "colour", "location": "position", "background": "bg_kind", "bg_color": "bg_colour",
                "background colour": "bg_colour", "number": "count", "n_objects": "count"}
#: attribute names a property may be labelled with in a data set
_ATTRIBUTE_ALIASES = {"background": ("bg_kind", "place"), "colour": ("color",), "location": ("position",),
                      "position": ("location",), "count": ("n_objects",), "bg_kind": ("background",),
                      "place": ("background",)}


def toy_properties() -> dict[str, tuple[str, ...]]:
    """The toy world's factors, each described by its zero-shot prompts ("a photo of a red shape", …)."""
    return {f: tuple(class_prompt(f, v) for v in factor_values(f)) for f in FACTORS}


def catalogue_for(store: Store) -> dict[str, tuple[str, ...]]:
    """The built-in catalogue that fits the store's model: the toy world's for the toy CLIP, else the general."""
    return toy_properties() if store.header["model"].get("family") == "toy" else dict(GENERAL_PROPERTIES)


def property_name(name: str, catalogue: Mapping[str, Any]) -> str:
    """``name`` as the catalogue spells it (aliases such as "color" or, for the toy world, "background")."""
    key = name.strip().lower()
    if key in catalogue:
        return key
    toy = "bg_kind" in catalogue
    alias = (_TOY_ALIASES if toy else _ALIASES).get(key)
    if alias in catalogue:
        return alias
    raise InvalidInputError(f"unknown property {name!r}: the catalogue has {', '.join(catalogue)}; describe a "
                            "property of your own with descriptions (--describe 'text; text; …')")


def attribute_name(store: Store, name: str) -> str | None:
    """The store's attribute that labels ``name`` (itself, or an alias such as ``bg_kind`` or ``place`` for
    "background"), or ``None``."""
    have = list(store.header.get("attribute_names") or [])
    key = name.strip().lower()
    for candidate in (name, key, *_ATTRIBUTE_ALIASES.get(key, ()), _TOY_ALIASES.get(key), _ALIASES.get(key)):
        if candidate and candidate in have:
            return candidate
    return None


def head_name(layer: int, head: int) -> str:
    return f"L{layer}.H{head}"


def parse_heads(text: str, store: Store) -> list[tuple[int, int]]:
    """``"L10.H3,L11.H0"`` -> ``[(10, 3), (11, 0)]`` (negative layers count from the end), checked against the
    store."""
    L, H = store.shape["layers"], store.shape["heads"]
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        up = item.upper()
        try:
            if not (up.startswith("L") and ".H" in up):
                raise ValueError
            a, b = up[1:].split(".H")
            layer, head = int(a), int(b)
        except ValueError:
            raise InvalidInputError(f"cannot read head {item!r}: write heads as L10.H3 (layer 10, head 3; counted "
                                    "from 0, negative layers from the end), separated by commas") from None
        if not (-L <= layer < L and 0 <= head < H):
            raise InvalidInputError(f"head {item} does not exist: the store's model has {L} layers (0..{L - 1}) and "
                                    f"{H} heads (0..{H - 1})")
        out.append((layer % L, head))
    if not out:
        raise InvalidInputError("no heads given: write them as L10.H3,L11.H0")
    return sorted(set(out))


@dataclass
class HeadChoice:
    """Heads chosen for a property, with every candidate head's score (higher: more of the property)."""

    property: str
    by: str  # "text", "attribute" or "hand"
    heads: list[tuple[int, int]]
    scores: dict[str, float] = field(default_factory=dict)  # "L4.H2" -> score, every candidate
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [head_name(*h) for h in self.heads]

    @property
    def candidates(self) -> list[tuple[int, int]]:
        out = []
        for name in self.scores:
            a, b = name[1:].split(".H")
            out.append((int(a), int(b)))
        return out

    def describe(self) -> str:
        how = {"text": "from the TEXTSPAN texts", "attribute": "from the attribute labels",
               "hand": "by hand"}.get(self.by, self.by)
        shown = ", ".join(f"{n} ({self.scores[n]:.2f})" if n in self.scores else n for n in self.names)
        return f"heads for {self.property!r} {how}: {shown}"

    def to_dict(self) -> dict[str, Any]:
        return {"property": self.property, "by": self.by, "heads": self.names, "scores": self.scores,
                **self.details}


def choose_heads(scores: Mapping[tuple[int, int], float], k: int) -> list[tuple[int, int]]:
    """The ``k`` heads with the highest positive scores (ties: earlier layer, lower head first)."""
    if k < 1:
        raise InvalidInputError(f"the number of heads to choose must be at least 1, got {k}")
    ranked = sorted(scores, key=lambda h: (-scores[h], h))
    return sorted(h for h in ranked[:k] if scores[h] > 0)


def heads_by_attribute(store: Store, attribute: str, *, k: int = 3,
                       candidates: Sequence[tuple[int, int]] | None = None) -> HeadChoice:
    """The ``k`` heads whose outputs the attribute explains most (η² over the store's images)."""
    attr = attribute_name(store, attribute)
    if attr is None:
        have = ", ".join(store.header.get("attribute_names") or []) or "none"
        raise InvalidInputError(f"the store's images have no attribute {attribute!r} (they have: {have}); choose "
                                "the heads from TEXTSPAN texts instead (by='text')")
    L, H = store.shape["layers"], store.shape["heads"]
    heads = list(candidates) if candidates else [(layer, h) for layer in range(L) for h in range(H)]
    shares = explained_by_factors(store, [attr], heads)
    scores = {(s.layer, s.head): s.shares[attr] for s in shares}
    chosen = choose_heads(scores, k)
    return HeadChoice(attribute, "attribute", chosen, {head_name(*h): v for h, v in scores.items()},
                      {"attribute": attr, "score": "share of the head's variance the attribute explains (eta^2)"})


def _spans(spans: TextSpanResult | Sequence[HeadSpan]) -> list[HeadSpan]:
    out = list(spans.heads if isinstance(spans, TextSpanResult) else spans)
    if not out:
        raise InvalidInputError("the TEXTSPAN results hold no heads")
    return out


def heads_by_text(spans: TextSpanResult | Sequence[HeadSpan], prop: str, encode: Callable[[list[str]], Tensor], *,
                  k: int = 3, catalogue: Mapping[str, Sequence[str]] | None = None,
                  descriptions: Sequence[str] | None = None) -> HeadChoice:
    """The ``k`` heads whose TEXTSPAN texts are most about ``prop`` (see the module docs).

    ``encode``: texts -> ``[n, E]`` embeddings (the store's model's text tower). ``catalogue``: property ->
    descriptions (default the general one); ``descriptions`` describe ``prop`` yourself (it is then added to
    the catalogue, or replaces its entry)."""
    cat = {p: tuple(d) for p, d in (catalogue or GENERAL_PROPERTIES).items()}
    if descriptions is not None:
        descs = tuple(d.strip() for d in descriptions if d.strip())
        if not descs:
            raise InvalidInputError(f"no descriptions given for {prop!r}")
        name = prop.strip()
        cat.pop(name, None)
        cat = {name: descs, **cat}  # first: the user's own property wins ties with the catalogue
    else:
        name = property_name(prop, cat)
    heads = _spans(spans)
    texts = sorted({t for h in heads for t in h.texts})
    names = list(cat)
    all_desc = [d for p in names for d in cat[p]]
    owner = torch.tensor([i for i, p in enumerate(names) for _ in cat[p]])
    with torch.no_grad():
        emb = torch.nn.functional.normalize(encode(texts + all_desc).double(), dim=-1)
    t_emb, d_emb = emb[: len(texts)], emb[len(texts):]
    sim = t_emb @ d_emb.T  # [texts, descriptions]
    best = torch.full((len(texts), len(names)), -2.0, dtype=sim.dtype)
    best = best.scatter_reduce(1, owner.expand(len(texts), -1), sim, reduce="amax")  # best description per property
    assigned = {t: names[int(i)] for t, i in zip(texts, best.argmax(1).tolist(), strict=True)}
    scores: dict[tuple[int, int], float] = {}
    for h in heads:
        scores[(h.layer, h.head)] = float(sum(f for t, f in zip(h.texts, h.fractions, strict=True)
                                              if assigned[t] == name))
    chosen = choose_heads(scores, k)
    return HeadChoice(name, "text", chosen, {head_name(*h): v for h, v in scores.items()},
                      {"score": "share of the head's variance explained by its TEXTSPAN texts closest to the "
                                "property's descriptions",
                       "texts": {head_name(layer, h): [t for t in s.texts if assigned[t] == name]
                                 for (layer, h), s in zip(scores, heads, strict=True) if (layer, h) in chosen},
                       "descriptions": list(cat[name])})


def random_head_sets(candidates: Sequence[tuple[int, int]], size: int, n: int, seed: int = 0
                     ) -> list[list[tuple[int, int]]]:
    """``n`` random sets of ``size`` distinct heads from ``candidates`` (reproducible from ``seed``)."""
    pool = sorted(set(candidates))
    if size > len(pool):
        raise InvalidInputError(f"cannot draw {size} heads from {len(pool)} candidates")
    rng = np.random.default_rng(seed)
    return [sorted(pool[i] for i in rng.choice(len(pool), size, replace=False)) for _ in range(n)]
