"""Reading a store back, memory-mapped: memory stays flat however many images it holds.

``Store(path)`` opens a complete store (``manifest.json``), checking it without reading its data (every file the
manifest lists is there with the size it records, every safetensors header parses and fits its file; see
:mod:`cliplens.store.integrity`): a damaged store is refused with the file, what is wrong and the command that
repairs it, never read half-way. Every field (:data:`cliplens.store.schema.FIELDS`)
is a :class:`Field`: a list of ``numpy.memmap`` views, one per chunk file, read lazily; iterate over blocks
(``store.blocks(["heads", "scale"])``) or take rows (``store.field("heads")[idx]``). The weight-derived
matrices (``store.projections``) and the zero-shot classifier come with it, so no analysis re-runs the
model.

In the joint space, each head's direct effect on image i (the decomposition's per-head term, with
``ln_post``'s statistics frozen and its mean and bias shared by the rule of
:mod:`cliplens.decomposition.shares`) is::

    store.head_terms(images=range(1000), layers=[-4, -3, -2, -1])   # [images, layers, heads, embed_dim]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.core.plan import resolve_layer_indices
from cliplens.decomposition.algebra import HeadWeights, JointMap
from cliplens.decomposition.shares import num_sites, site_share
from cliplens.errors import InvalidInputError
from cliplens.store.integrity import (
    CHECKSUM,
    Damage,
    StoreDamagedError,
    check_layout,
    damaged_message,
    repair_command,
)
from cliplens.store.schema import FORMAT, FORMAT_1, HEADER, MANIFEST, PROJECTIONS, read_json

__all__ = ["Field", "Store"]


def _json(path: Path) -> dict[str, Any] | str:
    """A JSON file's contents, or why it cannot be read."""
    try:
        data = read_json(path)
    except OSError as e:
        return str(e.strerror or e)
    except ValueError as e:
        return f"{type(e).__name__}: {e}"[:120]
    return data if isinstance(data, dict) else "not a JSON object"

def _from_format_1(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A chunk of the first store format (CLS pooling, no readout axis, ``mean``/``std`` at CLS) as today's fields:
    the large fields get a readout axis of one (views of the memory-mapped data), ``scale = 1/std``, ``wsum = 1``."""
    out = {}
    for name, a in arrays.items():
        if name in ("heads", "cls_heads", "attn_out", "mlp_out", "embed_term", "spatial"):
            out[name] = a.reshape(a.shape[0], 1, *a.shape[1:])
        elif name == "std":
            out["scale"] = (1.0 / np.asarray(a, dtype=np.float64)).astype(np.float32)[:, None]
            out["wsum"] = np.ones((a.shape[0], 1), dtype=np.float32)
        elif name == "mean":
            out["mean"] = np.asarray(a)[:, None]
        else:
            out[name] = a
    return out


class Field:
    """One field of every image, chunk after chunk (read lazily from the memory-mapped files)."""

    def __init__(self, name: str, parts: list[np.ndarray]) -> None:
        self.name = name
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.parts[0].shape[1:]) if self.parts else (0,)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows as an in-memory array (a copy): an int, a slice or an array of row numbers."""
        if isinstance(index, (int, np.integer)):
            idx = np.array([int(index)])
            return self.take(idx)[0]
        if isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index, dtype=np.int64)
        return self.take(idx)

    def take(self, rows: np.ndarray) -> np.ndarray:
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise InvalidInputError(f"rows out of range for {len(self)} images")
        rows = np.where(rows < 0, rows + len(self), rows)
        chunk = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), *self.parts[0].shape[1:]), dtype=self.parts[0].dtype)
        for c in np.unique(chunk):
            sel = chunk == c
            out[sel] = self.parts[c][rows[sel] - self.offsets[c]]
        return out


