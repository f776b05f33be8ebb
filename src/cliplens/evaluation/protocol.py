"""One evaluation protocol for training-free open-vocabulary segmentation, with every setting explicit.

The field's code (the SCLIP line: SCLIP, NACLIP, ClearCLIP, SC-CLIP, ResCLIP) evaluates on mmseg 1.1.1 /
mmcv 2.0.1, which no longer installs. cliplens does the same without them:

1. **Resize** (``fit="short"``): the image is rescaled so that its short side is ``size`` (336; 560 for
   Cityscapes), its long side at most 2048, keeping the aspect ratio (mmcv's rule, bilinear). The ground
   truth stays at the original resolution.
2. **Sliding window** of ``window`` pixels with ``stride`` (224 / 112): each window's raw map (cosine of patch
   features and texts) is upsampled bilinearly to the window, overlapping windows are averaged, and the
   result is upsampled bilinearly to the original image.
3. **Texts**: every class has one or more query names (``names="field"``: the synonym lists the field uses —
   e.g. VOC's background as 26 stuff words, "person in shirt", "tv monitor"…; ``"plain"``: the data set's
   class names; or your own), each embedded with the prompt ensemble ``templates`` (the 80 ImageNet
   templates).
4. **Decision** per pixel: ``P = softmax over queries of logit_scale · score`` (40); a class's probability is
   the max over its queries; the pixel takes the most probable class; where that probability is below
   ``prob_threshold`` (0.1 for the sets with a background class, else 0) it becomes background.
5. **Metrics** from one confusion matrix over the whole data set (:class:`~cliplens.evaluation.segmentation.
   ConfusionMatrix`): ignore index 255, IoU per class, mIoU over the classes that occur in the ground truth or
   the predictions, pixel accuracy.

Differences from the field's code, all stated (``segment-eval --preset NAME`` applies a paper's own settings
instead: :mod:`cliplens.evaluation.method_presets`): one logit scale (40) for every set where SCLIP tunes 40–65;
a sliding window on VOC too (NACLIP runs it whole); PAMR off (``pamr``); each method's own positional-embedding
interpolation (:data:`cliplens.core.plan.POSITIONAL_MODES`); the model's own precision (fp32 on CPU); each query names one
class (COCO-Object's background words leave out "bed", a COCO class: with it in both, the field's tie goes to
background and "bed" is never predicted); the presets are the layout's (a folder named ``cityscapes`` holding
images and masks is a generic folder: 336).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cliplens.errors import InvalidInputError
from cliplens.maps.base import ImageMaps
from cliplens.maps.inputs import FITS, to_image
from cliplens.text.templates import TEMPLATE_SETS

__all__ = ["FIELD_NAMES", "PRESETS", "SegProtocol", "class_queries", "predict_labels", "protocol_for"]

IGNORE = 255
#: queries upsampled to the image at a time
QUERY_CHUNK = 16


@dataclass(frozen=True)
class SegProtocol:
    """The settings of one evaluation (see the module docs); every one is recorded with the results."""

    fit: str = "short"
    size: int = 336
    window: int | None = 224
    stride: int | None = 112
    logit_scale: float = 40.0
    prob_threshold: float = 0.0
    templates: str = "imagenet"
    names: str = "field"  # "field", "plain", or a file with one line per class: comma-separated query names
    #: PAMR on the scores at the image's size (:mod:`cliplens.maps.pamr`): iterations (0: off) and dilations
    pamr: int = 0
    pamr_dilations: tuple[int, ...] = (8, 16)
    #: SCLIP's area rule (0: off): a class whose predicted pixels are at most this share of the pixels predicted
    #: as any non-background class is dropped from the image (its pixels go to their next most probable class)
    area_threshold: float = 0.0
    #: ``(class name, "query, query, …")`` pairs replacing those classes' query names (a method preset's spelling)
    queries: tuple[tuple[str, str], ...] = ()
    #: the method preset these settings come from (``""``: cliplens's own protocol), with its source
    preset: str = ""

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise InvalidInputError(f"fit must be one of {', '.join(FITS)}; got {self.fit!r}")
        if self.size < 1:
            raise InvalidInputError(f"size must be a positive number of pixels, got {self.size}")
        if (self.window is None) != (self.stride is None):
            raise InvalidInputError("give a window and a stride together (or neither, for whole images)")
        if self.window is not None and not 0 < self.stride <= self.window:  # type: ignore[operator]
            raise InvalidInputError(f"stride must be between 1 and the window ({self.window}), got {self.stride}")
        if not 0.0 <= self.prob_threshold <= 1.0:
            raise InvalidInputError(f"prob_threshold is a probability, between 0 and 1; got {self.prob_threshold}")
        if not (math.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise InvalidInputError(f"logit_scale must be a positive, finite number, got {self.logit_scale}")
        if self.templates not in TEMPLATE_SETS:
            raise InvalidInputError(f"templates must be one of {', '.join(TEMPLATE_SETS)}; got {self.templates!r}")
        object.__setattr__(self, "pamr_dilations", tuple(int(d) for d in self.pamr_dilations))
        object.__setattr__(self, "queries", tuple((str(c), str(q)) for c, q in self.queries))
        if not 0.0 <= self.area_threshold < 1.0:
            raise InvalidInputError(f"area_threshold is a share of the pixels, in [0, 1); got {self.area_threshold}")
        if self.pamr < 0 or not self.pamr_dilations or min(self.pamr_dilations) < 1:
            raise InvalidInputError(f"PAMR takes iterations >= 0 (0: off) and dilations >= 1; got {self.pamr} and "
                                    f"{list(self.pamr_dilations)}")

    def to_dict(self) -> dict[str, Any]:
        """The settings (PAMR's only where it is on, so that runs saved before it existed still resume)."""
        out = dataclasses.asdict(self)
        if not self.pamr:
            del out["pamr"], out["pamr_dilations"]
        else:
            out["pamr_dilations"] = list(self.pamr_dilations)
        for name, off in (("area_threshold", 0.0), ("queries", ()), ("preset", "")):
            if getattr(self, name) == off:
                del out[name]
        if "queries" in out:
            out["queries"] = {c: q for c, q in self.queries}
        return out

    def replace(self, **changes: Any) -> SegProtocol:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_BG = 0.1
#: the protocol per data set (``SegProtocol()`` for any other)
PRESETS: dict[str, SegProtocol] = {
    "voc21": SegProtocol(prob_threshold=_BG),
    "voc20": SegProtocol(),
    "context60": SegProtocol(prob_threshold=_BG),
    "context59": SegProtocol(),
    "coco-object": SegProtocol(prob_threshold=_BG),
    "coco-stuff": SegProtocol(),
    "cityscapes": SegProtocol(size=560),
    "ade20k": SegProtocol(),
    "folder": SegProtocol(),
    # the toy world: 64-pixel scenes seen whole by a 64-pixel model
    "toy": SegProtocol(fit="whole", size=64, window=None, stride=None, templates="none", names="plain"),
}

_STUFF = ("sky, wall, tree, wood, grass, road, sea, river, mountain, sands, desk, bed, building, cloud, lamp, door, "
          "window, wardrobe, ceiling, shelf, curtain, stair, floor, hill, rail, fence")
_PERSON = ("person, person in shirt, person in jeans, person in dress, person in sweater, person in skirt, "
           "person in jacket")
_TV = "television monitor, tv monitor, monitor, television, screen"
_VOC = {"boat": "ship", "dining table": "table", "person": _PERSON, "potted plant": "pottedplant", "tv monitor": _TV}
#: the query names the field's configs use where they differ from the plain class names, per data set:
#: ``{class name: "query, query, …"}`` (written for cliplens from the SCLIP line's published settings)
FIELD_NAMES: dict[str, dict[str, str]] = {
    "voc21": {"background": _STUFF, **_VOC},
    "voc20": dict(_VOC),
    "coco-object": {"background": _STUFF, "person": _PERSON + ", body"},
}


def _split(line: str) -> list[str]:
    return [q.strip() for q in line.split(",") if q.strip()]


def _key(query: str) -> str:
    return " ".join(query.lower().split())


def class_queries(class_names: Sequence[str], names: str = "field", dataset: str | None = None,
                  overrides: Sequence[tuple[str, str]] = ()) -> list[list[str]]:
    """Per class, its query names: ``"plain"`` (the class name), ``"field"`` (:data:`FIELD_NAMES` for the preset
    ``dataset``, the class name elsewhere) or a file with one line per class of comma-separated names.

    Every query belongs to one class (case and spacing ignored): a query repeated within a class is kept once;
    with ``"field"``, a synonym that is another class's own name is that class's, and is left out of the
    synonym list (COCO-Object's background words include "bed", which is a COCO class: the field's code keeps it
    in both, so that the tie always goes to background and "bed" is never predicted). Any other query named for
    two classes is refused, saying which. ``overrides``: ``(class name, "query, query, …")`` pairs that replace
    those classes' queries (a method preset's own spelling, e.g. ``("traffic light", "trafficlight")``).
    """
    if names == "plain":
        queries = [[c] for c in class_names]
    elif names == "field":
        over = FIELD_NAMES.get(dataset or "", {})
        own = {_key(c) for c in class_names}
        queries = [[q for q in _split(over[c]) if _key(q) == _key(c) or _key(q) not in own] if c in over else [c]
                   for c in class_names]
    else:
        path = Path(os.path.expanduser(names))
        if not path.is_file():
            raise InvalidInputError(f"names must be 'field', 'plain' or a file with one line of comma-separated query "
                                    f"names per class; {names!r} is not a file")
        lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        if len(lines) != len(class_names):
            raise InvalidInputError(f"{path} has {len(lines)} non-empty lines but the data set has {len(class_names)} "
                                    f"classes ({', '.join(class_names[:5])}{', …' if len(class_names) > 5 else ''}): "
                                    "give one line per class, in the data set's class order")
        queries = [_split(ln) for ln in lines]
    index = {c: i for i, c in enumerate(class_names)}
    for c, q in overrides:
        if c not in index:
            raise InvalidInputError(f"a query override names the class {c!r}, which this data set does not have")
        queries[index[c]] = _split(q)
    owner: dict[str, int] = {}
    out: list[list[str]] = []
    for c, qs in enumerate(queries):
        out.append([])
        for q in qs:
            k = owner.setdefault(_key(q), c)
            if k == c and q not in out[c] and all(_key(q) != _key(x) for x in out[c]):
                out[c].append(q)
            elif k != c:
                if names == "plain":
                    raise InvalidInputError(f"the data set's classes {class_names[k]!r} and {class_names[c]!r} have "
                                            "the same name (case and spacing ignored), so their queries cannot be "
                                            "told apart: rename one, or give the query names with --names FILE")
                where = f" (lines {k + 1} and {c + 1} of {names})" if names != "field" else ""
                raise InvalidInputError(f"the query {q!r} names two classes, {class_names[k]!r} and "
                                        f"{class_names[c]!r}{where}: a pixel it matches cannot be both. Give each "
                                        "query to one class")
    return out


def protocol_for(dataset: str | None, **overrides: Any) -> SegProtocol:
    """The preset for ``dataset`` (a name of :data:`PRESETS`) with ``overrides`` (``None`` values ignored)."""
    return PRESETS.get(dataset or "", SegProtocol()).replace(**overrides)


def predict_labels(maps: ImageMaps, query_class: Sequence[int], *, logit_scale: float, prob_threshold: float,
                   background: int | None, refine: Callable[[Tensor], Tensor] | None = None,
                   area_threshold: float = 0.0) -> Tensor:
    """Labels ``[H0, W0]`` (int64) from one image's raw query maps (see the module docs, step 4).

    The best query per pixel decides the class (the max over a class's queries of a softmax over all queries
    is the best query's probability); that probability is ``1 / Σ_q exp(logit_scale·(s_q − s_best))``.
    Pixels the model did not see (outside a crop) are 255. ``refine`` (PAMR) maps each chunk of query scores
    ``[K, H0, W0]`` at the image's size to refined ones (it is linear: before or after the logit scale alike).
    """
    T = maps.raw.shape[0]
    if len(query_class) != T:
        raise InvalidInputError(f"{T} maps but {len(query_class)} query classes")
    if area_threshold > 0:
        return _labels_with_area_rule(maps, query_class, logit_scale=logit_scale, prob_threshold=prob_threshold,
                                      background=background, refine=refine, area_threshold=area_threshold)
    best: Tensor | None = None
    arg: Tensor | None = None
    chunks = []
    for start in range(0, T, QUERY_CHUNK):
        logits = logit_scale * to_image(maps.raw[start:start + QUERY_CHUNK].float(), maps.box, maps.image_size)
        if refine is not None:
            logits = refine(logits)
        value, index = logits.max(0)
        if best is None:
            best, arg = value, index
        else:
            better = value > best
            best, arg = torch.where(better, value, best), torch.where(better, index + start, arg)  # type: ignore[arg-type]
        chunks.append((start, logits) if prob_threshold > 0 else (start, None))
    assert best is not None and arg is not None
    lookup = torch.as_tensor(list(query_class), dtype=torch.int64)
    unseen = torch.isnan(best)
    labels = lookup[arg.clamp_min(0)]
    if prob_threshold > 0:
        if background is None:
            raise InvalidInputError("a probability threshold needs a background class to assign")
        total = torch.zeros_like(best)
        for _, logits in chunks:
            total = total + torch.exp(logits - best).nan_to_num(0.0).sum(0)  # type: ignore[operator]
        labels = torch.where(1.0 / total < prob_threshold, torch.full_like(labels, background), labels)
    return torch.where(unseen, torch.full_like(labels, IGNORE), labels)


def _labels_with_area_rule(maps: ImageMaps, query_class: Sequence[int], *, logit_scale: float, prob_threshold: float,
                           background: int | None, refine: Callable[[Tensor], Tensor] | None,
                           area_threshold: float) -> Tensor:
    """SCLIP's decision with its area rule (clip_segmentor.py ``postprocess_result``): class probabilities (the max
    over a class's queries of the softmax over all queries); the per-pixel argmax; every non-background class whose
    pixels are at most ``area_threshold`` × the pixels of all non-background classes has its probability zeroed;
    argmax again; below ``prob_threshold`` → background. Holds a ``[classes, H0, W0]`` tensor (used where SCLIP uses
    it: VOC21)."""
    if background is None:
        raise InvalidInputError("the area rule drops classes to the other classes and background: it needs a data "
                                "set with a background class")
    n_classes = max(query_class) + 1
    lookup = torch.as_tensor(list(query_class), dtype=torch.int64)
    chunks = []
    for start in range(0, len(query_class), QUERY_CHUNK):
        logits = logit_scale * to_image(maps.raw[start:start + QUERY_CHUNK].float(), maps.box, maps.image_size)
        chunks.append(refine(logits) if refine is not None else logits)
    logits = torch.cat(chunks)  # [T, H0, W0]
    unseen = torch.isnan(logits[0])
    probs = logits.nan_to_num(0.0).softmax(0)
    per_class = torch.full((n_classes, *probs.shape[1:]), -1.0).scatter_reduce(
        0, lookup[:, None, None].expand_as(probs), probs, reduce="amax")
    pred = per_class.argmax(0)
    counts = torch.bincount(pred[~unseen].flatten(), minlength=n_classes).float()
    foreground = counts.sum() - counts[background]
    small = counts <= area_threshold * foreground
    small[background] = False
    per_class[small] = 0.0
    top, labels = per_class.max(0)
    labels = torch.where(top < prob_threshold, torch.full_like(labels, background), labels)
    return torch.where(unseen, torch.full_like(labels, IGNORE), labels)

