"""Multi-label recognition: a score per (image, class), ranked classes per image, and mAP over a labelled set.

Scores (``method=``):

* ``"global"``: plain CLIP, ``s_j = cos(image, class_j)`` with the image embedding (the CLS token through
  ``ln_post`` and the projection) and each class's prompt-ensembled text direction.
* ``"surgery"`` (CLIP Surgery's multi-label recognition): feature surgery on the image embedding,
  ``S_j = w_j s_j − mean_j(w_j s_j)`` with ``p = softmax_j(2 s_j)`` and ``w_j = p_j / mean_j p``: the part the
  classes share is removed, so the scores are relative to the given classes (they sum to 0 per image).
  CLIP Surgery's CLS token comes from the main stream, which its architecture surgery leaves unchanged,
  so it *is* the plain image embedding (no side path is run). With a single class there is nothing to
  remove: as CLIP Surgery's feature surgery does for one text, the score falls back to
  ``s = f · (t − t_empty)``, ``t_empty`` the empty prompt in the same ensemble, with a warning;
  ``settings["feature_used"]`` says which was used.

Classes are embedded with ``Targets.classes(names, templates=...)`` (each template filled, embedded,
normalised, averaged, renormalised; one sorted pass over the prompts, cached per text tower:
:mod:`cliplens.text.cache`). The default ensemble (``templates="auto"``) is CLIP Surgery's 85 templates for
real CLIPs and the model's own prompt form for the toy CLIP (:func:`cliplens.text.default_templates`).
Images are fitted to the model as for maps (:mod:`cliplens.maps.inputs`; default ``fit="whole"``: the
whole image, short side at the model's input size, aspect ratio kept); an input of more tokens than one
forward takes (:data:`~cliplens.maps.inputs.MAX_TOKENS`, as for maps) is refused before it is run.

mAP (:func:`mean_average_precision`): average precision per class (scikit-learn's definition) over the
classes with at least one positive image; the others are excluded and the result says which.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError
from cliplens.evaluation.segmentation import average_precision
from cliplens.images.io import DEFAULT_MAX_PIXELS
from cliplens.maps.inputs import FITS, check_tokens, fit_images, group_by_size
from cliplens.maps.surgery import feature_surgery
from cliplens.maps.targets import Targets, model_targets
from cliplens.tasks.choices import MULTILABEL_METHODS
from cliplens.text.templates import resolve_templates

__all__ = ["METHODS", "ClassScores", "MeanAP", "coco_presence", "mean_average_precision", "multilabel_scores",
           "score_classes"]

METHODS = MULTILABEL_METHODS
#: CLIP Surgery's temperature in ``p = softmax(2 s)`` (hard-coded in the original)
TEMPERATURE = 2.0
#: the prompt ensemble for real CLIPs when ``templates="auto"`` (CLIP Surgery's demo uses its 85 templates)
CLIP_TEMPLATES = "surgery"

_SCORE_MEANING = {
    "global": "cosine similarity of the image embedding and the class's prompt ensemble",
    "surgery": "CLIP Surgery's feature surgery on the image embedding: w_j s_j − mean_j(w_j s_j), s_j the cosine "
               "similarity, w = softmax(2 s) / its mean; relative to the given classes (they sum to 0 per image)",
    "surgery-empty": "CLIP Surgery's feature surgery for a single class: the image embedding · (the class's prompt "
                     "ensemble − the empty prompt's), t_empty the ensemble filled with ''",
}
#: why a single class falls back to the empty-prompt variant (a warning)
ONE_CLASS_NOTE = ("feature surgery removes what the classes share, and one class has nothing to share with: scoring "
                  "it as CLIP Surgery does for a single text, image · (class − empty prompt) instead (not relative to "
                  "other classes). Give two or more classes for feature surgery proper")
#: what to do when an input has too many tokens for one forward
TOO_MANY_TOKENS = ("Score it with fit='crop' (--fit crop on the command line: the model's own resize and centre crop) "
                   "or fit='squash' (--fit squash: the whole image resized to a square), or in Python with a smaller "
                   "size=.")


@dataclass
class ClassScores:
    """Scores ``[B, C]`` of each image (row) for each class (column), with what made them."""

    scores: Tensor  # [B, C] float32, on the CPU
    classes: list[str]
    sources: list[str]
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: inputs skipped as unreadable (``skip_bad``): ``(source, reason)``
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.scores.shape[0]

    def ranked(self, i: int, top: int | None = None) -> list[tuple[str, float]]:
        """Image ``i``'s classes by score, highest first (the first ``top``): ``(class, score)``."""
        row = self.scores[i]
        order = torch.argsort(row, descending=True, stable=True).tolist()
        return [(self.classes[j], float(row[j])) for j in order[:top]]


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
        return [images]
    return list(images)


