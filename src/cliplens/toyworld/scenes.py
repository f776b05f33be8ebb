"""Procedural scenes with exact ground truth: shapes, colours, sizes, positions, counts, backgrounds.

A scene is 1-4 objects drawn in order (later ones occlude earlier ones) on a background of some
kind (plain, stripes, dots, checks, gradient, noise) and colour. Everything about a scene lives in
a JSON-serialisable :class:`SceneFactors`; :func:`render_scene` turns factors into pixels and exact
masks (no anti-aliasing: every pixel belongs to exactly one object or to the background).

Determinism: scene ``index`` of ``seed`` is drawn from ``numpy.random.default_rng([seed, stream,
index])``, so it does not depend on which other scenes were drawn, or in what order.

Positions: the image is cut into a 3x3 grid of cells; an object's coarse position is its cell,
named ``top left``, ``top``, ``top right``, ``left``, ``centre``, ``right``, ``bottom left``,
``bottom``, ``bottom right``. Objects are placed at their cell's centre plus a jitter, and the
objects of a scene usually take distinct cells (so counts are visible); sometimes two share a cell
and overlap heavily.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SHAPES", "COLOURS", "COLOUR_RGB", "BG_COLOURS", "BG_RGB", "BG_KINDS", "SIZES", "POSITIONS",
    "ObjectFactors", "SceneFactors", "render_scene", "sample_scene", "scene_rng", "sample_scenes",
    "render_batch", "object_mask", "twin_scene", "TWIN_FACTORS", "DEFAULT_SNAP",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart", "diamond")
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 25),
    "green": (30, 175, 45),
    "blue": (35, 75, 235),
    "yellow": (245, 225, 30),
    "purple": (135, 35, 200),
    "orange": (250, 135, 10),
    "cyan": (30, 215, 225),
    "pink": (250, 125, 200),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
# background colours are deliberately not object colours (an object never vanishes into them)
BG_RGB: dict[str, tuple[int, int, int]] = {
    "white": (238, 238, 238),
    "gray": (128, 128, 128),
    "black": (22, 22, 22),
    "brown": (105, 68, 38),
}
BG_COLOURS: tuple[str, ...] = tuple(BG_RGB)
BG_KINDS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "gradient", "noisy")
SIZES: tuple[str, ...] = ("small", "large")
#: radius (half-extent) of an object in units of the image side, per size
SIZE_RADIUS: dict[str, float] = {"small": 0.12, "large": 0.19}
#: 3x3 cells, row-major; name of cell (row, col)
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)
MAX_OBJECTS = 4
#: object centres lie on multiples of 1/8 of the image side by default: the patch corners of the
#: toy model (64 px, patch 8). A ViT learns shapes far faster when an object's silhouette falls on
#: the patch grid in a few fixed ways rather than at arbitrary sub-patch offsets.
DEFAULT_SNAP: float | None = 1 / 8
STREAMS = {"train": 0, "eval": 1, "spurious": 2, "test": 3}


@dataclass
class ObjectFactors:
    shape: str
    colour: str
    size: str
    x: float  # centre, fraction of image width (0 = left)
    y: float  # centre, fraction of image height (0 = top)
    position: str  # coarse 3x3 cell name
    rotation: float = 0.0  # radians; small jitter only (shapes stay recognisable)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOUR_RGB[self.colour]


@dataclass
class SceneFactors:
    objects: list[ObjectFactors]
    bg_kind: str
    bg_colour: str
    image_size: int = 64
    bg_params: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    index: int | None = None

    @property
    def count(self) -> int:
        return len(self.objects)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneFactors:
        d = dict(d)
        d["objects"] = [ObjectFactors(**o) for o in d["objects"]]
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> SceneFactors:
        return cls.from_dict(json.loads(s))


# --------------------------------------------------------------------------- geometry
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, :].repeat(size, 0), c[:, None].repeat(size, 1)  # xx, yy


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _get_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRIDS:
        _GRIDS[size] = _grid(size)
    return _GRIDS[size]


def _regular_polygon(n: int, r: float, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _star_polygon(r: float) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(10) / 5
    rr = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    return np.stack([rr * np.cos(a), rr * np.sin(a)], 1)


def _in_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over pixels."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if y1 == y2:
            continue
        cond = (py >= min(y1, y2)) & (py < max(y1, y2))
        xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (px < xint)
    return inside


def object_mask(obj: ObjectFactors, size: int) -> np.ndarray:
    """The full (unoccluded) bool mask ``[size, size]`` of one object."""
    xx, yy = _get_grid(size)
    r = SIZE_RADIUS[obj.size]
    # only evaluate inside the bounding box (speed)
    x0 = max(int((obj.x - 1.5 * r) * size), 0)
    x1 = min(int(math.ceil((obj.x + 1.5 * r) * size)), size)
    y0 = max(int((obj.y - 1.5 * r) * size), 0)
    y1 = min(int(math.ceil((obj.y + 1.5 * r) * size)), size)
    out = np.zeros((size, size), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return out
    dx = xx[y0:y1, x0:x1] - obj.x
    dy = yy[y0:y1, x0:x1] - obj.y
    if obj.rotation:
        c, s = math.cos(obj.rotation), math.sin(obj.rotation)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    s = obj.shape
    if s == "circle":
        m = dx * dx + dy * dy <= r * r
    elif s == "square":
        h = 0.86 * r
        m = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif s == "diamond":
        m = np.abs(dx) / (0.95 * r) + np.abs(dy) / (1.2 * r) <= 1.0
    elif s == "triangle":
        poly = _regular_polygon(3, 1.15 * r, -np.pi / 2) + np.array([0.0, 0.18 * r])
        m = _in_polygon(dx, dy, poly)
    elif s == "star":
        m = _in_polygon(dx, dy, _star_polygon(1.2 * r))
    elif s == "cross":
        w = 0.34 * r
        m = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    elif s == "heart":
        u = dx / (0.95 * r)
        v = -(dy + 0.12 * r) / (0.95 * r)
        q = u * u + v * v - 1.0
        m = q * q * q - u * u * v * v * v <= 0.0
    else:
        raise ValueError(f"unknown shape {s!r}; expected one of {SHAPES}")
    out[y0:y1, x0:x1] = m
    return out


def _second_tone(rgb: np.ndarray) -> np.ndarray:
    lum = float(rgb.mean())
    if lum < 90:
        return rgb * 0.5 + 255 * 0.3
    return rgb * 0.6


def render_background(scene: SceneFactors) -> np.ndarray:
    """The background alone, float32 ``[S, S, 3]`` in 0..255 (already rounded)."""
    size = scene.image_size
    base = np.array(BG_RGB[scene.bg_colour], dtype=np.float32)
    tone = _second_tone(base).astype(np.float32)
    xx, yy = _get_grid(size)
    p = scene.bg_params
    kind = scene.bg_kind
    if kind == "plain":
        t = np.zeros((size, size), np.float32)
    elif kind == "striped":
        ang = p.get("angle", 0.0)
        period = p.get("period", 0.125)
        u = (xx * math.cos(ang) + yy * math.sin(ang)) / period + p.get("phase", 0.0)
        t = ((u % 1.0) < 0.5).astype(np.float32)
    elif kind == "dotted":
        period = p.get("period", 0.125)
        u = (xx / period + p.get("phase", 0.0)) % 1.0 - 0.5
        v = (yy / period + p.get("phase2", 0.0)) % 1.0 - 0.5
        t = (u * u + v * v <= 0.3**2).astype(np.float32)
    elif kind == "checkered":
        period = p.get("period", 0.125)
        u = np.floor(xx / period + p.get("phase", 0.0))
        v = np.floor(yy / period + p.get("phase2", 0.0))
        t = ((u + v) % 2).astype(np.float32)
    elif kind == "gradient":
        ang = p.get("angle", 0.0)
        u = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang)
        t = np.clip(u / 0.71 + 0.5, 0, 1).astype(np.float32) * 1.6
        t = np.clip(t, 0, 1)
    elif kind == "noisy":
        rng = np.random.default_rng(int(p.get("noise_seed", 0)))
        t = rng.random((size, size), dtype=np.float32)
    else:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BG_KINDS}")
    img = base[None, None, :] * (1 - t[..., None]) + tone[None, None, :] * t[..., None]
    return np.round(img)


def render_scene(scene: SceneFactors) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render -> ``(image uint8 [S, S, 3], masks)``.

    ``masks["visible"]``: bool ``[N, S, S]``, the pixels where object ``i`` is visible;
    ``masks["full"]``: bool ``[N, S, S]``, each object's whole silhouette (ignoring occlusion);
    ``masks["background"]``: bool ``[S, S]``, pixels of no object. Visible masks and the background
    partition the image exactly; visible pixels have exactly the object's colour.
    """
    size = scene.image_size
    img = render_background(scene)
    n = len(scene.objects)
    full = np.zeros((n, size, size), dtype=bool)
    owner = np.full((size, size), -1, dtype=np.int64)
    for i, obj in enumerate(scene.objects):
        m = object_mask(obj, size)
        full[i] = m
        owner[m] = i
        img[m] = COLOUR_RGB[obj.colour]
    visible = owner[None] == np.arange(n)[:, None, None]
    return img.astype(np.uint8), {"visible": visible, "full": full, "background": owner < 0}


