"""``segment-eval``: a map method over a whole segmentation data set, under one protocol, resumable.

:func:`evaluate_segmentation` runs :mod:`cliplens.evaluation.protocol` image after image, accumulates one
confusion matrix, writes overlays for the first images, and with ``out_dir`` saves its progress (the matrix
and how many images are done, in one atomically replaced JSON file) every few images: the same call after an
interruption resumes where it stopped; a folder holding another run's progress (other model, method, data
or settings) is refused, never overwritten.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplens.errors import InvalidInputError
from cliplens.evaluation.protocol import SegProtocol, class_queries, predict_labels, protocol_for
from cliplens.evaluation.segmentation import ConfusionMatrix
from cliplens.jsonio import differences, read_json, write_json_atomic
from cliplens.maps.base import MapMethod, get_map
from cliplens.maps.targets import Targets

__all__ = ["PROGRESS", "RESULTS", "SegEvalResult", "evaluate_segmentation", "model_record", "read_results", "resume",
           "save_progress"]

PROGRESS = "progress.json"
RESULTS = "results.json"


@dataclass
class SegEvalResult:
    """Metrics over the whole data set, with everything that made them."""

    miou: float
    pixel_accuracy: float
    per_class_iou: dict[str, float | None]  # None: the class occurs in neither ground truth nor predictions
    images: int
    settings: dict[str, Any]
    confusion: ConfusionMatrix
    seconds: float = 0.0
    overlays: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy, "per_class_iou": self.per_class_iou,
                "images": self.images, "seconds": self.seconds, "settings": self.settings,
                "overlays": self.overlays}


def _result(cm: ConfusionMatrix, names: list[str], done: int, settings: dict[str, Any], seconds: float,
            overlays: list[str]) -> SegEvalResult:
    ious = cm.per_class_iou().tolist()
    return SegEvalResult(100 * cm.miou(), 100 * cm.pixel_accuracy(),
                         {n: (None if math.isnan(v) else 100 * v) for n, v in zip(names, ious, strict=True)},
                         done, settings, cm, seconds, overlays)


def _targets(queries: list[list[str]], templates: str) -> tuple[Targets, list[int]]:
    flat = [q for qs in queries for q in qs]
    owner = [c for c, qs in enumerate(queries) for _ in qs]
    if any(not qs for qs in queries):
        raise InvalidInputError("every class needs at least one query name")
    t = Targets.texts(flat, contrast="none") if templates == "none" else Targets.classes(flat, templates=templates,
                                                                                      contrast="none")
    return t, owner


def model_record(model: Any) -> dict[str, Any]:
    rec = dict(model.describe()) if hasattr(model, "describe") else {"name": type(model).__name__}
    rec["fingerprint"] = model.fingerprint() if hasattr(model, "fingerprint") else None
    return rec


def evaluate_segmentation(
    model: Any,
    method: MapMethod | str,
    dataset: Any,
    *,
    protocol: SegProtocol | None = None,
    dataset_name: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    save_every: int = 10,
    on_image: Callable[[int, int], None] | None = None,
    on_prediction: Callable[[int, Any, np.ndarray, np.ndarray], str | None] | None = None,
) -> SegEvalResult:
    """Evaluate ``method`` on ``dataset`` (a :mod:`cliplens.datasets` segmentation set) under ``protocol``
    (default: the preset of ``dataset_name`` or of the data set's name). ``limit``: the first N images.
    ``on_image(done, total)`` is called after each image (a progress bar); ``on_prediction(i, sample, mask,
    labels)`` with each image's prediction (e.g. to draw overlays; a returned path is recorded)."""
    name = dataset_name or getattr(dataset, "name", None)
    protocol = protocol or protocol_for(name)
    method = get_map(method)
    class_names = list(dataset.class_names)
    queries = class_queries(class_names, protocol.names, name)
    targets, owner = _targets(queries, protocol.templates)
    background = getattr(dataset, "background", None)
    if protocol.prob_threshold > 0 and background is None:
        raise InvalidInputError(f"a background probability threshold ({protocol.prob_threshold}) needs a data set "
                                f"with a background class; {name} has none: set the threshold to 0")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise InvalidInputError("the data set has no images")
    settings = {
        "model": model_record(model), "method": method.describe(), "protocol": protocol.to_dict(),
        "dataset": dataset.describe() if hasattr(dataset, "describe") else {"name": name},
        "classes": class_names, "queries": queries, "images": n, "ignore_index": getattr(dataset, "ignore_index", 255),
        "background": background,
        "metrics": "one confusion matrix over the data set; IoU per class; mIoU over classes present in the ground "
                   "truth or the predictions; pixel accuracy over pixels not ignored",
    }
    cm = ConfusionMatrix(len(class_names), settings["ignore_index"])
    out = Path(out_dir).expanduser() if out_dir is not None else None
    state = resume(out, settings) if out is not None else {}
    if "confusion" in state:
        matrix = torch.tensor(state["confusion"], dtype=torch.int64)
        if tuple(matrix.shape) != tuple(cm.matrix.shape):
            raise InvalidInputError(f"{out}: its saved confusion matrix has the wrong shape; pass another folder")
        cm.matrix.copy_(matrix)
    done, seconds, written = int(state.get("done", 0)), float(state.get("seconds", 0.0)), list(state.get("overlays", []))
    t0 = time.perf_counter() - seconds
    for i in range(done, n):
        sample = dataset[i]
        maps = method(model, [sample.image], targets, fit=protocol.fit, size=protocol.size, window=protocol.window,
                      stride=protocol.stride, normalization="raw", batch_size=8)
        item = maps.images[0]
        pred = predict_labels(item, owner, logit_scale=protocol.logit_scale, prob_threshold=protocol.prob_threshold,
                              background=background)
        gt = np.asarray(dataset.mask(i))
        if tuple(gt.shape) != tuple(pred.shape):
            raise InvalidInputError(f"image {sample.id}: its mask is {gt.shape[1]}x{gt.shape[0]} but the image is "
                                    f"{pred.shape[1]}x{pred.shape[0]} pixels; masks must match their images")
        cm.update(pred, torch.from_numpy(gt.astype(np.int64)))
        if on_prediction is not None:
            drawn = on_prediction(i, sample, gt, pred.numpy())
            if drawn:
                written.append(drawn)
        done = i + 1
        if on_image is not None:
            on_image(done, n)
        if out is not None and (done % save_every == 0 or done == n):
            save_progress(out, settings, {"done": done, "seconds": time.perf_counter() - t0, "overlays": written,
                                          "confusion": cm.matrix.tolist()})
    result = _result(cm, class_names, done, settings, time.perf_counter() - t0, written)
    if out is not None:
        write_json_atomic(out / RESULTS, result.to_dict())
    return result


def resume(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The saved state of this run in ``out`` (``{}`` for a new one); another run's progress is refused."""
    path = out / PROGRESS
    if not path.exists():
        if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise InvalidInputError(f"{out} exists and holds other files (no {PROGRESS}): pass a new or empty folder "
                                    "(nothing was touched)")
        out.mkdir(parents=True, exist_ok=True)
        return {}
    try:
        state = read_json(path)
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{path} is not readable progress ({e}); pass another folder (nothing was "
                                "deleted)") from None
    if not (isinstance(state, dict) and isinstance(state.get("settings", {}), dict)
            and isinstance(state.get("state", {}), dict)):
        raise InvalidInputError(f"{path} is not readable progress (not an object with 'settings' and 'state'); "
                                "pass another folder (nothing was deleted)")
    diffs = differences(_comparable(state.get("settings", {})), _comparable(settings))
    if diffs:
        raise InvalidInputError(f"{out} holds an evaluation with another model, method, data set or settings; it is "
                                f"not resumed or overwritten. What differs: {'; '.join(diffs[:6])}. Pass another "
                                "folder, or delete that one yourself if you no longer need it.")
    return dict(state.get("state", {}))


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "images"} | {
        "model": {"fingerprint": settings.get("model", {}).get("fingerprint")}}


def save_progress(out: Path, settings: dict[str, Any], state: dict[str, Any]) -> None:
    """Replace the saved progress (atomically)."""
    write_json_atomic(out / PROGRESS, {"settings": settings, "state": state})


def read_results(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The results a finished run wrote."""
    return json.loads((Path(out) / RESULTS).read_text())
