"""A real HTTP file server on 127.0.0.1 for the WIS2 tests, with scripted misbehaviour per path.

Why a real server: the downloader's promises (never store an error page, retry 429/5xx, notice a
short body, time out on a stalled server) are about what happens on a socket, so the tests speak
HTTP over loopback to this ``ThreadingHTTPServer`` instead of mocking urllib.

``start_http(root)`` serves the files under ``root`` (GET and HEAD; ``..`` cannot leave it) on a
port the kernel picks, in a thread of the test process. ``server.script(path, steps)`` makes the
next GETs of ``path`` behave as listed, one step per request, then ``then`` (default ``"ok"``):

* an int: that status with a small HTML error page (what a real server sends);
* ``"ok"``: the file, or 404 when it does not exist;
* ``"truncate"``: a ``Content-Length`` larger than the body, half the body, then the connection closed;
* ``"slow"``: headers and half the body, then a stall of ``slow_seconds`` before the rest;
* ``"drop"``: the connection closed without any answer;
* a tuple ``(step, {header: value})``: the step with extra headers, e.g. ``(429, {"Retry-After": "1"})``.

``hits(path)`` counts GETs, ``headers(path)`` holds the last GET's request headers. It is plain
code (no pytest) so end-to-end tests and perf scripts can import it; stop it with ``stop()`` or use
it as a context manager.
"""

from __future__ import annotations

import collections
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

LOCALHOST = "127.0.0.1"
logger = logging.getLogger(__name__)
STEP_ACTIONS = frozenset({"ok", "truncate", "slow", "drop"})


def _key(path: str) -> str:
    """The key of a path in scripts and counters: unquoted, without query and leading slashes."""
    return unquote(urlsplit(path).path).lstrip("/")


def _normalise_step(step) -> tuple[object, dict[str, str]]:
    headers: dict[str, str] = {}
    if isinstance(step, tuple):
        step, headers = step
    if isinstance(step, bool) or not (isinstance(step, int) and 100 <= step <= 599 or step in STEP_ACTIONS):
        raise ValueError(f"script step must be an HTTP status or one of {sorted(STEP_ACTIONS)}, got {step!r}")
    return step, dict(headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, slow_seconds: float):
        self.root = root.resolve()
        self.slow_seconds = slow_seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.scripts: dict[str, collections.deque] = {}
        self.then: dict[str, tuple[object, dict[str, str]]] = {}
        self.hit_counts: collections.Counter[str] = collections.Counter()
        self.last_headers: dict[str, dict[str, str]] = {}
        super().__init__((LOCALHOST, 0), _Handler)

    def next_step(self, key: str, count: bool) -> tuple[object, dict[str, str]]:
        with self.lock:
            if not count:
                return "ok", {}
            queue = self.scripts.get(key)
            if queue:
                return queue.popleft()
            return self.then.get(key, ("ok", {}))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(count=False, body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(count=True, body=True)

    def _answer(self, count: bool, body: bool) -> None:
        key = _key(self.path)
        if count:
            with self.server.lock:
                self.server.hit_counts[key] += 1
                self.server.last_headers[key] = dict(self.headers.items())
        step, extra = self.server.next_step(key, count)
        if step == "drop":
            self.close_connection = True
            return
        if isinstance(step, int):
            page = f"<html><body><h1>{step}</h1>error page, not data</body></html>".encode()
            self._send(step, page, extra, body)
            return
        data = self._file(key)
        if data is None:
            self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", extra, body)
            return
        if step == "ok" or not body:
            self._send(200, data, extra, body)
            return
        half = len(data) // 2
        if step == "truncate":
            self._headers(200, len(data) + max(1, len(data)), extra)
            self._write(data[:half])
            self.close_connection = True
            return
        # "slow": half now, the rest after a stall (cut short when the server stops)
        self._headers(200, len(data), extra)
        self._write(data[:half])
        if not self.server.stopping.wait(self.server.slow_seconds):
            self._write(data[half:])

    def _file(self, key: str) -> bytes | None:
        path = (self.server.root / key).resolve()
        if not path.is_relative_to(self.server.root) or not path.is_file():
            return None
        return path.read_bytes()

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        content_type = "application/octet-stream" if 200 <= status < 300 else "text/html"
        names = {name.lower() for name in extra}
        if "content-type" not in names:
            self.send_header("Content-Type", content_type)
        if "content-length" not in names:
            self.send_header("Content-Length", str(length))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, data: bytes, extra: dict[str, str], body: bool) -> None:
        self._headers(status, len(data), extra)
        if body:
            self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (a timeout test): nothing to do
            self.close_connection = True


class HttpServer:
    """A running test HTTP server; see the module docstring."""

    def __init__(self, httpd: _Server, thread: threading.Thread):
        self._httpd = httpd
        self._thread = thread
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.host = LOCALHOST
        self.port = httpd.server_address[1]
        self.root = httpd.root
        self.base_url = f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """The URL of ``path`` (relative to ``root``), percent-encoded."""
        return f"{self.base_url}/{quote(path.lstrip('/'))}"

    def put(self, path: str, data: bytes) -> str:
        """Write ``data`` to ``root/path`` (directories created); return its URL."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url(path)

    def script(self, path: str, steps, *, then="ok") -> None:
        """Make the next GETs of ``path`` follow ``steps`` (replacing any earlier script), then ``then``."""
        queue = collections.deque(_normalise_step(step) for step in steps)
        final = _normalise_step(then)
        with self._httpd.lock:
            self._httpd.scripts[_key(path)] = queue
            self._httpd.then[_key(path)] = final

    def hits(self, path: str) -> int:
        """How many GETs of ``path`` arrived so far."""
        with self._httpd.lock:
            return self._httpd.hit_counts[_key(path)]

    def headers(self, path: str) -> dict[str, str]:
        """The request headers of the last GET of ``path`` (empty when none)."""
        with self._httpd.lock:
            return dict(self._httpd.last_headers.get(_key(path), {}))

    def stop(self) -> None:
        """Stop serving, release stalled answers, close the socket, join the thread (idempotent)."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._httpd.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_http(root: Path | str, *, slow_seconds: float = 5.0) -> HttpServer:
    """Serve ``root`` on 127.0.0.1 (a port the kernel picks, so no race) from a thread; ready on return."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    httpd = _Server(root, slow_seconds)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"test-http-{httpd.server_address[1]}", daemon=True)
    thread.start()
    return HttpServer(httpd, thread)