# --------------------------------------------------------------------------- sampling
def scene_rng(seed: int, index: int, stream: str | int = "train") -> np.random.Generator:
    """The generator for scene ``index`` of ``seed`` (independent of every other scene)."""
    s = STREAMS[stream] if isinstance(stream, str) else int(stream)
    return np.random.default_rng([int(seed), s, int(index)])


def _pick(rng: np.random.Generator, options: Any, given: Any = None) -> Any:
    if given is not None:
        if isinstance(given, (list, tuple)):
            return given[int(rng.integers(len(given)))]
        return given
    return options[int(rng.integers(len(options)))]


def _bg_params(rng: np.random.Generator, kind: str) -> dict[str, float]:
    params: dict[str, float] = {}
    if kind in ("striped", "gradient"):
        params["angle"] = float(_pick(rng, (0.0, math.pi / 2, math.pi / 4, -math.pi / 4)))
    if kind in ("striped", "dotted", "checkered"):
        params["period"] = float(rng.choice([0.125, 0.156, 0.1875]))
        params["phase"] = float(rng.random())
        params["phase2"] = float(rng.random())
    if kind == "gradient" and rng.random() < 0.5:
        params["angle"] += math.pi
    if kind == "noisy":
        params["noise_seed"] = int(rng.integers(2**31))
    return params


