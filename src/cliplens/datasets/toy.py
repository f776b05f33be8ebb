"""The toy world as a data set: ``n`` procedural scenes of one stream and seed, rendered on access.

The label is one factor: of the first object (``"shape"``, ``"colour"``, ``"size"``, ``"position"``;
single-object scenes by default) or of the scene (``"count"``, ``"bg_kind"``, ``"bg_colour"``; 1-4
objects by default). The class names are that factor's values, in the toy world's own order (the order
of its zero-shot prompt sets) or in the order of a constraint (``shapes=("square", "circle")``). Every
sample's attributes are all the factors, as strings. Scene ``i`` is ``sample_scene(seed, i,
stream=stream, ...)``: the same for every run and whatever else is drawn.

As a spec for :func:`~cliplens.datasets.open_dataset`: ``"toy"``, ``"toy:colour"`` (the label) or
``"toy:label=count,n=500,seed=3,stream=eval"``; ``|`` separates several values
(``"toy:shapes=circle|square,bg_kind=striped|dotted"``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from cliplens.datasets.base import AttributeValue, Dataset
from cliplens.datasets.options import convert_options, parse_spec
from cliplens.errors import InvalidInputError
from cliplens.toyworld.captions import bg_phrase, count_phrase, object_phrase
from cliplens.toyworld.scenes import (
    BG_COLOURS,
    BG_KINDS,
    COLOURS,
    MAX_OBJECTS,
    POSITIONS,
    SHAPES,
    SIZES,
    STREAMS,
    render_scene,
    sample_scene,
)

__all__ = ["FACTORS", "MAX_IMAGE_SIZE", "OBJECT_FACTORS", "SCENE_FACTORS", "ToyDataset", "check_scene_settings",
           "class_prompt", "factor_values", "load_toy", "parse_toy_spec"]

OBJECT_FACTORS = ("shape", "colour", "size", "position")
SCENE_FACTORS = ("count", "bg_kind", "bg_colour")
FACTORS = OBJECT_FACTORS + SCENE_FACTORS
_ALIASES = {"color": "colour", "background": "bg_kind", "bg_color": "bg_colour", "n_objects": "count"}
#: the factor -> the keyword of ``sample_scene`` that constrains it
_CONSTRAINT = {"shape": "shapes", "colour": "colours", "size": "sizes", "position": "positions",
               "bg_kind": "bg_kind", "bg_colour": "bg_colour", "count": "count"}


def factor_values(factor: str) -> tuple[str, ...]:
    """The values of one toy-world factor, in the toy world's own order."""
    return {
        "shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS, "bg_kind": BG_KINDS,
        "bg_colour": BG_COLOURS, "count": tuple(str(k) for k in range(1, MAX_OBJECTS + 1)),
    }[factor]


def class_prompt(factor: str, value: str) -> str:
    """The zero-shot prompt for one value of a factor, in the toy world's words (as ``toy eval``'s prompt
    sets: "a photo of a red shape", "a photo of three shapes", "a photo of a striped background")."""
    phrase = {
        "shape": lambda: object_phrase(shape=value), "colour": lambda: object_phrase(colour=value),
        "size": lambda: object_phrase(size=value), "position": lambda: object_phrase(position=value),
        "count": lambda: count_phrase(int(value), None, None), "bg_kind": lambda: bg_phrase(value, None),
        "bg_colour": lambda: bg_phrase(None, value),
    }[factor]()
    return "a photo of " + phrase


#: the largest scene the toy data sets render (the toy model sees 64 px; larger only costs memory)
MAX_IMAGE_SIZE = 1024


