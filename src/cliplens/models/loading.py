"""One factory for every model cliplens can open: :func:`load`, :func:`wrap`, :func:`list_models`.

How :func:`load` reads ``name`` (first rule that applies wins):

1. **Explicit prefixes.** ``"open_clip:ViT-B-32"`` is an open_clip architecture;
   ``"hf:openai/clip-vit-base-patch16"`` or ``"transformers:…"`` is a Hugging Face
   transformers id (or folder); ``"hf-hub:org/repo"`` and ``"local-dir:/path"`` are
   open_clip's own schemas (an open_clip model on the Hub / in a folder).
2. **Embedded models** registered with :func:`register_embedded` (``"toy"``).
3. **open_clip architectures**, spelled exactly as open_clip spells them
   (``open_clip.list_models()``: ``"ViT-B-32"``, ``"ViT-L-14-quickgelu"``, …), with
   ``pretrained`` a tag (``"laion2b_s34b_b79k"``), a local checkpoint file, or ``None``
   for random weights (with a :class:`RandomWeightsWarning`). A tag trained with QuickGELU
   gets a QuickGELU model (open_clip itself only warns about the mismatch).
4. **Existing paths** are local: a folder with ``open_clip_config.json`` (and open_clip
   weights) opens with open_clip, a folder with ``config.json`` opens with transformers
   (``from_pretrained(folder)``). A bare weights file (``.safetensors``/``.pt``/``.bin``…)
   does not say which architecture it is: pass the architecture as ``name`` and the file
   as ``pretrained`` (``load("ViT-B-32", pretrained="/path/ckpt.pt")``). A bare word that
   is also a model name (rules 2–3) means the model; write ``"./toy"`` for a folder.
5. **Names containing "/"** are Hugging Face transformers ids
   (``"openai/clip-vit-base-patch16"``), except OpenAI's spelling of an open_clip
   architecture (``"ViT-B/32"`` is ``"ViT-B-32"``).

Anything else raises :class:`~cliplens.errors.ModelNotFoundError` with close matches.
Known models whose weights cannot be fetched (no network, not in the local cache,
``HF_HUB_OFFLINE=1``) raise :class:`~cliplens.errors.ModelLoadError` explaining how to
load from a local file or folder instead.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cliplens.errors import (
    CliplensError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)
from cliplens.models.base import CLIPAdapter

__all__ = [
    "ModelInfo",
    "RandomWeightsWarning",
    "UnsupportedModelTypeError",
    "list_models",
    "load",
    "register_embedded",
    "wrap",
]


class RandomWeightsWarning(UserWarning):
    """A model was built with random weights (``pretrained=None``)."""


class UnsupportedModelTypeError(UnsupportedArchitectureError, TypeError):
    """:func:`wrap` got an object that is not a model cliplens knows how to read."""


@dataclass(frozen=True)
class ModelInfo:
    """One entry of :func:`list_models`.

    Attributes:
        name: what to pass to :func:`load`.
        family: ``"embedded"``, ``"open_clip"`` or ``"transformers"``.
        pretrained: the ``pretrained`` tags :func:`load` accepts for it (open_clip, embedded).
        decomposable: whether cliplens can decompose its image tower.
        note: what it is, or why it cannot be decomposed.
    """

    name: str
    family: str
    pretrained: tuple[str, ...] = ()
    decomposable: bool = True
    note: str = ""


# ---- embedded models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Embedded:
    name: str
    loader: Callable[..., CLIPAdapter]
    description: str
    pretrained: tuple[str, ...]


_EMBEDDED: dict[str, _Embedded] = {}
#: modules that register embedded models when imported (imported lazily, may be absent)
_EMBEDDED_MODULES = ("cliplens.models.toy",)
_embedded_imported = False


def register_embedded(
    name: str,
    loader_fn: Callable[..., CLIPAdapter],
    description: str = "",
    *,
    pretrained: tuple[str, ...] | list[str] = (),
) -> None:
    """Make ``load(name)`` call ``loader_fn(pretrained=...)``.

    ``loader_fn`` receives the ``pretrained`` argument given to :func:`load` (``None`` when
    omitted) as a keyword and returns a :class:`CLIPAdapter` (on the CPU, float32);
    :func:`load` then moves it to the requested device and dtype. ``pretrained`` lists the
    tags it accepts (shown by :func:`list_models`). Registering a name again replaces it.
    """
    if not name or "/" in name or ":" in name:
        raise ValueError(f"embedded model names must be plain words without '/' or ':'; got {name!r}")
    _EMBEDDED[name] = _Embedded(name, loader_fn, description, tuple(pretrained))


def _embedded() -> dict[str, _Embedded]:
    global _embedded_imported
    if not _embedded_imported:
        _embedded_imported = True
        for mod in _EMBEDDED_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:  # the module exists but something it imports does not
                    warnings.warn(f"{mod} could not be imported ({e}); its models are unavailable",
                                  stacklevel=3)
            except Exception as e:  # a broken embedded module must not break open_clip/HF loading
                warnings.warn(f"{mod} could not be imported ({type(e).__name__}: {e}); its models are "
                              "unavailable", stacklevel=3)
    return _EMBEDDED


# ---- optional dependencies -----------------------------------------------------------------


def _open_clip() -> Any | None:
    """open_clip if installed, else ``None``."""
    try:
        import open_clip
    except ImportError:
        return None
    return open_clip


def _require_open_clip() -> Any:
    from cliplens.models.openclip import require_open_clip

    return require_open_clip()


def _require_transformers() -> Any:
    from cliplens.models.hf import require_transformers

    return require_transformers()


def _open_clip_names() -> list[str]:
    oc = _open_clip()
    return list(oc.list_models()) if oc is not None else []


# ---- curated Hugging Face ids ----------------------------------------------------------------

#: well-known transformers CLIP checkpoints: (id, decomposable, note)
HF_MODELS: tuple[tuple[str, bool, str], ...] = (
    ("openai/clip-vit-base-patch32", True, "OpenAI CLIP ViT-B/32"),
    ("openai/clip-vit-base-patch16", True, "OpenAI CLIP ViT-B/16"),
    ("openai/clip-vit-large-patch14", True, "OpenAI CLIP ViT-L/14"),
    ("openai/clip-vit-large-patch14-336", True, "OpenAI CLIP ViT-L/14 at 336 px"),
    ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", True, "OpenCLIP ViT-B/32 trained on LAION-2B"),
    ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", True, "OpenCLIP ViT-L/14 trained on LAION-2B"),
    ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", True, "OpenCLIP ViT-H/14 trained on LAION-2B"),
    ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", True, "OpenCLIP ViT-bigG/14 trained on LAION-2B"),
    ("facebook/metaclip-b32-400m", True, "MetaCLIP ViT-B/32"),
    ("google/siglip-base-patch16-224", False,
     "SigLIP: attention-pooling head instead of a CLS token, not decomposable"),
)

_CKPT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")

_LOCAL_HELP = (
    "To use weights you already have, point cliplens at them: "
    "cliplens.load('/path/to/folder') for a folder written by transformers' save_pretrained "
    "(config.json + model.safetensors) or by open_clip (open_clip_config.json + weights), or "
    "cliplens.load('ViT-B-32', pretrained='/path/to/checkpoint.pt') for an open_clip checkpoint file "
    "(architecture name + weights file)."
)


# ---- offline handling -----------------------------------------------------------------------


def _hub_offline() -> bool:
    from cliplens.models.hf import hub_offline

    return hub_offline()


@contextlib.contextmanager
def _offline_guard() -> Iterator[bool]:
    """Honour ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set after ``huggingface_hub`` was imported.

    huggingface_hub reads the variable once, at import; open_clip's downloads cannot be
    passed ``local_files_only``. While loading, the library's flag follows the environment
    (restored afterwards), so an offline request never touches the network.
    """
    offline = _hub_offline()
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - core dependency
        yield offline
        return
    old = constants.HF_HUB_OFFLINE
    if offline:
        constants.HF_HUB_OFFLINE = True
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = old


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _repo_not_found(e: BaseException) -> bool:
    """Whether a Hub error says the repository does not exist (as opposed to: unreachable)."""
    for x in _chain(e):
        if type(x).__name__ in ("RepositoryNotFoundError", "GatedRepoError"):
            return type(x).__name__ == "RepositoryNotFoundError"
        msg = str(x)
        if "is not a valid model identifier" in msg or "Repository Not Found" in msg:
            return True
    return False


def _fetch_error(what: str, e: BaseException, *, offline: bool, cache_dir: str | None) -> ModelLoadError:
    why = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else "no network access"
    where = f" ({cache_dir})" if cache_dir else " (the Hugging Face cache, ~/.cache/huggingface)"
    return ModelLoadError(
        f"Could not load {what}: its weights could not be fetched ({why}) and they are not in the local "
        f"cache{where}. {_LOCAL_HELP} Underlying error: {type(e).__name__}: {_short(e)}"
    )


def _fmt(items: list[str], limit: int = 8) -> str:
    """``a, b, c`` — at most ``limit`` items, then how many more."""
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f", … ({more} more)" if more > 0 else "")


def _short(e: BaseException, limit: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


class _RootLogCapture(logging.Handler):
    """Collect what open_clip logs (it uses the root logger) while a model is created."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # pragma: no cover - a malformed record must not break loading
            pass

    def __enter__(self) -> _RootLogCapture:
        root = logging.getLogger()
        self._level = root.level
        if root.getEffectiveLevel() > logging.WARNING:  # a quiet root logger would drop the record
            root.setLevel(logging.WARNING)
        root.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)


