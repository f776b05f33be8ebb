"""What every family's loader shares: offline handling, Hub errors, messages and suggestions.

Nothing family-specific lives here (that is in ``openclip.py``, ``hf.py``, ``toy.py``).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from cliplens.checkpoints import pickle_message
from cliplens.errors import CliplensError, MissingDependencyError, ModelLoadError, install_hint

CKPT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")

#: ``weights`` of a model built with random weights on request
RANDOM_WEIGHTS = "random"
#: the seed random weights are drawn from unless another is given (the same seed, the same weights)
DEFAULT_SEED = 0

LOCAL_HELP = (
    "To use weights you already have, point cliplens at them: "
    "cliplens.load('/path/to/folder') for a folder written by transformers' save_pretrained "
    "(config.json + model.safetensors) or by open_clip (open_clip_config.json + weights), or "
    "cliplens.load('ViT-B-32', pretrained='/path/to/checkpoint.pt') for an open_clip checkpoint file "
    "(architecture name + weights file)."
)


def hub_offline() -> bool:
    """Whether the user asked for offline Hub access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``).

    Read from the environment at call time (``huggingface_hub`` reads it once, at import).
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a core dependency
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


#: seconds the one look at the Hub may take before it counts as unreachable
PROBE_TIMEOUT_S = 4.0
#: how long a look's answer is reused (loading several models in a row looks once)
_PROBE_TTL_S = 60.0
_probe_cache: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face Hub answers at all: one quiet request (any HTTP answer counts), through
    ``huggingface_hub``'s own session (so ``HF_ENDPOINT`` and proxies apply), bounded by ``timeout`` seconds
    including name resolution. Answers are reused for a minute.

    Without this look, an unreachable Hub costs every file a library asks for five retries with back-off
    (about 25 s each, ``Retrying in 8s`` on stderr), even when the file is in the local cache.
    """
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session
    except ImportError:  # pragma: no cover - core dependency
        return True
    endpoint = constants.ENDPOINT
    now = time.monotonic()
    cached = _probe_cache.get(endpoint)
    if cached is not None and now - cached[0] < _PROBE_TTL_S:
        return cached[1]
    answer: list[bool] = []

    def look() -> None:
        try:
            get_session().head(endpoint, timeout=timeout)
            answer.append(True)
        except Exception:  # connection refused, no route, name not known, timeout, offline mode, ...
            answer.append(False)

    # a thread bounds the time name resolution may take too (the request's timeout does not cover it)
    t = threading.Thread(target=look, name="cliplens-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    ok = bool(answer and answer[0])
    _probe_cache[endpoint] = (time.monotonic(), ok)
    return ok


#: why the Hub is not used: the user's offline request, or a Hub that does not answer
OFFLINE, UNREACHABLE = "offline", "unreachable"


@contextlib.contextmanager
def offline_guard(network: bool = True) -> Iterator[str | None]:
    """Load from the local cache only when the Hub cannot (or must not) be used; yields why (``OFFLINE``,
    ``UNREACHABLE``) or ``None`` when the Hub is used as usual.

    ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set after ``huggingface_hub`` was imported are honoured (the
    library reads them once, at import; open_clip's downloads cannot be passed ``local_files_only``). With
    ``network`` (a load that may need the Hub) and no offline request, the Hub is looked at once
    (:func:`hub_reachable`); when it does not answer, the load runs offline too: files in the cache load at
    once, and a missing one fails at once instead of after minutes of retries. The library's flag is
    restored afterwards.
    """
    why = OFFLINE if hub_offline() else None
    if why is None and network and not hub_reachable():
        why = UNREACHABLE
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - core dependency
        yield why
        return
    old = constants.HF_HUB_OFFLINE
    if why is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield why
    finally:
        constants.HF_HUB_OFFLINE = old


def chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and its causes / contexts."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def repo_not_found(e: BaseException) -> bool:
    """Whether a Hub error says the repository does not exist (as opposed to: unreachable)."""
    for x in chain(e):
        if type(x).__name__ in ("RepositoryNotFoundError", "GatedRepoError"):
            return type(x).__name__ == "RepositoryNotFoundError"
        msg = str(x)
        if "is not a valid model identifier" in msg or "Repository Not Found" in msg:
            return True
    return False


def fetch_error(what: str, e: BaseException, *, why: str | None, cache_dir: str | None) -> ModelLoadError:
    """The paragraph for weights that are neither in the local cache nor fetched (``why``: from
    :func:`offline_guard`)."""
    reason = {OFFLINE: "HF_HUB_OFFLINE is set, so nothing is downloaded",
              UNREACHABLE: "the Hugging Face Hub cannot be reached from here"}.get(why or "", "no network access")
    where = f" ({cache_dir})" if cache_dir else " (the Hugging Face cache, ~/.cache/huggingface)"
    return ModelLoadError(
        f"Could not load {what}: its weights could not be fetched ({reason}) and they are not in the local "
        f"cache{where}. {LOCAL_HELP} Underlying error: {type(e).__name__}: {short(e)}"
    )


def checkpoint_error(what: str, path: str, e: BaseException, *, expected: str = "") -> ModelLoadError:
    """A readable error for a checkpoint file that could not be loaded (corrupt, foreign, pickled) or does not
    fit the model.

    The safe loader's own errors (:class:`cliplens.checkpoints.CheckpointError`, already one paragraph) are
    passed on as they are. ``expected`` says what the file should be (e.g. "a .safetensors file written by
    'cliplens toy train'") and ends the message when the file is not a checkpoint the loader can read.
    """
    causes = list(chain(e))
    for x in causes:
        if isinstance(x, CliplensError):
            return type(x)(str(x)) if isinstance(x, ModelLoadError) else ModelLoadError(str(x))
    names = {type(x).__name__ for x in causes}
    text = " ".join(str(x) for x in causes)
    expect = f" It should be {expected}." if expected else ""
    if "Unsupported global" in text:  # a real checkpoint that also pickles objects (torch.load weights_only=True)
        return ModelLoadError(pickle_message(what, path))
    if "SafetensorError" in names:
        problem = "not a valid .safetensors file"
    elif "EOFError" in names or "PytorchStreamReader failed" in text:
        problem = "truncated or corrupt"
    elif "UnpicklingError" in names or "Weights only load failed" in text:
        problem = "not a valid PyTorch checkpoint"
    else:
        return ModelLoadError(
            f"Could not load {what}: the checkpoint {path!r} does not fit the architecture or cannot be read "
            f"({type(e).__name__}: {short(e, 600)}).{expect}"
        )
    innermost = causes[-1]
    return ModelLoadError(f"Could not load {what}: {path!r} is {problem} ({type(innermost).__name__}: "
                          f"{short(innermost)}). Check the file, or download it again.{expect}")


def fmt(items: list[str], limit: int = 8) -> str:
    """``a, b, c`` — at most ``limit`` items, then how many more."""
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f", … ({more} more)" if more > 0 else "")


def short(e: BaseException, limit: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def close_matches(word: str, candidates: list[str], n: int = 5, cutoff: float = 0.6) -> list[str]:
    """Case-insensitive close matches, original spelling, best first."""
    lower: dict[str, str] = {}
    for c in candidates:
        lower.setdefault(c.lower(), c)
    hits = difflib.get_close_matches(word.lower(), list(lower), n=n, cutoff=cutoff)
    # also offer candidates that contain the word (e.g. "siglip" -> "ViT-B-16-SigLIP")
    if len(word) >= 3:
        hits += [c for c in lower if word.lower() in c and c not in hits][: max(0, n - len(hits))]
    return [lower[h] for h in hits][:n]


def looks_like_path(s: str) -> bool:
    """Whether ``s`` is meant as a file-system path rather than a name or an ``org/name`` Hub id."""
    if s.startswith(("/", "./", "../", "~", "\\")) or "\\" in s:
        return True
    if len(s) > 2 and s[1] == ":" and s[2] in "/\\":  # C:/...
        return True
    return s.count("/") > 1 or s.lower().endswith(CKPT_SUFFIXES)


def require_transformers(needed_for: str = "", extra: str = "transformers") -> Any:
    """The transformers module, or a clear error saying how to install it (``needed_for``: what needs it, e.g.
    "A second vision backbone (DINO, DINOv2)"; ``extra``: the cliplens extra that installs it)."""
    try:
        import transformers
    except ImportError as e:
        what = f"{needed_for} needs Hugging Face transformers, which is not installed" if needed_for else \
            "Hugging Face transformers is not installed"
        hint = install_hint("transformers", "transformers") if extra == "transformers" else \
            install_hint("transformers", extra)
        raise MissingDependencyError(f"{what}. Install it with: {hint}.") from e
    return transformers
