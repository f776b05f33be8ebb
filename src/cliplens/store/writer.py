"""Building a store: every image of a data set decomposed once, in chunks, resumable, over several processes.

``build_store(model, dataset, out_dir)`` (``cliplens store build`` on the command line). Chunk ``c`` is the
data set's images ``c·S .. (c+1)·S − 1``, run in fixed batches, written to a temporary file and renamed:
killed at any moment, the same call resumes and loses at most the chunk in flight, and the finished store
equals an uninterrupted run's (bit for bit in float32 on one machine). A complete store is reused, not
recomputed. A folder holding a store of another model or other settings, or anything that is not a store,
is refused — nothing of a user's is ever deleted.

A store checks itself (:mod:`cliplens.store.integrity`): every file carries its checksum, and a build run again
checks every file already there in full — a chunk or a projection file that was truncated or changed on disk
is computed again (a warning names it and why), a damaged header is rewritten when the manifest or the
projections show that this build makes the same store, the manifest is always written anew — and the finished
store is opened once as every reader will, so a build never reports complete a store that cannot be read.

The zero-shot classifier (classes × templates prompts through the text tower; 80,000 for ImageNet with the 80
templates) is computed once per store, by rank 0, and never again while ``projections.safetensors`` is intact;
with ``progress`` its prompt count is said before it starts, and a bar shows its progress.

Several processes: run under ``torchrun --nproc_per_node N -m cliplens store build …``; each rank takes
the chunks ``c ≡ rank (mod N)`` and writes its own files; rank 0 writes the manifest once all are done
(``gloo`` barrier, so CPU-only machines work).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from cliplens.core.model import ImageTextModel
from cliplens.core.view import VisionView
from cliplens.decomposition.algebra import FrozenSubNorm, HeadWeights
from cliplens.decomposition.recording import decompose, read_layer
from cliplens.errors import ImageLoadError, InvalidInputError
from cliplens.images.config import PreprocessConfig
from cliplens.images.io import DEFAULT_MAX_PIXELS
from cliplens.images.preprocess import Preprocessor
from cliplens.progress import progress_bar, stderr_console
from cliplens.store.integrity import (
    CHECKSUM,
    Damage,
    StoreDamagedError,
    StoreWriteError,
    check_file,
    check_layout,
    comparable,
    header_identity,
    save_checked,
)
from cliplens.store.reader import Store
from cliplens.store.schema import (
    FORMAT,
    HEADER,
    LARGE,
    MANIFEST,
    PROJECTIONS,
    StoreSettings,
    chunk_name,
    differences,
    read_json,
    write_json_atomic,
)
from cliplens.text.templates import TEMPLATE_SETS
from cliplens.text.zeroshot import zero_shot_classifier

__all__ = ["BuildResult", "build_store", "image_terms"]

DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class BuildResult:
    """What :func:`build_store` did."""

    path: Path
    images: int
    chunks_written: list[int] = field(default_factory=list)
    chunks_reused: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False
    repaired: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}: found damaged, made again
    classifier_prompts: int = 0  # prompts embedded for the zero-shot classifier by this call (0: reused)


# ---- what is stored per image --------------------------------------------------------------------

@torch.inference_mode()
def image_terms(view: VisionView, pixels: Tensor, spatial_layers: Sequence[int] = (),
                neuron_layers: Sequence[int] = ()) -> dict[str, Tensor]:
    """One decomposition -> every stored field for a batch (see :data:`cliplens.store.schema.FIELDS`): the
    non-spatial :func:`~cliplens.decomposition.recording.decompose` of every layer, and, through observer hooks
    on the same forward, the CLS→CLS part of each head (CLS pooling) and the per-source-token terms of the
    spatial layers (read out by the same rule, :func:`~cliplens.decomposition.recording.read_heads`); with
    ``neuron_layers``, the neurons' second-order factors (:meth:`cliplens.decomposition.neurons.SecondOrder.factors`)
    from the same forward."""
    L = view.num_layers
    cls_only = view.head.reads_cls_only
    taps: dict[str, list[Tensor]] = {}

    def keep(t: Tensor, name: str) -> None:
        taps.setdefault(name, []).append(t)

    names = [f"blocks.{layer}.{tap}" for layer in spatial_layers
             for tap in (("attn.cls_contrib",) if cls_only else ("attn.pattern", "attn.v"))]
    if cls_only:  # α(CLS→CLS)·v_CLS: the CLS row of each pattern and v at CLS
        names += [f"blocks.{i}.{tap}" for i in range(L) for tap in ("attn.cls_pattern", "attn.v")]
    lens = None
    if neuron_layers:
        from cliplens.decomposition.neurons import SecondOrder

        lens = SecondOrder(view, neuron_layers)
        names += [n for n in lens.names() if n != "final"]
    dec = decompose(view, pixels, spatial=False, hooks={n: keep for n in dict.fromkeys(names)})
    w = dec.readout.weights
    ro = dec.readout
    terms = {"heads": dec.heads, "attn_out": dec.attn_out, "mlp_out": dec.mlp_out, "embed_term": dec.embed_term,
             "scale": ro.scale, "mean": ro.mean, "wsum": w.sum(-1), "embedding": dec.embedding}
    if not view.head.affine:
        terms["nonlinear"] = dec.nonlinear
    if dec.has_shift:
        terms["shift"] = dec.shift
    if cls_only:
        terms["cls_heads"] = torch.stack([_cls_to_cls(view, taps, i) for i in range(L)], 1)[:, None]
    if spatial_layers:
        terms["spatial"] = torch.stack([read_layer(view, taps, layer, w, cls_only, True)[0]
                                        for layer in spatial_layers], 2)
    if lens is not None:
        cache = {n: taps[n][-1] for n in lens.names() if n != "final"}
        cache["final"] = dec.final
        factors = lens.factors(cache)
        terms["neuron_weights"] = torch.stack([factors[k][0] for k in lens.layers], 1)
        terms["neuron_const"] = torch.stack([factors[k][1] for k in lens.layers], 1)
    return {k: v.float().cpu() for k, v in terms.items()}


def _cls_to_cls(view: VisionView, taps: dict[str, list[Tensor]], layer: int) -> Tensor:
    """``[B, H, dh]``: α(CLS→CLS)·v_CLS of one layer's heads (through the frozen sub-LN where the block has one)."""
    row, v = taps[f"blocks.{layer}.attn.cls_pattern"][-1], taps[f"blocks.{layer}.attn.v"][-1]  # [B, H, N], [B, N, H, dh]
    own = row[:, :, 0, None] * v[:, 0]
    blk = view.blocks[layer]
    if blk.attn_norm is None:
        return own
    frozen = FrozenSubNorm.at(blk, torch.einsum("bhn,bnhj->bhj", row, v)[:, None])
    return frozen.heads(own * frozen.inv_sd[:, :1, None])


