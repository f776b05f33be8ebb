"""What every command shares: loading a model from options, checking devices, folders of images,
output folders that are never overwritten, progress bars and the console."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cliplens.errors import InvalidInputError
from cliplens.models import CLIPAdapter, load
from cliplens.models.base import DEFAULT_SEED

DEFAULT_MODEL = "toy"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif")


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def progress(enabled: bool) -> Progress:
    """A progress bar on stderr (a no-op when disabled)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console(stderr=True), disable=not enabled, transient=True)


# ---- options shared by the commands that load a model ----------------------------------------

_SEED_KEY = "cliplens.model_seed"


def _remember_seed(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        ctx.meta[_SEED_KEY] = value
    return value


def model_options(f: Any) -> Any:
    """``--model``, ``--pretrained``, ``--seed``, ``--device``, ``--trust-checkpoint``.

    ``--seed`` is not passed to the command: :func:`load_model` reads it from the command's context (so every
    command that loads a model has it without a parameter of its own).
    """
    f = click.option("--trust-checkpoint", is_flag=True,
                     help="Allow a checkpoint (.pt, .pth, .bin) that is a full pickle: unpickling it can run code "
                          "stored in the file, so only for files you made or trust. Without it such a file is "
                          "refused and nothing in it runs.")(f)
    f = click.option("--seed", type=click.IntRange(min=0), default=None, expose_value=False, callback=_remember_seed,
                     help=f"Seed of --pretrained random (default {DEFAULT_SEED}): the same seed draws the same "
                          "weights. Only meaningful with random weights.")(f)
    f = click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")(f)
    f = click.option("--pretrained", "-p", default=None,
                     help="Weights for an open_clip name: a tag (laion2b_s34b_b88k), a checkpoint file, or "
                          "'random' (random weights drawn from --seed, for testing).")(f)
    f = click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
                     help="'toy', an open_clip name (ViT-B-16), 'hf-hub:…', a transformers id "
                          "(openai/clip-vit-base-patch16) or a local folder.")(f)
    return f


_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """A device torch can use here, or a :class:`CliplensError` saying what to pass."""
    d = device.strip().lower()
    if not _DEVICE.match(d):
        hint = ""
        m = re.match(r"^(?:gpu|cuda)[:_ ]?(\d+)$", d)
        if m:
            hint = f" (did you mean cuda:{m.group(1)}?)"
        elif d in ("gpu", "nvidia"):
            hint = " (did you mean cuda?)"
        raise InvalidInputError(f"--device {device!r} is not a device name{hint}: use cpu, cuda, cuda:N or mps.")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(f"--device {device}: no CUDA GPU is available on this machine (or this torch "
                                    "build has no CUDA support); use --device cpu.")
        if ":" in d and int(d.split(":")[1]) >= torch.cuda.device_count():
            raise InvalidInputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                                    f"device(s), numbered 0..{torch.cuda.device_count() - 1}.")
    if d == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError("--device mps: Apple's Metal backend is not available here; use --device cpu.")
    return d


def loader_options(values: tuple[str, ...], *, split: str | None = None) -> dict[str, str]:
    """``--option KEY=VALUE`` (repeated) and ``--split`` -> ``{KEY: VALUE}`` for a data-set loader. Values stay
    text: the layout turns each into the type it declares (true/false, integers, none, ``a|b`` lists) and
    refuses unknown or ill-typed ones with its list of options (:mod:`cliplens.datasets.options`)."""
    out: dict[str, str] = {}
    for v in values:
        k, eq, val = v.partition("=")
        k = k.strip()
        if not eq or not k:
            raise InvalidInputError(f"--option takes KEY=VALUE (e.g. split=val or reduce_zero_label=true), got {v!r}")
        if k in out:
            raise InvalidInputError(f"--option {k} is given twice ({out[k]!r} and {val.strip()!r}): give it once")
        out[k] = val.strip()
    if split is not None:
        if "split" in out:
            raise InvalidInputError(f"the split is given twice (--split {split} and --option split={out['split']}): "
                                    "give it once")
        out["split"] = split
    return out


def threads_option(default: int, help: str = "Torch threads.") -> Any:
    """``--threads`` (1 or more); run the command's work inside :func:`torch_threads`."""
    return click.option("--threads", type=click.IntRange(min=1), default=default, show_default=True, help=help)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block, then restore the process-wide count (commands also run
    in-process, from tests and notebooks)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def load_model(model: str, pretrained: str | None, device: str, trust_checkpoint: bool = False, *,
               seed: int | None = None) -> CLIPAdapter:
    """The model the options name; ``seed`` (random weights) defaults to the command's ``--seed``, else
    :data:`~cliplens.models.base.DEFAULT_SEED`."""
    if seed is None:
        ctx = click.get_current_context(silent=True)
        seed = ctx.meta.get(_SEED_KEY) if ctx is not None else None
    return load(model, pretrained=pretrained, device=check_device(device), trust_checkpoint=trust_checkpoint,
                seed=DEFAULT_SEED if seed is None else seed)


def weights_note(adapter: CLIPAdapter) -> str:
    """``" · RANDOM WEIGHTS (scores mean nothing)"`` for random-weight models, else ``""``."""
    return " · RANDOM WEIGHTS (scores mean nothing)" if adapter.random_weights else ""


def model_record(adapter: CLIPAdapter) -> dict[str, Any]:
    """What JSON outputs say about the model (with the seed of random weights)."""
    seed = {"seed": adapter.seed} if adapter.random_weights else {}
    return {"model": adapter.name, "family": adapter.family, "weights": adapter.weights,
            "random_weights": adapter.random_weights, **seed}


# ---- images ----------------------------------------------------------------------------------

def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def expand_images(paths: Sequence[str], *, recursive: bool = False) -> list[str]:
    """Folders stand for the image files inside them (sorted; hidden and non-image files skipped;
    sub-folders with ``recursive``); files are kept as given."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = path.rglob("*") if recursive else path.iterdir()
            found = sorted(str(f) for f in files
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not _hidden(f)
                           and not any(_hidden(parent) for parent in f.relative_to(path).parents if parent.name))
            if not found:
                where = "or its sub-folders " if recursive else ""
                more = "" if recursive else " (add --recursive to look in sub-folders)"
                raise InvalidInputError(f"folder {p!r} {where}has no image files ({', '.join(IMAGE_SUFFIXES)}){more}")
            out += found
        else:
            out.append(p)
    return out


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
