"""A toy training run's folder: its resumable state, and what an earlier run left there.

The state is a JSON record (step, config, optimizer settings, RNG states) naming one safetensors file with
every tensor (model, optimizer moments, torch RNG state), so resuming needs no pickle; the JSON is replaced
atomically after its tensors are written. :func:`prepare_run` decides, before any work, whether a folder's
earlier run is resumed, replaced (``overwrite``) or refused: a user's run is never replaced silently. Used by
:mod:`cliplens.experiments.train`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cliplens.checkpoints import CheckpointError, load_checkpoint, load_tensors
from cliplens.errors import CliplensError, InvalidInputError, OutputExistsError
from cliplens.jsonio import read_json, write_json_atomic

__all__ = ["LEGACY_STATE", "RUN_FILES", "STATE_FORMAT", "STATE_JSON", "earlier_run", "load_training_state",
           "prepare_run", "save_training_state"]

#: the training state of a run folder: a JSON record (step, config, optimizer settings, RNG states) that
#: names the safetensors file holding every tensor (model, optimizer moments, torch RNG state). The JSON is
#: replaced atomically after its tensors are written, so the folder always holds one complete state.
STATE_JSON = "checkpoint.json"
STATE_FORMAT = "cliplens toy-train state 1"
#: the training state of cliplens before 0.2: a pickle, only ever loaded on the user's explicit trust
LEGACY_STATE = "checkpoint.pt"
#: what a run writes into its folder (an earlier run is recognised by any of these)
RUN_FILES = (STATE_JSON, LEGACY_STATE, "train_log.jsonl", "config.json", "summary.json")


def _state_files(out: Path) -> list[Path]:
    return sorted(out.glob("checkpoint-*.safetensors"))


def save_training_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                        config: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Write the resumable state of step ``step`` (completed steps) of a run with ``config`` (the run's
    ``TrainConfig.to_dict()``) to ``out`` as safetensors + JSON; returns the JSON's path. Nothing in it needs a
    pickle to be read back (:func:`load_training_state`)."""
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {f"model.{k}": v.detach().cpu().contiguous().clone()
                                  for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for pid, st in osd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optimizer.{pid}.{key}"] = val.detach().cpu().contiguous().clone()
            else:
                opt_scalars.setdefault(str(pid), {})[key] = val
    tensors["rng.torch"] = torch.get_rng_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    name = f"checkpoint-{step:08d}.safetensors"
    tmp = out / (name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp))
    os.replace(tmp, out / name)
    record = {
        "format": STATE_FORMAT,
        "tensors": name,
        "step": step,  # number of completed steps
        "config": config,
        "optimizer": {"param_groups": osd["param_groups"], "state": opt_scalars},
        "numpy_rng": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "extra": extra,
    }
    write_json_atomic(out / STATE_JSON, record)
    for old in _state_files(out):
        if old.name != name:
            old.unlink(missing_ok=True)
    return out / STATE_JSON


def _bad_state(path: Path, why: str) -> CliplensError:
    return InvalidInputError(f"{path} is not a training state that 'cliplens toy train' can resume ({why}). Pass "
                             "--overwrite (overwrite=True) to start a new run in that folder, or another --out.")


