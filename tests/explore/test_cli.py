"""``cliplens explore`` as a user starts it: a process that serves the page on 127.0.0.1, with a store's atlas and
the store's model, stops on Ctrl-C or SIGTERM and removes its temporary files; a busy port is one paragraph."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.cli.conftest import one_line, run
from tests.explore.conftest import get_json

SRC = Path(__file__).resolve().parents[2] / "src"


def _start(args: list[str], tmp: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "PYTHONFAULTHANDLER": "1"}  # a stop that hangs is killed with SIGABRT: every thread's stack is printed
    # SIGINT back to its default in the child, as a user's terminal gives it (an ignored SIGINT would be inherited)
    proc = subprocess.Popen([sys.executable, "-m", "cliplens", "explore", "--port", "0", "--no-browser", *args],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    end = time.monotonic() + 60
    line = ""
    while time.monotonic() < end:
        line = proc.stderr.readline()
        m = re.search(r"cliplens explorer at (http://127\.0\.0\.1:\d+)/", line)
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the explorer did not start: {line}{proc.stderr.read()}")


def _stopped(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The stopped explorer's stderr; one still running after ``timeout`` fails with every thread's stack."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints the stacks, then the process ends
        stacks = proc.communicate(timeout=30)[1]
        raise AssertionError(f"the explorer did not stop within {timeout} s after the signal:\n{stacks}") from None


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serves_a_store_with_its_model_and_cleans_up(tmp_path_factory, tmp_path, stop):
    from tests.analyses.atlas_setup import atlas_setup

    setup = atlas_setup(tmp_path_factory)
    proc, url = _start(["--store", str(setup.store.path)], tmp_path)
    try:
        status, info = get_json(url + "/api/info")
        assert status == 200 and info["store"]["path"] == str(setup.store.path)
        assert info["model"]["name"] == setup.store.header["model"]["name"] == "toy"  # the store's model
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("cliplens-explore-")]
    finally:
        proc.send_signal(stop)
        err = _stopped(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("cliplens-explore-")]  # files removed


def test_a_busy_port_is_one_paragraph_and_leaves_nothing(random_toy_weights, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run("explore", "-m", "toy", "-p", random_toy_weights, "--port", port, "--no-browser")
    assert r.exit_code == 2, r.output
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(r.output) and "--port" in r.output
    assert "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []  # the explorer's temporary folder is gone
    r = run("explore", "--store", tmp_path / "nothing", "--no-browser")
    assert r.exit_code == 2 and "is not a cliplens store" in one_line(r.output) and "Traceback" not in r.output
    r = run("explore", "--help")
    assert r.exit_code == 0 and "--store" in r.output and "--no-browser" in r.output