def check_scene_settings(what: str, *, n: Any, seed: Any, stream: Any, image_size: Any) -> None:
    """Refuse, in one paragraph each, what :func:`~cliplens.toyworld.scenes.sample_scene` cannot draw: ``n``
    scenes (a positive integer), ``seed`` (an integer >= 0), ``stream`` (a name or an integer >= 0) and
    ``image_size`` (8 to :data:`MAX_IMAGE_SIZE` pixels)."""
    def whole(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not whole(n) or n < 1:
        raise InvalidInputError(f"{what}: n={n!r}; give a positive number of scenes (e.g. n=100)")
    if not whole(seed) or seed < 0:
        raise InvalidInputError(f"{what}: seed={seed!r}; a seed is a whole number from 0 up (e.g. seed=3): each "
                                "seed draws its own scenes")
    if isinstance(stream, str):
        if stream not in STREAMS:
            raise InvalidInputError(f"{what}: unknown stream {stream!r}; streams are {list(STREAMS)} (or an integer "
                                    "from 0 up)")
    elif not whole(stream) or stream < 0:
        raise InvalidInputError(f"{what}: stream={stream!r}; give a stream name ({', '.join(STREAMS)}) or an "
                                "integer from 0 up")
    if not whole(image_size) or not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise InvalidInputError(f"{what}: image_size={image_size!r}; give a size in pixels from 8 to "
                                f"{MAX_IMAGE_SIZE} (the toy model sees 64)")


def _as_tuple(v: Any) -> tuple[Any, ...]:
    return (v,) if isinstance(v, (str, int)) else tuple(v)


class ToyDataset(Dataset):
    """``n`` toy-world scenes (see the module's documentation)."""

    def __init__(
        self,
        n: int = 1000,
        *,
        seed: int = 0,
        stream: str | int = "test",
        label: str = "shape",
        count: int | Sequence[int] | None = None,
        image_size: int = 64,
        shapes: str | Sequence[str] | None = None,
        colours: str | Sequence[str] | None = None,
        sizes: str | Sequence[str] | None = None,
        positions: str | Sequence[str] | None = None,
        bg_kind: str | Sequence[str] | None = None,
        bg_colour: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        factor = _ALIASES.get(label, label)
        if factor not in FACTORS:
            raise InvalidInputError(f"toy data set: unknown label factor {label!r}; choose one of {list(FACTORS)}")
        check_scene_settings("toy data set", n=n, seed=seed, stream=stream, image_size=image_size)
        constraints: dict[str, Any] = {}
        given = {"shape": shapes, "colour": colours, "size": sizes, "position": positions, "bg_kind": bg_kind,
                 "bg_colour": bg_colour}
        for f, v in given.items():
            if v is None:
                continue
            vals = tuple(str(x) for x in _as_tuple(v))
            bad = [x for x in vals if x not in factor_values(f)]
            if bad or not vals:
                raise InvalidInputError(f"toy data set: unknown {f} value(s) {bad} in {_CONSTRAINT[f]}=; the values "
                                        f"are {list(factor_values(f))}")
            constraints[_CONSTRAINT[f]] = vals[0] if len(vals) == 1 else vals
        if count is None and factor in OBJECT_FACTORS:
            count = 1
        if count is not None:
            counts = _as_tuple(count)
            if not counts or any(isinstance(c, bool) or not isinstance(c, (int, np.integer))
                                 or not 1 <= c <= MAX_OBJECTS for c in counts):
                raise InvalidInputError(f"toy data set: count={count!r}; scenes hold 1 to {MAX_OBJECTS} objects")
            count = int(counts[0]) if len(counts) == 1 else tuple(int(c) for c in counts)
        self.n = int(n)
        self.seed = int(seed)
        self.stream = stream
        self.factor = factor
        self.count = count
        self.image_size = int(image_size)
        self.constraints = constraints
        self.name = name or f"toy-{factor}"
        self.layout = "toy"
        if factor == "count":
            self.class_names = ([str(c) for c in sorted(_as_tuple(count))] if count is not None
                                else list(factor_values("count")))
        elif _CONSTRAINT[factor] in constraints:
            self.class_names = list(_as_tuple(constraints[_CONSTRAINT[factor]]))
        else:
            self.class_names = list(factor_values(factor))
        self._class_index = {c: i for i, c in enumerate(self.class_names)}
        self.class_prompts = [class_prompt(factor, c) for c in self.class_names]
        self.attribute_names = list(FACTORS)
        self.attribute_values = {}
        self._cache: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Any:
        """The :class:`~cliplens.toyworld.scenes.SceneFactors` of scene ``i``."""
        j = self._index(i)
        hit = self._cache.get(j)
        if hit is not None:
            self._cache.move_to_end(j)
            return hit
        sc = sample_scene(self.seed, j, stream=self.stream, image_size=self.image_size, count=self.count,
                          **self.constraints)
        self._cache[j] = sc
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)
        return sc

    def render(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scene ``i``'s image (uint8 ``[S, S, 3]``) and exact masks (see :func:`~cliplens.toyworld.scenes.render_scene`)."""
        return render_scene(self.scene(i))

    @staticmethod
    def factors(scene: Any) -> dict[str, AttributeValue]:
        first = scene.objects[0]
        return {"shape": first.shape, "colour": first.colour, "size": first.size, "position": first.position,
                "count": str(scene.count), "bg_kind": scene.bg_kind, "bg_colour": scene.bg_colour}

    def _meta(self, i: int) -> tuple[int, str, dict[str, AttributeValue]]:
        attrs = self.factors(self.scene(i))
        return self._class_index[str(attrs[self.factor])], f"{self.stream}/{self.seed}/{i}", attrs

    def _image(self, i: int) -> np.ndarray:
        return self.render(i)[0]

    def _describe(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "stream": self.stream, "label": self.factor,
                "count": list(self.count) if isinstance(self.count, tuple) else self.count,
                "image_size": self.image_size,
                "constraints": {k: list(v) if isinstance(v, tuple) else v for k, v in self.constraints.items()}}


def parse_toy_spec(spec: str) -> dict[str, Any]:
    """``"toy:label=count,n=500"`` -> ``{"label": "count", "n": 500}``; ``"toy:colour"`` -> ``{"label": "colour"}``."""
    head, opts = parse_spec(spec, bare="label")
    if head.lower() != "toy":
        raise InvalidInputError(f"{spec!r} is not a toy-world spec ('toy' or 'toy:key=value,...')")
    return convert_options(ToyDataset, opts, "the toy data set")


def load_toy(spec: str | None = None, **options: Any) -> ToyDataset:
    """A :class:`ToyDataset` from a spec string and/or keyword options (a key may not be in both)."""
    opts = parse_toy_spec(spec) if spec else {}
    both = sorted(set(opts) & set(options))
    if both:
        raise InvalidInputError(f"toy data set: {both} given both in the spec {spec!r} and as options; give each once")
    opts.update(convert_options(ToyDataset, options, "the toy data set"))
    return ToyDataset(**opts)