# ---- suggestions ------------------------------------------------------------------------------


def _close(word: str, candidates: list[str], n: int = 5, cutoff: float = 0.6) -> list[str]:
    """Case-insensitive close matches, original spelling, best first."""
    lower: dict[str, str] = {}
    for c in candidates:
        lower.setdefault(c.lower(), c)
    hits = difflib.get_close_matches(word.lower(), list(lower), n=n, cutoff=cutoff)
    # also offer candidates that contain the word (e.g. "siglip" -> "ViT-B-16-SigLIP")
    if len(word) >= 3:
        hits += [c for c in lower if word.lower() in c and c not in hits][: max(0, n - len(hits))]
    return [lower[h] for h in hits][:n]


def _unknown(name: str, extra: str = "") -> ModelNotFoundError:
    pool = _open_clip_names() + list(_embedded()) + [m for m, _, _ in HF_MODELS]
    close = _close(name, pool)
    did = f" Did you mean: {', '.join(close)}?" if close else ""
    return ModelNotFoundError(
        f"Unknown model {name!r}.{did}{extra} cliplens.load accepts an open_clip architecture "
        "(e.g. 'ViT-B-16', with pretrained=<tag> or a checkpoint path), 'hf-hub:org/repo' for an open_clip "
        "model on the Hugging Face Hub, a Hugging Face transformers id (e.g. 'openai/clip-vit-base-patch16'), "
        f"an embedded model ({', '.join(sorted(_embedded())) or 'none registered'}), or a local file or "
        f"folder. {_LOCAL_HELP} cliplens.list_models() (or `cliplens models`) lists the known names."
    )


