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
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "cliplens", "explore", "--port", "0", "--no-browser", *args],
                            stderr=subprocess.PIPE, text=True, env=env)
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
        _, err = proc.communicate(timeout=30)
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
