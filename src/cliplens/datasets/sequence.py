"""What every data set shares, classification and segmentation alike: :class:`DataSequence`.

A data set is a read-only sequence: integer indexing (negative from the end), slicing and :meth:`subset` give a
subset that keeps the parent's classes; :meth:`fingerprint` hashes what identifies the samples, in order;
:meth:`describe` is one JSON record with the same keys for every kind and layout::

    kind, name, layout, root, split, num_samples, num_classes, class_names, <the kind's keys>,
    <the layout's keys>, fingerprint

(a subset adds ``subset: {of_num_samples, of_fingerprint, indices | indices_sha256}``). The two kinds,
:class:`cliplens.datasets.base.Dataset` (one label per image) and
:class:`cliplens.datasets.segmentation.SegmentationDataset` (one class mask per image), implement
:meth:`_sample` and :meth:`_fingerprint_row` and add their own keys; layouts add theirs in ``_describe``.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from cliplens.errors import InvalidInputError

__all__ = ["DataSequence", "resolve_indices", "subset_record"]

S = TypeVar("S")


def resolve_indices(indices: Iterable[int] | np.ndarray | range | slice, n: int) -> list[int]:
    """``indices`` for a sequence of ``n``: a slice, ints (negative ones from the end) or a boolean mask of
    length ``n`` -> non-negative ints, in the order given."""
    if isinstance(indices, slice):
        return list(range(n)[indices])
    arr = np.asarray(list(indices) if not isinstance(indices, (np.ndarray, range)) else indices)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise InvalidInputError(f"a boolean mask for subset() needs {n} entries, got shape {tuple(arr.shape)}")
        return np.flatnonzero(arr).tolist()
    if arr.size == 0:
        return []
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"subset() takes integer indices or a boolean mask, got {arr.dtype} values")
    flat = arr.reshape(-1)
    bad = flat[(flat < -n) | (flat >= n)]
    if bad.size:
        raise InvalidInputError(f"subset(): index {int(bad[0])} is out of range for a data set of {n} samples")
    return [int(v) + n if v < 0 else int(v) for v in flat.tolist()]


def subset_record(parent: DataSequence[Any], indices: Sequence[int]) -> dict[str, Any]:
    """What :meth:`DataSequence.describe` records about a subset: the parent's size and fingerprint, and the
    indices (their sha256 beyond 10,000)."""
    sub: dict[str, Any] = {"of_num_samples": len(parent), "of_fingerprint": parent.fingerprint()}
    if len(indices) <= 10_000:
        sub["indices"] = list(indices)
    else:
        sub["indices_sha256"] = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()
    return sub


class DataSequence(Sequence[S]):
    """The shared part of every data set (see the module docs). Subclasses implement ``__len__``,
    :meth:`_sample`, :meth:`_fingerprint_row`, :meth:`_make_subset` and, per kind, :meth:`_describe_kind`."""

    #: ``"classification"`` or ``"segmentation"`` (the registry's kinds, :mod:`cliplens.datasets.registry`)
    kind: ClassVar[str] = ""
    name: str = ""
    layout: str = ""
    class_names: list[str]
    #: the folder or file read (``None``: generated or in memory) and the part of it read
    root: str | None = None
    split: str | None = None
    #: what a sample is called in messages
    _noun: ClassVar[str] = "samples"

    # ------------------------------------------------------------------ to implement
    def __len__(self) -> int:
        raise NotImplementedError

    def _sample(self, j: int) -> S:
        raise NotImplementedError

    def _fingerprint_row(self, j: int) -> str:
        """What identifies sample ``j`` in :meth:`fingerprint` (one line)."""
        raise NotImplementedError

    def _make_subset(self, indices: list[int]) -> DataSequence[S]:
        raise NotImplementedError

    def _describe_kind(self) -> dict[str, Any]:
        """The kind's own entries of :meth:`describe`."""
        return {}

    def _describe(self) -> dict[str, Any]:
        """The layout's own entries of :meth:`describe` (files, options, …)."""
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

    def __getitem__(self, i: Any) -> Any:  # -> a sample, or a subset for a slice
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        return self._sample(self._index(i))

    def __iter__(self) -> Iterator[S]:
        for j in range(len(self)):
            yield self._sample(j)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, layout={self.layout!r}, {len(self)} {self._noun}, "
                f"{len(self.class_names)} classes)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """sha256 of what identifies every sample, in order: tells whether two data sets are the same."""
        h = hashlib.sha256()
        for j in range(len(self)):
            h.update(self._fingerprint_row(j).encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """One JSON-serialisable record, with the same keys for every kind (see the module docs); recorded in
        a store's header and next to every evaluation result."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "layout": self.layout,
            "root": self.root,
            "split": self.split,
            "num_samples": len(self),
            "num_classes": len(self.class_names),
            "class_names": list(self.class_names),
        }
        out.update(self._describe_kind())
        out.update(self._describe())
        out["fingerprint"] = self.fingerprint()
        json.dumps(out)  # fail here, not in a store or next to a result, if a loader put something odd in
        return out

    def subset(self, indices: Iterable[int] | np.ndarray | range | slice) -> DataSequence[S]:
        """The samples at ``indices`` (ints, negative ones counted from the end, or a boolean mask of length
        ``len(self)``), in that order; classes and everything else are kept. A subset of a subset indexes the
        first parent."""
        idx = resolve_indices(indices, len(self))
        parent = getattr(self, "parent", None)
        if parent is not None and isinstance(getattr(self, "indices", None), list):
            return parent._make_subset([self.indices[j] for j in idx])  # type: ignore[attr-defined]
        return self._make_subset(idx)
