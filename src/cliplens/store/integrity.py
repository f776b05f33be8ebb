"""How a store checks itself: a checksum inside every safetensors file, sizes and checksums in the manifest,
cheap checks on every open, full checks on resume and with ``cliplens store info STORE --verify``.

Where the checksums live, and why there:

* every safetensors file of a store (each chunk, ``projections.safetensors``) carries in its own metadata, under
  ``sha256``, the SHA-256 of its contents: a canonical JSON of its tensors' names, dtypes and shapes and of its
  other metadata (the images' ids and attributes, the images skipped), then every tensor's bytes, tensors in
  name order (:func:`tensors_digest`, :func:`file_digest`). It is computed from the tensors in memory before
  the file is written, so a chunk can be checked on its own the moment it exists: a resumed build checks the
  chunks a killed run wrote, before any manifest records them. The file is written to a temporary name and
  renamed (:func:`save_checked`), not forced to disk: a file that a power cut leaves short or garbled fails its
  checksum when the build is run again, and is computed again;
* ``manifest.json`` (written last) records each chunk's size and checksum, the projections' likewise, and
  the header's size and the SHA-256 of its bytes, with its *identity* (the hash of the parts a resume
  compares, :func:`header_identity`; the projections record it too) so that a damaged header can be
  rewritten by a build command that makes the same store, and the build command itself;
* the manifest is the root: it is checked by parsing it and by every file agreeing with it.

Three levels of checking:

* on every open (:class:`cliplens.store.Store`, :func:`check_layout`): the header and the manifest parse; every
  file the manifest lists exists with the size it records; every safetensors header parses and its tensors
  tile its data section exactly, so no read can fall outside a file. No data is read (a full checksum of a
  3.6 GiB store takes seconds; these checks take milliseconds, see the README);
* on resume (``cliplens store build`` again): every existing chunk and the projections are checked in full;
  a damaged one is computed again, with a warning naming it and why;
* ``cliplens store info STORE --verify`` (:func:`verify_store`): every file in full, each damaged one named.

Stores written before checksums existed still open: what can be checked (structure, sizes where recorded)
is, and :func:`verify_store` says that their checksums are absent.

A damaged store is refused with :class:`StoreDamagedError`: the file, what is wrong with it, and the command
that repairs it (:func:`repair_command`: the build command recorded in the header or the manifest, else one
described from the header).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from cliplens.errors import CliplensError, InvalidInputError
from cliplens.store.schema import FORMAT, FORMAT_1, HEADER, MANIFEST, PROJECTIONS, chunk_name, read_json

__all__ = ["CHECKSUM", "Damage", "Layout", "StoreDamagedError", "StoreWriteError", "Verification", "check_file",
           "check_layout", "damaged_message", "file_digest", "header_identity", "repair_command", "save_checked",
           "tensors_digest", "verify_store"]

#: the metadata key (in every safetensors file) and the manifest key of a file's checksum
CHECKSUM = "sha256"
#: safetensors dtype -> (numpy dtype, bytes per element)
DTYPES: dict[str, Any] = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_TORCH = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.int32: "I32",
          torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_BLOCK = 1 << 24  # bytes read at a time when checksumming a file
_MAX_HEADER = 1 << 28  # a safetensors header longer than this is damaged (a chunk's is at most a few MiB)


class StoreDamagedError(CliplensError):
    """A store with a damaged or missing file (the message names it and the command that repairs it)."""


class StoreWriteError(CliplensError):
    """A store's file could not be written (a full disk, a folder that became read-only, …)."""


