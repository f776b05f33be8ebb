"""Names → model families: :func:`load`, :func:`wrap`, :func:`list_models`, :func:`register_embedded`.

This module only *parses* names and dispatches; each family loads its own models in its file
(``openclip.py``, ``hf.py``, ``toy.py``). How :func:`load` reads ``name`` (first rule that applies):

1. **Explicit prefixes.** ``"open_clip:ViT-B-32"`` is an open_clip architecture;
   ``"hf:openai/clip-vit-base-patch16"`` or ``"transformers:…"`` is a Hugging Face transformers
   id (or folder); ``"hf-hub:org/repo"`` and ``"local-dir:/path"`` are open_clip's own schemas (an
   open_clip model on the Hub / in a folder).
2. **Embedded models** (``"toy"``, ``"toy-spurious"``, and any :func:`register_embedded` added).
3. **open_clip architectures**, spelled as open_clip spells them (``"ViT-B-32"``, …), with
   ``pretrained`` a tag (``"laion2b_s34b_b79k"``), a local checkpoint file, or ``"random"`` for
   random weights (drawn from ``seed``, default 0). Without ``pretrained`` it is an error listing
   the tags: random weights are never used by accident. A tag trained with QuickGELU gets a QuickGELU model.
4. **Existing paths** are local: a folder with ``open_clip_config.json`` opens with open_clip, a
   folder with ``config.json`` with transformers. A bare weights file does not say which
   architecture it is: pass the architecture as ``name`` and the file as ``pretrained``.
5. **Names containing "/"** are Hugging Face transformers ids (``"openai/clip-vit-base-patch16"``),
   except OpenAI's spelling of an open_clip architecture (``"ViT-B/32"`` is ``"ViT-B-32"``,
   ``"ViT-L/14@336px"`` is ``"ViT-L-14-336"``); SigLIP ids (``"google/siglip-base-patch16-224"``) among them.

Anything else raises :class:`~cliplens.errors.ModelNotFoundError` with close matches.

Every checkpoint file is read through :mod:`cliplens.checkpoints` (tensors only unless
``trust_checkpoint``); a model that needs the Hugging Face Hub while the Hub cannot be reached loads
from the local cache or fails at once (:func:`cliplens.models.hub.offline_guard`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cliplens.errors import (
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
    install_hint,
)
from cliplens.models import hf, openclip, toy
from cliplens.models.base import DEFAULT_SEED, CLIPAdapter
from cliplens.models.hub import LOCAL_HELP, close_matches, looks_like_path

__all__ = ["ModelInfo", "UnsupportedModelTypeError", "list_models", "load", "register_embedded", "wrap"]


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


def register_embedded(
    name: str,
    loader_fn: Callable[..., CLIPAdapter],
    description: str = "",
    *,
    pretrained: tuple[str, ...] | list[str] = (),
) -> None:
    """Make ``load(name)`` call ``loader_fn(pretrained=...)``.

    ``loader_fn`` receives the ``pretrained`` argument given to :func:`load` (``None`` when
    omitted) as a keyword and returns a :class:`CLIPAdapter` (on the CPU, float32); :func:`load`
    then moves it to the requested device and dtype. ``pretrained`` lists the tags it accepts
    (shown by :func:`list_models`). Registering a name again replaces it.
    """
    if not name or "/" in name or ":" in name:
        raise ValueError(f"embedded model names must be plain words without '/' or ':'; got {name!r}")
    _EMBEDDED[name] = _Embedded(name, loader_fn, description, tuple(pretrained))


for _name, _loader, _description, _tags in toy.EMBEDDED:
    register_embedded(_name, _loader, _description, pretrained=_tags)


def embedded_names() -> list[str]:
    return sorted(_EMBEDDED)


# ---- load ---------------------------------------------------------------------------------------


def _unknown(name: str, extra: str = "") -> ModelNotFoundError:
    pool = openclip.architecture_names() + list(_EMBEDDED) + [m for m, _, _ in hf.KNOWN_IDS]
    close = close_matches(name, pool)
    did = f" Did you mean: {', '.join(close)}?" if close else ""
    return ModelNotFoundError(
        f"Unknown model {name!r}.{did}{extra} cliplens.load accepts an open_clip architecture "
        "(e.g. 'ViT-B-16', with pretrained=<tag> or a checkpoint path), 'hf-hub:org/repo' for an open_clip "
        "model on the Hugging Face Hub, a Hugging Face transformers id (e.g. 'openai/clip-vit-base-patch16'), "
        f"an embedded model ({', '.join(embedded_names()) or 'none registered'}), or a local file or "
        f"folder. {LOCAL_HELP} cliplens.list_models() (or `cliplens models`) lists the known names."
    )


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


def load(
    name: str | os.PathLike[str],
    pretrained: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    trust_checkpoint: bool = False,
    seed: int = DEFAULT_SEED,
    naflex: bool | int = False,
) -> CLIPAdapter:
    """Load a CLIP model by a familiar name and wrap it for cliplens.

    See the module docstring for how ``name`` is read. Examples::

        load("ViT-B-32", pretrained="laion2b_s34b_b79k")   # open_clip name + tag
        load("ViT-B-16", pretrained="/ckpts/vit_b16.pt")    # open_clip name + local checkpoint
        load("ViT-B-16", pretrained="random")               # random weights (seed 0), for tests
        load("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
        load("openai/clip-vit-base-patch16")                # transformers id
        load("/models/my-clip")                              # folder (transformers or open_clip)
        load("toy")                                          # embedded

    Args:
        name: model name, Hub id or local path.
        pretrained: open_clip tag, checkpoint file or ``"random"`` (open_clip names), or the tag of
            an embedded model.
        device: where the model goes.
        dtype: parameter dtype (default float32).
        cache_dir: download cache (defaults to each library's own).
        tokenizer: the tokenizer to use instead of the model's own.
        trust_checkpoint: allow a checkpoint (``.pt``, ``.bin``, …) that is a full pickle (``torch.load``
            with ``weights_only=False``, which can run code stored in the file). Only for files you trust;
            without it such a file is refused with a :class:`ModelLoadError` and nothing in it runs.
        seed: the seed ``pretrained="random"`` draws the weights from (default 0): the same seed gives the
            same weights, so runs and stores with random weights can be repeated and reloaded. Ignored
            for any other weights.
        naflex: SigLIP 2 NaFlex models only (transformers ``Siglip2*``): keep each image's aspect ratio, at most
            this many patches (``True``: the model's own ``max_num_patches``), each image at its own token grid
            (:attr:`cliplens.models.hf.HFCLIPAdapter.naflex`). Default: the fixed native grid, so images batch.

    Raises:
        PretrainedRequiredError: an open_clip architecture without ``pretrained`` (lists its tags).
        ModelNotFoundError: no loader knows ``name`` (or ``pretrained`` is no tag of it).
        ModelLoadError: a known model whose weights could not be fetched or read.
        UnsupportedArchitectureError: the image tower cannot be decomposed (a family cliplens does not read).
        MissingDependencyError: open_clip or transformers is needed but not installed.
    """
    if naflex is not False and naflex != 0:
        adapter = load(name, pretrained, device=device, dtype=dtype, cache_dir=cache_dir, tokenizer=tokenizer,
                       trust_checkpoint=trust_checkpoint, seed=seed)
        return with_naflex(adapter, naflex)
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
                return openclip.create(arch, None, trust_checkpoint=trust_checkpoint, **kw)
            return openclip.load_architecture(arch, pretrained, trust_checkpoint=trust_checkpoint, seed=seed, **kw)
    for prefix in ("hf:", "transformers:"):
        if low.startswith(prefix):
            target = name[len(prefix):]
            _no_pretrained(target, pretrained, "a Hugging Face transformers id")
            path = Path(target).expanduser()
            return hf.load(str(path) if path.is_dir() else target, local=path.is_dir(),
                           trust_checkpoint=trust_checkpoint, **kw)
    if low.startswith(("hf-hub:", "local-dir:")):
        _no_pretrained(name, pretrained, "an open_clip 'hf-hub:'/'local-dir:' model")
        return openclip.create(name, None, trust_checkpoint=trust_checkpoint, **kw)

    if name in _EMBEDDED:
        return _finish(_EMBEDDED[name].loader(pretrained=pretrained), device, dtype)

    oc_names = openclip.architecture_names()
    if name in oc_names:
        return openclip.load_architecture(name, pretrained, trust_checkpoint=trust_checkpoint, seed=seed, **kw)

    path = Path(name).expanduser()
    if path.exists():
        return _load_local(path, pretrained, trust_checkpoint=trust_checkpoint, **kw)

    if "/" in name or "\\" in name:
        if looks_like_path(name):
            raise ModelNotFoundError(f"No such file or folder: {name!r}. {LOCAL_HELP}")
        openai_spelling = openclip.from_openai_name(name)  # "ViT-B/32", "ViT-L/14@336px" (OpenAI's clip.load)
        if openai_spelling in oc_names:
            return openclip.load_architecture(openai_spelling, pretrained, trust_checkpoint=trust_checkpoint,
                                              seed=seed, **kw)
        if name.count("/") != 1 or not all(name.split("/")):
            raise _unknown(name, " A Hugging Face id has the form 'org/name'.")
        _no_pretrained(name, pretrained, "a Hugging Face transformers id")
        return hf.load(name, local=False, trust_checkpoint=trust_checkpoint, **kw)

    if openclip.installed() is None:
        raise MissingDependencyError(
            f"{name!r} is not an embedded model, a local path or a Hugging Face id; open_clip names (such as "
            f"'ViT-B-32') need open_clip, which is not installed. Install it with: "
            f"{install_hint('open_clip_torch', 'open-clip')}."
        )
    raise _unknown(name)


def _load_local(path: Path, pretrained: str | None, *, trust_checkpoint: bool = False, **kw: Any) -> CLIPAdapter:
    if path.is_dir():
        has_oc = (path / "open_clip_config.json").is_file()
        has_hf = (path / "config.json").is_file()
        if has_oc and (openclip.weight_files(path) or not has_hf):
            _no_pretrained(str(path), pretrained, "a folder")
            return openclip.create(f"local-dir:{path.resolve()}", None, trust_checkpoint=trust_checkpoint, **kw)
        if has_hf:
            _no_pretrained(str(path), pretrained, "a folder")
            return hf.load(str(path), local=True, trust_checkpoint=trust_checkpoint, **kw)
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


# ---- wrap ---------------------------------------------------------------------------------------


def with_naflex(adapter: CLIPAdapter, naflex: bool | int) -> CLIPAdapter:
    """Set SigLIP 2 NaFlex variable resolution on a loaded adapter, or say why it cannot be."""
    if not isinstance(adapter, hf.HFCLIPAdapter):
        raise InvalidInputError(
            f"naflex (variable resolution) is SigLIP 2's, as transformers runs it (Siglip2Model); "
            f"{adapter.name or type(adapter.model).__name__} is not one: load without naflex")
    adapter.naflex = naflex
    return adapter


def wrap(model: Any, *, name: str = "", tokenizer: Any = None, preprocess: Any = None,
         naflex: bool | int = False) -> CLIPAdapter:
    """Wrap a model you already loaded, without copying its weights.

    Accepts an open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa`` (``preprocess``: its image
    transform; ``name``: its open_clip name, which picks the tokenizer), a transformers
    ``CLIPModel`` / ``CLIPVisionModelWithProjection`` / ``CLIPVisionModel`` (``preprocess``: its
    ``CLIPImageProcessor``), or a :class:`CLIPAdapter` (returned as is). ``naflex``: as in :func:`load`.
    """
    if naflex is not False and naflex != 0:
        return with_naflex(wrap(model, name=name, tokenizer=tokenizer, preprocess=preprocess), naflex)
    if isinstance(model, CLIPAdapter):
        return model
    if openclip.is_model(model):
        return openclip.OpenCLIPAdapter(model, name, tokenizer=tokenizer, preprocess=preprocess, weights="wrapped")
    if hf.is_model(model):
        return hf.HFCLIPAdapter(model, name, tokenizer=tokenizer, processor=preprocess, weights="wrapped")
    raise UnsupportedModelTypeError(
        f"cliplens.wrap got a {type(model).__module__}.{type(model).__qualname__}; it accepts an open_clip "
        "CLIP / CustomTextCLIP / CoCa model, a transformers CLIPModel / CLIPVisionModelWithProjection / "
        "CLIPVisionModel, or a cliplens CLIPAdapter. To load by name use cliplens.load(...)."
    )


# ---- list_models --------------------------------------------------------------------------------


def list_models() -> list[ModelInfo]:
    """Every model cliplens knows by name: embedded, open_clip architectures, well-known HF ids."""
    out: list[ModelInfo] = [
        ModelInfo(e.name, "embedded", e.pretrained, True, e.description) for e in _EMBEDDED.values()
    ]
    for arch in openclip.architecture_names():
        ok, note = openclip.support(arch)
        out.append(ModelInfo(arch, "open_clip", tuple(openclip.pretrained_tags(arch)), ok, note))
    for hf_id, ok, note in hf.KNOWN_IDS:
        out.append(ModelInfo(hf_id, "transformers", (), ok, note))
    return out