@torch.no_grad()
def classifier_texts(dataset: Any, templates: str) -> tuple[list[str], list[str]]:
    """What the store's zero-shot classifier embeds: ``(names, templates)``. ``"auto"`` takes the data set's
    own prompts (one per class, e.g. the toy world's) where it has them, else the 80 ImageNet templates."""
    prompts = getattr(dataset, "class_prompts", None)
    if templates == "auto":
        if prompts:
            return list(prompts), ["{}"]
        templates = "imagenet"
    return list(dataset.class_names), list(TEMPLATE_SETS[templates])


def projections(model: ImageTextModel, dataset: Any, templates: str, progress: bool = False) -> dict[str, Tensor]:
    """The weight-derived matrices analyses need without the model (see :mod:`cliplens.store.schema`): the pooling
    head's and the out-projections' (:class:`~cliplens.decomposition.algebra.HeadWeights`) and the classifier."""
    tensors = {k: v.detach().float().cpu() for k, v in HeadWeights.from_view(model.vision).tensors().items()}
    names, temps = classifier_texts(dataset, templates)
    tensors["classifier"] = zero_shot_classifier(model, names, temps, progress=progress).float().cpu()
    return tensors


# ---- reading images in worker processes -----------------------------------------------------------

class _Images(TorchDataset):
    """The images of one chunk, preprocessed (in DataLoader workers); unreadable ones come back as errors."""

    def __init__(self, dataset: Any, indices: Sequence[int], config: PreprocessConfig, max_pixels: int) -> None:
        self.dataset, self.indices, self.config, self.max_pixels = dataset, list(indices), config, max_pixels
        self._pre: Preprocessor | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, tuple[str, str], tuple[int, str, dict[str, Any]]]:
        """``(index, pixels or None, (source, reason) of an error, (label, id, attributes))``: the sample is read
        once, here (a toy scene is rendered once)."""
        if self._pre is None:
            self._pre = Preprocessor(self.config, max_pixels=self.max_pixels)
        index = self.indices[i]
        sample = self.dataset[index]
        meta = (int(sample.label), str(sample.id), dict(sample.attributes))
        try:
            return index, self._pre.process_one(sample.image)[0], ("", ""), meta
        except ImageLoadError as e:
            return index, None, (e.source or sample.id, e.reason), meta