def _class_targets(model: ImageTextModel, classes: Sequence[str], templates: str | Sequence[str] | None) -> Targets:
    if isinstance(classes, str):
        raise InvalidInputError(f"classes must be a list of class names, got the string {classes!r}")
    names = list(classes)
    if not names:
        raise InvalidInputError("no classes given: pass at least one class name")
    return model_targets(model, names, templates, clip_default=CLIP_TEMPLATES)


@torch.no_grad()
def score_classes(
    model: ImageTextModel,
    images: Any,
    classes: Sequence[str],
    *,
    method: str = "surgery",
    templates: str | Sequence[str] | None = "auto",
    fit: str = "whole",
    size: int | None = None,
    batch_size: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skip_bad: bool = False,
) -> ClassScores:
    """Per-class scores of ``images`` (a path, PIL image, array, ``[3, H, W]`` tensor, or a list of them).

    ``method``: ``"surgery"`` or ``"global"`` (see the module docs; surgery with one class: the empty-prompt
    variant, with a warning). ``templates``: a prompt ensemble (``"auto"``, the default: CLIP Surgery's 85
    templates, or the toy CLIP's own prompt form; ``"surgery"``, ``"imagenet"``, ``"photo"``, ``"toy"``, or a
    list of templates with ``{}``), or ``None`` (or ``"none"``) for the class names as they are. ``fit``/``size``: how images become model inputs. Images are read and run
    ``batch_size`` at a time. ``skip_bad``: skip unreadable images (listed in ``.skipped``) instead of
    raising.
    """
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if fit not in FITS:
        raise InvalidInputError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    templates = resolve_templates(model, templates, CLIP_TEMPLATES)
    targets = _class_targets(model, classes, templates)
    items = _as_list(images)
    if not items:
        raise InvalidInputError("no images given")
    feature = "empty" if method == "surgery" and len(targets) == 1 else "redundancy"
    texts = targets.embed(model).directions.float()  # [C, E], unit norm
    empty: Tensor | None = None
    if feature == "empty":
        warnings.warn(ONE_CLASS_NOTE, UserWarning, stacklevel=2)
        with warnings.catch_warnings():  # its words are the class prompts' (any warning about them was given)
            warnings.simplefilter("ignore")
            empty = targets.empty_direction(model).float()
    rows: list[Tensor] = []
    sources: list[str] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(items), batch_size):
        fitted, bad = fit_images(model, items[start:start + batch_size], fit=fit, size=size,
                                 max_pixels=max_pixels, skip_bad=skip_bad)
        skipped += bad
        for f in fitted:  # before any forward of the batch; named, as batches mix images
            try:
                check_tokens(f.pixels, model.vision.patch_size, None, advice=TOO_MANY_TOKENS)
            except InvalidInputError as e:
                raise InvalidInputError(f"image {f.source}: {e}") from None
        emb: list[Tensor | None] = [None] * len(fitted)
        for _, idx in group_by_size(fitted).items():
            px = torch.stack([fitted[i].pixels for i in idx]).to(model.device, model.dtype)
            out = F.normalize(model.run(px).embedding.float(), dim=-1)
            for j, i in enumerate(idx):
                emb[i] = out[j]
        if not fitted:
            continue
        feats = torch.stack(emb)  # type: ignore[arg-type]
        t = texts.to(feats.device)
        if method == "global":
            s = feats @ t.T
        else:  # the image embedding is the CLS token (token 0) of feature surgery
            s = feature_surgery(feats[:, None], t, mode=feature, empty=empty,
                                    temperature=TEMPERATURE if feature == "redundancy" else None)[:, 0]
        rows.append(s.cpu())
        sources += [f.source for f in fitted]
    scores = torch.cat(rows) if rows else torch.zeros(0, len(targets))
    meaning = _SCORE_MEANING["surgery-empty" if feature == "empty" else method]
    settings: dict[str, Any] = {"method": method, "score": meaning}
    if method == "surgery":
        settings |= {"feature": "redundancy", "feature_used": feature}
    settings |= {"templates": _describe_templates(templates), "fit": fit, "size": size or min(model.vision.image_size)}
    return ClassScores(scores, list(targets.names), sources, method, settings, skipped)