def load_training_state(out: str | Path, *, trust_checkpoint: bool = False) -> dict[str, Any] | None:
    """The resumable state a run saved in ``out`` (``None`` when there is none): ``model`` and ``optimizer``
    state dicts, ``step``, ``config``, ``torch_rng``, ``numpy_rng`` (as :func:`numpy.random.get_state`) and
    ``extra``.

    Read from ``checkpoint.json`` + its safetensors file, without any pickle. A ``checkpoint.pt`` of an
    older cliplens (a pickle, which can run code when loaded) is read only with ``trust_checkpoint``.
    """
    out = Path(out)
    path = out / STATE_JSON
    if path.is_file():
        try:
            rec = read_json(path)
            tensors_name = rec["tensors"]
            step, config = int(rec["step"]), rec["config"]
            groups, scalars = rec["optimizer"]["param_groups"], rec["optimizer"]["state"]
            nrng = rec["numpy_rng"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _bad_state(path, f"{type(e).__name__}: {e}") from None
        if rec.get("format") != STATE_FORMAT:
            raise _bad_state(path, f"format {rec.get('format')!r}, expected {STATE_FORMAT!r}")
        tensors = load_tensors(out / str(tensors_name), what=f"the training state in {out}",
                               expected=f"the tensors of {path}")
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        opt_state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, pid, key = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[key] = v
        for pid, vals in scalars.items():
            opt_state.setdefault(int(pid), {}).update(vals)
        if "rng.torch" not in tensors or "rng.numpy_keys" not in tensors or not model:
            raise _bad_state(out / str(tensors_name), "it lacks the model or the random states")
        keys = tensors["rng.numpy_keys"].numpy().astype(np.uint32)
        return {
            "model": model, "optimizer": {"state": opt_state, "param_groups": groups}, "step": step,
            "config": config, "torch_rng": tensors["rng.torch"],
            "numpy_rng": (nrng["kind"], keys, int(nrng["pos"]), int(nrng["has_gauss"]), float(nrng["cached_gaussian"])),
            "extra": rec.get("extra") or {},
        }
    legacy = out / LEGACY_STATE
    if not legacy.is_file():
        return None
    if not trust_checkpoint:
        raise CheckpointError(
            f"{legacy} is the training state of an older cliplens, saved as a pickle; unpickling it could run code "
            "hidden in the file, so cliplens does not. If you made this run yourself, pass --trust-checkpoint "
            "(trust_checkpoint=True) to resume it once: the run goes on and saves its state as checkpoint.json + "
            ".safetensors, which need no trust. Otherwise pass --overwrite to start a new run in that folder, "
            "or another --out.")
    state = load_checkpoint(legacy, what=f"the training state in {out}", trust=True)
    need = ("model", "optimizer", "step", "config", "torch_rng", "numpy_rng")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise _bad_state(legacy, f"it holds no {', '.join(need)}")
    state.setdefault("extra", {})
    return state


def earlier_run(out: Path) -> list[str]:
    """The files of an earlier run in ``out``."""
    return [f for f in RUN_FILES if (out / f).exists()] + [p.name for p in _state_files(out)]


def prepare_run(out: Path, *, resume: bool, overwrite: bool, trust_checkpoint: bool,
                 export: str | Path | None) -> dict[str, Any] | None:
    """Check the run folder and the export path before any work; returns the state to resume (or ``None``).

    An earlier run's files are never replaced silently: they are resumed (``resume``), replaced
    (``overwrite``, which deletes them first), or the run is refused. So is an existing export file.
    """
    earlier = earlier_run(out)
    listed = ", ".join(earlier[:5]) + (", …" if len(earlier) > 5 else "")
    state = load_training_state(out, trust_checkpoint=trust_checkpoint) if resume else None
    if earlier and state is None and not overwrite:
        if resume:
            raise OutputExistsError(
                f"--out {out} holds files of an earlier run ({listed}) but no training state to resume from; "
                "they are left as they are. Pass --overwrite (overwrite=True) to replace them with a new run, or "
                "another --out.")
        raise OutputExistsError(
            f"--out {out} holds an earlier training run ({listed}); it is left as it is. Pass --resume "
            "(resume=True) to continue it, --overwrite (overwrite=True) to replace it with a new run, or another "
            "--out.")
    if export is not None and not overwrite:
        ex = Path(export).expanduser()
        there = [str(p) for p in (ex, ex.with_suffix(".json")) if p.exists()]
        if there:
            raise OutputExistsError(f"--export {ex}: {' and '.join(there)} already exist(s) and would be "
                                    "overwritten; pass --overwrite (overwrite=True) to replace them, or another "
                                    "--export path.")
    if state is None and overwrite:
        for name in earlier:
            (out / name).unlink(missing_ok=True)
    return state
