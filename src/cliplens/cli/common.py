"""What every command shares: loading a model from options, checking devices, folders of images,
output options that never overwrite a user's files (the rule: :mod:`cliplens.report.files`), progress bars
(on stderr) and the console.

Command modules import torch and the model code inside the functions that use them, never at module level,
so that ``cliplens --help`` and each command's ``--help`` answer at once.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from cliplens.errors import InvalidInputError
from cliplens.models.hub import DEFAULT_SEED
from cliplens.progress import progress_bar

if TYPE_CHECKING:
    from cliplens.models import CLIPAdapter

DEFAULT_MODEL = "toy"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif")


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def progress(enabled: bool) -> Any:
    """A progress bar on stderr (a no-op when disabled): :func:`cliplens.progress.progress_bar`."""
    return progress_bar(enabled=enabled)


# ---- options naming what a command writes (one rule: cliplens.report.files) ------------------

#: what the help of every option naming a folder the command writes says
FOLDER_RULE = ("If the folder exists and is not empty, a fresh numbered subfolder (run-2, run-3, …) is made inside "
               "it: nothing there is touched.")
#: what the help of every option naming a file the command writes says
FILE_RULE = "A file that exists is refused and left as it is, unless --overwrite is given."


class OutputOption(click.Option):
    """An option naming what a command writes: ``kind`` ``"file"`` (refused if it exists, unless
    ``--overwrite``: :func:`~cliplens.report.files.claim_output`) or ``"folder"`` (new or empty, else a fresh
    ``run-N`` inside: :func:`~cliplens.report.files.fresh_dir`). ``fallback``: the folder written, relative to
    the working directory, when the option is left out only in some cases (``points --sam-checkpoint``)."""

    def __init__(self, *args: Any, kind: str, fallback: str | None = None, **kwargs: Any) -> None:
        if kind not in ("file", "folder"):
            raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.fallback = fallback


def output_option(*decls: str, kind: str, help: str, fallback: str | None = None, **kwargs: Any) -> Any:
    """A ``--out``/``--plot``/… option of ``kind`` ``"file"`` or ``"folder"`` (see :class:`OutputOption`), its
    help ending with the rule it follows."""
    rule = FILE_RULE if kind == "file" else FOLDER_RULE
    return click.option(*decls, cls=OutputOption, kind=kind, fallback=fallback, type=click.Path(path_type=Path),
                        help=f"{help} {rule}", **kwargs)


def overwrite_option(*options: str) -> Any:
    """``--overwrite``: replace the files that the command's file ``options`` (``"--plot"``, …) name when they
    exist."""
    return click.option("--overwrite", is_flag=True,
                        help=f"Replace the file of {' and '.join(options)} if it exists (by default an existing "
                             "file is refused and left as it is).")


# ---- options shared by the commands that load a model ----------------------------------------

_SEED_KEY = "cliplens.model_seed"
_TOKENIZER_KEY = "cliplens.model_tokenizer"
_NAFLEX_KEY = "cliplens.model_naflex"


def _remember_seed(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        ctx.meta[_SEED_KEY] = value
    return value


def _remember_tokenizer(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.meta[_TOKENIZER_KEY] = value
    return value


def _remember_naflex(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        ctx.meta[_NAFLEX_KEY] = value
    return value


def model_options(f: Any) -> Any:
    """``--model``, ``--pretrained``, ``--seed``, ``--device``, ``--trust-checkpoint``, ``--tokenizer``,
    ``--naflex``.

    ``--seed``, ``--tokenizer`` and ``--naflex`` are not passed to the command: :func:`load_model` reads them from
    the command's context (so every command that loads a model has them without parameters of its own).
    """
    f = click.option("--tokenizer", "tokenizer_folder", default=None, expose_value=False, callback=_remember_tokenizer,
                     type=click.Path(exists=True, file_okay=False),
                     help="A folder holding the model's Hugging Face tokenizer (tokenizer.json or a SentencePiece "
                          "model): for SigLIP models whose tokenizer cannot be fetched from the Hub.")(f)
    f = click.option("--naflex", default=None, expose_value=False, callback=_remember_naflex,
                     type=click.IntRange(min=1), metavar="PATCHES",
                     help="SigLIP 2 NaFlex models: keep each image's aspect ratio, at most PATCHES patches (the "
                          "model's processor uses 256); each image runs at its own token grid.")(f)
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
    import torch

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


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most ``--threads`` accepted: 4 per core, at least 8 (more threads than cores only slows torch down;
    a count in the tens of thousands makes the OpenMP runtime fail to allocate them and the process crash)."""
    return max(8, 4 * cpu_cores())