def _describe_templates(templates: str | Sequence[str] | None) -> Any:
    if templates is None or isinstance(templates, str):
        return templates
    return list(templates)


def multilabel_scores(
    model: ImageTextModel,
    images: Any,
    classes: Sequence[str],
    *,
    method: str = "surgery",
    templates: str | Sequence[str] | None = "auto",
    fit: str = "whole",
    size: int | None = None,
    batch_size: int = 8,
) -> Tensor:
    """Scores ``[B, C]`` of each image for each class (see :func:`score_classes` and the module docs)."""
    return score_classes(model, images, classes, method=method, templates=templates, fit=fit, size=size,
                         batch_size=batch_size).scores


# ---- evaluation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeanAP:
    """The mean of the per-class APs over the evaluated classes (:attr:`map`), and the ``[C]`` APs
    (:attr:`per_class`, float64; NaN for a class with no positive image, which is excluded from the mean).
    Unpacks as ``(map, per_class)``."""

    map: float
    per_class: Tensor
    #: the class names (when given), for :attr:`note`
    classes: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Any]:
        return iter((self.map, self.per_class))

    @property
    def excluded(self) -> list[int]:
        """Indices of the classes left out of the mean (no positive image)."""
        return [int(i) for i in torch.nonzero(torch.isnan(self.per_class)).flatten()]

    @property
    def evaluated(self) -> int:
        return int((~torch.isnan(self.per_class)).sum())

    @property
    def note(self) -> str:
        """What the mean is over, and which classes were excluded."""
        C = self.per_class.shape[0]
        text = f"mAP over the {self.evaluated} of {C} classes with at least one positive image"
        ex = self.excluded
        if ex:
            names = [self.classes[i] if self.classes else str(i) for i in ex]
            shown = ", ".join(names[:20]) + (f", … ({len(names) - 20} more)" if len(names) > 20 else "")
            text += f"; excluded (no positive image, AP undefined): {shown}"
        return text


def _as_tensor(x: Any, name: str) -> Tensor:
    try:
        t = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name} must be a [B, C] array or tensor: {e}") from None
    if t.ndim != 2:
        raise InvalidInputError(f"{name} must be [B, C] (images × classes), got shape {tuple(t.shape)}")
    return t


