"""Open-vocabulary segmentation: one label per pixel from class maps.

Rule (stated with every result): the classes' *raw* maps (after the method's contrast, not min–max
normalised, so that classes stay comparable) are upsampled bilinearly to the image and each pixel
takes the class with the highest score. Background, by one or both of:

* background names (``background=["sky", "wall", ...]`` or ``["background"]``): extra texts scored
  with the classes; a pixel whose best text is one of them is background (label 0);
* a probability threshold (``threshold=0.3``): per pixel ``softmax(logit_scale · scores)`` over the
  texts; a pixel whose best probability is below the threshold is background. It needs two or more
  texts (classes and background names together): over one text the softmax is always 1, so the
  threshold could never fire and every pixel would silently be that class; that is refused.

Labels: 0 = background, 1..C = the classes in the order given; 255 where the model did not see the
image (outside a centre crop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError
from cliplens.images.io import DEFAULT_MAX_PIXELS
from cliplens.maps.base import ImageMaps, MapMethod, get_map
from cliplens.maps.inputs import _describe, to_image
from cliplens.maps.pamr import image_refiner
from cliplens.maps.targets import model_targets

__all__ = ["IGNORE", "Segmentation", "check_threshold_texts", "label_map", "segment"]

IGNORE = 255
#: the prompt ensemble for real CLIPs when ``templates="auto"``
CLIP_TEMPLATES = "imagenet"
#: classes upsampled to the image at a time (memory stays bounded for many classes and large images)
CLASS_CHUNK = 16


@dataclass
class Segmentation:
    """One image's labels: 0 = background, 1..C = ``classes[i - 1]``, 255 = not seen by the model."""

    labels: Tensor  # [H0, W0] int64
    classes: list[str]
    source: str
    settings: dict[str, Any] = field(default_factory=dict)

    def present(self) -> list[str]:
        """The classes that cover at least one pixel, by area (largest first)."""
        counts = torch.bincount(self.labels[self.labels != IGNORE].flatten(), minlength=len(self.classes) + 1)
        order = [int(i) for i in counts[1:].argsort(descending=True) if counts[1 + int(i)] > 0]
        return [self.classes[i] for i in order]


def check_threshold_texts(texts: int, threshold: float | None) -> None:
    """Refuse a probability threshold over fewer than two texts (the softmax over one text is always 1)."""
    if threshold is not None and texts < 2:
        raise InvalidInputError(
            f"a probability threshold ({threshold}) needs two or more texts to compare, and there is {texts}: the "
            "softmax over one text is always 1, so no pixel could fall below the threshold and every pixel would be "
            "that class. Add background names (e.g. background=['background']; --background background on the "
            "command line) or more classes, so that the probability says something"
        )


