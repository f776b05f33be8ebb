"""What every family's loader shares: offline handling, Hub errors, messages and suggestions.

Nothing family-specific lives here (that is in ``openclip.py``, ``hf.py``, ``toy.py``).
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator

from cliplens.errors import ModelLoadError

CKPT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")

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


@contextlib.contextmanager
def offline_guard() -> Iterator[bool]:
    """Honour ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set after ``huggingface_hub`` was imported.

    huggingface_hub reads the variable once, at import; open_clip's downloads cannot be passed
    ``local_files_only``. While loading, the library's flag follows the environment (restored
    afterwards), so an offline request never touches the network.
    """
    offline = hub_offline()
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


def fetch_error(what: str, e: BaseException, *, offline: bool, cache_dir: str | None) -> ModelLoadError:
    why = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else "no network access"
    where = f" ({cache_dir})" if cache_dir else " (the Hugging Face cache, ~/.cache/huggingface)"
    return ModelLoadError(
        f"Could not load {what}: its weights could not be fetched ({why}) and they are not in the local "
        f"cache{where}. {LOCAL_HELP} Underlying error: {type(e).__name__}: {short(e)}"
    )


def checkpoint_error(what: str, path: str, e: BaseException, *, expected: str = "") -> ModelLoadError:
    """A readable error for a checkpoint file that could not be loaded (corrupt, foreign, pickled).

    ``expected`` says what the file should be (e.g. "a .safetensors file written by 'cliplens toy train'")
    and ends the message when the file is not a checkpoint the loader can read.
    """
    causes = list(chain(e))
    names = {type(x).__name__ for x in causes}
    text = " ".join(str(x) for x in causes)
    expect = f" It should be {expected}." if expected else ""
    if "Unsupported global" in text:  # a real checkpoint that also pickles objects (torch.load weights_only=True)
        return ModelLoadError(
            f"Could not load {what}: {path!r} is a pickle that stores more than tensors, and loading it needs "
            "torch.load(weights_only=False), which can run code hidden in the file. If you trust where it came "
            "from, pass trust_checkpoint=True (--trust-checkpoint on the command line); else convert it to "
            ".safetensors."
        )
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