# ---- load -------------------------------------------------------------------------------------


def _looks_like_path(s: str) -> bool:
    """Whether ``s`` is meant as a file-system path rather than a name or an ``org/name`` Hub id."""
    if s.startswith(("/", "./", "../", "~", "\\")) or "\\" in s:
        return True
    if len(s) > 2 and s[1] == ":" and s[2] in "/\\":  # C:/...
        return True
    return s.count("/") > 1 or s.lower().endswith(_CKPT_SUFFIXES)


def load(
    name: str | os.PathLike[str],
    pretrained: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
) -> CLIPAdapter:
    """Load a CLIP model by a familiar name and wrap it for cliplens.

    See the module docstring for how ``name`` is read. Examples::

        load("ViT-B-32", pretrained="laion2b_s34b_b79k")   # open_clip name + tag
        load("ViT-B-16", pretrained="/ckpts/vit_b16.pt")    # open_clip name + local checkpoint
        load("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
        load("openai/clip-vit-base-patch16")                # transformers id
        load("/models/my-clip")                              # folder (transformers or open_clip)
        load("toy")                                          # embedded

    Args:
        name: model name, Hub id or local path.
        pretrained: open_clip tag or checkpoint file (open_clip names), or the tag of an embedded
            model. ``None`` for an open_clip name means random weights (with a warning).
        device: where the model goes.
        dtype: parameter dtype (default float32).
        cache_dir: download cache (defaults to each library's own).
        tokenizer: the tokenizer to use instead of the model's own.

    Raises:
        ModelNotFoundError: no loader knows ``name`` (or ``pretrained`` is no tag of it);
            the message lists close matches.
        ModelLoadError: a known model whose weights could not be fetched or read.
        UnsupportedArchitectureError: the image tower cannot be decomposed (ResNet, SigLIP, …).
        MissingDependencyError: open_clip or transformers is needed but not installed.
    """
    name = os.fspath(name).strip()
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    kw = dict(device=device, dtype=dtype, cache_dir=cache, tokenizer=tokenizer)
    if not name:
        raise _unknown(name)

    low = name.lower()
    for prefix in ("open_clip:", "openclip:"):
        if low.startswith(prefix):
            arch = name[len(prefix):]
            if arch.lower().startswith(("hf-hub:", "local-dir:")):
                _no_pretrained(name, pretrained, "an open_clip 'hf-hub:'/'local-dir:' model")
                return _load_open_clip(arch, None, **kw)
            return _load_open_clip_arch(arch, pretrained, **kw)
    for prefix in ("hf:", "transformers:"):
        if low.startswith(prefix):
            target = name[len(prefix):]
            _no_pretrained(target, pretrained, "a Hugging Face transformers id")
            path = Path(target).expanduser()
            if path.is_dir():
                return _load_transformers(str(path), local=True, **kw)
            return _load_transformers(target, local=False, **kw)
    if low.startswith(("hf-hub:", "local-dir:")):
        _no_pretrained(name, pretrained, "an open_clip 'hf-hub:'/'local-dir:' model")
        return _load_open_clip(name, None, **kw)

    embedded = _embedded()
    if name in embedded:
        return _load_embedded(embedded[name], pretrained, device=device, dtype=dtype)

    oc_names = _open_clip_names()
    if name in oc_names:
        return _load_open_clip_arch(name, pretrained, **kw)

    path = Path(name).expanduser()
    if path.exists():
        return _load_local(path, pretrained, **kw)

    if "/" in name or "\\" in name:
        if _looks_like_path(name):
            raise ModelNotFoundError(f"No such file or folder: {name!r}. {_LOCAL_HELP}")
        openai_spelling = name.replace("/", "-")
        if openai_spelling in oc_names:
            return _load_open_clip_arch(openai_spelling, pretrained, **kw)
        if name.count("/") != 1 or not all(name.split("/")):
            raise _unknown(name, " A Hugging Face id has the form 'org/name'.")
        _no_pretrained(name, pretrained, "a Hugging Face transformers id")
        return _load_transformers(name, local=False, **kw)

    if _open_clip() is None:
        raise MissingDependencyError(
            f"{name!r} is not an embedded model, a local path or a Hugging Face id; open_clip names (such as "
            "'ViT-B-32') need open_clip, which is not installed. Install it with: "
            "pip install 'cliplens[open_clip]' (or pip install open_clip_torch)."
        )
    raise _unknown(name)


