"""segment-eval under torchrun: each process a share of the images in a resumable folder of its own, rank 0 the
result over the whole set, equal to one process's (the confusion matrices are integer counts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["segment-eval", "toy:n=7,seed=3", "--method", "maskclip", "--overlays", "3", "--threads", "1", "--json"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _torchrun(out: Path) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    return subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "cliplens", *ARGS, "--out",
                           str(out)], env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_processes_equal_one_and_resume(tmp_path):
    one = subprocess.run([sys.executable, "-m", "cliplens", *ARGS, "--out", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    r = _torchrun(tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads(one.stdout)["methods"]["maskclip"]
    b = json.loads(r.stdout)["methods"]["maskclip"]  # only rank 0 prints
    assert (b["images"], b["miou"], b["pixel_accuracy"], b["per_class_iou"]) == \
        (a["images"], a["miou"], a["pixel_accuracy"], a["per_class_iou"])
    shares = [json.loads((tmp_path / "two" / "maskclip" / f"rank-{k}-of-2" / "progress.json").read_text())
              for k in (0, 1)]
    assert [s["state"]["done"] for s in shares] == [4, 3]  # images 0, 2, 4, 6 and 1, 3, 5
    assert [s["settings"]["share"] for s in shares] == [{"rank": 0, "world": 2}, {"rank": 1, "world": 2}]
    overlays = sorted(p.name for k in (0, 1) for p in (tmp_path / "two" / "maskclip" / f"rank-{k}-of-2" /
                                                      "overlays").iterdir())
    assert overlays == ["00000.png", "00001.png", "00002.png"]
    merged = json.loads((tmp_path / "two" / "maskclip" / "results.json").read_text())
    assert merged["miou"] == a["miou"]
    again = _torchrun(tmp_path / "two")  # everything done: each share resumes at its end, the same result
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["methods"]["maskclip"]["per_class_iou"] == a["per_class_iou"]
