"""Reading checkpoint files: the one place cliplens calls ``torch.load``.

A ``.pt``/``.pth``/``.bin`` checkpoint is a pickle, and unpickling can run any code the file names. So
every checkpoint cliplens reads (open_clip weights, SAM, the toy training state of older versions, …)
goes through :func:`load_checkpoint`, which unpickles with ``torch.load(weights_only=True)`` (tensors,
numbers, strings, lists and dicts only) unless the caller passes ``trust=True`` — the user's explicit
``trust_checkpoint=True`` / ``--trust-checkpoint``. ``.safetensors`` files hold tensors only and are read
without any pickle.

Errors are one paragraph (:class:`CheckpointError`): a pickle that stores more than tensors (and what it
names), a truncated or corrupt file, a file that is no checkpoint at all.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cliplens.errors import ModelLoadError

__all__ = ["TRUST_HINT", "CheckpointError", "check_pickle", "load_checkpoint", "load_state_dict", "load_tensors"]

#: how a user opts in to a full pickle, named in every message that needs it
TRUST_HINT = "--trust-checkpoint (trust_checkpoint=True in Python)"

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"  # protocol 2+ pickles (torch's legacy format) start with PROTO


class CheckpointError(ModelLoadError):
    """A checkpoint file that cliplens will not or cannot read (the message says which and what to do)."""


def _short(text: str, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _needs_trust(e: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused the file for what it names (not for damage)."""
    text = str(e)
    return "Weights only load failed" in text and any(
        w in text for w in ("Unsupported global", "not an allowed global", "TorchScript"))


def pickle_message(what: str, path: str, names: list[str] | tuple[str, ...] = ()) -> str:
    """The paragraph for a pickle that stores more than tensors (loading it could run code)."""
    named = f" (it names {', '.join(names[:3])}{', …' if len(names) > 3 else ''})" if names else ""
    return (f"Could not load {what}: {path!r} is a pickle that stores more than tensors{named}; loading it needs "
            "torch's weights_only=False, which can run code hidden in the file, so cliplens does not. If you "
            f"made the file yourself or trust where it came from, pass {TRUST_HINT}; otherwise convert it to "
            ".safetensors.")


def _damaged(what: str, path: str, e: BaseException, expected: str) -> CheckpointError:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as oe:
        return CheckpointError(f"Could not load {what}: {path!r} cannot be read ({oe.strerror or oe}).")
    expect = f" It should be {expected}." if expected else ""
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        problem = "truncated or corrupt (it starts like a PyTorch checkpoint but cannot be read to the end)"
        advice = "Check the file, or download or save it again."
    else:
        problem = "not a valid PyTorch checkpoint (nor a .safetensors file)"
        advice = "Check the file: is it the one you meant to pass?"
    text = str(e)
    if "WeightsUnpickler error:" in text:  # torch's own advice before it is about trusting the file: not here
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return CheckpointError(f"Could not load {what}: {path!r} is {problem} ({type(e).__name__}: {_short(text)}). "
                           f"{advice}{expect}")


def load_tensors(path: str | os.PathLike[str], *, what: str, expected: str = "") -> dict[str, Any]:
    """A ``.safetensors`` file's tensors (no pickle involved), on the CPU."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    try:
        return load_file(path)
    except OSError as e:
        raise CheckpointError(f"Could not load {what}: {path!r} cannot be read ({e.strerror or e}).") from None
    except Exception as e:  # SafetensorError: truncated, corrupt, or another kind of file
        expect = f" It should be {expected}." if expected else ""
        raise CheckpointError(f"Could not load {what}: {path!r} is not a valid .safetensors file (truncated, "
                              f"corrupt, or another kind of file: {type(e).__name__}: {_short(e)}). Check the file, "
                              f"or save or download it again.{expect}") from None


def load_checkpoint(path: str | os.PathLike[str], *, what: str, trust: bool = False, expected: str = "",
                    map_location: Any = "cpu") -> Any:
    """What a checkpoint file holds: ``torch.load(path, weights_only=not trust)``, or a ``.safetensors`` file's
    tensors.

    Args:
        what: what is being loaded, for messages ("the SAM checkpoint", "'ViT-B-32' (open_clip)").
        trust: unpickle anything the file holds (it can run code): only on the user's explicit request.
        expected: what the file should be, ending the message for a file that is not a checkpoint.

    Raises:
        CheckpointError: the file needs ``trust`` (it stores more than tensors), is damaged or is no
            checkpoint.
    """
    import torch

    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return load_tensors(path, what=what, expected=expected)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except OSError as e:
        if not Path(path).is_file():
            raise CheckpointError(f"Could not load {what}: no file {path!r}.") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise CheckpointError(f"Could not load {what}: {path!r} cannot be read ({e.strerror}).") from None
        raise _damaged(what, path, e, expected) from None  # e.g. a zip cut short
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError, KeyError (not a pickle), ...
        if not trust and _needs_trust(e):
            raise CheckpointError(pickle_message(what, path, _unsafe_names(path, e))) from None
        raise _damaged(what, path, e, expected) from None


def _unsafe_names(path: str, e: BaseException) -> list[str]:
    """What the pickle names beyond tensors (all of it where torch can list it, else the first refused)."""
    import torch

    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    try:
        if scan is not None:
            return list(scan(path))
    except Exception:  # torch's legacy format: only the refused name is known
        pass
    return re.findall(r"GLOBAL ([\w.]+)", str(e))[:1]


def check_pickle(path: str | os.PathLike[str], *, what: str, trust: bool = False) -> None:
    """Refuse, without loading its tensors, a pickled checkpoint that stores more than tensors (for files that
    another library reads, e.g. a transformers ``pytorch_model.bin``). Nothing to do with ``trust``."""
    import torch

    path = os.fspath(path)
    if trust or path.endswith(".safetensors"):
        return
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:  # older torch: the full safe load is the check
        load_checkpoint(path, what=what)
        return
    try:
        names = scan(path)
    except Exception:  # not torch's zip format (legacy pickles, damaged files): the full safe load decides
        load_checkpoint(path, what=what)
        return
    if names:
        raise CheckpointError(pickle_message(what, path, list(names)))


def load_state_dict(path: str | os.PathLike[str], *, what: str, trust: bool = False, expected: str = "",
                    map_location: Any = "cpu") -> dict[str, Any]:
    """A model's ``state_dict`` from a checkpoint file: the file's dict itself, or its ``"state_dict"`` entry
    (training checkpoints), with a ``module.`` prefix (DataParallel) removed; a TorchScript module (only
    loadable with ``trust``) gives its own state dict."""
    import torch

    ckpt = load_checkpoint(path, what=what, trust=trust, expected=expected, map_location=map_location)
    if isinstance(ckpt, torch.jit.ScriptModule):
        ckpt = ckpt.state_dict()
        for key in ("input_resolution", "context_length", "vocab_size"):
            ckpt.pop(key, None)
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("state_dict"), Mapping):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, Mapping) or not ckpt or not all(isinstance(k, str) for k in ckpt):
        expect = f" It should be {expected}." if expected else ""
        raise CheckpointError(f"Could not load {what}: {os.fspath(path)!r} holds no model weights (a dict of named "
                              f"tensors, or one under 'state_dict'; it holds a {type(ckpt).__name__}).{expect}")
    sd = dict(ckpt)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd
