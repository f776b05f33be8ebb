"""Checkpoints that carry a payload: unpickling them creates a file (harmless proof that code ran).

A safe load never creates the file; :func:`test_the_payload_runs_when_trusted` (in tests/test_checkpoints.py)
shows that the payload is real, so a test that finds no file means the loader refused it.
"""

from __future__ import annotations

import argparse
import pathlib
from pathlib import Path
from typing import Any

import torch


class CreatesFile:
    """Unpickled, it calls ``Path(target).touch()``."""

    def __init__(self, target: str | Path) -> None:
        self.target = pathlib.Path(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.target,))


def save_payload(path: str | Path, target: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """A checkpoint with real weights (``state``, or one tensor) and a payload that creates ``target``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state if state is not None else {"w": torch.zeros(2)},
                "payload": CreatesFile(target)}, path)
    return path


def save_full_pickle(path: str | Path, state: dict[str, torch.Tensor]) -> Path:
    """A legitimate training checkpoint that pickles more than tensors (its arguments, as many trainers save
    them): refused without trust, loaded with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1, epochs=3)}, path)
    return path