def label_map(maps: ImageMaps, num_classes: int, *, threshold: float | None = None,
              logit_scale: float = 50.0, refine: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Labels ``[H0, W0]`` from one image's raw maps of ``num_classes`` classes followed by any background
    texts (see the module docs); ``refine`` (PAMR, :func:`cliplens.maps.pamr.image_refiner`) maps score chunks at
    the image's size to refined ones."""
    T = maps.raw.shape[0]
    check_threshold_texts(T, threshold)
    h0, w0 = maps.image_size
    best = torch.full((h0, w0), -torch.inf)
    arg = torch.zeros(h0, w0, dtype=torch.int64)
    for start in range(0, T, CLASS_CHUNK):
        chunk = to_image(maps.raw[start:start + CLASS_CHUNK], maps.box, maps.image_size)  # [c, H0, W0]
        if refine is not None:
            chunk = refine(chunk)
        value, index = chunk.max(0)
        better = value > best
        best = torch.where(better, value, best)
        arg = torch.where(better, index + start, arg)
    labels = torch.where(arg < num_classes, arg + 1, torch.zeros_like(arg))
    if threshold is not None:
        labels = torch.where(_top_probability(maps, best, logit_scale, refine) < threshold, torch.zeros_like(labels),
                             labels)
    unseen = torch.isnan(to_image(maps.raw[:1], maps.box, maps.image_size)[0])  # outside a centre crop
    return torch.where(unseen, torch.full_like(labels, IGNORE), labels)


def _top_probability(maps: ImageMaps, top: Tensor, logit_scale: float,
                     refine: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``max_t softmax(logit_scale · scores)`` per pixel of the original image (``top``: the best score), in
    class chunks: ``1 / Σ_t exp(logit_scale · (score_t − top))``."""
    T = maps.raw.shape[0]
    total = torch.zeros_like(top)
    for start in range(0, T, CLASS_CHUNK):
        chunk = to_image(maps.raw[start:start + CLASS_CHUNK], maps.box, maps.image_size)
        if refine is not None:
            chunk = refine(chunk)
        total = total + torch.exp(logit_scale * (chunk - top)).sum(0)
    return 1.0 / total


def segment(
    method: MapMethod | str,
    model: ImageTextModel,
    images: Any,
    classes: Sequence[str],
    *,
    background: Sequence[str] = (),
    threshold: float | None = None,
    logit_scale: float = 50.0,
    templates: str | Sequence[str] | None = "auto",
    fit: str = "whole",
    size: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skip_bad: bool = False,
    pamr: int = 0,
    pamr_dilations: Sequence[int] = (8, 16),
) -> list[Segmentation]:
    """Label every pixel of ``images`` with one of ``classes`` or background (see the module docs).

    ``templates``: the prompt ensemble of every class and background name (``"auto"``: the 80 ImageNet
    templates for real CLIPs, the toy CLIP's own prompt form for it; a set name, a list, or ``None`` for the
    names as they are). ``pamr``: refine the class scores at each image's size with that many iterations of PAMR
    (:mod:`cliplens.maps.pamr`; NACLIP uses 10 with ``pamr_dilations=(8, 16)``) before the labels are taken."""
    classes = list(classes)
    background = list(background)
    if not classes:
        raise InvalidInputError("no classes given: pass at least one class name")
    if not background and threshold is None:
        raise InvalidInputError("say what background is: background names (e.g. ['background']), a probability "
                                "threshold, or both")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(f"threshold is a probability, between 0 and 1; got {threshold}")
    check_threshold_texts(len(classes) + len(background), threshold)
    overlap = sorted(set(classes) & set(background))
    if overlap:
        raise InvalidInputError(f"{', '.join(overlap)} is both a class and a background name")
    method = get_map(method)
    names = classes + background
    targets = model_targets(model, names, templates, clip_default=CLIP_TEMPLATES)
    maps = method(model, images, targets, fit=fit, size=size, window=window, stride=stride, normalization="raw",
                  batch_size=batch_size, max_pixels=max_pixels, skip_bad=skip_bad)
    settings = {**maps.settings, "background": background, "threshold": threshold,
                "logit_scale": logit_scale if threshold is not None else None,
                "rule": "argmax of the raw class maps upsampled bilinearly to the image; background where the best "
                        "text is a background name" + (" or the top probability of softmax(logit_scale · scores) is "
                                                       "below the threshold" if threshold is not None else "")}
    if pamr:
        settings["pamr"] = {"iterations": int(pamr), "dilations": [int(d) for d in pamr_dilations]}
    # the inputs the maps come from, in order (what was skipped as unreadable has no maps)
    gone = {source for source, _ in maps.skipped}
    inputs = [im for im in (images if isinstance(images, (list, tuple)) else [images]) if _describe(im) not in gone]
    out = []
    for m, original in zip(maps.images, inputs, strict=True):
        refine = None if not pamr else image_refiner(model, original, fit=fit, size=size, window=window,
                                                     image_size=m.image_size, iterations=pamr,
                                                     dilations=pamr_dilations)
        labels = label_map(m, len(classes), threshold=threshold, logit_scale=logit_scale, refine=refine)
        out.append(Segmentation(method.correct_labels(m, labels), classes, m.source, settings))
    return out
