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
* a folder holds one run: its settings record the image set (``image_set``: how many images, the limit, the
  split, and a sha256 of their ids in order), and a folder holding another run's progress (other model,
  method, data, settings or images) is refused, never overwritten, and so is a folder with other files and no
  progress. A run may be *extended* (a larger ``limit``, or none): its images done are the first images of the
  larger set, so the result is exactly the larger set's. A set that does not begin with the images already
  done (a smaller limit than the images done, another split, other data) is refused: its metrics could not be
  told apart from the earlier run's. The results always name the images they count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplens.core.model import ImageTextModel
from cliplens.errors import InvalidInputError
from cliplens.evaluation.protocol import SegProtocol, class_queries, predict_labels, protocol_for
from cliplens.evaluation.segmentation import ConfusionMatrix
from cliplens.jsonio import differences, read_json, write_json_atomic
from cliplens.maps.base import MapMethod, get_map
from cliplens.maps.pamr import image_refiner
from cliplens.maps.targets import Targets

__all__ = ["OVERLAYS", "PROGRESS", "RESULTS", "RunFolder", "SegEvalResult", "evaluate_segmentation", "ids_digest",
           "image_ids", "image_set", "model_record", "read_results", "resume", "save_progress"]

PROGRESS = "progress.json"
RESULTS = "results.json"
OVERLAYS = "overlays"
#: the progress key naming the overlay being drawn (recorded before the file exists)
_CLAIM = "drawing"
#: the progress key holding the sha256 of the ids of the images done, in order
_DONE_IDS = "done_ids_sha256"


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of image ids in order (one per line)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(f"{i}\n".encode())
    return h.hexdigest()


def image_ids(dataset: Any, n: int) -> list[str]:
    """The ids of the first ``n`` images of ``dataset`` (its ``ids`` where it has them: no image is read)."""
    ids = getattr(dataset, "ids", None)
    if ids is None:
        return [str(dataset[i].id) for i in range(n)]
    return [str(i) for i in list(ids)[:n]]


def image_set(dataset: Any, ids: Sequence[str], limit: int | None) -> dict[str, Any]:
    """What a run folder records of the images it counts: how many, the limit, the split, the first and last ids
    and a sha256 of every id in order."""
    return {"count": len(ids), "limit": limit, "split": getattr(dataset, "split", None),
            "first": ids[0] if ids else None, "last": ids[-1] if ids else None, "ids_sha256": ids_digest(ids)}


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
    model: ImageTextModel,
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
    check_only: bool = False,
    rank: int = 0,
    world: int = 1,
) -> SegEvalResult | None:
    """Evaluate ``method`` on ``dataset`` (a :mod:`cliplens.datasets` segmentation set) under ``protocol``
    (default: the preset named ``dataset_name``, or the data set's own ``preset``, which its loader sets from the
    layout it read, never from a folder's name). ``limit``: the first N images.

    With ``out_dir`` the run is resumable (see the module docs); ``save_every``: images between periodic
    saves (progress is also saved when the run stops, for whatever reason). ``draw_overlay(path, i, sample,
    mask, labels)`` draws image ``i``'s overlay (a PNG at ``path``) for each of the first ``overlays`` images,
    named ``out_dir/overlays/NNNNN.png`` (needs ``out_dir``). ``on_image(done, total)`` is called after each
    image (a progress bar); ``on_prediction(i, sample, mask, labels)`` with each image's prediction (a
    returned path is recorded with the overlays). ``check_only``: refuse now what the run would refuse (its
    settings, an ``out_dir`` holding another run) and return ``None``, computing and writing nothing (to check
    several runs before starting any).

    ``rank`` of ``world`` processes (``torchrun``): this process evaluates images ``rank, rank + world, …`` in its
    own resumable folder ``out_dir/rank-R-of-W``; when every process is done (a barrier), rank 0 sums their
    confusion matrices into the result over the whole set (equal to one process's: the counts are integers) and
    the others return ``None``."""
    if world > 1 and out_dir is None:
        raise InvalidInputError("several processes evaluate shares of the images in folders of their own: pass "
                                "out_dir")
    if not 0 <= rank < world:
        raise InvalidInputError(f"rank {rank} of {world} processes: need 0 <= rank < world")
    preset = dataset_name or getattr(dataset, "preset", None)
    name = getattr(dataset, "name", None) or preset
    protocol = protocol or protocol_for(preset)
    method = get_map(method)
    if not method.text_dependent:
        raise InvalidInputError(f"the method {method.name!r} ignores the text: every class would get the same map, so "
                                "every pixel the same class. Segmentation compares the classes' maps: use a "
                                "text-dependent method (ImageNet-segmentation, one foreground per image, takes "
                                "text-independent ones)")
    class_names = list(dataset.class_names)
    queries = class_queries(class_names, protocol.names, preset, protocol.queries)
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
    all_ids = image_ids(dataset, n)
    share = list(range(rank, n, world))  # this process's images (all of them for one process)
    ids = [all_ids[i] for i in share]
    settings = {
        "model": model_record(model), "method": method.describe(), "protocol": protocol.to_dict(),
        "dataset": dataset.describe() if hasattr(dataset, "describe") else {"name": name},
        "classes": class_names, "queries": queries, "images": n, "image_set": image_set(dataset, ids, limit),
        **({"share": {"rank": rank, "world": world}} if world > 1 else {}),
        "ignore_index": getattr(dataset, "ignore_index", 255),
        "background": background,
        "metrics": "one confusion matrix over the data set; IoU per class; mIoU over classes present in the ground "
                   "truth or the predictions; pixel accuracy over pixels not ignored",
    }
    cm = ConfusionMatrix(len(class_names), settings["ignore_index"])
    root = Path(out_dir).expanduser() if out_dir is not None else None
    out = root / f"rank-{rank}-of-{world}" if root is not None and world > 1 else root
    if check_only:
        if out is not None:
            resume(out, settings, ids, create=False)
        return None
    fresh = {"done": 0, "seconds": 0.0, "overlays": [], "confusion": cm.matrix.tolist()}
    with RunFolder(out, settings, fresh, ids=ids, save_every=save_every) as run:
        matrix = torch.tensor(run.state["confusion"], dtype=torch.int64)
        if tuple(matrix.shape) != tuple(cm.matrix.shape):
            raise InvalidInputError(f"{out}: its saved confusion matrix has the wrong shape; pass another folder")
        for j in range(run.done, len(share)):
            i = share[j]
            sample = dataset[i]
            maps = method(model, [sample.image], targets, fit=protocol.fit, size=protocol.size,
                          window=protocol.window, stride=protocol.stride, normalization="raw", batch_size=8)
            item = maps.images[0]
            refine = None if not protocol.pamr else image_refiner(
                model, sample.image, fit=protocol.fit, size=protocol.size, window=protocol.window,
                image_size=item.image_size, iterations=protocol.pamr, dilations=protocol.pamr_dilations)
            pred = predict_labels(item, owner, logit_scale=protocol.logit_scale,
                                  prob_threshold=protocol.prob_threshold, background=background, refine=refine,
                                  area_threshold=protocol.area_threshold)
            pred = method.correct_labels(item, pred)  # the method's own last step on labels (CorrCLIP's)
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
            run.commit(done=j + 1, overlays=[*run.state["overlays"], *drawn], confusion=matrix)
            if on_image is not None:
                on_image(j + 1, len(share))
    cm.matrix.copy_(matrix)
    if world > 1:
        return _merge_shares(root, world, rank, cm, class_names, settings)  # type: ignore[arg-type]
    result = _result(cm, class_names, run.done, settings, float(run.state["seconds"]), list(run.state["overlays"]))
    if out is not None:
        write_json_atomic(out / RESULTS, result.to_dict())
    return result


