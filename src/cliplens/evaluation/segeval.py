"""``segment-eval``: a map method over a whole segmentation data set, under one protocol, resumable.

:func:`evaluate_segmentation` runs :mod:`cliplens.evaluation.protocol` image after image, accumulates one
confusion matrix and writes overlays for the first images. With ``out_dir`` its progress (the matrix, how
many images are done, the overlays written, with the settings) is kept in one atomically replaced JSON file,
``progress.json`` (:class:`RunFolder`, shared with :mod:`cliplens.evaluation.imagenet_seg`):

* it is written before any work, so an interrupted run's folder is always recognisable as that run's;
* it is saved every ``save_every`` images and, whatever stops the run (Ctrl-C, an error), once more on the
  way out: the same call then resumes where it stopped, losing only the image in flight (a run killed
  outright, e.g. by SIGKILL, loses at most the images since the last periodic save);
* an image counts as done, with its part of the metrics and its overlay, all at once or not at all: a
  resumed run re-does exactly the images not done, and its metrics equal an uninterrupted run's;
* overlays are named by image (``overlays/00003.png``) and drawn into a hidden temporary file that is then
  renamed, so a half-written PNG never carries that name. Before drawing one, the run records the name in
  its progress: when an interrupted image is redone, the overlay that run had begun under that name is
  replaced; a file of that name the run did not record (someone else's) is never touched: the overlay goes
  beside it (``00003-2.png``) with a warning;
* a folder holding another run's progress (other model, method, data or settings) is refused, never
  overwritten, and so is a folder with other files and no progress.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
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

__all__ = ["OVERLAYS", "PROGRESS", "RESULTS", "RunFolder", "SegEvalResult", "evaluate_segmentation", "model_record",
           "read_results", "resume", "save_progress"]

PROGRESS = "progress.json"
RESULTS = "results.json"
OVERLAYS = "overlays"
#: the progress key naming the overlay being drawn (recorded before the file exists)
_CLAIM = "drawing"


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
    overlays: int = 0,
    draw_overlay: Callable[[Path, int, Any, np.ndarray, np.ndarray], Any] | None = None,
    on_image: Callable[[int, int], None] | None = None,
    on_prediction: Callable[[int, Any, np.ndarray, np.ndarray], str | None] | None = None,
) -> SegEvalResult:
    """Evaluate ``method`` on ``dataset`` (a :mod:`cliplens.datasets` segmentation set) under ``protocol``
    (default: the preset of ``dataset_name`` or of the data set's name). ``limit``: the first N images.

    With ``out_dir`` the run is resumable (see the module docs); ``save_every``: images between periodic
    saves (progress is also saved when the run stops, for whatever reason). ``draw_overlay(path, i, sample,
    mask, labels)`` draws image ``i``'s overlay (a PNG at ``path``) for each of the first ``overlays`` images,
    named ``out_dir/overlays/NNNNN.png`` (needs ``out_dir``). ``on_image(done, total)`` is called after each
    image (a progress bar); ``on_prediction(i, sample, mask, labels)`` with each image's prediction (a
    returned path is recorded with the overlays)."""
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
    if draw_overlay is not None and overlays > 0 and out_dir is None:
        raise InvalidInputError("overlays are written in the run's folder: pass out_dir")
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
    fresh = {"done": 0, "seconds": 0.0, "overlays": [], "confusion": cm.matrix.tolist()}
    with RunFolder(out, settings, fresh, total=n, save_every=save_every) as run:
        matrix = torch.tensor(run.state["confusion"], dtype=torch.int64)
        if tuple(matrix.shape) != tuple(cm.matrix.shape):
            raise InvalidInputError(f"{out}: its saved confusion matrix has the wrong shape; pass another folder")
        for i in range(run.done, n):
            sample = dataset[i]
            maps = method(model, [sample.image], targets, fit=protocol.fit, size=protocol.size,
                          window=protocol.window, stride=protocol.stride, normalization="raw", batch_size=8)
            item = maps.images[0]
            pred = predict_labels(item, owner, logit_scale=protocol.logit_scale,
                                  prob_threshold=protocol.prob_threshold, background=background)
            gt = np.asarray(dataset.mask(i))
            if tuple(gt.shape) != tuple(pred.shape):
                raise InvalidInputError(f"image {sample.id}: its mask is {gt.shape[1]}x{gt.shape[0]} but the image "
                                        f"is {pred.shape[1]}x{pred.shape[0]} pixels; masks must match their images")
            one = ConfusionMatrix(len(class_names), settings["ignore_index"])
            one.update(pred, torch.from_numpy(gt.astype(np.int64)))
            drawn = []
            if on_prediction is not None:
                path = on_prediction(i, sample, gt, pred.numpy())
                if path:
                    drawn.append(path)
            if draw_overlay is not None and i < overlays:
                labels = pred.numpy()
                drawn.append(run.overlay(i, lambda p, s=sample, g=gt, lab=labels, i=i: draw_overlay(p, i, s, g, lab)))
            matrix = matrix + one.matrix  # a new tensor: the state committed before stays as it was
            run.commit(done=i + 1, overlays=[*run.state["overlays"], *drawn], confusion=matrix)
            if on_image is not None:
                on_image(i + 1, n)
    cm.matrix.copy_(matrix)
    result = _result(cm, class_names, run.done, settings, float(run.state["seconds"]), list(run.state["overlays"]))
    if out is not None:
        write_json_atomic(out / RESULTS, result.to_dict())
    return result


class RunFolder:
    """The progress of one evaluation, in ``out/progress.json`` (``out`` ``None``: kept in memory only).

    ``state`` (``fresh`` for a new run, else what was saved; ``done`` counts the images done, in order) is
    replaced as a whole by :meth:`commit` after each image, in one assignment, so that an interrupt finds it
    either before or after that image, never half-way. Use as a context manager: leaving the block through an
    exception (Ctrl-C included) saves the state once more, then lets the exception go on."""

    def __init__(self, out: Path | None, settings: dict[str, Any], fresh: dict[str, Any], *, total: int,
                 save_every: int = 10) -> None:
        self.out, self.settings, self.total, self.save_every = out, settings, total, max(1, int(save_every))
        saved = resume(out, settings) if out is not None else {}
        self.state: dict[str, Any] = {**fresh, **saved}
        self._t0 = time.perf_counter() - float(self.state.get("seconds", 0.0))
        if out is not None and not saved:
            self.save()  # before any work: the folder is this run's from now on

    @property
    def done(self) -> int:
        return int(self.state["done"])

    def save(self) -> None:
        if self.out is not None:
            save_progress(self.out, self.settings, _jsonable(self.state))

    def commit(self, **state: Any) -> None:
        """One more image done: the state's new values (``done`` among them); saved every ``save_every``
        images and after the last."""
        new = {k: v for k, v in self.state.items() if k != _CLAIM} | state
        new["seconds"] = time.perf_counter() - self._t0
        self.state = new  # the image counts from here on, all of it at once
        if self.done % self.save_every == 0 or self.done >= self.total:
            self.save()

    def overlay(self, i: int, draw: Callable[[Path], Any]) -> str:
        """Image ``i``'s overlay: ``draw(path)`` writes a PNG at a temporary path, renamed to
        ``overlays/NNNNN.png``. The name is recorded before the file exists; a file of that name this run did
        not record is left alone (the overlay goes to ``NNNNN-2.png``, … with a warning). Returns the path."""
        if self.out is None:
            raise InvalidInputError("overlays are written in the run's folder: pass out_dir")
        folder = self.out / OVERLAYS
        claim = self.state.get(_CLAIM)
        wanted = folder / f"{i:05d}.png"
        path = wanted
        for k in range(2, 100_000):
            if not path.exists() and not path.is_symlink() or path.relative_to(self.out).as_posix() == claim:
                break
            path = folder / f"{i:05d}-{k}.png"
        else:
            raise InvalidInputError(f"{folder} holds too many files named like {wanted.name}: pass another folder")
        if path != wanted:
            warnings.warn(f"{wanted} was not written by this run and is left as it is: image {i}'s overlay is "
                          f"{path.name}", UserWarning, stacklevel=2)
        self.state = {**self.state, _CLAIM: path.relative_to(self.out).as_posix()}
        self.save()
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=folder)
        os.close(fd)
        tmp = Path(name)
        try:
            draw(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return str(path)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is None or self.out is None:
            return
        try:
            self.save()  # whatever stopped the run, the images done so far stay done
        except Exception as e:  # noqa: BLE001 - the error that stopped the run matters more
            warnings.warn(f"could not save the progress in {self.out} ({e}): a resumed run starts from the last "
                          "periodic save", UserWarning, stacklevel=2)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def resume(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The saved state of this run in ``out`` (``{}`` for a new one); another run's progress is refused."""
    path = out / PROGRESS
    if not path.exists():
        there = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []
        if there:
            hint = (f" It looks like a run interrupted before its first save by an older cliplens (only {OVERLAYS}/): "
                    "delete it yourself and start again." if there == [OVERLAYS] else "")
            raise InvalidInputError(f"{out} exists and holds other files (no {PROGRESS}): pass a new or empty folder "
                                    f"(nothing was touched).{hint}")
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
