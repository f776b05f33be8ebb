"""Fixtures of the explorer's tests: an explorer of the small random toy model, served on a free port of
127.0.0.1 in a thread, and a tiny HTTP client for it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest

from cliplens.explore import Explorer, make_server
from tests.cli.conftest import tiny_vit  # noqa: F401 (a fixture)
from tests.conftest import REFERENCE_IMAGES

#: a real photo (JPEG) of the shared reference data
PHOTO = REFERENCE_IMAGES / "coco-mini" / "train2017" / "000000030752.jpg"


def served(explorer: Explorer) -> SimpleNamespace:
    """``explorer`` served on a free port in a daemon thread: ``url``, ``server``, ``stop()``."""
    server = make_server(explorer, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        explorer.close()

    return SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", server=server, stop=stop,
                           explorer=explorer)


@pytest.fixture(scope="module")
def app(random_toy):
    s = served(Explorer(random_toy))
    yield s
    s.stop()


def call(url: str, data: bytes | None = None, *, headers: dict[str, str] | None = None,
         method: str | None = None) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` of a request (errors included)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def post_json(url: str, value: Any) -> tuple[int, Any]:
    status, body, _ = call(url, json.dumps(value).encode(), headers={"Content-Type": "application/json"})
    return status, json.loads(body)


def get_json(url: str) -> tuple[int, Any]:
    status, body, _ = call(url)
    return status, json.loads(body)


def wait(url: str, job: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it is done or failed."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, d = get_json(f"{url}/api/jobs/{job}")
        assert status == 200, d
        if d["state"] in ("done", "failed"):
            return d
        time.sleep(0.1)
    raise AssertionError(f"job {job} still running after {timeout} s")