def _place(rng: np.random.Generator, pos: str, size: str, jitter: float = 0.55,
           snap: float | None = DEFAULT_SNAP) -> tuple[float, float]:
    """A centre inside cell ``pos`` (cell centre + jitter), keeping the object mostly inside.

    With ``snap`` (a fraction of the image side, e.g. 1/8 = one patch of a 64 px / patch 8 model),
    the centre is drawn from the multiples of ``snap`` inside the cell instead.
    """
    row, col = divmod(POSITIONS.index(pos), 3)
    r = SIZE_RADIUS[size]
    if snap:
        out = []
        for c in (col, row):
            k = np.arange(1, int(round(1 / snap))) * snap
            ok = k[(k > c / 3) & (k < (c + 1) / 3) & (k >= r * 0.9) & (k <= 1 - r * 0.9)]
            if len(ok) == 0:
                ok = k[(k > c / 3) & (k < (c + 1) / 3)]
            out.append(float(ok[int(rng.integers(len(ok)))]))
        return out[0], out[1]
    half = 1 / 6
    x = (col + 0.5) / 3 + (rng.random() * 2 - 1) * jitter * half
    y = (row + 0.5) / 3 + (rng.random() * 2 - 1) * jitter * half
    x = float(np.clip(x, max(r * 0.9, col / 3 + 0.01), min(1 - r * 0.9, (col + 1) / 3 - 0.01)))
    y = float(np.clip(y, max(r * 0.9, row / 3 + 0.01), min(1 - r * 0.9, (row + 1) / 3 - 0.01)))
    return x, y