class ThreadCount(click.ParamType):
    """A torch thread count between 1 and :func:`max_threads`, refused with what to pass otherwise."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        n = click.INT.convert(value, param, ctx)
        if not 1 <= n <= max_threads():
            cores = cpu_cores()
            self.fail(f"{n} is not a thread count to use here: this machine has {cores} CPU core"
                      f"{'s' if cores != 1 else ''}; pass 1 to {max_threads()} (about one per core is fastest)",
                      param, ctx)
        return n


def threads_option(default: int, help: str = "Torch threads.") -> Any:
    """``--threads`` (1 to :func:`max_threads`); run the command's work inside :func:`torch_threads`."""
    return click.option("--threads", type=ThreadCount(), default=default, show_default=True,
                        help=f"{help} 1 to {max_threads()} here (4 per CPU core at most).")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block, then restore the process-wide count (commands also run
    in-process, from tests and notebooks)."""
    import torch

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
    ctx = click.get_current_context(silent=True)
    if seed is None:
        seed = ctx.meta.get(_SEED_KEY) if ctx is not None else None
    from cliplens.models import load

    meta = ctx.meta if ctx is not None else {}
    adapter = load(model, pretrained=pretrained, device=check_device(device), trust_checkpoint=trust_checkpoint,
                   seed=DEFAULT_SEED if seed is None else seed, naflex=meta.get(_NAFLEX_KEY) or False)
    if meta.get(_TOKENIZER_KEY):
        adapter.load_tokenizer(meta[_TOKENIZER_KEY])
    return adapter


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


class LayerIndices(click.ParamType):
    """``--layers``: layer indices separated by commas (``10,11``; negatives count from the end: ``-2,-1``).

    One meaning per name (``--last K`` is the last K layers): a single non-negative number, which ``--layers K``
    used to mean as "the last K", is refused with the two spellings, so an old command line never silently
    analyses another layer; one layer alone is written with a comma (``--layers 4,``) or from the end (``-1``)."""

    name = "INDICES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        try:
            idx = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            self.fail(f"{text!r}: --layers takes layer indices separated by commas (e.g. 10,11 or -2,-1; --last K "
                      "for the last K layers)", param, ctx)
        if not idx:
            self.fail("give at least one layer index (e.g. 10,11 or -1)", param, ctx)
        if "," not in text and idx[0] >= 0:
            last = f"for the last {idx[0]} layers pass --last {idx[0]}; " if idx[0] else ""
            self.fail(f"{text} alone is ambiguous: --layers takes layer indices and --last K the last K layers "
                      f"(--layers K used to mean that): {last}for layer {idx[0]} alone, --layers {idx[0]},",
                      param, ctx)
        return idx


def layer_options(what: str, default: str = "all") -> Any:
    """``--last K`` (the last K layers; ``-l``) and ``--layers INDICES`` (:class:`LayerIndices`) for a command
    that analyses ``what`` in chosen layers; ``default`` says which when neither is given. The command gets
    ``last`` and ``layers`` (``None`` when not given), and passes them on as ``last=`` and ``layers=``
    (:func:`cliplens.core.plan.select_layers` refuses both at once)."""

    def deco(f: Any) -> Any:
        f = click.option("--layers", "layers", type=LayerIndices(), default=None,
                         help=f"{what} in these layers: indices separated by commas, negatives from the end "
                              f"(e.g. 10,11 or -2,-1).")(f)
        return click.option("--last", "-l", "last", type=click.IntRange(min=1), default=None,
                            help=f"{what} in the last K layers (default: {default}).")(f)

    return deco
