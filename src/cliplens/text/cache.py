"""The text-embedding cache: class embeddings (and the texts and empty prompts of map targets) kept per
(text-tower fingerprint, names, templates, normalisation), in memory and on disk.

* **Key.** :meth:`~cliplens.models.CLIPAdapter.text_fingerprint` (a digest of the text tower's weights, its
  settings and its tokenizer, recomputed when a weight changes), what is embedded (class names or texts),
  the templates, and how the rows are normalised. A model whose family cannot say what its text side is, or
  templates given as Python callables, are never cached. Wrapped and random-weight models are keyed by
  their weights like any other, so a changed weight is a miss, never a stale hit.
* **Memory.** Per adapter object (at most :data:`MEMORY_ENTRIES` entries each, least recently used
  dropped). A hit there skips the text warnings too (unknown words, truncated texts): that adapter gave them
  when it first embedded the texts.
* **Disk.** ``$CLIPLENS_CACHE/text`` (default ``~/.cache/cliplens/text``, or ``$XDG_CACHE_HOME/cliplens/text``):
  one ``KEY.safetensors`` (the float32 rows) and ``KEY.json`` (what they are, the file's SHA-256), each
  written to a temporary file and renamed, the JSON last. A file that does not read back exactly (truncated,
  edited, another key, a checksum that differs) is ignored and rewritten, never trusted. The folder is
  pruned to :data:`DISK_BYTES` (least recently used first). Nothing fails when the folder cannot be written:
  the embeddings are then just not kept.
* **Opting out.** ``CLIPLENS_TEXT_CACHE=memory`` keeps the memory cache only, ``CLIPLENS_TEXT_CACHE=off``
  caches nothing (``on``, the default, both).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cliplens.errors import InvalidInputError

__all__ = ["CACHE_ENV", "MODE_ENV", "cache_folder", "cache_mode", "cached_rows", "clear_memory", "tokenizer_state"]

CACHE_ENV = "CLIPLENS_CACHE"
MODE_ENV = "CLIPLENS_TEXT_CACHE"
#: entries kept in memory per adapter
MEMORY_ENTRIES = 32
#: the disk cache is pruned (least recently used first) to this many bytes
DISK_BYTES = 512 * 2**20
#: bump when the stored format or the meaning of a key changes
VERSION = 1

_MODES = {"on": "on", "1": "on", "true": "on", "yes": "on", "": "on", "memory": "memory",
          "off": "off", "0": "off", "false": "off", "no": "off", "none": "off"}
_NAME = re.compile(r"^[0-9a-f]{32}\.(safetensors|json)$")
_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_log = logging.getLogger(__name__)


def cache_mode() -> str:
    """``"on"`` (memory and disk), ``"memory"`` or ``"off"``, from ``$CLIPLENS_TEXT_CACHE`` (read at each call)."""
    raw = os.environ.get(MODE_ENV, "").strip().lower()
    if raw not in _MODES:
        raise InvalidInputError(f"{MODE_ENV}={os.environ[MODE_ENV]!r} is not a text-cache setting: use 'on' (memory "
                                "and disk, the default), 'memory' (no files) or 'off' (nothing cached)")
    return _MODES[raw]


def cache_folder() -> Path:
    """Where text embeddings are kept on disk: ``$CLIPLENS_CACHE/text`` (default ``~/.cache/cliplens/text``)."""
    root = os.environ.get(CACHE_ENV, "").strip()
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join("~", ".cache"), "cliplens")
    return Path(root).expanduser() / "text"


def clear_memory() -> None:
    """Forget every embedding kept in memory (the disk cache stays)."""
    _MEMORY.clear()


def cached_rows(
    adapter: Any,
    kind: str,
    names: Sequence[str],
    templates: Sequence[Any] | None,
    compute: Callable[[], Tensor],
    warn: Callable[[], None],
) -> Tensor:
    """The rows ``[len(names), E]`` of ``kind`` (``"classes"``, ``"texts"``, ``"empty"``) for ``adapter``.

    From this adapter's memory if there; else ``warn()`` (the texts' warnings) runs, then the disk cache is
    read, and only on a miss ``compute()`` (whose result is then kept). Returned on the text tower's device,
    a fresh tensor each call.
    """
    mode = cache_mode()
    fingerprint = adapter.text_fingerprint() if mode != "off" and hasattr(adapter, "text_fingerprint") else None
    if fingerprint is None or (templates is not None and not all(isinstance(t, str) for t in templates)):
        warn()
        return compute()
    about = {"version": VERSION, "kind": kind, "normalization": _NORMALIZATION[kind], "text": fingerprint,
             "names": list(names), "templates": None if templates is None else list(templates)}
    key = hashlib.blake2b(json.dumps(about, sort_keys=True).encode(), digest_size=16).hexdigest()
    memory = _memory(adapter)
    if memory is not None and key in memory:
        memory.move_to_end(key)
        return memory[key].clone()
    warn()
    rows = _read(cache_folder(), key, about, len(names)) if mode == "on" else None
    if rows is not None:
        rows = rows.to(_device(adapter))
    else:
        rows = compute()
        if mode == "on":
            _write(cache_folder(), key, about, rows, getattr(adapter, "name", ""))
    if memory is not None:
        memory[key] = rows.detach().clone()
        while len(memory) > MEMORY_ENTRIES:
            memory.popitem(last=False)
    return rows


#: how each kind's rows are normalised (part of the key)
_NORMALIZATION = {
    "classes": "each prompt L2-normalised, averaged over the templates, L2-normalised",
    "empty": "each prompt L2-normalised, averaged over the templates, L2-normalised",
    "texts": "L2-normalised",
}


def _memory(adapter: Any) -> OrderedDict | None:
    try:
        return _MEMORY.setdefault(adapter, OrderedDict())
    except TypeError:  # not weak-referenceable
        return None


def _device(adapter: Any) -> torch.device:
    parts = adapter._text_parts() if hasattr(adapter, "_text_parts") else None
    if parts and parts[0]:
        return parts[0][0].device
    return torch.device("cpu")


# ---- disk ------------------------------------------------------------------------------------------------

def _read(folder: Path, key: str, about: dict[str, Any], n_rows: int) -> Tensor | None:
    """The stored rows if both files read back exactly as written for this key; ``None`` otherwise."""
    data_path, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text())
        blob = data_path.read_bytes()
        if not isinstance(meta, dict) or meta.get("about") != about or meta.get("bytes") != len(blob):
            raise ValueError("the description differs")
        if meta.get("sha256") != hashlib.sha256(blob).hexdigest():
            raise ValueError("the checksum differs")
        from safetensors.torch import load

        rows = load(blob).get("embeddings")
        if (rows is None or rows.dtype != torch.float32 or rows.ndim != 2 or rows.shape[0] != n_rows
                or list(rows.shape) != meta.get("shape") or not bool(torch.isfinite(rows).all())):
            raise ValueError("the stored tensor is not what the description says")
    except FileNotFoundError:
        return None
    except Exception as e:  # damaged, half-written, edited or foreign: recompute and rewrite
        _log.debug("text cache entry %s ignored: %s", key, e)
        return None
    now = time.time()
    for p in (data_path, meta_path):  # least recently *used* goes first when pruning
        try:
            os.utime(p, (now, now))
        except OSError:
            pass
    return rows


def _write(folder: Path, key: str, about: dict[str, Any], rows: Tensor, model_name: str) -> None:
    """Store the rows atomically (data, then the description that vouches for it); never raises."""
    from safetensors.torch import save

    tmp: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        blob = save({"embeddings": rows.detach().float().cpu().contiguous()})
        meta = {"about": about, "model": model_name, "shape": list(rows.shape), "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(), "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for name, payload in ((f"{key}.safetensors", blob), (f"{key}.json", json.dumps(meta, indent=1).encode())):
            part = folder / f".{name}.{os.getpid()}.tmp"
            tmp.append(part)
            with open(part, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, folder / name)
        _prune(folder)
    except OSError as e:  # read-only home, full disk, ...: the cache is only an optimisation
        _log.debug("text cache entry %s not written: %s", key, e)
    finally:
        for part in tmp:
            try:
                part.unlink()
            except OSError:
                pass


def _prune(folder: Path, limit: int = DISK_BYTES) -> None:
    """Delete the least recently used entries (both files) until the folder holds at most ``limit`` bytes."""
    entries: dict[str, list[os.stat_result]] = {}
    for p in folder.iterdir():
        if _NAME.match(p.name):
            try:
                entries.setdefault(p.name.split(".")[0], []).append(p.stat())
            except OSError:
                continue
    total = sum(s.st_size for stats in entries.values() for s in stats)
    for key in sorted(entries, key=lambda k: max(s.st_mtime for s in entries[k])):
        if total <= limit:
            break
        for suffix in (".json", ".safetensors"):
            try:
                (folder / f"{key}{suffix}").unlink()
            except OSError:
                pass
        total -= sum(s.st_size for s in entries[key])


# ---- tokenizers ------------------------------------------------------------------------------------------

def tokenizer_state(tokenizer: Any) -> str | None:
    """Everything that decides how ``tokenizer`` turns text into ids, as a string; ``None`` for a kind of
    tokenizer this does not know (nothing is cached for it).

    Knows open_clip's ``SimpleTokenizer`` (vocabulary, merges, context, cleaning), its ``HFTokenizer`` and
    Hugging Face tokenizers (the fast tokenizer's full JSON, or the slow one's vocabulary and merges, with the
    special tokens and the maximum length), and the toy tokenizer (its JSON).
    """
    parts = [f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"]
    for k, v in sorted(vars(tokenizer).items()) if hasattr(tokenizer, "__dict__") else ():
        if isinstance(v, (str, int, float, bool)) or v is None:
            parts.append(f"{k}={v!r}")
        elif callable(v):
            func = getattr(v, "func", v)  # a functools.partial: its function and arguments
            extra = repr((getattr(v, "args", ()), getattr(v, "keywords", {}))) if func is not v else ""
            parts.append(f"{k}={getattr(func, '__module__', '')}.{getattr(func, '__qualname__', type(func).__name__)}"
                         f"{extra}")
    if hasattr(tokenizer, "to_json") and not hasattr(tokenizer, "backend_tokenizer"):  # the toy tokenizer
        parts.append(str(tokenizer.to_json()))
    elif hasattr(tokenizer, "encoder") and hasattr(tokenizer, "bpe_ranks"):  # BPE: open_clip's, HF's slow CLIP
        # in the dicts' own order (as built from the vocabulary and merges files): the same files give the same
        # string; another order could only cause a miss
        parts.append(json.dumps(tokenizer.encoder))
        parts.append("\n".join(f"{' '.join(pair)} {rank}" for pair, rank in tokenizer.bpe_ranks.items()))
        if hasattr(tokenizer, "all_special_tokens"):
            parts.append(repr(tokenizer.all_special_tokens) + repr(getattr(tokenizer, "added_tokens_encoder", {})))
    elif hasattr(tokenizer, "backend_tokenizer"):  # a Hugging Face fast tokenizer
        parts.append(tokenizer.backend_tokenizer.to_str())
        parts.append(repr(tokenizer.all_special_tokens) + repr(getattr(tokenizer, "padding_side", "")))
    elif hasattr(tokenizer, "tokenizer") and tokenizer.tokenizer is not tokenizer:  # open_clip's HFTokenizer
        inner = tokenizer_state(tokenizer.tokenizer)
        if inner is None:
            return None
        parts.append(inner)
    else:
        return None
    return "\n".join(parts)