def sample_scene(
    rng: np.random.Generator | int,
    index: int | None = None,
    *,
    stream: str | int = "train",
    image_size: int = 64,
    count: int | tuple[int, ...] | None = None,
    shapes: tuple[str, ...] | list[str] | str | None = None,
    colours: tuple[str, ...] | list[str] | str | None = None,
    sizes: tuple[str, ...] | list[str] | str | None = None,
    positions: tuple[str, ...] | list[str] | str | None = None,
    bg_kind: str | tuple[str, ...] | None = None,
    bg_colour: str | tuple[str, ...] | None = None,
    count_weights: tuple[float, ...] | None = None,
    p_shared_cell: float = 0.1,
    jitter: float = 0.55,
    rotation_jitter: float = 0.12,
    snap: float | None = DEFAULT_SNAP,
) -> SceneFactors:
    """Draw one scene's factors, optionally constrained.

    Args:
        rng: a numpy Generator, or an int seed (then ``index`` is required and the scene's own
            generator is ``scene_rng(seed, index, stream)``).
        count: number of objects (or a tuple to choose from); default 1-4.
        shapes: allowed shapes for every object (a str = fixed).
        colours: allowed colours for every object (a str = fixed).
        sizes: allowed sizes for every object (a str = fixed).
        positions: allowed positions for every object (a str = fixed).
        bg_kind: background kind (fixed or a tuple to choose from).
        bg_colour: background colour (fixed or a tuple to choose from).
        count_weights: probabilities of 1..4 objects when ``count`` is None.
        p_shared_cell: chance that an object takes an already used cell (heavy overlap).
        jitter: how far (fraction of half a cell) an object's centre may move from its cell centre.
        snap: put object centres on multiples of this fraction of the image side (e.g. 1/8: the
            patch corners of a 64 px / patch 8 model); ``None``: continuous positions.
    """
    seed = None
    if not isinstance(rng, np.random.Generator):
        if index is None:
            raise ValueError("sample_scene(seed, index): index is required with an int seed")
        seed = int(rng)
        rng = scene_rng(seed, index, stream)

    def _as_tuple(v: Any, default: tuple[str, ...]) -> tuple[str, ...]:
        if v is None:
            return default
        return (v,) if isinstance(v, str) else tuple(v)

    shape_opts = _as_tuple(shapes, SHAPES)
    colour_opts = _as_tuple(colours, COLOURS)
    size_opts = _as_tuple(sizes, SIZES)
    pos_opts = _as_tuple(positions, POSITIONS)
    if count is None:
        w = np.asarray(count_weights or (0.25, 0.25, 0.25, 0.25), dtype=float)
        n = int(rng.choice(np.arange(1, MAX_OBJECTS + 1), p=w / w.sum()))
    elif isinstance(count, (tuple, list)):
        n = int(_pick(rng, count))
    else:
        n = int(count)
    kind = _pick(rng, BG_KINDS, bg_kind)
    bgc = _pick(rng, BG_COLOURS, bg_colour)
    params = _bg_params(rng, kind)

    used: list[str] = []
    objects: list[ObjectFactors] = []
    for _ in range(n):
        free = [p for p in pos_opts if p not in used]
        if not free or (used and rng.random() < p_shared_cell):
            pos = _pick(rng, pos_opts)
        else:
            pos = _pick(rng, free)
        used.append(pos)
        size = _pick(rng, size_opts)
        x, y = _place(rng, pos, size, jitter, snap)
        objects.append(
            ObjectFactors(
                shape=_pick(rng, shape_opts),
                colour=_pick(rng, colour_opts),
                size=size,
                x=x,
                y=y,
                position=pos,
                rotation=float((rng.random() * 2 - 1) * rotation_jitter),
            )
        )
    return SceneFactors(objects, kind, bgc, image_size, params, seed=seed, index=index)


