"""A store survives SIGKILL (resumed: the same as an uninterrupted run, bit for bit) and is shared by
processes under torchrun (the same as a single process)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cliplens.store import Store

DATA = "toy:n=48,count=1,label=shape"


def _cmd(out: Path, weights: Path) -> list[str]:
    return ["store", "build", DATA, "--model", "toy", "--pretrained", str(weights), "--out", str(out),
            "--chunk-size", "4", "--batch-size", "2", "--templates", "none", "--threads", "1"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cliplens", *args], env=_env(), capture_output=True, text=True,
                          timeout=300, **kw)


def _same_store(a: Path, b: Path) -> None:
    sa, sb = Store(a), Store(b)
    assert len(sa) == len(sb) == 48
    for name in sa.fields:
        np.testing.assert_array_equal(sa.field(name)[:], sb.field(name)[:], err_msg=name)  # bit for bit
    assert sa.ids == sb.ids and sa.class_names == sb.class_names
    np.testing.assert_array_equal(sa.projections["classifier"].numpy(), sb.projections["classifier"].numpy())


@pytest.fixture(scope="module")
def reference(random_toy_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "store"
    r = _run(_cmd(out, random_toy_weights))
    assert r.returncode == 0, r.stderr
    return out


def test_killed_and_resumed_equals_an_uninterrupted_run(reference, random_toy_weights, tmp_path):
    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "cliplens", *_cmd(out, random_toy_weights)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("chunk-*.safetensors"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = sorted(out.glob("chunk-*.safetensors"))
    assert 3 <= len(done) < 12, "the run was not killed mid-way"
    assert not (out / "manifest.json").exists()
    with pytest.raises(Exception, match="unfinished store"):
        Store(out)
    r = _run(_cmd(out, random_toy_weights))
    assert r.returncode == 0, r.stderr
    assert f"reused {len(done)}" in " ".join(r.stdout.split())
    assert not list(out.glob("*.tmp*"))  # the chunk in flight was never half-written under its name
    _same_store(out, reference)


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun is not installed")
def test_two_processes_under_torchrun_equal_one(reference, random_toy_weights, tmp_path):
    out = tmp_path / "store"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "cliplens",
                        *_cmd(out, random_toy_weights)], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = {c["rank"] for c in Store(out).manifest["chunks"]}
    assert ranks == {0, 1}  # each process wrote its own chunks
    _same_store(out, reference)
