"""What every data-set loader yields: :class:`Sample` and :class:`Dataset`.

A data set is a read-only sequence of samples. Labels index ``dataset.class_names`` and always come
from the data itself (a folder's name, a CSV column, a metadata file, a scene's factors), never from
the order in which files were listed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cliplens.errors import InvalidInputError

__all__ = ["IMAGE_EXTENSIONS", "AttributeValue", "Dataset", "ListDataset", "Sample", "Subset", "is_hidden",
           "is_image_file", "read_table"]

#: file name endings read as images (compared case-insensitively)
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
)

AttributeValue = int | str | float


def is_hidden(name: str) -> bool:
    """``.DS_Store``, ``._photo.jpg`` (macOS resource forks), ``.git``, …"""
    return name.startswith(".")


def is_image_file(name: str) -> bool:
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    Attributes:
        image: what cliplens's preprocessing takes: a file path (most loaders), a PIL image or a
            uint8 ``[H, W, 3]`` array (the toy world renders on access).
        label: index into the data set's ``class_names``; ``-1`` if unlabelled.
        id: stable and unique within the data set (e.g. the path relative to the data set's root).
        attributes: everything else known about the image (Waterbirds' ``place`` and ``group``, a
            CSV's other columns, the toy world's scene factors).
    """

    image: str | os.PathLike | Image.Image | np.ndarray
    label: int
    id: str
    attributes: dict[str, AttributeValue] = field(default_factory=dict)

    def load(self, mode: str = "RGB") -> Image.Image:
        """The image as a PIL image (files are read with :func:`cliplens.images.load_image`)."""
        if isinstance(self.image, Image.Image):
            return self.image.convert(mode) if mode and self.image.mode != mode else self.image
        if isinstance(self.image, np.ndarray):
            img = Image.fromarray(self.image)
            return img.convert(mode) if mode and img.mode != mode else img
        from cliplens.images import load_image

        return load_image(self.image, mode=mode)