def _no_pretrained(name: str, pretrained: str | None, what: str) -> None:
    if pretrained is not None:
        raise ModelLoadError(
            f"pretrained={pretrained!r} was given for {name!r}, {what}; its weights are fixed by the name. "
            "pretrained= selects weights for open_clip architecture names (a tag or a checkpoint file) and "
            "embedded models. Drop pretrained=, or for a local copy call cliplens.load('/path/to/folder')."
        )


def _finish(adapter: CLIPAdapter, device: str | torch.device, dtype: torch.dtype | None) -> CLIPAdapter:
    if dtype is not None or torch.device(device) != adapter.device:
        adapter.to(device=device, dtype=dtype)
    return adapter


def _load_embedded(entry: _Embedded, pretrained: str | None, *, device: Any, dtype: Any) -> CLIPAdapter:
    adapter = entry.loader(pretrained=pretrained)
    return _finish(adapter, device, dtype)


# ---- open_clip ---------------------------------------------------------------------------


def open_clip_support(model_name: str) -> tuple[bool, str]:
    """``(decomposable, note)`` for an open_clip architecture, from its config alone."""
    oc = _require_open_clip()
    cfg = oc.get_model_config(model_name) or {}
    v = cfg.get("vision_cfg", {})
    t = cfg.get("text_cfg", {})
    if v.get("timm_model_name"):
        return False, (f"timm image tower ({v['timm_model_name']}); cliplens decomposes open_clip's own "
                       "ViT towers only")
    if isinstance(v.get("layers"), (list, tuple)):
        return False, "ResNet image tower (ModifiedResNet): no attention heads or tokens to decompose"
    if v.get("attentional_pool"):
        return False, "attentional pooling (CoCa-style): the embedding is not the CLS token"
    if v.get("pool_type", "tok") != "tok":
        return False, f"{v['pool_type']!r} pooling: the embedding is not the CLS token"
    custom = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
    if v.get("block_type") == "custom" or any(v.get(k) for k in custom):
        return False, "custom attention blocks (qk-norm / scaled-cosine / NormFormer-style)"
    notes = ["ViT"]
    if v.get("ls_init_value") is not None:
        notes.append("layer-scale")
    if cfg.get("quick_gelu"):
        notes.append("QuickGELU")
    if "multimodal_cfg" in cfg:
        notes.append("CoCa")
    if t.get("hf_model_name"):
        notes.append(f"text tower {t['hf_model_name']} (its config is fetched from the Hub)")
    return True, ", ".join(notes)


