"""Text → point prompts for SAM (CLIP Surgery's ``similarity_map_to_points``), and SAM's masks from them.

From one text's raw patch scores on the token grid ``[gh, gw]`` (the Surgery map before normalisation)
and the original image's size ``(H, W)`` (:func:`points_from_map`), exactly as the original:

1. downsample the map ×2, bilinear (``align_corners=False``), to ``(h, w) = (gh // 2, gw // 2)``;
2. min–max the ``h · w`` cells (row-major) and rank them by ascending score (a stable sort: ties keep
   grid order);
3. ``k = min(#cells with score ≥ threshold, (h · w) // 2)``;
4. positives (label 1) = the top ``k`` cells, listed in ascending score order as the original does;
   negatives (label 0) = the bottom ``k`` cells;
5. a cell ``(row, col)`` becomes the point ``[x, y]`` at its centre in image pixels:
   ``x = int(min((col + 0.5) · W / w, W − 1))``, ``y = int(min((row + 0.5) · H / h, H − 1))``.

After min–max the best cell scores exactly 1, so some cell always passes a threshold in [0, 1]; there
are no points only when the map is constant (it singles out nothing) or has fewer than two cells.

:func:`text_points` makes the map with CLIP Surgery (default: feature surgery against the empty prompt,
``t − t_empty``, which is what CLIP Surgery does for a single text and what its SAM demo uses) over the
*whole* image (``fit="whole"`` or ``"squash"``), so that the grid covers the image and the cell centres
land on it. ``fit="crop"`` is refused: the map would cover only the centre crop, and points placed by
the formula above over the whole image would be off. For the same reason there is no sliding window: an
image whose input would exceed the tokens one forward takes (a 20000x40 panorama) is refused before
any work, with the largest ``size`` that fits and ``fit="squash"`` as the ways out.

:func:`points_from_maps` takes the points from maps you already have (any method's, or your own grids through
:meth:`cliplens.maps.Maps.from_grids`), one target of one image, under the same rule.

:func:`sam_masks` prompts Segment Anything (``pip install segment-anything``; a local checkpoint, or a
SAM model object) with the points and returns its masks, best first; :func:`text_masks` does both steps
for a text.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError
from cliplens.images.io import DEFAULT_MAX_PIXELS, load_image, to_rgb
from cliplens.maps.base import ImageMaps, MapMethod, Maps, get_map
from cliplens.maps.inputs import MAX_TOKENS, fitted_shape, image_size, token_count
from cliplens.maps.surgery import Surgery
from cliplens.maps.targets import Targets, model_targets
from cliplens.models.sam import SAM_TYPES, check_sam_checkpoint, load_sam
from cliplens.models.sam import segment_anything as _segment_anything

__all__ = ["FITS", "SAM_TYPES", "Points", "check_sam_checkpoint", "load_sam", "points_from_map", "points_from_maps",
           "sam_masks", "text_masks", "text_points"]

#: the fits whose map covers the whole image
FITS: tuple[str, ...] = ("whole", "squash")


@dataclass
class Points:
    """Point prompts for SAM: ``points[i] = [x, y]`` in original image pixels, ``labels[i]`` 1 (positive) or
    0 (negative); positives first (in ascending score order), then negatives."""

    points: list[list[int]]
    labels: list[int]
    map_size: tuple[int, int]  # (h, w): the downsampled map the points come from
    grid_size: tuple[int, int]  # (gh, gw): the token grid of the raw map
    image_size: tuple[int, int]  # (H, W)
    threshold: float
    #: why there are no points ("" when there are some)
    message: str = ""
    text: str = ""
    source: str = ""
    #: the raw map ``[gh, gw]`` (float32, CPU) the points were computed from
    raw: Tensor | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def positives(self) -> list[list[int]]:
        return [p for p, lab in zip(self.points, self.labels, strict=True) if lab == 1]

    @property
    def negatives(self) -> list[list[int]]:
        return [p for p, lab in zip(self.points, self.labels, strict=True) if lab == 0]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "image": self.source, "image_size": list(self.image_size),
                "grid_size": list(self.grid_size), "map_size": list(self.map_size), "threshold": self.threshold,
                "points": self.points, "labels": self.labels, "positives": self.positives,
                "negatives": self.negatives, "message": self.message, "settings": self.settings}


def _check_threshold(threshold: float) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InvalidInputError(f"threshold must be a number between 0 and 1, got {threshold!r}") from None
    if not 0.0 <= t <= 1.0:
        raise InvalidInputError(f"threshold is on the min–max normalised map, between 0 and 1 (the best cell always "
                                f"scores 1, so a threshold above 1 selects nothing); got {threshold}")
    return t


def points_from_map(grid: Tensor | np.ndarray, image_size: tuple[int, int], threshold: float = 0.8) -> Points:
    """Points for SAM from one text's raw patch scores ``[gh, gw]`` and the image's ``(H, W)`` (see the module
    docs for the rule). Computed in float64."""
    threshold = _check_threshold(threshold)
    g = torch.as_tensor(np.asarray(grid.detach().cpu() if isinstance(grid, Tensor) else grid)).to(torch.float64)
    if g.ndim != 2:
        raise InvalidInputError(f"the map must be one text's grid [gh, gw], got shape {tuple(g.shape)}")
    H, W = (int(s) for s in image_size)
    if H < 1 or W < 1:
        raise InvalidInputError(f"image size must be positive (H, W), got {tuple(image_size)}")
    gh, gw = g.shape
    h, w = gh // 2, gw // 2
    if h < 1 or w < 1:
        raise InvalidInputError(f"a {gh}x{gw} map is too small to downsample ×2 for points: it needs at least 2x2 "
                                "cells (use a larger input size)")
    if not bool(torch.isfinite(g).all()):
        raise InvalidInputError("the map has NaN or infinite values (was it made with fit='crop'?)")
    small = F.interpolate(g[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].reshape(-1)
    base = dict(map_size=(h, w), grid_size=(gh, gw), image_size=(H, W), threshold=threshold)
    n = h * w
    if n < 2:
        return Points([], [], message=f"the {h}x{w} map has one cell: no room for a positive and a negative point "
                                      "(use a larger input size)", **base)
    lo, hi = small.min(), small.max()
    if not bool(hi > lo):
        return Points([], [], message="the map is constant: it singles out no region, so there are no points", **base)
    values = (small - lo) / (hi - lo)
    rank = torch.sort(values, stable=True).indices.tolist()  # ascending
    k = min(int((values >= threshold).sum()), n // 2)
    if k == 0:  # cannot happen for a threshold in [0, 1] (the best cell scores 1), kept for safety
        return Points([], [], message=f"no cell of the map scores {threshold} or more", **base)
    positives, negatives = rank[n - k:], rank[:k]

    def point(index: int) -> list[int]:
        row, col = divmod(index, w)
        x = min((col + 0.5) * W / w, W - 1)
        y = min((row + 0.5) * H / h, H - 1)
        return [math.trunc(x), math.trunc(y)]

    return Points([point(i) for i in positives] + [point(i) for i in negatives], [1] * k + [0] * k, **base)


def points_from_maps(maps: Maps | ImageMaps, target: int | str = 0, *, image: int = 0,
                     threshold: float = 0.8) -> Points:
    """Points for SAM from maps you have: the raw grid of ``target`` (an index or a label) of ``image`` (for a
    :class:`~cliplens.maps.Maps`) under :func:`points_from_map`'s rule, placed on that image's pixels. The grid
    must cover the whole image (its box is the whole image: ``fit="whole"`` or ``"squash"``, or
    :meth:`~cliplens.maps.Maps.from_grids` without a ``box``); a map of a crop would put the points off."""
    labels: list[str] | None = None
    if isinstance(maps, Maps):
        labels = maps.labels
        if not 0 <= image < len(maps):
            raise InvalidInputError(f"image {image} is not among the {len(maps)} images of these maps")
        one = maps[image]
    elif isinstance(maps, ImageMaps):
        one = maps
    else:
        raise InvalidInputError(f"points_from_maps takes a cliplens Maps or ImageMaps, got {type(maps).__name__} "
                                "(for a bare grid [gh, gw] use points_from_map(grid, image_size))")
    T = one.raw.shape[0]
    if isinstance(target, str):
        if labels is None or target not in labels:
            raise InvalidInputError(f"no target {target!r} in these maps" + (f" ({', '.join(labels)})" if labels else
                                                                            ": pass its index"))
        t = labels.index(target)
    else:
        t = int(target)
        if not 0 <= t < T:
            raise InvalidInputError(f"target {target} is out of range: the maps have {T} targets")
    H, W = one.image_size
    if tuple(float(v) for v in one.box) != (0.0, 0.0, float(H), float(W)):
        raise InvalidInputError(f"these maps cover the part {one.box} (top, left, bottom, right) of the {W}x{H} image, "
                                "not all of it (fit='crop'?): points spread over the whole image from them would be "
                                "off; make the maps with fit='whole' or 'squash'")
    pts = points_from_map(one.raw[t], one.image_size, threshold)
    return dataclasses.replace(pts, text=labels[t] if labels else "", source=one.source, raw=one.raw[t].float().cpu())


def default_method(model: ImageTextModel) -> Surgery:
    """CLIP Surgery over the last 6 blocks (all of them in a shallower model), feature surgery against the
    empty prompt (what the original does for one text)."""
    return Surgery(blocks=min(6, model.vision.num_layers), feature="empty")


def check_points_tokens(model: ImageTextModel, hw: tuple[int, int], *, fit: str = "whole", size: int | None = None) -> None:
    """Refuse, before any work, an image of ``hw`` pixels whose fitted input has more tokens than one forward
    takes; say which ``size`` fits, and whether ``fit="squash"`` does (points have no sliding window: they
    come from one map over the whole image)."""
    patch = model.vision.patch_size
    H, W = fitted_shape(model, hw, fit=fit, size=size)  # type: ignore[arg-type]
    n = token_count((H, W), patch)
    if n <= MAX_TOKENS:
        return

    def largest(f: str, upto: int) -> tuple[int, int, int] | None:
        """The largest size <= ``upto`` whose input fits one forward and leaves a map of 2x2 cells or more (the
        fitted sides never grow as the size shrinks: bisect for the largest that fits, then check the map)."""
        def shape(k: int) -> tuple[int, int]:
            return fitted_shape(model, hw, fit=f, size=k)  # type: ignore[arg-type]

        lo, hi = 0, upto  # shape(lo) fits (or lo = 0: none does); shape(hi + 1) does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if token_count(shape(mid), patch) <= MAX_TOKENS:
                lo = mid
            else:
                hi = mid - 1
        if lo == 0:
            return None
        h, w = shape(lo)
        return (lo, h, w) if h >= 4 * patch[0] and w >= 4 * patch[1] else None

    s = int(size or min(model.vision.image_size))
    ways = []
    smaller = largest(fit, s - 1)
    if smaller is not None:
        k, h, w = smaller
        ways.append(f"a smaller size (size={k} or less; --size {k} on the command line: {w}x{h} pixels, "
                    f"{token_count((h, w), patch)} tokens)")
    squashed = largest("squash", s) if fit != "squash" else None
    if squashed is not None:
        k, h, w = squashed
        ways.append(f"fit='squash' (--fit squash{'' if k == s else f' --size {k}'}: the whole image resized to "
                    f"{w}x{h} pixels; the points still land on the image, but the map sees it squashed)")
    advice = " or ".join(ways) if ways else "a smaller image (crop it into parts and find points in each)"
    raise InvalidInputError(
        f"an input of {W}x{H} pixels is {n} tokens for one forward (over {MAX_TOKENS}): attention grows with the "
        "square of that. Points come from one map over the whole image, so there is no sliding window for them; "
        f"use {advice}."
    )


#: the prompt ensemble for real CLIPs when ``templates="auto"`` (CLIP Surgery's demo uses its 85 templates)
CLIP_TEMPLATES = "surgery"


def text_points(
    model: ImageTextModel,
    image: Any,
    text: str,
    *,
    method: MapMethod | str | None = None,
    threshold: float = 0.8,
    templates: str | Sequence[str] | None = "auto",
    fit: str = "whole",
    size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Points:
    """Point prompts for SAM of where ``text`` is in ``image`` (a path, PIL image, array or ``[3, H, W]``
    tensor), in the image's pixels.

    ``method``: a map method (default :func:`default_method`: CLIP Surgery, ``t − t_empty``); its raw map
    (before normalisation) goes to :func:`points_from_map`. ``templates``: the text's prompt ensemble
    (``"auto"``: CLIP Surgery's 85 templates, as its demo, or the toy CLIP's own prompt form; a set name or a
    list), or ``None`` for the text as it is.
    ``fit``: ``"whole"`` or ``"squash"`` (``"crop"`` is refused: see the module docs).
    """
    if fit == "crop":
        raise InvalidInputError("fit 'crop' is refused for points: the map would cover only the centre crop, and "
                                "points spread over the whole image from it would be off; use fit 'whole' (the "
                                "default) or 'squash'")
    if fit not in FITS:
        raise InvalidInputError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be one string, got {type(text).__name__}")
    if not isinstance(image, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
        raise InvalidInputError(f"text_points takes one image (a path, PIL image, array or [3, H, W] tensor), got "
                                f"{type(image).__name__}")
    threshold = _check_threshold(threshold)
    method = default_method(model) if method is None else get_map(method)
    targets = model_targets(model, [text], templates, clip_default=CLIP_TEMPLATES)
    check_points_tokens(model, image_size(image, max_pixels), fit=fit, size=size)
    _embed_quietly_once(model, method, targets)
    maps = method(model, [image], targets, fit=fit, size=size, normalization="raw", max_pixels=max_pixels)
    m = maps[0]
    raw = m.raw[0]
    pts = points_from_map(raw, m.image_size, threshold)
    settings = {**maps.settings, "rule": "CLIP Surgery's similarity_map_to_points: map downsampled ×2 (bilinear), "
                                         "min–max, k = min(#cells ≥ threshold, cells // 2), top-k positive, "
                                         "bottom-k negative, cell centres in image pixels"}
    return dataclasses.replace(pts, text=text, source=m.source, raw=raw.float().cpu(), settings=settings)


def _embed_quietly_once(model: ImageTextModel, method: MapMethod, targets: Targets) -> None:
    """Embed the text (its warnings, such as unknown words or truncation, given here), then the empty prompt
    the method will need, silently: it is the same prompt templates without the text, so anything said about
    its words was said already. Both are cached for the method, which then warns about neither again."""
    contrast = targets.resolved_contrast(method.default_contrast) if method.text_dependent else "none"
    targets.embed(model)
    if method.needs_empty or contrast == "empty":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            targets.embed(model, with_empty=True)


# ---- SAM (loading: cliplens.models.sam) ----------------------------------------------------------------------

def _rgb_array(image: Any, max_pixels: int) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(load_image(image, max_pixels=max_pixels))
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidInputError(f"SAM takes an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
        return image
    raise InvalidInputError(f"SAM takes a path, a PIL image or an RGB uint8 array, got {type(image).__name__}")


def sam_masks(
    image: Any,
    points: Points | Sequence[Sequence[float]],
    labels: Sequence[int] | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    model_type: str = "vit_b",
    sam: Any = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Tensor, Tensor]:
    """SAM's masks for point prompts on ``image`` (a path, PIL image or RGB uint8 array ``[H, W, 3]``).

    ``points``: ``[[x, y], ...]`` in image pixels with ``labels`` (1 positive, 0 negative), or a
    :class:`Points` (its labels are used). SAM is ``sam`` (a ``segment_anything`` model object) or built
    from the local file ``checkpoint`` of type ``model_type``. Returns ``(masks [M, H, W] bool, scores [M])``
    from ``SamPredictor.predict(..., multimask_output=True)``, sorted by SAM's score, best first.
    """
    if isinstance(points, Points):
        labels = points.labels if labels is None else labels
        points = points.points
    if labels is None:
        raise InvalidInputError("labels are needed with a list of points (1 positive, 0 negative)")
    coords = np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if coords.shape[0] == 0:
        raise InvalidInputError("no points to prompt SAM with (the map singled out no region)")
    if coords.shape[0] != lab.shape[0]:
        raise InvalidInputError(f"{coords.shape[0]} points but {lab.shape[0]} labels")
    if not np.isin(lab, (0, 1)).all():
        raise InvalidInputError("point labels must be 1 (positive) or 0 (negative)")
    if sam is None and checkpoint is None:
        raise InvalidInputError("SAM needs a checkpoint (a local file) or a SAM model object (sam=...)")
    sa = _segment_anything()
    rgb = _rgb_array(image, max_pixels)
    H, W = rgb.shape[:2]
    if (coords < 0).any() or (coords[:, 0] >= W).any() or (coords[:, 1] >= H).any():
        raise InvalidInputError(f"points must lie in the image ({W}x{H} pixels, x < {W}, y < {H}): are they [x, y] "
                                "in this image's pixels?")
    if sam is None:
        sam = load_sam(checkpoint, model_type)  # type: ignore[arg-type]
    predictor = sa.SamPredictor(sam)
    with torch.no_grad():
        predictor.set_image(rgb, image_format="RGB")
        masks, scores, _ = predictor.predict(point_coords=coords, point_labels=lab, multimask_output=True)
    order = np.argsort(-np.asarray(scores), kind="stable")
    return torch.from_numpy(np.asarray(masks)[order].astype(bool)), torch.from_numpy(np.asarray(scores)[order].astype(np.float32))


def text_masks(
    model: Any,
    image: Any,
    text: str,
    *,
    sam: Any = None,
    checkpoint: str | os.PathLike | None = None,
    model_type: str = "vit_b",
    **points_options: Any,
) -> tuple[Tensor, Tensor, Points]:
    """SAM's masks of where ``text`` is in ``image``: :func:`text_points` (``points_options``: its ``method``,
    ``threshold``, ``templates``, ``fit``, ``size``, ``max_pixels``), then :func:`sam_masks` with ``sam`` (a
    ``segment_anything`` model) or the local ``checkpoint``. Returns ``(masks [M, H, W] bool, scores [M],
    points)``, best mask first; the points say why when there are none (``points.message``), and SAM is then
    not run (an error names it)."""
    if sam is None and checkpoint is None:  # before the map: SAM's weights are never found by name
        raise InvalidInputError("SAM needs a checkpoint (a local file) or a SAM model object (sam=...)")
    pts = text_points(model, image, text, **points_options)
    if not len(pts):
        raise InvalidInputError(f"no points for {text!r}: {pts.message}")
    masks, scores = sam_masks(image, pts, sam=sam, checkpoint=checkpoint, model_type=model_type,
                              max_pixels=points_options.get("max_pixels", DEFAULT_MAX_PIXELS))
    return masks, scores, pts