class Dataset(Sequence[Sample]):
    """A read-only, indexable sequence of :class:`Sample`.

    Subclasses implement ``__len__``, ``_meta(i) -> (label, id, attributes)`` and ``_image(i)`` (for
    ``0 <= i < len``), and ``_describe()``; everything else is shared. ``labels``, ``ids`` and
    :meth:`attribute` never touch the images (cheap even where images are rendered on access).

    Attributes:
        name: a short name (``"waterbirds"``, a folder's or file's name, …).
        layout: the loader (``"imagefolder"``, ``"csv"``, ``"waterbirds"``, ``"imagenet"``, ``"toy"``, …).
        class_names: ``class_names[label]`` names a sample's class (may hold duplicates: CLIP's
            ImageNet names have two "missile" and two "sunglasses").
        attribute_names: the keys of every sample's ``attributes``.
        attribute_values: names of the values of integer-coded attributes, e.g. Waterbirds'
            ``{"place": ["land", "water"], "group": ["landbird on land", …]}``.
    """

    name: str = ""
    layout: str = ""
    class_names: list[str]
    attribute_names: list[str]
    attribute_values: dict[str, list[str]]
    #: one text per class that a zero-shot classifier should use instead of filling templates with the
    #: class names (the toy world's model knows only its own words); ``None``: the class names and templates
    class_prompts: list[str] | None = None

    # ------------------------------------------------------------------ to implement
    def __len__(self) -> int:
        raise NotImplementedError

    def _meta(self, i: int) -> tuple[int, str, dict[str, AttributeValue]]:
        raise NotImplementedError

    def _image(self, i: int) -> Any:
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        """Layout-specific entries of :meth:`describe` (root, split, options)."""
        return {}

    # ------------------------------------------------------------------ shared
    def _index(self, i: Any) -> int:
        try:
            j = operator.index(i)
        except TypeError:
            raise TypeError(f"data set indices must be integers or slices, not {type(i).__name__}") from None
        n = len(self)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"index {i} is out of range for a data set of {n} samples")
        return j

    def __getitem__(self, i: Any) -> Any:  # -> Sample, or a Dataset for a slice
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        j = self._index(i)
        label, id_, attributes = self._meta(j)
        return Sample(self._image(j), label, id_, attributes)

    def __iter__(self) -> Iterator[Sample]:
        for j in range(len(self)):
            label, id_, attributes = self._meta(j)
            yield Sample(self._image(j), label, id_, attributes)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, layout={self.layout!r}, {len(self)} samples, "
                f"{len(self.class_names)} classes)")

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label, int64 ``[N]`` (no image is read)."""
        return np.asarray([self._meta(j)[0] for j in range(len(self))], dtype=np.int64)

    @property
    def ids(self) -> list[str]:
        return [self._meta(j)[1] for j in range(len(self))]

    def attribute(self, name: str) -> list[AttributeValue]:
        """One attribute of every sample (no image is read)."""
        if name not in self.attribute_names:
            raise InvalidInputError(f"data set {self.name!r} has no attribute {name!r}; its attributes are "
                                    f"{self.attribute_names}")
        return [self._meta(j)[2][name] for j in range(len(self))]

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name (every class, zeros included; unlabelled under ``None``)."""
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.class_names)) if len(self) else \
            np.zeros(len(self.class_names), dtype=np.int64)
        out: dict[str, int] = {}
        for name, c in zip(self.class_names, counts.tolist(), strict=False):
            out[name] = out.get(name, 0) + int(c)
        return out

    def fingerprint(self) -> str:
        """sha256 of every sample's id and label (in order): tells whether two data sets are the same."""
        h = hashlib.sha256()
        for j in range(len(self)):
            label, id_, _ = self._meta(j)
            h.update(f"{id_}\t{label}\n".encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary: layout, name, sizes, classes, attributes, the loader's options and
        a fingerprint (recorded in a decomposition store's manifest)."""
        labels = self.labels
        out: dict[str, Any] = {
            "name": self.name,
            "layout": self.layout,
            "num_samples": len(self),
            "num_classes": len(self.class_names),
            "num_unlabelled": int((labels < 0).sum()),
            "class_names": list(self.class_names),
            "attribute_names": list(self.attribute_names),
        }
        if self.attribute_values:
            out["attribute_values"] = {k: list(v) for k, v in self.attribute_values.items()}
        out.update(self._describe())
        out["fingerprint"] = self.fingerprint()
        json.dumps(out)  # fail here, not in a store, if a loader put something odd in
        return out

    def subset(self, indices: Iterable[int] | np.ndarray | range | slice) -> Dataset:
        """The samples at ``indices`` (ints, negative ones counted from the end, or a boolean mask of
        length ``len(self)``), in that order; labels, class names and attributes are kept."""
        if isinstance(indices, slice):
            idx = list(range(len(self))[indices])
        else:
            arr = np.asarray(list(indices) if not isinstance(indices, (np.ndarray, range)) else indices)
            if arr.dtype == bool:
                if arr.shape != (len(self),):
                    raise InvalidInputError(f"a boolean mask for subset() needs {len(self)} entries, got shape "
                                            f"{tuple(arr.shape)}")
                idx = np.flatnonzero(arr).tolist()
            elif arr.size == 0:
                idx = []
            elif not np.issubdtype(arr.dtype, np.integer):
                raise InvalidInputError(f"subset() takes integer indices or a boolean mask, got {arr.dtype} values")
            else:
                n = len(self)
                flat = arr.reshape(-1)
                bad = flat[(flat < -n) | (flat >= n)]
                if bad.size:
                    raise InvalidInputError(f"subset(): index {int(bad[0])} is out of range for a data set of {n} "
                                            "samples")
                idx = [int(v) + n if v < 0 else int(v) for v in flat.tolist()]
        if isinstance(self, Subset):
            return Subset(self.parent, [self.indices[j] for j in idx])
        return Subset(self, idx)


class Subset(Dataset):
    """Some samples of another data set (see :meth:`Dataset.subset`)."""

    def __init__(self, parent: Dataset, indices: list[int]) -> None:
        self.parent = parent
        self.indices = list(indices)
        self.name = parent.name
        self.layout = parent.layout
        self.class_names = parent.class_names
        self.attribute_names = parent.attribute_names
        self.attribute_values = parent.attribute_values
        self.class_prompts = parent.class_prompts

    def __len__(self) -> int:
        return len(self.indices)

    def _meta(self, i: int) -> tuple[int, str, dict[str, AttributeValue]]:
        return self.parent._meta(self.indices[i])

    def _image(self, i: int) -> Any:
        return self.parent._image(self.indices[i])

    def __getattr__(self, name: str) -> Any:
        # layout-specific helpers of the parent (e.g. ImageNet's ``wnids``, the toy world's ``scene``)
        # need parent indices; only plain data attributes are passed through
        if name.startswith("_") or name == "parent":
            raise AttributeError(name)
        value = getattr(self.parent, name)
        if callable(value):
            raise AttributeError(f"{name!r} of {type(self.parent).__name__} takes indices of the whole data set: "
                                 f"call it on .parent with .indices[i]")
        return value

    def _describe(self) -> dict[str, Any]:
        sub: dict[str, Any] = {"of_num_samples": len(self.parent), "of_fingerprint": self.parent.fingerprint()}
        if len(self.indices) <= 10_000:
            sub["indices"] = list(self.indices)
        else:
            sub["indices_sha256"] = hashlib.sha256(np.asarray(self.indices, dtype=np.int64).tobytes()).hexdigest()
        return {**self.parent._describe(), "subset": sub}


class ListDataset(Dataset):
    """A data set whose samples are known up front (files on disk): the base of the file loaders."""

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        name: str,
        layout: str,
        class_names: Sequence[str],
        attribute_names: Sequence[str] = (),
        attribute_values: dict[str, list[str]] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.name = name
        self.layout = layout
        self.class_names = list(class_names)
        self.attribute_names = list(attribute_names)
        self.attribute_values = dict(attribute_values or {})
        self._info = dict(info or {})
        ids = [s.id for s in self.samples]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InvalidInputError(f"data set {name!r}: the id {dup!r} is used by more than one sample (ids must be "
                                    "unique)")

    def __len__(self) -> int:
        return len(self.samples)

    def _meta(self, i: int) -> tuple[int, str, dict[str, AttributeValue]]:
        s = self.samples[i]
        return s.label, s.id, s.attributes

    def _image(self, i: int) -> Any:
        return self.samples[i].image

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        return self.samples[self._index(i)]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self.samples))

    def _describe(self) -> dict[str, Any]:
        return dict(self._info)


