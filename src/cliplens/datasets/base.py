"""What every data-set loader yields: :class:`Sample` and :class:`Dataset`.

A data set is a read-only sequence of samples. Labels index ``dataset.class_names`` and always come
from the data itself (a folder's name, a CSV column, a metadata file, a scene's factors), never from
the order in which files were listed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from cliplens.datasets.sequence import DataSequence, subset_record
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


class Dataset(DataSequence[Sample]):
    """A read-only, indexable sequence of :class:`Sample` (one label per image; shared behaviour in
    :class:`~cliplens.datasets.sequence.DataSequence`).

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

    kind: ClassVar[str] = "classification"
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

    # ------------------------------------------------------------------ the kind's part
    def _sample(self, j: int) -> Sample:
        label, id_, attributes = self._meta(j)
        return Sample(self._image(j), label, id_, attributes)

    def _fingerprint_row(self, j: int) -> str:
        label, id_, _ = self._meta(j)
        return f"{id_}\t{label}\n"

    def _make_subset(self, indices: list[int]) -> Subset:
        return Subset(self, indices)

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

    def _describe_kind(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_unlabelled": int((self.labels < 0).sum()),
                               "attribute_names": list(self.attribute_names)}
        if self.attribute_values:
            out["attribute_values"] = {k: list(v) for k, v in self.attribute_values.items()}
        return out

    def subset(self, indices: Iterable[int] | np.ndarray | range | slice) -> Dataset:
        """The samples at ``indices`` (ints, negative ones counted from the end, or a boolean mask of
        length ``len(self)``), in that order; labels, class names and attributes are kept."""
        return super().subset(indices)  # type: ignore[return-value]


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
        self.root = parent.root
        self.split = parent.split

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
        return {**self.parent._describe(), "subset": subset_record(self.parent, self.indices)}


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
        self.root = self._info.get("root")
        self.split = self._info.get("split")
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