class Damage(Exception):
    """Internal: why one file is damaged (``reason``, a phrase)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---- one safetensors file ------------------------------------------------------------------------------

@dataclass
class Layout:
    """A safetensors file's header, checked against the file's size."""

    path: Path
    size: int  # bytes on disk
    data_start: int  # 8 + the header's length
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]]  # name -> (dtype, shape, begin, end) in the data
    metadata: dict[str, str]

    @property
    def checksum(self) -> str | None:
        return self.metadata.get(CHECKSUM)

    def rows(self, name: str = "index") -> int:
        return self.tensors[name][1][0] if name in self.tensors and self.tensors[name][1] else 0

    def memmaps(self) -> dict[str, np.ndarray]:
        """Every tensor as a read-only memmap (nothing is read until used)."""
        out: dict[str, np.ndarray] = {}
        for name, (dtype, shape, begin, end) in self.tensors.items():
            if end == begin:
                out[name] = np.zeros(shape, dtype=DTYPES[dtype])
            else:
                out[name] = np.memmap(self.path, dtype=DTYPES[dtype], mode="r", offset=self.data_start + begin,
                                      shape=shape)
        return out


def check_layout(path: Path, expected_size: int | None = None) -> Layout:
    """Read ``path``'s safetensors header and check that its tensors tile the rest of the file exactly (and that
    the file has ``expected_size`` bytes, when given): raises :class:`Damage` otherwise. Reads the header only."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise Damage("it is missing") from None
    except OSError as e:
        raise Damage(f"it cannot be read ({e.strerror or e})") from None
    if expected_size is not None and not isinstance(expected_size, int):
        raise Damage(f"the manifest's record of its size is malformed ({expected_size!r})")
    if expected_size is not None and size != expected_size:
        raise Damage(f"it has {size:,} bytes where the manifest records {expected_size:,} "
                     f"({'truncated' if size < expected_size else 'changed'} since it was written)")
    if size < 8:
        raise Damage(f"it has {size} bytes, too few for a safetensors file (truncated)")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size - 8, _MAX_HEADER):
                raise Damage(f"its header claims {n:,} bytes but the file has {size:,} (truncated or overwritten)")
            raw = f.read(n)
    except OSError as e:
        raise Damage(f"it cannot be read ({e.strerror or e})") from None
    try:
        head = json.loads(raw)
        if not isinstance(head, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise Damage(f"its safetensors header is not valid JSON ({type(e).__name__})") from None
    meta = head.pop("__metadata__", None) or {}
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    try:
        if not isinstance(meta, dict):
            raise ValueError("metadata")
        for name, info in head.items():
            dtype, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
            if dtype not in DTYPES or any(s < 0 for s in shape) or not 0 <= int(begin) <= int(end):
                raise ValueError(name)
            if int(end) - int(begin) != math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize:
                raise ValueError(name)
            tensors[name] = (dtype, shape, int(begin), int(end))
    except (KeyError, TypeError, ValueError):
        raise Damage("its safetensors header is malformed") from None
    data = size - 8 - n
    pos = 0
    for _, _, begin, end in sorted(tensors.values(), key=lambda t: (t[2], t[3])):
        if begin != pos:
            raise Damage("its safetensors header is malformed (tensors overlap or leave gaps)")
        pos = end
    if pos != data:
        raise Damage(f"its tensors need {pos:,} bytes of data but the file holds {data:,} "
                     f"({'truncated' if data < pos else 'extra bytes at the end'})")
    return Layout(path, size, 8 + n, tensors, {str(k): str(v) for k, v in meta.items()})


def _canonical(tensors: Mapping[str, tuple[str, tuple[int, ...]]], metadata: Mapping[str, str]) -> bytes:
    meta = {k: v for k, v in metadata.items() if k != CHECKSUM}
    desc = {k: [d, list(s)] for k, (d, s) in tensors.items()}
    return json.dumps({"metadata": meta, "tensors": desc}, sort_keys=True, separators=(",", ":")).encode()


def tensors_digest(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> str:
    """The checksum of a safetensors file about to be written with these tensors and metadata (see the module
    docs); equals :func:`file_digest` of the file."""
    h = hashlib.sha256(_canonical({k: (_TORCH[v.dtype], tuple(v.shape)) for k, v in tensors.items()}, metadata))
    for name in sorted(tensors):
        h.update(tensors[name].detach().cpu().contiguous().numpy().reshape(-1).view(np.uint8))
    return h.hexdigest()


def file_digest(layout: Layout) -> str:
    """The checksum of a file's contents as they are on disk (reads every byte once)."""
    h = hashlib.sha256(_canonical({k: (d, s) for k, (d, s, _, _) in layout.tensors.items()}, layout.metadata))
    with open(layout.path, "rb") as f:
        for name in sorted(layout.tensors):
            _, _, begin, end = layout.tensors[name]
            f.seek(layout.data_start + begin)
            left = end - begin
            while left > 0:
                block = f.read(min(_BLOCK, left))
                if not block:
                    raise Damage("it ends before its data does (truncated)")
                h.update(block)
                left -= len(block)
    return h.hexdigest()


def check_file(path: Path, *, expected_size: int | None = None, expected_checksum: str | None = None,
               full: bool = True) -> Layout:
    """:func:`check_layout`, then (``full``) the contents against the file's own checksum and the one the
    manifest records (``expected_checksum``). Raises :class:`Damage`; a file without a checksum (written before
    checksums existed) passes what can be checked."""
    layout = check_layout(path, expected_size)
    own = layout.checksum
    if expected_checksum is not None and own is not None and own != expected_checksum:
        raise Damage("its checksum differs from the one the manifest records (replaced since the manifest was written)")
    if full and (own is not None or expected_checksum is not None):
        actual = file_digest(layout)
        if actual != (own or expected_checksum):
            raise Damage("its contents do not match its checksum (bytes changed on disk)")
    return layout


def save_checked(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> int:
    """Write ``tensors`` to ``path`` as safetensors with their checksum in the metadata: to a temporary file, then
    renamed (a file that exists was whole when written). Returns its size."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**metadata, CHECKSUM: tensors_digest(tensors, metadata)}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)  # no fsync: a file a crash left short or garbled fails its checksum on resume
        return path.stat().st_size
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreWriteError(f"cannot write {path} ({e.strerror or e}); the files already finished are kept: "
                              "free some space or fix the folder's permissions and run the same command again to "
                              "resume") from None


# ---- the header ------------------------------------------------------------------------------------

def comparable(h: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a header that must match to resume or reuse a store (KeyError/TypeError if it lacks them)."""
    return {k: h[k] for k in ("format", "preprocess", "settings", "dataset", "class_names", "images")} | {
        "model": {"fingerprint": h["model"]["fingerprint"], "name": h["model"]["name"]}}


def header_identity(h: Mapping[str, Any]) -> str:
    """A hash of what identifies a store (:func:`comparable`): equal for two builds that make the same store."""
    return hashlib.sha256(json.dumps(comparable(h), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        d = read_json(path)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def repair_command(path: Path, header: Mapping[str, Any] | None = None, manifest: Mapping[str, Any] | None = None
                   ) -> str:
    """The ``cliplens store build`` command that (re)builds the store at ``path``: the one recorded when it was
    built (``--out`` pointed at ``path``), else one described from the header."""
    path = Path(path).expanduser().absolute()
    for source in (header, manifest):
        rec = (source or {}).get("command")
        if isinstance(rec, dict) and isinstance(rec.get("argv"), list):
            argv = [str(a) for a in rec["argv"]]
            if "--out" in argv[:-1]:
                argv[argv.index("--out") + 1] = str(path)
            cmd = shlex.join(["cliplens", *argv])
            cwd = rec.get("cwd")
            return f"cd {shlex.quote(cwd)} && {cmd}" if isinstance(cwd, str) and cwd != os.getcwd() else cmd
    if not header:
        return f"cliplens store build DATA --model MODEL ... --out {shlex.quote(str(path))} (the command that made it)"
    try:
        m, s, d = header["model"], header["settings"], header.get("dataset", {})
        args = ["--model", str(m["name"])]
        if m.get("weights") not in (None, "default", m["name"]):
            args += ["--pretrained", str(m["weights"])]
        args += ["--out", str(path), "--dtype", str(s["dtype"])]
        if s.get("spatial_layers"):
            args += ["--spatial-layers", ",".join(map(str, s["spatial_layers"]))]
        args += ["--chunk-size", str(s["chunk_size"]), "--batch-size", str(s["batch_size"]),
                 "--templates", str(s["templates"])]
    except (KeyError, TypeError):
        return f"cliplens store build DATA --model MODEL ... --out {shlex.quote(str(path))} (the command that made it)"
    where = f", root {d['root']}" if isinstance(d, dict) and d.get("root") else ""
    what = (f"{d.get('layout', '?')} data set {d.get('name', '?')!r} of {header.get('images', '?')} images{where}"
            if isinstance(d, dict) else "its data set")
    return f"cliplens store build DATA {shlex.join(args)} (DATA: the {what})"


def damaged_message(store: Path, file: str, reason: str, header: Mapping[str, Any] | None = None,
                    manifest: Mapping[str, Any] | None = None) -> str:
    """One paragraph: which file of the store is damaged, why, and the command that repairs it."""
    store = Path(store).expanduser()
    return (f"the store {store} is damaged: {file} — {reason}. Nothing was read from it. Repair it by running the "
            f"command that built it again — {repair_command(store, header, manifest)} — which checks every file "
            f"and computes only the damaged ones again ('cliplens store info {shlex.quote(str(store))} --verify' "
            "lists every damaged file).")


# ---- a whole store -------------------------------------------------------------------------------------

@dataclass
class Verification:
    """What :func:`verify_store` found."""

    path: Path
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    checked: list[str] = field(default_factory=list)  # files whose contents were checked in full
    unchecked: list[str] = field(default_factory=list)  # files without a checksum (structure and size only)
    bytes: int = 0
    seconds: float = 0.0
    command: str = ""

    @property
    def ok(self) -> bool:
        return not self.damaged

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "damaged": [{"file": f, "reason": r} for f, r in self.damaged],
                "checked": self.checked, "without_checksum": self.unchecked, "bytes": self.bytes,
                "seconds": self.seconds, "repair": None if self.ok else self.command}


def verify_store(path: str | os.PathLike[str]) -> Verification:
    """Check every file of the store at ``path`` in full (every checksum): works on a store too damaged to open."""
    t0 = time.perf_counter()
    root = Path(path).expanduser()
    v = Verification(root)
    if not (root / HEADER).exists() and not (root / MANIFEST).exists():
        raise InvalidInputError(f"{root} is not a cliplens store (no {HEADER}, no {MANIFEST}); give the folder "
                                "passed to 'cliplens store build --out'")
    header, manifest = _read(root / HEADER), _read(root / MANIFEST)
    v.command = repair_command(root, header, manifest)
    rec = manifest.get("header") if manifest else None
    if header is None:
        v.damaged.append((HEADER, "it is missing" if not (root / HEADER).exists() else "it cannot be read as JSON"))
    elif header.get("format") not in (FORMAT, FORMAT_1):
        v.damaged.append((HEADER, f"it records an unknown format {header.get('format')!r}"))
    elif isinstance(rec, dict) and rec.get(CHECKSUM):
        raw = (root / HEADER).read_bytes()
        if hashlib.sha256(raw).hexdigest() != rec[CHECKSUM]:
            v.damaged.append((HEADER, "it does not match the checksum the manifest records (changed since)"))
        else:
            v.checked.append(HEADER)
        v.bytes += len(raw)
    elif manifest is not None:  # a manifest without the header's checksum: built before they were recorded
        v.unchecked.append(HEADER)
    chunks: list[tuple[str, dict[str, Any]]] = []
    if manifest is None or not isinstance(manifest.get("chunks"), list):
        v.damaged.append((MANIFEST, "it is missing (the build did not finish)" if not (root / MANIFEST).exists()
                          else "it cannot be read"))
        if header is not None:  # the chunks a finished build would have
            try:
                n, size = int(header["images"]), int(header["settings"]["chunk_size"])
                chunks = [(chunk_name(c), {}) for c in range((n + size - 1) // size)]
            except (KeyError, TypeError, ValueError):
                pass
    else:
        chunks = [(str(c.get("file")), c) for c in manifest["chunks"] if isinstance(c, dict)]
    proj = manifest.get("projections") if manifest else None
    for name, rec in [(PROJECTIONS, proj if isinstance(proj, dict) else {}), *chunks]:
        try:
            layout = check_file(root / name, expected_size=rec.get("bytes"), expected_checksum=rec.get(CHECKSUM))
        except Damage as d:
            v.damaged.append((name, d.reason))
            continue
        v.bytes += layout.size
        if "images" in rec and name != PROJECTIONS and layout.rows() != rec["images"]:
            v.damaged.append((name, f"it holds {layout.rows()} images where the manifest records {rec['images']}"))
        elif layout.checksum is None and rec.get(CHECKSUM) is None:
            v.unchecked.append(name)
        else:
            v.checked.append(name)
    v.seconds = time.perf_counter() - t0
    return v
