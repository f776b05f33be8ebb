"""Open a data set again from what :meth:`Dataset.describe` recorded (e.g. in a store's header).

:func:`reopen_dataset` rebuilds the data set a store was made from without the user naming it again:

* the toy world from its ``n``, ``seed``, ``stream``, ``label``, ``count``, ``image_size`` and constraints
  (rendered again, so always possible);
* folder layouts (``imagefolder``, ``images``, ``waterbirds``, ``imagenet``) from their ``root`` and ``split``;
* CSV/TSV lists from their ``file``, ``root``, path/label/split columns and classes;
* a :class:`~cliplens.datasets.base.Subset` of any of these from its parent and indices.

What comes back is checked with :func:`check_same_dataset` against the recorded fingerprint (every
sample's id and label, in order), so a folder that changed since is refused, never silently used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cliplens.datasets.base import Dataset
from cliplens.errors import InvalidInputError

__all__ = ["check_same_dataset", "reopen_dataset"]

_HOW = "pass the data set itself (the spec or folder given to 'cliplens store build', e.g. --data)"


def _cannot(description: Mapping[str, Any], why: str) -> InvalidInputError:
    what = description.get("layout") or "unknown"
    return InvalidInputError(f"the data set the store was made from ({what!r} layout, {description.get('name', '?')!r}) "
                             f"cannot be reopened: {why}; {_HOW}")


def _path(description: Mapping[str, Any], key: str) -> str:
    value = description.get(key)
    if not value:
        raise _cannot(description, f"its description records no {key!r}")
    if not os.path.exists(value):
        raise _cannot(description, f"{value} does not exist any more (moved or deleted?)")
    return str(value)


def _toy(d: Mapping[str, Any]) -> Dataset:
    from cliplens.datasets.toy import ToyDataset

    count = d.get("count")
    options: dict[str, Any] = {
        "n": int(d["n"]), "seed": int(d["seed"]), "stream": d["stream"], "label": d["label"],
        "count": tuple(count) if isinstance(count, list) else count, "image_size": int(d.get("image_size", 64)),
        "name": d.get("name"),
    }
    for key, value in (d.get("constraints") or {}).items():
        options[key] = tuple(value) if isinstance(value, list) else value
    return ToyDataset(**options)


def _csv(d: Mapping[str, Any]) -> Dataset:
    from cliplens.datasets.csv import AUTO, load_csv

    classes = d.get("classes")
    if classes == "list":  # given as a list of names: those are the recorded class names
        classes = list(d.get("class_names") or [])
    elif classes not in (None, "imagenet") and not os.path.exists(classes):
        raise _cannot(d, f"its class list {classes} does not exist any more")
    how = d.get("labels")
    return load_csv(_path(d, "file"), path_column=d.get("path_column") or AUTO,
                    label_column=d.get("label_column"), classes=classes,
                    label_type=how if how in ("index", "name") else "auto", split=d.get("split"),
                    split_column=d.get("split_column") or "split", root=_path(d, "root"), name=d.get("name"))


def _folder(d: Mapping[str, Any]) -> Dataset:
    from cliplens.datasets import LAYOUTS

    return LAYOUTS[d["layout"]](_path(d, "root"), split=d.get("split"), name=d.get("name"))


def _imagenet(d: Mapping[str, Any]) -> Dataset:
    from cliplens.datasets.imagenet import load_imagenet

    images = d.get("images") if d.get("format") == "LOC_val_solution" else None
    return load_imagenet(_path(d, "root"), split=d.get("split"), images=images, name=d.get("name"))


_REOPEN = {"toy": _toy, "csv": _csv, "imagefolder": _folder, "images": _folder, "waterbirds": _folder,
           "imagenet": _imagenet}


def reopen_dataset(description: Mapping[str, Any]) -> Dataset:
    """The data set that ``description`` (a :meth:`Dataset.describe` dict, e.g. ``store.header["dataset"]``)
    describes, opened again and checked against its fingerprint.

    Raises:
        InvalidInputError: a layout that cannot be reopened (a data set object of the user's own), files or
            folders that moved, or a data set that is no longer the same (its fingerprint differs); the
            message says to pass the data set itself.
    """
    d = dict(description)
    subset = d.pop("subset", None)
    layout = d.get("layout")
    if layout not in _REOPEN:
        raise _cannot(d, f"cliplens does not know how to open the {layout!r} layout by itself")
    if subset is not None and "indices" not in subset:
        raise _cannot(d, f"it is a subset of {subset.get('of_num_samples')} images whose indices were not recorded "
                         "(too many)")
    try:
        dataset = _REOPEN[layout](d)
    except InvalidInputError as e:
        if "cannot be reopened" in str(e):
            raise
        raise _cannot(d, str(e).rstrip(".")) from None
    except (KeyError, TypeError, ValueError) as e:
        raise _cannot(d, f"its description is incomplete ({type(e).__name__}: {e})") from None
    if subset is not None:
        check_same_dataset(dataset, {"fingerprint": subset.get("of_fingerprint"), "layout": layout,
                                     "name": d.get("name"), "num_samples": subset.get("of_num_samples")},
                           "the data set reopened (the whole set the store's subset was taken from)")
        dataset = dataset.subset([int(i) for i in subset["indices"]])
    check_same_dataset(dataset, description)
    return dataset


def check_same_dataset(dataset: Any, description: Mapping[str, Any], source: str = "the data set reopened") -> None:
    """Raise :class:`InvalidInputError` unless ``dataset`` has the recorded fingerprint (the same ids and
    labels in the same order). ``source`` names the data set in the message (e.g. ``"--data toy:n=10"``)."""
    want = description.get("fingerprint")
    if not want:
        return  # nothing recorded to compare with (a data set object of the user's own)
    try:
        got = dataset.fingerprint()
    except AttributeError:
        got = dataset.describe().get("fingerprint") if hasattr(dataset, "describe") else None
    if got != want:
        n = description.get("num_samples", description.get("n", "?"))
        raise InvalidInputError(
            f"{source} is not the one the store was made from: its images' ids and labels differ (fingerprint "
            f"{str(got)[:12]}… instead of {str(want)[:12]}…; the store's data set is {description.get('layout')!r} "
            f"{description.get('name', '')!r} with {n} images). Pass the same data set (spec, folder, split and "
            "options) that was given to 'cliplens store build'")