# --------------------------------------------------------------------------- tables
def _sniff_delimiter(header: str, suffix: str) -> str:
    counts = {d: header.count(d) for d in (",", "\t", ";", "|")}
    if suffix == ".tsv" and counts["\t"]:
        return "\t"
    best = max(counts, key=lambda d: counts[d])  # ties: the first of , \t ; |
    if counts[best]:
        return best
    return "\t" if suffix == ".tsv" else ","


def read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    """``(header, [(line number, fields)], delimiter)`` of a CSV/TSV file (blank lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path} is not a UTF-8 text file ({e.reason} at byte {e.start}); a data set "
                                "list must be a CSV or TSV text file") from None
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise InvalidInputError(f"{path} is empty: a data set list needs a header line (e.g. path,label) and one "
                                "line per image")
    delimiter = _sniff_delimiter(first, path.suffix.lower())
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for fields in reader:
        if not fields or all(not f.strip() for f in fields):
            continue
        if header is None:
            header = [h.strip() for h in fields]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise InvalidInputError(f"{path}: the header names the column(s) {dup} more than once")
            continue
        if len(fields) != len(header):
            raise InvalidInputError(f"{path}, line {reader.line_num}: {len(fields)} fields where the header has "
                                    f"{len(header)} ({'tab' if delimiter == chr(9) else repr(delimiter)}-separated)")
        rows.append((reader.line_num, [f.strip() for f in fields]))
    assert header is not None
    if not rows:
        raise InvalidInputError(f"{path} has a header but no rows: list one image per line")
    return header, rows, delimiter