def _merge_shares(root: Path, world: int, rank: int, cm: ConfusionMatrix, class_names: list[str],
                  settings: dict[str, Any]) -> SegEvalResult | None:
    """After every process's share is done: rank 0 sums the shares' confusion matrices (read from their folders)
    into the result over the whole set, written to ``root/results.json``; the other ranks return ``None``."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    if rank != 0:
        return None
    total = torch.zeros_like(cm.matrix)
    seconds, overlays, done = 0.0, [], 0
    for r in range(world):
        state = read_json(root / f"rank-{r}-of-{world}" / PROGRESS)["state"]
        total += torch.tensor(state["confusion"], dtype=torch.int64)
        seconds = max(seconds, float(state["seconds"]))
        overlays += list(state["overlays"])
        done += int(state["done"])
    merged = ConfusionMatrix(len(class_names), settings["ignore_index"])
    merged.matrix.copy_(total)
    whole = {k: v for k, v in settings.items() if k != "share"}
    whole["image_set"] = {**settings["image_set"], "shares": world}
    result = _result(merged, class_names, done, whole, seconds, sorted(overlays))
    write_json_atomic(root / RESULTS, result.to_dict())
    return result


class RunFolder:
    """The progress of one evaluation over the images ``ids`` (in order), in ``out/progress.json`` (``out``
    ``None``: kept in memory only).

    ``settings`` (with its ``image_set``, see :func:`image_set`) says what the run is; a folder holding another
    run is refused (:func:`resume`). ``state`` (``fresh`` for a new run, else what was saved; ``done`` counts the
    images done, in order) is replaced as a whole by :meth:`commit` after each image, in one assignment, so that
    an interrupt finds it either before or after that image, never half-way. Use as a context manager: leaving
    the block through an exception (Ctrl-C included) saves the state once more, then lets the exception go on."""

    def __init__(self, out: Path | None, settings: dict[str, Any], fresh: dict[str, Any], *, ids: Sequence[str],
                 save_every: int = 10) -> None:
        self.out, self.settings, self.save_every = out, settings, max(1, int(save_every))
        self.ids, self.total = list(ids), len(ids)
        saved, before = resume(out, settings, self.ids) if out is not None else ({}, None)
        self.state: dict[str, Any] = {**fresh, **saved}
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._t0 = time.perf_counter() - float(self.state.get("seconds", 0.0))
        if out is not None and (not saved or before != settings):
            self.save()  # before any work: the folder is this run's (and records its image set) from now on

    def _done_ids(self, done: int) -> str:
        """sha256 of the ids of the first ``done`` images (advanced incrementally: images are done in order)."""
        if done < self._hashed:
            return ids_digest(self.ids[:done])
        while self._hashed < done:
            self._hash.update(f"{self.ids[self._hashed]}\n".encode())
            self._hashed += 1
        return self._hash.hexdigest()

    @property
    def done(self) -> int:
        return int(self.state["done"])

    def save(self) -> None:
        if self.out is not None:
            state = {**self.state, _DONE_IDS: self._done_ids(self.done)}
            save_progress(self.out, self.settings, _jsonable(state))

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


def resume(out: Path, settings: dict[str, Any], ids: Sequence[str] | None = None, *, create: bool = True
           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The saved state of this run in ``out`` and the settings saved with it (``({}, None)`` for a new run,
    whose folder is made unless ``create`` is false).

    Another run's progress is refused: other settings, or images that are not this run's (``ids``, the images
    asked, in order: the images done must be the first of them; a run is extended, never cut back)."""
    path = out / PROGRESS
    if not path.exists():
        there = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []
        if there:
            hint = (f" It looks like a run interrupted before its first save by an older cliplens (only {OVERLAYS}/): "
                    "delete it yourself and start again." if there == [OVERLAYS] else "")
            raise InvalidInputError(f"{out} exists and holds other files (no {PROGRESS}): pass a new or empty folder "
                                    f"(nothing was touched).{hint}")
        if create:
            out.mkdir(parents=True, exist_ok=True)
        return {}, None
    try:
        state = read_json(path)
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{path} is not readable progress ({e}); pass another folder (nothing was "
                                "deleted)") from None
    if not (isinstance(state, dict) and isinstance(state.get("settings", {}), dict)
            and isinstance(state.get("state", {}), dict)):
        raise InvalidInputError(f"{path} is not readable progress (not an object with 'settings' and 'state'); "
                                "pass another folder (nothing was deleted)")
    before = state.get("settings", {})
    diffs = differences(_comparable(before), _comparable(settings))
    if diffs:
        raise InvalidInputError(f"{out} holds an evaluation with another model, method, data set or settings; it is "
                                f"not resumed or overwritten. What differs: {'; '.join(diffs[:6])}. Pass another "
                                "folder (--out), or start a fresh numbered run folder inside it (--new-run); or "
                                "delete that one yourself if you no longer need it.")
    saved = dict(state.get("state", {}))
    if ids is not None:
        _check_images(out, before, saved, settings, ids)
    return saved, before


