"""The explorer's HTTP server: the standard library's :class:`~http.server.ThreadingHTTPServer`, bound to
127.0.0.1, serving one static page (``static/index.html``, package data) and a small JSON API over
:class:`~cliplens.explore.session.Explorer`.

Why not gradio: it is a large dependency (FastAPI, uvicorn, pydantic, a front-end bundle) that cliplens would
have to pin, it fetches fonts and scripts from the network by default (nothing outside can be reached where
cliplens often runs), and its components would redraw what :mod:`cliplens.report` already draws. A page of
plain HTML and JavaScript over JSON endpoints needs nothing new, works offline, and shows the very figures the
commands write (PNG files, by URL).

Endpoints (every answer is JSON, except the page, the images and the figures):

* ``GET /`` the page; ``GET /api/info`` the model, methods, views, images and store;
* ``GET /api/images``; ``GET /images/<id>`` an image one can pick;
* ``POST /api/upload?name=FILE`` (the body: the file's bytes) -> the new image's entry;
* ``POST /api/run`` (JSON: image, texts, methods, views, templates, background) -> ``{"job": id}``;
* ``POST /api/atlas`` (JSON: layers, texts, images_per_text) -> ``{"job": id}``;
* ``GET /api/jobs/<id>`` the job's state, progress, and its result (figures by URL) or its error;
* ``GET /files/runs/…``, ``GET /files/atlas/…`` the files a job wrote (an atlas's pages link each other).

A user's mistake answers 400 with ``{"error": "<one paragraph>"}``; an unknown path 404; a bug 500 with a
message saying so — never a traceback. Requests whose ``Host`` is not this machine's loopback name are refused
(a web page elsewhere cannot reach the explorer through DNS rebinding).
"""

from __future__ import annotations

import json
import mimetypes
import os
import signal
import sys
import threading
import traceback
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cliplens.errors import CliplensError, InvalidInputError
from cliplens.explore.jobs import bug_message
from cliplens.explore.session import MAX_UPLOAD, Explorer

__all__ = ["HOST", "make_server", "serve"]

HOST = "127.0.0.1"
#: the largest JSON body taken
MAX_JSON = 1024 * 1024


def _static(name: str) -> bytes:
    return resources.files("cliplens.explore").joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the server's :class:`Explorer` (``self.server.explorer``)."""

    server_version = "cliplens-explore"
    protocol_version = "HTTP/1.1"

    @property
    def explorer(self) -> Explorer:
        return self.server.explorer  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # quiet unless asked (the terminal shows the URL)
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    # ------------------------------------------------------------------ answers
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _file(self, path: Path | None) -> None:
        if path is None:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {self.path}")
            return
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, path.read_bytes(), kind)

    def _dispatch(self, route: Any) -> None:
        """Run a route; turn a user's mistake into 400 and a bug into 500, each with one paragraph."""
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "the explorer answers only requests addressed to 127.0.0.1 or "
                                              "localhost")
            return
        try:
            route()
        except CliplensError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug: said in one paragraph
            if os.environ.get("CLIPLENS_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
                traceback.print_exc()
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, bug_message(e))

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in ("127.0.0.1", "localhost", "::1", "")

    # ------------------------------------------------------------------ methods
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._dispatch(self._get)

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _get(self) -> None:
        path = unquote(urlsplit(self.path).path)
        ex = self.explorer
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _static("index.html"), "text/html; charset=utf-8")
        elif path == "/api/info":
            self._json(ex.info())
        elif path == "/api/images":
            self._json(ex.images())
        elif path.startswith("/api/jobs/"):
            self._json(ex.job(path.removeprefix("/api/jobs/")))
        elif path.startswith("/images/"):
            self._file(ex.image_file(path.removeprefix("/images/")))
        elif path.startswith("/files/"):
            self._file(ex.file(path.removeprefix("/files/")))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _body(self, limit: int) -> bytes:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise InvalidInputError("the request's Content-Length is not a number") from None
        if n > limit:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise InvalidInputError(f"the request is {n / 2**20:.1f} MiB; the explorer takes at most "
                                    f"{limit / 2**20:.0f} MiB")
        return self.rfile.read(n) if n > 0 else b""

    def _json_body(self) -> Any:
        raw = self._body(MAX_JSON)
        try:
            return json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"the request is not valid JSON ({e})") from None

    def _post(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        ex = self.explorer
        if path == "/api/upload":
            name = (parse_qs(parts.query).get("name") or ["image"])[0]
            self._json(ex.upload(name, self._body(MAX_UPLOAD)))
        elif path == "/api/run":
            self._json({"job": ex.run(self._json_body()).id})
        elif path == "/api/atlas":
            self._json({"job": ex.atlas(self._json_body()).id})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"nothing to post at {path}")


def make_server(explorer: Explorer, port: int = 0, *, verbose: bool = False) -> ThreadingHTTPServer:
    """A server for ``explorer`` on 127.0.0.1:``port`` (0: a free port; ``server.server_address[1]`` says which),
    not yet serving: call ``serve_forever()`` (in a thread, for tests) and ``shutdown()``."""
    try:
        server = ThreadingHTTPServer((HOST, port), Handler)
    except OSError as e:
        raise InvalidInputError(f"cannot listen on {HOST}:{port} ({e.strerror or e}): pick another port with "
                                "--port (0: any free one)") from None
    server.daemon_threads = True
    server.explorer = explorer  # type: ignore[attr-defined]
    server.verbose = verbose  # type: ignore[attr-defined]
    return server


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(explorer: Explorer, port: int = 8765, *, open_browser: bool = True, verbose: bool = False) -> None:
    """Serve ``explorer`` until interrupted (Ctrl-C, or SIGTERM in the main thread), opening the page in a
    browser unless told not to; its temporary files are removed on the way out."""
    try:
        server = make_server(explorer, port, verbose=verbose)
    except CliplensError:
        explorer.close()
        raise
    url = f"http://{HOST}:{server.server_address[1]}/"
    print(f"cliplens explorer at {url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if open_browser:
        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main else None
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("cliplens explorer stopped", file=sys.stderr, flush=True)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        server.server_close()
        explorer.close()