def _unsupported_open_clip(name: str, note: str) -> UnsupportedArchitectureError:
    if note.startswith("ResNet"):
        return UnsupportedArchitectureError(
            f"{name} is a ResNet CLIP (ModifiedResNet image tower). The decomposition into heads and tokens "
            "needs a ViT image tower; pick a ViT model such as ViT-B-16."
        )
    return UnsupportedArchitectureError(
        f"{name} cannot be decomposed: {note}. Pick an open_clip ViT with CLS pooling such as ViT-B-16 "
        "(cliplens.list_models() marks which models decompose)."
    )


def _load_open_clip_arch(arch: str, pretrained: str | None, **kw: Any) -> CLIPAdapter:
    """An open_clip built-in architecture with a tag, a checkpoint file, or random weights."""
    oc = _require_open_clip()
    names = list(oc.list_models())
    if arch not in names:
        if arch.replace("/", "-") in names:
            arch = arch.replace("/", "-")
        else:
            close = _close(arch, names)
            did = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(
                f"Unknown open_clip architecture {arch!r}.{did} open_clip.list_models() (or "
                f"cliplens.list_models()) lists them. {_LOCAL_HELP}"
            )
    ok, note = open_clip_support(arch)
    if not ok:
        raise _unsupported_open_clip(arch, note)
    quick_gelu = False
    if pretrained is None:
        tags = oc.list_pretrained_tags_by_model(arch)
        hint = f"pretrained=<tag> (one of: {_fmt(tags)})" if tags else "pretrained=<checkpoint path>"
        warnings.warn(
            f"{arch} was built with RANDOM weights (pretrained=None): its embeddings mean nothing. Pass "
            f"{hint} or a local checkpoint file for real weights.",
            RandomWeightsWarning,
            stacklevel=3,
        )
    else:
        ckpt = Path(pretrained).expanduser()
        if ckpt.is_file():
            pretrained = str(ckpt)
        elif ckpt.is_dir():
            raise ModelLoadError(
                f"pretrained={pretrained!r} is a folder; pretrained= takes a checkpoint file. For a folder "
                f"saved by open_clip or transformers call cliplens.load({pretrained!r})."
            )
        elif _looks_like_path(pretrained):
            raise ModelLoadError(f"Checkpoint file not found: {pretrained!r} (for {arch}). {_LOCAL_HELP}")
        else:
            cfg = oc.get_pretrained_cfg(arch, pretrained)
            if not cfg:
                tags = oc.list_pretrained_tags_by_model(arch)
                close = _close(pretrained, tags, cutoff=0.4)
                did = f" Did you mean: {', '.join(close)}?" if close else ""
                have = (f" Tags for {arch}: {_fmt(tags, 30)}." if tags
                        else f" open_clip has no pretrained weights for {arch}.")
                raise ModelNotFoundError(
                    f"{arch} has no pretrained tag {pretrained!r}.{did}{have} pretrained= also takes a local "
                    "checkpoint file, or None for random weights."
                )
            quick_gelu = bool(cfg.get("quick_gelu")) and not oc.get_model_config(arch).get("quick_gelu")
    return _load_open_clip(arch, pretrained, quick_gelu=quick_gelu, **kw)


