"""``/metrics`` and ``/healthz`` of one service, served over HTTP from daemon threads."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from trollmoves.metrics.definitions import Metrics
from trollmoves.metrics.health import DEFAULT_STALLED_AFTER, HealthTracker
from trollmoves.metrics.health_export import HealthCollector
from trollmoves.redact import redact, redact_mapping

logger = logging.getLogger(__name__)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: MetricsHTTPServer):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "trollmoves-metrics"
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection (Prometheus keeps one per target) is closed after this
    server: _HTTPServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        owner = self.server.owner
        try:
            if path == "/metrics":
                body, content_type = owner.metrics_body(self.headers.get("Accept"))
                self._send(HTTPStatus.OK, body, content_type, compress=True)
            elif path == "/healthz":
                ok, document = owner.health_report()
                body = json.dumps(redact_mapping(document), indent=1, default=str).encode() + b"\n"
                self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body, "application/json")
            elif path == "/":
                self._send(HTTPStatus.OK, b"trollmoves: /metrics /healthz\n", "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found: try /metrics or /healthz\n",
                           "text/plain; charset=utf-8")
        except Exception:  # a broken page never stops the server
            logger.exception("Error serving %s", path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, compress: bool = False) -> None:
        if compress and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=5)
            encoding = "gzip"
        else:
            encoding = None
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # the base class's name
        logger.debug("%s %s", self.address_string(), format % args)


def _daemon_settings_of(health: Callable | None) -> Callable[[], Any]:
    """The ``[trollmoves]`` settings of the service a bound ``health`` method belongs to, read live (None if none)."""
    service = getattr(health, "__self__", None)

    def read() -> Any:
        return getattr(getattr(service, "config", None), "daemon", None)
    return read


def _stalled_after_of(health: Callable | None) -> Callable[[], float]:
    """``[trollmoves] stalled_after`` of the service a bound ``health`` method belongs to, read live."""
    settings = _daemon_settings_of(health)

    def read() -> float:
        value = getattr(settings(), "stalled_after", None)
        return DEFAULT_STALLED_AFTER if value is None else value
    return read


class MetricsHTTPServer:
    """``/metrics`` and ``/healthz`` of one service, on a threaded HTTP server in daemon threads.

    ``port`` 0 binds a free port, readable from ``.port`` after ``start()``. ``health`` is the
    service's ``health() -> dict`` (optional). ``stalled_after`` defaults to the service's
    ``[trollmoves] stalled_after`` (followed across reloads), else 600 s. While it serves, the
    chain gauges of ``health_export`` (up, stalled, expected interval) are on the registry.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 0, metrics: Metrics | None = None,
                 health: Callable[[], Mapping[str, Any]] | None = None, *,
                 stalled_after: float | Callable[[], float] | None = None, sample_interval: float = 1.0):
        self.address = address or "127.0.0.1"
        self._port = int(port or 0)
        self.metrics = metrics
        self.health = health
        self.sample_interval = sample_interval
        self.tracker: HealthTracker | None = None
        if metrics is not None:
            self.tracker = HealthTracker(metrics, stalled_after if stalled_after is not None
                                         else _stalled_after_of(health))
        self._empty_registry = CollectorRegistry()
        self._httpd: _HTTPServer | None = None
        self._health_collector: HealthCollector | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd is not None else self._port

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsHTTPServer:
        """Bind and serve; returns at once. An address in use raises ``OSError`` naming it."""
        try:
            self._httpd = _HTTPServer((self.address, self._port), self)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {self.address}:{self._port}: {exc.strerror}") from exc
        self._stop.clear()
        self._register_chain_gauges()
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.25},
                                 name=f"metrics-http:{self.port}", daemon=True)
        serve.start()
        self._threads = [serve]
        if self.tracker is not None:
            sampler = threading.Thread(target=self._sample_loop, name=f"metrics-health:{self.port}", daemon=True)
            sampler.start()
            self._threads.append(sampler)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and free the port; safe to call twice."""
        self._stop.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            self._port = httpd.server_address[1]
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        collector, self._health_collector = self._health_collector, None
        if collector is not None:
            self.metrics.registry.unregister(collector)

    def _register_chain_gauges(self) -> None:
        """Put the chain gauges (``health_export``) on the service's registry while serving it."""
        if self.metrics is None or self._health_collector is not None:
            return
        collector = HealthCollector(self.health_report, _daemon_settings_of(self.health),
                                    lambda: self.metrics.chains)
        try:
            self.metrics.registry.register(collector)
        except ValueError:  # another MetricsHTTPServer serves these metrics and exports them already
            logger.debug("The chain gauges are already on the registry of %s", self.metrics.daemon)
            return
        self._health_collector = collector

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # pages ----------------------------------------------------------------------------------------
    def metrics_body(self, accept: str | None) -> tuple[bytes, str]:
        if self.metrics is not None:
            return self.metrics.exposition(accept)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._empty_registry), content_type

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        service_health: Mapping[str, Any] | None = None
        if self.health is not None:
            try:
                service_health = self.health()
            except Exception as exc:  # reported as unhealthy
                logger.exception("The service's health() failed")
                return False, {"status": "fail", "ok": False, "problems": [f"health() failed: {redact(exc)}"],
                               "chains": {}}
        if self.tracker is None:
            ok = bool((service_health or {}).get("ok", True))
            document = dict(service_health or {})
            document.setdefault("chains", {})
            document.update({"status": "ok" if ok else "fail", "ok": ok})
            return ok, document
        return self.tracker.report(service_health)

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.sample_interval):
            try:
                self.tracker.sample()
            except Exception:
                logger.exception("Health sampling failed")