def _describe_set(image_set: dict[str, Any] | None, count: Any) -> str:
    """``"4 images (the first 4, split val)"``."""
    if not isinstance(image_set, dict):
        return f"{count} image{'' if count == 1 else 's'}"
    n, limit, split = image_set.get("count"), image_set.get("limit"), image_set.get("split")
    return (f"{n} image{'' if n == 1 else 's'} ({'the first ' + str(limit) if limit is not None else 'no limit'}"
            f"{', split ' + str(split) if split is not None else ''})")


def _check_images(out: Path, before: dict[str, Any], saved: dict[str, Any], settings: dict[str, Any],
                  ids: Sequence[str]) -> None:
    """Refuse a saved run whose images done are not the first of ``ids`` (see :func:`resume`)."""
    done = int(saved.get("done", 0) or 0)
    was, now = before.get("image_set"), settings.get("image_set")
    asked = _describe_set(now, len(ids))
    if done > len(ids):
        why = (f"its {done} images done are more than the {len(ids)} asked, and a run's metrics cannot be taken back "
               "to fewer images")
    elif _DONE_IDS in saved:
        if saved[_DONE_IDS] == ids_digest(ids[:done]):
            return
        why = f"its {done} images done are not the first {done} of the images asked (another order, split or data)"
    elif isinstance(was, dict):  # saved before any image was done
        if done == 0 or was.get("ids_sha256") == (now or {}).get("ids_sha256"):
            return
        why = "its images are not the images asked"
    else:  # progress of an older cliplens: only the count was recorded
        if before.get("images") == len(ids):
            return
        why = f"it recorded {before.get('images')} images and not which: it cannot be extended or cut back"
    raise InvalidInputError(
        f"{out} holds a run over another set of images, so it is not resumed or reported as this one: it is over "
        f"{_describe_set(was, before.get('images'))}, {done} done; this command asks for {asked}, and {why}. Pass "
        "another folder (--out), or start a fresh numbered run folder inside it (--new-run); to go on with that "
        "run, ask for its images again (the same --limit or a larger one, which extends it).")


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in ("images", "image_set")} | {
        "model": {"fingerprint": settings.get("model", {}).get("fingerprint")}}


def save_progress(out: Path, settings: dict[str, Any], state: dict[str, Any]) -> None:
    """Replace the saved progress (atomically)."""
    write_json_atomic(out / PROGRESS, {"settings": settings, "state": state})


def read_results(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The results a finished run wrote."""
    return json.loads((Path(out) / RESULTS).read_text())