def _load_open_clip(
    model_name: str,
    pretrained: str | None,
    *,
    device: Any,
    dtype: torch.dtype | None,
    cache_dir: str | None,
    tokenizer: Any,
    quick_gelu: bool = False,
) -> CLIPAdapter:
    oc = _require_open_clip()
    from cliplens.models.openclip import OpenCLIPAdapter

    what = f"{model_name!r}" + (f" with pretrained={pretrained!r}" if pretrained else "") + " (open_clip)"
    expect_weights = pretrained is not None or model_name.startswith(("hf-hub:", "local-dir:"))
    with _offline_guard() as offline, _RootLogCapture() as logs:
        try:
            model, _, preprocess = oc.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, cache_dir=cache_dir,
                pretrained_text=False, force_quick_gelu=quick_gelu,
            )
        except CliplensError:
            raise
        except (RuntimeError, OSError, ValueError) as e:
            if (pretrained and os.path.isfile(pretrained)) or model_name.startswith("local-dir:"):
                raise ModelLoadError(
                    f"Could not load {what}: the checkpoint does not fit the architecture or cannot be read. "
                    f"{type(e).__name__}: {_short(e, 600)}"
                ) from e
            if _repo_not_found(e):
                raise _unknown(model_name, " The Hugging Face Hub has no such repository.") from e
            raise _fetch_error(what, e, offline=offline, cache_dir=cache_dir) from e
        if expect_weights and any("No pretrained weights loaded" in m for m in logs.messages):
            # open_clip falls back to random weights when an 'hf-hub:'/'local-dir:' model has a config but
            # its weights cannot be found or fetched; it only logs that.
            detail = " ".join(m for m in logs.messages if "weights" in m.lower())
            if model_name.startswith("local-dir:"):
                raise ModelLoadError(
                    f"Could not load {what}: the folder has open_clip_config.json but no weights file "
                    f"(open_clip_model.safetensors, open_clip_pytorch_model.bin, ...). open_clip said: {detail}"
                )
            raise _fetch_error(what, RuntimeError(detail), offline=offline, cache_dir=cache_dir)
        if dtype is not None:
            model.to(dtype=dtype)
        return OpenCLIPAdapter(model, model_name, tokenizer=tokenizer, preprocess=preprocess)


