"""JSON files that runs resume from: written atomically, read back, compared with what a run would write."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["differences", "read_json", "write_json_atomic"]


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write JSON to a temporary file, then rename (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "", labels: tuple[str, str] = ("saved", "now")
                ) -> list[str]:
    """Human-readable differences between two JSON-like dicts (``key: A (saved) vs B (now)``)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{key}.", labels)
        elif va != vb:
            out.append(f"{prefix}{key}: {json.dumps(va)[:80]} ({labels[0]}) vs {json.dumps(vb)[:80]} ({labels[1]})")
    return out