def mean_average_precision(scores: Any, labels: Any, *, classes: Sequence[str] = ()) -> MeanAP:
    """Mean average precision of ``scores`` ``[B, C]`` against boolean ``labels`` ``[B, C]``.

    AP per class is :func:`cliplens.evaluation.segmentation.average_precision` (scikit-learn's
    ``average_precision_score`` when installed, else the same definition in numpy: precision summed over
    the recall steps, tied scores grouped); a class with no positive image has no AP (NaN) and is excluded
    from the mean (:attr:`MeanAP.note` says which). ``classes``: names, for the note.
    """
    s = _as_tensor(scores, "scores").double()
    y = _as_tensor(labels, "labels")
    if s.shape != y.shape:
        raise InvalidInputError(f"scores {tuple(s.shape)} and labels {tuple(y.shape)} must have the same shape")
    if y.dtype != torch.bool:
        if not bool(((y == 0) | (y == 1)).all()):
            raise InvalidInputError("labels must be boolean (or 0/1): whether each class is in each image")
        y = y.bool()
    if not bool(torch.isfinite(s).all()):
        raise InvalidInputError("scores contain NaN or infinite values")
    if classes and len(classes) != s.shape[1]:
        raise InvalidInputError(f"{len(classes)} class names for {s.shape[1]} score columns")
    if s.shape[0] == 0:
        raise InvalidInputError("no images: scores and labels have 0 rows")
    ap = torch.full((s.shape[1],), math.nan, dtype=torch.float64)
    sn, yn = s.numpy(), y.numpy()
    for c in range(s.shape[1]):
        if yn[:, c].any():
            ap[c] = average_precision(yn[:, c], sn[:, c])
    valid = ~torch.isnan(ap)
    if not bool(valid.any()):
        raise InvalidInputError("no class has a positive image: mAP is undefined")
    return MeanAP(float(ap[valid].mean()), ap, tuple(classes))


# ---- COCO -----------------------------------------------------------------------------------------

def coco_presence(instances_json: str | os.PathLike, image_dir: str | os.PathLike, *,
                  skip_missing: bool = False) -> tuple[list[str], list[str], Tensor]:
    """Which categories each image of a COCO ``instances_*.json`` holds.

    Returns ``(paths, class_names, labels)``: the image files (``image_dir / file_name``, in the file's
    order of ``images``), the category names (in the file's order of ``categories``), and ``labels``
    ``[B, C]`` bool: ``labels[i, c]`` when an annotation of image ``i`` has category ``c`` (crowd annotations
    included); an image without annotations has no label. An image file missing from ``image_dir`` raises,
    or with ``skip_missing`` is left out.
    """
    path = Path(instances_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidInputError(f"cannot read the COCO annotations {str(path)!r}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"{str(path)!r} is not a JSON file: {e}") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise InvalidInputError(f"{str(path)!r} is not a COCO instances file: it needs 'images', 'annotations' and "
                                "'categories' (an instances_*.json, not captions or keypoints)")
    try:
        column = {int(c["id"]): j for j, c in enumerate(data["categories"])}
        names = [str(c["name"]) for c in data["categories"]]
        row = {int(im["id"]): i for i, im in enumerate(data["images"])}
        files = [str(im["file_name"]) for im in data["images"]]
        labels = torch.zeros(len(files), len(names), dtype=torch.bool)
        for a in data["annotations"]:
            labels[row[int(a["image_id"])], column[int(a["category_id"])]] = True
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"{str(path)!r}: malformed COCO instances file ({type(e).__name__}: {e}); an "
                                "annotation names an unknown image or category, or a field is missing") from None
    folder = Path(image_dir)
    if not folder.is_dir():
        raise InvalidInputError(f"image folder {str(folder)!r} does not exist (or is not a folder)")
    paths = [str(folder / f) for f in files]
    present = [os.path.isfile(p) for p in paths]
    if not all(present):
        missing = [p for p, ok in zip(paths, present, strict=True) if not ok]
        if not skip_missing:
            raise InvalidInputError(f"{len(missing)} of the {len(paths)} images of {str(path)!r} are not in "
                                    f"{str(folder)!r} (first: {missing[0]}); pass the folder that holds them, or "
                                    "skip_missing=True to leave them out")
        keep = [i for i, ok in enumerate(present) if ok]
        paths = [paths[i] for i in keep]
        labels = labels[keep]
    return paths, names, labels