# ---- transformers -------------------------------------------------------------------------

_HF_DEFAULT_CLASS = {
    "clip": "CLIPModel",
    "clip_vision_model": "CLIPVisionModelWithProjection",
    "metaclip_2": "MetaClip2Model",
    "metaclip_2_vision_model": "MetaClip2VisionModelWithProjection",
}
_HF_CLASSES = frozenset(_HF_DEFAULT_CLASS.values()) | {"CLIPVisionModel", "MetaClip2VisionModel"}


def _load_transformers(
    source: str,
    *,
    local: bool,
    device: Any,
    dtype: torch.dtype | None,
    cache_dir: str | None,
    tokenizer: Any,
) -> CLIPAdapter:
    transformers = _require_transformers()
    from cliplens.models.hf import HFCLIPAdapter, check_hf_model_type, check_tokenizer

    what = f"{source!r} (Hugging Face transformers)"
    with _offline_guard() as offline:
        files_only = local or offline
        hub = dict(cache_dir=cache_dir, local_files_only=files_only)
        try:
            config = transformers.AutoConfig.from_pretrained(source, **hub)
        except (OSError, ValueError) as e:
            if local:
                raise ModelLoadError(f"Could not read the config of {what}: {_short(e, 600)}") from e
            if _repo_not_found(e):
                raise _unknown(source, " The Hugging Face Hub has no such repository.") from e
            raise _fetch_error(what, e, offline=offline, cache_dir=cache_dir) from e
        model_type = getattr(config, "model_type", None)
        check_hf_model_type(model_type, source)
        archs = [a for a in (getattr(config, "architectures", None) or []) if a in _HF_CLASSES]
        cls = getattr(transformers, archs[0] if archs else _HF_DEFAULT_CLASS[model_type])
        major = int(transformers.__version__.split(".")[0])
        dtype_kw = {"dtype" if major >= 5 else "torch_dtype": dtype or torch.float32}
        try:
            model = cls.from_pretrained(source, config=config, **hub, **dtype_kw)
        except (OSError, ValueError, RuntimeError) as e:
            if local:
                raise ModelLoadError(
                    f"Could not load the weights of {what}: {type(e).__name__}: {_short(e, 600)}"
                ) from e
            raise _fetch_error(what, e, offline=offline, cache_dir=cache_dir) from e
        model.to(device)

        tok_error = None
        if tokenizer is None:
            try:
                tokenizer = check_tokenizer(transformers.AutoTokenizer.from_pretrained(source, **hub), source)
            except Exception as e:  # missing files, offline, unknown tokenizer class, ...
                tok_error = (
                    f"{what} has no loadable tokenizer ({type(e).__name__}: {_short(e)}); images work "
                    "without it, text needs it: pass tokenizer=... to cliplens.load or cliplens.wrap."
                )
        processor = None
        try:
            processor = transformers.CLIPImageProcessor.from_pretrained(source, **hub)
        except Exception:  # no preprocessor_config.json: use CLIP's standard preprocessing
            processor = None
        adapter = HFCLIPAdapter(model, source, tokenizer=tokenizer, processor=processor)
        if tok_error is not None:
            adapter.set_tokenizer_error(tok_error)
        return adapter


# ---- local paths ----------------------------------------------------------------------------


def _open_clip_weights(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("open_clip*") if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))