class Store:
    """A complete store, memory-mapped (see the module docs)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open the store at ``path``, checking what can be checked without reading data (see
        :mod:`cliplens.store.integrity`): a damaged file is refused, named with the command that repairs it."""
        self.path = Path(path).expanduser()
        if not (self.path / HEADER).is_file():
            if (self.path / MANIFEST).is_file():
                self._damaged(HEADER, "it is missing", header=False)
            raise InvalidInputError(f"{self.path} is not a cliplens store (no {HEADER}); build one with "
                                    "'cliplens store build'")
        header = _json(self.path / HEADER)
        if not isinstance(header, dict):
            self._damaged(HEADER, f"it cannot be read as JSON ({header})", header=False)
        self.header: dict[str, Any] = header
        if self.header.get("format") not in (FORMAT, FORMAT_1):
            raise InvalidInputError(f"{self.path}: unknown store format {self.header.get('format')!r}")
        if not (self.path / MANIFEST).is_file():
            raise InvalidInputError(f"{self.path} is an unfinished store (no {MANIFEST}): run the command that built "
                                    f"it again to finish it: {repair_command(self.path, self.header)}")
        manifest = _json(self.path / MANIFEST)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("chunks"), list) \
                or not all(isinstance(c, dict) and "file" in c for c in manifest["chunks"]):
            self._damaged(MANIFEST, "it cannot be read" + (f" as JSON ({manifest})" if isinstance(manifest, str) else
                                                         " (not a store manifest)"))
        self.manifest: dict[str, Any] = manifest
        rec = self.manifest.get("header")
        if isinstance(rec, dict) and isinstance(rec.get("bytes"), int):
            size = (self.path / HEADER).stat().st_size
            if size != rec["bytes"]:
                self._damaged(HEADER, f"it has {size:,} bytes where the manifest records {rec['bytes']:,} (changed "
                                      "since the store was built)")
        self._arrays: dict[str, list[np.ndarray]] = {}
        self.ids: list[str] = []
        self._attributes: list[dict[str, Any]] = []
        for chunk in self.manifest["chunks"]:
            layout = self._layout(str(chunk["file"]), chunk)
            if "images" in chunk and layout.rows() != chunk["images"]:
                self._damaged(chunk["file"], f"it holds {layout.rows()} images where the manifest records "
                                             f"{chunk['images']}")
            if layout.rows() == 0:
                continue
            arrays = layout.memmaps()
            if self.header.get("format") == FORMAT_1:
                arrays = _from_format_1(arrays)
            for name, arr in arrays.items():
                self._arrays.setdefault(name, []).append(arr)
            try:
                self.ids += json.loads(layout.metadata.get("ids", "[]"))
                self._attributes += json.loads(layout.metadata.get("attributes", "[]"))
            except ValueError:
                self._damaged(chunk["file"], "its metadata (ids, attributes) cannot be read")
        rec = self.manifest.get("projections")
        proj = self._layout(PROJECTIONS, rec if isinstance(rec, dict) else {})
        self.projections = {k: torch.from_numpy(np.array(v)) for k, v in proj.memmaps().items()}
        self._cache: dict[str, Any] = {}

    def _layout(self, name: str, record: dict[str, Any]) -> Any:
        try:
            return check_layout(self.path / name, record.get("bytes"))
        except Damage as d:
            self._damaged(name, d.reason)

    def _damaged(self, name: str, reason: str, header: bool = True) -> Any:
        manifest = getattr(self, "manifest", None) or _json(self.path / MANIFEST)
        head = getattr(self, "header", None) if header else None
        raise StoreDamagedError(damaged_message(self.path, name, reason, head,
                                                manifest if isinstance(manifest, dict) else None))

    @property
    def checksums(self) -> bool:
        """Whether the store records checksums (stores built before cliplens wrote them do not)."""
        return any(c.get(CHECKSUM) for c in self.manifest["chunks"])

    # ---- what it holds ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.manifest["images"])

    def __repr__(self) -> str:
        m = self.header["model"]
        return (f"Store({str(self.path)!r}, images={len(self)}, model={m['name']!r}, weights={m['weights']!r}, "
                f"dtype={self.settings['dtype']}, classes={len(self.class_names)})")

    @property
    def settings(self) -> dict[str, Any]:
        return self.header["settings"]

    @property
    def class_names(self) -> list[str]:
        return list(self.header["class_names"])

    @property
    def shape(self) -> dict[str, int]:
        return dict(self.header["shape"])

    @property
    def fields(self) -> list[str]:
        return sorted(self._arrays)

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("skipped", []))

    def empty_message(self) -> str:
        """One paragraph: the store holds no images, and why (the images skipped as unreadable)."""
        skipped = self.skipped
        n = self.header.get("images", len(skipped))
        if not skipped:
            return (f"the store {self.path} holds no images (its manifest records none, and none skipped): build it "
                    "again from a data set with images, into a new folder")
        shown = "; ".join(f"{s.get('id', s.get('index'))}: {s.get('reason', '?')}" for s in skipped[:3])
        more = f"; and {len(skipped) - 3} more (listed in its {MANIFEST})" if len(skipped) > 3 else ""
        return (f"the store {self.path} holds no images: all {n} images of its data set were skipped as unreadable "
                f"when it was built (with --skip-bad) — {shown}{more}. There is nothing to analyse: replace those "
                "files with readable images and build the store again into a new folder (without --skip-bad a build "
                "stops at the first unreadable image and says why)")

    def field(self, name: str) -> Field:
        if not self._arrays:
            raise InvalidInputError(self.empty_message())
        if name not in self._arrays:
            raise InvalidInputError(f"the store has no field {name!r}; it has {', '.join(self.fields)}"
                                    + (" (spatial terms: build with --spatial-layers)" if name == "spatial" else ""))
        return Field(name, self._arrays[name])

    @property
    def labels(self) -> np.ndarray:
        """``[images]`` class indices (from the data set)."""
        return self.field("label")[:]

    @property
    def indices(self) -> np.ndarray:
        """``[images]`` each row's index in the data set."""
        return self.field("index")[:]

    def attributes(self, name: str) -> list[Any]:
        """One attribute of every image (e.g. ``"place"`` for Waterbirds, ``"shape"`` for the toy world)."""
        if self._attributes and name not in self._attributes[0]:
            raise InvalidInputError(f"no attribute {name!r}; the store's images have "
                                    f"{', '.join(sorted(self._attributes[0])) or 'none'}")
        return [a[name] for a in self._attributes]

    @property
    def classifier(self) -> Tensor:
        """``[classes, E]`` the zero-shot classifier of the class names (``settings['templates']``)."""
        return self.projections["classifier"]

    def blocks(self, names: Iterable[str], *, dtype: np.dtype | None = np.float32) -> Iterator[dict[str, np.ndarray]]:
        """Chunk after chunk, the named fields (converted to ``dtype``): memory stays one chunk deep."""
        names = list(names)
        for n in names:
            self.field(n)
        for c in range(len(self._arrays[names[0]])):
            yield {n: (np.asarray(self._arrays[n][c], dtype=dtype) if dtype is not None and
                       self._arrays[n][c].dtype.kind == "f" else np.asarray(self._arrays[n][c])) for n in names}

    # ---- the joint space ------------------------------------------------------------------------
    @property
    def joint(self) -> JointMap:
        """The frozen head's map to the joint space (:class:`~cliplens.decomposition.algebra.JointMap`), from the
        store's projections (float64 for exact reference computations: ``joint_map(torch.float64)``)."""
        return self.joint_map(torch.float32)

    def joint_map(self, dtype: torch.dtype) -> JointMap:
        key = f"joint:{dtype}"
        if key not in self._cache:
            self._cache[key] = JointMap(HeadWeights.from_tensors(self.projections, self.shape["heads"], dtype))
        return self._cache[key]

    @property
    def num_readouts(self) -> int:
        return int(self.shape.get("readouts", 1))

    def head_terms(self, images: Sequence[int] | np.ndarray | slice | None = None,
                   layers: Iterable[int] | int | None = None, *, normalized: bool = True,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """``[images, layers, heads, E]``: each head's direct effect on each image's embedding (its share of the
        out-projection bias and of the pooling head's constant included, as in
        :meth:`cliplens.decomposition.Decomposition.per_head`).

        ``normalized`` divides by the embedding's norm (the terms of the unit-norm embedding, as the paper's
        analyses use). ``layers``: indices (negatives count from the end) or ``None`` for all. ``dtype``: the
        precision of the computation and the result (``torch.float64`` for reference computations).
        """
        L, H = self.shape["layers"], self.shape["heads"]
        lay = list(range(L)) if layers is None else resolve_layer_indices(layers, L)
        rows = self.rows(images)
        z = torch.from_numpy(self.field("heads").take(rows)[:, :, lay]).to(dtype)  # [n, R, l, H, dh]
        scale, mean, wsum = (torch.from_numpy(self.field(f).take(rows)).to(dtype) for f in ("scale", "mean", "wsum"))
        jm = self.joint_map(dtype)
        terms = jm.heads(z, lay, scale)  # [n, l, H, E]
        const = jm.head_bias(lay, scale, wsum) + site_share(L) * jm.total_constant(scale, mean)[:, None]  # [n, l, E]
        terms = terms + const[:, :, None, :] / H
        if normalized:
            emb = torch.from_numpy(self.field("embedding").take(rows)).to(dtype)
            terms = terms / emb.norm(dim=-1)[:, None, None, None]
        return terms

    def shift_terms(self, images: Sequence[int] | np.ndarray | slice | None = None,
                    layers: Iterable[int] | int | None = None, *, normalized: bool = True,
                    dtype: torch.dtype = torch.float32) -> Tensor:
        """``[images, layers, E]``: each layer's sub-LayerNorm shift (towers with a sub-LN over the concatenated
        heads, EVA02; :meth:`cliplens.decomposition.Decomposition.shift_terms`): with the layer's
        :meth:`head_terms` it makes the layer's attention term. Zeros for the other towers."""
        L = self.shape["layers"]
        lay = list(range(L)) if layers is None else resolve_layer_indices(layers, L)
        rows = self.rows(images)
        scale = torch.from_numpy(self.field("scale").take(rows)).to(dtype)
        jm = self.joint_map(dtype)
        if "shift" not in self.fields:
            return torch.zeros(len(rows), len(lay), jm.w.readout_out.shape[-1], dtype=dtype)
        terms = jm.residual(torch.from_numpy(self.field("shift").take(rows)[:, :, lay]).to(dtype), scale)
        if normalized:
            emb = torch.from_numpy(self.field("embedding").take(rows)).to(dtype)
            terms = terms / emb.norm(dim=-1)[:, None, None]
        return terms

    def rows(self, images: Sequence[int] | np.ndarray | slice | None = None) -> np.ndarray:
        """Row numbers for ``images`` (a slice, a list of rows, or ``None``: all)."""
        if isinstance(images, slice):
            return np.arange(len(self))[images]
        return np.arange(len(self)) if images is None else np.asarray(images, dtype=np.int64)

    @property
    def num_sites(self) -> int:
        return num_sites(self.shape["layers"])