def _collate(batch: list[Any]) -> list[Any]:
    return batch


# ---- the header -------------------------------------------------------------------------------------

def header(model: ImageTextModel, dataset: Any, settings: StoreSettings, command: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """What identifies a store: model, preprocessing, settings, data set; the checksum kind its files carry; and
    the command that built it (``{"argv": [...], "cwd": ...}``, for the message that says how to repair it)."""
    view = model.vision
    head = {
        "format": FORMAT,
        "model": {**model.describe(), "fingerprint": model.fingerprint()},
        "preprocess": model.preprocess_config.to_dict(),
        "settings": settings.to_dict(),
        "dataset": dataset.describe(),
        "class_names": list(dataset.class_names),
        "classifier": dict(zip(("names", "templates"), classifier_texts(dataset, settings.templates), strict=True)),
        "attribute_names": list(getattr(dataset, "attribute_names", [])),
        "images": len(dataset),
        "shape": {"layers": view.num_layers, "heads": view.num_heads, "head_dim": view.head_dim,
                  "width": view.width, "embed_dim": view.embed_dim, "tokens": view.num_tokens(),
                  "readouts": view.head.num_readouts, "prefix_tokens": view.num_prefix_tokens},
        "pooling": view.head.describe(),
        "checksums": CHECKSUM,
    }
    if command:
        head["command"] = dict(command)
    return head


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        write_json_atomic(path, data)
    except OSError as e:
        raise StoreWriteError(f"cannot write {path} ({e.strerror or e}); the files already finished are kept: free "
                              "some space or fix the folder's permissions and run the same command again to "
                              "resume") from None


def _recorded_identity(out: Path) -> str | None:
    """The identity of the header the store was built with, from the manifest or the projections (to rewrite a
    damaged header only for a build that makes the same store)."""
    try:
        rec = read_json(out / MANIFEST).get("header", {})
        if isinstance(rec, dict) and rec.get("identity"):
            return str(rec["identity"])
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return check_layout(out / PROJECTIONS).metadata.get("header")
    except Damage:
        return None


def _prepare(out: Path, head: dict[str, Any], rank: int, result: BuildResult) -> bool:
    """Create or check the store folder and its header (rank 0 writes it); returns whether it was already there."""
    path = out / HEADER
    if path.exists():
        try:
            old = read_json(path)
            comparable(old)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            why = f"{type(e).__name__}: {e}"[:100]
            if _recorded_identity(out) == header_identity(head):
                if rank == 0:
                    _repaired(result, HEADER, why, "it is written again from this command, which makes the same "
                                                   "store (as the store's manifest or projections record)")
                    _write_json(path, head)
                return True
            raise InvalidInputError(
                f"{path} is damaged ({why}), and nothing in {out} shows that this command makes the same store, so "
                "it is not rewritten: run the command that built the store (same data set, model and settings), or "
                "pass another --out (nothing was deleted)") from None
        diffs = differences(comparable(old), comparable(head))
        if diffs:
            raise InvalidInputError(
                f"{out} holds a store made with another model, data set or settings; it is not resumed or "
                f"overwritten. What differs: {'; '.join(diffs[:6])}{' …' if len(diffs) > 6 else ''}. Pass another "
                "--out, or delete that folder yourself if you no longer need it."
            )
        return True
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file, not a folder: pass a new or empty folder for the store")
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise InvalidInputError(f"{out} exists and is not a cliplens store (no {HEADER}); pass a new or empty folder "
                                "for --out (nothing was touched)")
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _write_json(path, head)  # first: a folder with a header is a store, its other files made or checked
    return False


def _ensure_projections(out: Path, model: ImageTextModel, dataset: Any, settings: StoreSettings, head: dict[str, Any],
                        result: BuildResult, progress: bool) -> None:
    """Rank 0: check ``projections.safetensors`` in full, or compute it (again) — the classifier with it."""
    path = out / PROJECTIONS
    if path.exists():
        try:
            check_file(path)
            return
        except Damage as d:
            _repaired(result, PROJECTIONS, d.reason)
    for stale in out.glob(PROJECTIONS + ".tmp*"):
        stale.unlink(missing_ok=True)
    names, temps = classifier_texts(dataset, settings.templates)
    result.classifier_prompts = len(names) * len(temps)
    if progress:
        stderr_console().print(
            f"zero-shot classifier of the store: {len(names):,} classes × {len(temps)} template"
            f"{'s' if len(temps) != 1 else ''} = {result.classifier_prompts:,} prompts through the text tower, once "
            "per store (kept in projections.safetensors, reused on resume; --templates chooses fewer)")
    tensors = projections(model, dataset, settings.templates, progress=progress)
    save_checked(path, tensors, {"header": header_identity(head)})


def _check_manifest(out: Path, result: BuildResult) -> None:
    """Rank 0: a manifest there that cannot be read is said (it is written again at the end in any case)."""
    path = out / MANIFEST
    if path.exists():
        try:
            if not isinstance(read_json(path).get("chunks"), list):
                raise ValueError("not a store manifest")
        except (OSError, ValueError, AttributeError) as e:
            _repaired(result, MANIFEST, f"{type(e).__name__}: {e}"[:100], "it is written again")


def _repaired(result: BuildResult, name: str, reason: str, what: str = "it is computed again") -> None:
    result.repaired.append({"file": name, "reason": reason})
    warnings.warn(f"{name} in {result.path} was damaged ({reason}){'; ' + what if what else ''}", stacklevel=3)


# ---- the chunks -------------------------------------------------------------------------------------

def _chunk_rows(model: ImageTextModel, loader: DataLoader, settings: StoreSettings, skip_bad: bool, dataset: Any,
                bar: Any, task: Any) -> tuple[dict[str, Tensor], list[dict[str, Any]], list[int], list[tuple]]:
    rows: dict[str, list[Tensor]] = {}
    skipped: list[dict[str, Any]] = []
    kept: list[int] = []
    metas: list[tuple] = []
    dtype = DTYPES[settings.dtype]
    for batch in loader:
        good = [(i, px, meta) for i, px, _, meta in batch if px is not None]
        for i, px, (source, reason), meta in batch:
            if px is None:
                sample_id = meta[1]
                if not skip_bad:
                    raise ImageLoadError(f"cannot load image {source!r} (data set index {i}, id {sample_id!r}): {reason}. "
                                         "Finished chunks are kept; replace the file with a readable image and run the "
                                         "same command again to resume (removing it changes the data set, which a "
                                         "resumed store refuses), or pass --skip-bad to skip unreadable images (recorded in "
                                         "the manifest)", source=source, reason=reason)
                skipped.append({"index": i, "id": sample_id, "reason": reason})
        if good:
            px = torch.stack([p for _, p, _ in good]).to(model.device, model.dtype)
            terms = image_terms(model.vision, px, settings.spatial_layers, settings.neuron_layers)
            for k, v in terms.items():
                rows.setdefault(k, []).append(v.to(dtype) if k in LARGE else v)
            kept += [i for i, _, _ in good]
            metas += [meta for _, _, meta in good]
        if bar is not None:
            bar.advance(task, len(batch))
    out = {k: torch.cat(v) for k, v in rows.items()}
    return out, skipped, kept, metas


def _write_chunk(out: Path, c: int, rows: dict[str, Tensor], kept: list[int], metas: list[tuple],
                 skipped: list[dict[str, Any]], rank: int) -> None:
    """``metas``: each kept image's ``(label, id, attributes)``. Written with its checksum, then renamed."""
    tensors = dict(rows)
    tensors["index"] = torch.tensor(kept, dtype=torch.int64)
    tensors["label"] = torch.tensor([m[0] for m in metas], dtype=torch.int64)
    meta = {"chunk": str(c), "rank": str(rank), "ids": json.dumps([m[1] for m in metas]),
            "attributes": json.dumps([_json_safe(m[2]) for m in metas]), "skipped": json.dumps(skipped)}
    save_checked(out / chunk_name(c), tensors, meta)


def _check_chunk(out: Path, c: int) -> None:
    """Chunk ``c`` in full (its checksum); raises :class:`Damage`."""
    layout = check_file(out / chunk_name(c))
    if layout.metadata.get("chunk", str(c)) != str(c):
        raise Damage(f"it holds chunk {layout.metadata['chunk']}, not {c}")
    if "index" not in layout.tensors:
        raise Damage("it has no 'index' tensor (not a chunk of a store)")


def _json_safe(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes as strict JSON (a missing number, NaN, becomes null)."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in attributes.items()}


def distributed() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment (``(0, 1)`` otherwise)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def write_manifest(out: Path, n_images: int, chunk_size: int) -> dict[str, Any]:
    """Check every chunk file's structure and write ``manifest.json`` (once every chunk exists): each file's size
    and checksum, the header's, the images skipped, the total."""
    n_chunks = (n_images + chunk_size - 1) // chunk_size
    chunks, skipped, total = [], [], 0
    head = read_json(out / HEADER)
    for c in range(n_chunks):
        path = out / chunk_name(c)
        try:
            layout = check_layout(path)
            found = json.loads(layout.metadata.get("skipped", "[]"))
        except (Damage, ValueError) as e:
            raise StoreDamagedError(f"{path} is damaged ({getattr(e, 'reason', e)}) although this build checked or "
                                    "wrote it (the disk or another process changed it?): run the same command again "
                                    "to compute it again") from None
        rows = layout.rows()
        chunks.append({"file": path.name, "start": c * chunk_size, "stop": min((c + 1) * chunk_size, n_images),
                       "images": rows, "rank": int(layout.metadata.get("rank", 0)), "bytes": layout.size,
                       CHECKSUM: layout.checksum})
        skipped += found
        total += rows
    try:
        proj = check_layout(out / PROJECTIONS)
    except Damage as d:
        raise StoreDamagedError(f"{out / PROJECTIONS} is damaged ({d.reason}): run the same command again to "
                                "compute it again") from None
    raw = (out / HEADER).read_bytes()
    manifest = {"complete": True, "images": total, "chunks": chunks, "skipped": skipped,
                "projections": {"file": PROJECTIONS, "bytes": proj.size, CHECKSUM: proj.checksum},
                "header": {"file": HEADER, "bytes": len(raw), CHECKSUM: hashlib.sha256(raw).hexdigest(),
                           "identity": header_identity(head)},
                "checksums": f"{CHECKSUM} of each file's tensors and metadata (cliplens.store.integrity); "
                             f"{CHECKSUM} of the header's bytes"}
    if isinstance(head.get("command"), dict):
        manifest["command"] = head["command"]
    _write_json(out / MANIFEST, manifest)
    return manifest


def build_store(
    model: ImageTextModel,
    dataset: Any,
    out_dir: str | os.PathLike[str],
    *,
    settings: StoreSettings | None = None,
    skip_bad: bool = False,
    num_workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    command: dict[str, Any] | None = None,
) -> BuildResult:
    """Decompose every image of ``dataset`` into a store at ``out_dir`` (see the module docs).

    ``progress``: say the classifier's prompt count and show progress bars (on stderr). ``command``: the build
    command as ``{"argv": [...], "cwd": ...}`` (recorded in the header, so that a message about a damaged store
    can give the command that repairs it; the command line passes it). Files found damaged are computed again,
    each with a warning, and listed in the result's ``repaired``."""
    settings = settings or StoreSettings()
    if settings.dtype not in DTYPES:
        raise InvalidInputError(f"dtype must be one of {', '.join(DTYPES)}; got {settings.dtype!r}")
    if settings.chunk_size < 1 or settings.batch_size < 1:
        raise InvalidInputError("chunk_size and batch_size must be at least 1")
    if settings.templates not in ("auto", *TEMPLATE_SETS):
        raise InvalidInputError(f"templates must be 'auto' or one of {', '.join(TEMPLATE_SETS)}; "
                                f"got {settings.templates!r}")
    L = model.vision.num_layers
    bad = [i for i in settings.spatial_layers if not -L <= i < L]
    if bad:
        raise InvalidInputError(f"spatial layers {bad} are out of range for a {L}-layer tower")
    neuron_layers: tuple[int, ...] = ()
    if settings.neuron_layers:
        from cliplens.decomposition.neurons import check_neuron_layers

        neuron_layers = check_neuron_layers(model.vision, settings.neuron_layers)
    settings = StoreSettings(settings.dtype, tuple(sorted({i % L for i in settings.spatial_layers})),
                             settings.chunk_size, settings.batch_size, settings.templates, neuron_layers)
    if len(dataset) == 0:
        raise InvalidInputError("the data set has no images")
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    rank, world = distributed()
    head = header(model, dataset, settings, command)
    n = len(dataset)
    S = settings.chunk_size
    n_chunks = (n + S - 1) // S
    result = BuildResult(out, n)
    show = progress and rank == 0
    if world > 1 and rank != 0:
        _barrier()  # rank 0 writes the header and projections first; the others then check them
        _prepare(out, head, rank, result)
    else:
        try:
            _prepare(out, head, rank, result)
            _check_manifest(out, result)
            _ensure_projections(out, model, dataset, settings, head, result, show)
        finally:
            if world > 1:
                _barrier()
    mine = [c for c in range(n_chunks) if c % world == rank]
    bar = progress_bar(enabled=show)
    with bar:
        existing = [c for c in mine if (out / chunk_name(c)).exists()]
        task = bar.add_task(f"checking {len(existing)} chunks already there", total=len(existing))
        damaged = []
        for c in existing:  # every chunk already there, in full: one truncated or changed on disk is made again
            try:
                _check_chunk(out, c)
            except Damage as d:
                _repaired(result, chunk_name(c), d.reason)
                damaged.append(c)
            bar.advance(task)
        bar.remove_task(task)
        todo = sorted(set(mine) - set(existing) | set(damaged))
        result.chunks_reused = len(mine) - len(todo)
        if todo or result.repaired:
            (out / MANIFEST).unlink(missing_ok=True)  # the store is unfinished until the manifest is written again
        task = bar.add_task(f"store ({len(todo)} chunks to do)", total=sum(min(S, n - c * S) for c in todo))
        for c in todo:
            for stale in out.glob(chunk_name(c) + ".tmp*"):  # left by a killed run (chunk c is this rank's alone)
                stale.unlink(missing_ok=True)
            indices = range(c * S, min((c + 1) * S, n))
            loader = DataLoader(_Images(dataset, indices, model.preprocess_config, max_pixels),
                                batch_size=settings.batch_size, num_workers=num_workers, collate_fn=_collate)
            rows, skipped, kept, metas = _chunk_rows(model, loader, settings, skip_bad, dataset, bar, task)
            if not kept:
                rows = {}
            _write_chunk(out, c, rows, kept, metas, skipped, rank)
            result.chunks_written.append(c)
            result.skipped += skipped
    if world > 1:
        _barrier()
    if rank == 0:
        manifest = write_manifest(out, n, S)
        Store(out)  # opened as every reader will: a store that cannot be read is never reported complete
        result.skipped = manifest["skipped"]
        result.complete = True
    result.seconds = time.perf_counter() - t0
    return result


def _barrier() -> None:
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