def _load_local(path: Path, pretrained: str | None, **kw: Any) -> CLIPAdapter:
    if path.is_dir():
        has_oc = (path / "open_clip_config.json").is_file()
        has_hf = (path / "config.json").is_file()
        if has_oc and (_open_clip_weights(path) or not has_hf):
            _no_pretrained(str(path), pretrained, "a folder")
            return _load_open_clip(f"local-dir:{path.resolve()}", None, **kw)
        if has_hf:
            _no_pretrained(str(path), pretrained, "a folder")
            try:
                model_type = json.loads((path / "config.json").read_text()).get("model_type")
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"Cannot read {path / 'config.json'}: {e}") from e
            from cliplens.models.hf import check_hf_model_type

            check_hf_model_type(model_type, str(path))
            return _load_transformers(str(path), local=True, **kw)
        raise ModelLoadError(
            f"Folder {str(path)!r} has neither config.json (a transformers save_pretrained folder) nor "
            "open_clip_config.json (an open_clip folder), so cliplens cannot tell what model it holds. "
            "For a bare weights file use cliplens.load('<architecture>', pretrained='/path/to/file')."
        )
    hint = ""
    for marker in ("config.json", "open_clip_config.json"):
        if (path.parent / marker).is_file():
            hint = f" Its folder has {marker}: cliplens.load({str(path.parent)!r}) may be what you want."
            break
    raise ModelLoadError(
        f"{str(path)!r} is a weights file, and a weights file does not say which architecture it belongs to. "
        f"Pass the architecture name and the file as pretrained, e.g. "
        f"cliplens.load('ViT-B-32', pretrained={str(path)!r}).{hint}"
    )


# ---- wrap ---------------------------------------------------------------------------------


def wrap(model: Any, *, name: str = "", tokenizer: Any = None, preprocess: Any = None) -> CLIPAdapter:
    """Wrap a model you already loaded, without copying its weights.

    Accepts an open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa`` (``preprocess``: its image
    transform; ``name``: its open_clip name, which picks the tokenizer), a transformers
    ``CLIPModel`` / ``CLIPVisionModelWithProjection`` / ``CLIPVisionModel`` (``preprocess``:
    its ``CLIPImageProcessor``), or a :class:`CLIPAdapter` (returned as is).
    """
    if isinstance(model, CLIPAdapter):
        return model
    module = type(model).__module__ or ""
    if module.startswith("open_clip"):
        oc = _require_open_clip()
        classes = tuple(c for c in (getattr(oc, "CLIP", None), getattr(oc, "CustomTextCLIP", None),
                                    getattr(oc, "CoCa", None)) if isinstance(c, type))
        if isinstance(model, classes):
            from cliplens.models.openclip import OpenCLIPAdapter

            return OpenCLIPAdapter(model, name, tokenizer=tokenizer, preprocess=preprocess)
    if module.startswith("transformers"):
        from cliplens.models.hf import HFCLIPAdapter

        return HFCLIPAdapter(model, name, tokenizer=tokenizer, processor=preprocess)
    raise UnsupportedModelTypeError(
        f"cliplens.wrap got a {type(model).__module__}.{type(model).__qualname__}; it accepts an open_clip "
        "CLIP / CustomTextCLIP / CoCa model, a transformers CLIPModel / CLIPVisionModelWithProjection / "
        "CLIPVisionModel, or a cliplens CLIPAdapter. To load by name use cliplens.load(...)."
    )


# ---- list_models --------------------------------------------------------------------------


def list_models() -> list[ModelInfo]:
    """Every model cliplens knows by name: embedded, open_clip architectures, well-known HF ids."""
    out: list[ModelInfo] = [
        ModelInfo(e.name, "embedded", e.pretrained, True, e.description) for e in _embedded().values()
    ]
    oc = _open_clip()
    if oc is not None:
        for arch in oc.list_models():
            ok, note = open_clip_support(arch)
            out.append(ModelInfo(arch, "open_clip", tuple(oc.list_pretrained_tags_by_model(arch)), ok, note))
    for hf_id, ok, note in HF_MODELS:
        out.append(ModelInfo(hf_id, "transformers", (), ok, note))
    return out