def sample_scenes(seed: int, indices: Any, stream: str | int = "train", **constraints: Any) -> list[SceneFactors]:
    """``[sample_scene(seed, i, stream=stream, **constraints) for i in indices]``."""
    return [sample_scene(seed, int(i), stream=stream, **constraints) for i in indices]


def render_batch(scenes: list[SceneFactors]) -> np.ndarray:
    """Render many scenes -> uint8 ``[B, S, S, 3]`` (masks dropped)."""
    return np.stack([render_scene(s)[0] for s in scenes])


#: how often :func:`twin_scene` changes each factor
TWIN_FACTORS: dict[str, float] = {
    "shape": 0.35, "bg_kind": 0.2, "position": 0.12, "size": 0.12, "count": 0.11, "colour": 0.05,
    "bg_colour": 0.05,
}


def twin_scene(scene: SceneFactors, rng: np.random.Generator, factor: str | None = None,
               snap: float | None = DEFAULT_SNAP) -> SceneFactors:
    """A copy of ``scene`` that differs in exactly one factor (rendering-consistent).

    ``factor``: shape, colour, size, position (one object moves to a free cell), count (one object
    removed or added), bg_kind (new kind, same colour), bg_colour; default drawn from
    :data:`TWIN_FACTORS`.
    """
    import copy

    if factor is None:
        names = list(TWIN_FACTORS)
        w = np.array([TWIN_FACTORS[k] for k in names])
        factor = names[int(rng.choice(len(names), p=w / w.sum()))]
    t = copy.deepcopy(scene)
    t.seed, t.index = None, None
    objs = t.objects
    i = int(rng.integers(len(objs)))

    def other(options: tuple[str, ...], cur: str) -> str:
        rest = [o for o in options if o != cur]
        return rest[int(rng.integers(len(rest)))]

    used = [o.position for o in objs]
    free = [p for p in POSITIONS if p not in used]
    if factor == "shape":
        objs[i].shape = other(SHAPES, objs[i].shape)
    elif factor == "colour":
        objs[i].colour = other(COLOURS, objs[i].colour)
    elif factor == "size":
        o = objs[i]
        o.size = other(SIZES, o.size)
        r = SIZE_RADIUS[o.size]
        if not (r * 0.9 <= o.x <= 1 - r * 0.9 and r * 0.9 <= o.y <= 1 - r * 0.9):
            o.x, o.y = _place(rng, o.position, o.size, snap=snap)
    elif factor == "position":
        o = objs[i]
        o.position = free[int(rng.integers(len(free)))] if free else other(POSITIONS, o.position)
        o.x, o.y = _place(rng, o.position, o.size, snap=snap)
    elif factor == "count":
        if len(objs) > 1 and (len(objs) == MAX_OBJECTS or rng.random() < 0.5):
            del objs[i]
        else:
            pos = free[int(rng.integers(len(free)))]
            size = SIZES[int(rng.integers(len(SIZES)))]
            x, y = _place(rng, pos, size, snap=snap)
            objs.append(ObjectFactors(SHAPES[int(rng.integers(len(SHAPES)))],
                                      COLOURS[int(rng.integers(len(COLOURS)))], size, x, y, pos,
                                      float((rng.random() * 2 - 1) * 0.12)))
    elif factor == "bg_kind":
        t.bg_kind = other(BG_KINDS, t.bg_kind)
        t.bg_params = _bg_params(rng, t.bg_kind)
    elif factor == "bg_colour":
        t.bg_colour = other(BG_COLOURS, t.bg_colour)
    else:
        raise ValueError(f"unknown twin factor {factor!r}; expected one of {tuple(TWIN_FACTORS)}")
    return t
