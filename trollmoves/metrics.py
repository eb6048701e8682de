"""Prometheus metrics of the trollmoves daemons, on an injected registry; /metrics and /healthz.

Each service owns one ``Metrics`` (no global registry), so that a test can run two
services in one process and read their values with ``registry.get_sample_value``.
Names follow Prometheus conventions: ``trollmoves_`` prefix, base units, ``_total``
for counters, ``_timestamp_seconds`` for times. Labels come from small fixed sets
(chain, scheme, reason, type); never file names, paths, URLs, hosts or users.

Daemons update the metric objects at the spot where they log an event
(``metrics.files_announced.labels(chain).inc()``). Values that are cheaper to read
when Prometheus asks than to keep up to date (retry queues, pooled connections)
come from scrape callbacks (``add_scrape_callback``) and pools (``watch_pool``),
run by a custom collector at scrape time.

``MetricsHTTPServer`` serves ``/metrics`` and ``/healthz`` from a daemon thread.
``/healthz`` combines the service's own ``health()`` with a ``HealthTracker`` that
watches the counters: a chain where files arrive (announced, or requested) but
nothing is transferred for ``stalled_after`` seconds is *stalled*. The daemons need
no code for that.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from trollmoves.redact import redact, redact_mapping

logger = logging.getLogger(__name__)

SCHEMES = ("file", "ftp", "scp", "sftp", "s3")
REQUEST_TYPES = ("push", "ack", "info", "ping", "unknown")
REFUSAL_REASONS = ("not_announced", "outside_origin", "pattern_mismatch", "destination_not_allowed",
                   "malformed", "unauthenticated", "path_escape")
FAILURE_REASONS = ("transient", "permanent", "refused", "timeout", "error", "checksum")
MESSAGE_TYPES = ("file", "dataset", "collection", "push", "ack", "beat", "other")
POOL_STATES = ("idle", "leased")
RELOAD_RESULTS = ("success", "failure")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)

DEFAULT_STALLED_AFTER = 600.0
LIVENESS_KEYS = ("watching", "listening", "receiving", "publisher", "subscriber", "running", "connected")
"""Keys of a service's health dict (top level or per chain) whose ``False`` makes /healthz fail."""

ScrapeCallback = Callable[[], None]


def scheme_label(scheme: str) -> str:
    scheme = (scheme or "file").lower()
    return scheme if scheme in SCHEMES else "file"


def message_type_label(atype: str) -> str:
    return atype if atype in MESSAGE_TYPES else "other"


# --------------------------------------------------------------------------------------------------
# The metrics of one daemon
# --------------------------------------------------------------------------------------------------

class Metrics:
    """All metrics of one daemon. ``daemon`` is the build-info's daemon name."""

    def __init__(self, daemon: str, registry: CollectorRegistry | None = None, process_metrics: bool = True):
        from trollmoves import __version__
        from trollmoves._accel import IMPLEMENTATION

        self.daemon = daemon
        self.version = __version__
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._chains: set[str] = set()
        self._callbacks: list[tuple[str | None, ScrapeCallback]] = []
        self._pools: list[Any] = []
        reg = self.registry
        # registered first: the registry collects in registration order, so scrape callbacks
        # have set their gauges before those are read
        self._scrape_collector = _ScrapeTimeCollector(self)
        reg.register(self._scrape_collector)
        if process_metrics:
            ProcessCollector(registry=reg)
        self.build_info = Gauge("trollmoves_build_info", "Version, daemon and active speedups (c or py)",
                                ["version", "daemon", "speedups"], registry=reg)
        self.build_info.labels(__version__, daemon, IMPLEMENTATION).set(1)
        self.files_announced = Counter("trollmoves_files_announced_total", "Files announced", ["chain"],
                                       registry=reg)
        self.requests = Counter("trollmoves_requests_total", "Requests received on request ports",
                                ["chain", "type"], registry=reg)
        self.requests_refused = Counter("trollmoves_requests_refused_total", "Requests refused, by reason",
                                        ["chain", "reason"], registry=reg)
        self.transfers_started = Counter("trollmoves_transfers_started_total", "Transfers started",
                                         ["chain", "scheme"], registry=reg)
        self.transfers_succeeded = Counter("trollmoves_transfers_succeeded_total", "Transfers completed",
                                           ["chain", "scheme"], registry=reg)
        self.transfers_failed = Counter("trollmoves_transfers_failed_total", "Transfers failed, by reason",
                                        ["chain", "scheme", "reason"], registry=reg)
        self.transferred_bytes = Counter("trollmoves_transferred_bytes_total", "Bytes transferred",
                                         ["chain", "scheme"], registry=reg)
        self.transfer_duration = Histogram("trollmoves_transfer_duration_seconds", "Duration of transfers",
                                           ["chain", "scheme"], buckets=_DURATION_BUCKETS, registry=reg)
        self.arrival_latency = Histogram("trollmoves_file_arrival_latency_seconds",
                                         "From a file's modification time (as announced) to its arrival "
                                         "at the destination", ["chain"], buckets=_LATENCY_BUCKETS, registry=reg)
        self.messages_received = Counter("trollmoves_messages_received_total", "Messages received",
                                         ["chain", "type"], registry=reg)
        self.messages_malformed = Counter("trollmoves_messages_malformed_total",
                                          "Messages that could not be decoded", ["chain"], registry=reg)
        self.messages_published = Counter("trollmoves_messages_published_total", "Messages published",
                                          ["chain", "type"], registry=reg)
        self.messages_dropped = Counter("trollmoves_messages_dropped_total",
                                        "Messages a publisher could not queue (subscriber too far behind)",
                                        ["chain"], registry=reg)
        self.files_received = Counter("trollmoves_files_received_total", "Files received (client side)",
                                      ["chain"], registry=reg)
        self.duplicates_skipped = Counter("trollmoves_duplicates_skipped_total",
                                          "Announcements of files already handled", ["chain"], registry=reg)
        self.retries = Counter("trollmoves_retries_total", "Transfer or request retries", ["chain"], registry=reg)
        self.retry_queue_length = Gauge("trollmoves_retry_queue_length", "Items waiting for a retry", ["chain"],
                                        registry=reg)
        self.retry_queue_oldest = Gauge("trollmoves_retry_queue_oldest_timestamp_seconds",
                                        "Enqueue time of the oldest item waiting for a retry (0 if none)",
                                        ["chain"], registry=reg)
        self.given_up_files = Gauge("trollmoves_given_up_files", "Files whose fast retries failed, retried "
                                    "slowly until they arrive or expire", ["chain"], registry=reg)
        self.last_transfer = Gauge("trollmoves_last_transfer_timestamp_seconds",
                                   "Time of the last successful transfer (0 if none yet)", ["chain"], registry=reg)
        self.last_heartbeat = Gauge("trollmoves_last_heartbeat_timestamp_seconds",
                                    "Time a heartbeat was last received from a provider (0 if none yet)",
                                    ["chain"], registry=reg)
        self.reloads = Counter("trollmoves_config_reloads_total", "Config reloads, by result", ["result"],
                               registry=reg)
        self.watcher_restarts = Counter("trollmoves_watcher_restarts_total", "Directory watcher restarts",
                                        ["chain"], registry=reg)
        self.catch_up_files = Counter("trollmoves_catch_up_files_total",
                                      "Files requested (client) or relayed (mirror) after a catch-up query", ["chain"], registry=reg)
        self.chains_configured = Gauge("trollmoves_chains", "Chains initialised (running or failing)",
                                       registry=reg)
        self.chains_configured.set_function(lambda: len(self._chains))
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)

    # the per-chain metrics, in the order of the exposition
    def _chain_metrics(self) -> tuple:
        return (self.files_announced, self.requests, self.requests_refused, self.transfers_started,
                self.transfers_succeeded, self.transfers_failed, self.transferred_bytes, self.transfer_duration,
                self.arrival_latency, self.messages_received, self.messages_malformed, self.messages_published,
                self.messages_dropped, self.files_received, self.duplicates_skipped, self.retries,
                self.retry_queue_length, self.retry_queue_oldest, self.given_up_files, self.last_transfer,
                self.last_heartbeat, self.watcher_restarts, self.catch_up_files)

    @property
    def chains(self) -> frozenset[str]:
        """The chains initialised and not removed."""
        with self._lock:
            return frozenset(self._chains)

    def init_chain(self, chain: str, schemes: Iterable[str] = SCHEMES) -> None:
        """Create every label set of a chain at zero, so that rates exist from the start.

        Values of a chain initialised before (a chain restarted by a reload) are kept. Scrape
        callbacks registered earlier for this chain are dropped: they belong to the old instance.
        """
        with self._lock:
            self._chains.add(chain)
            self._callbacks[:] = [(c, fn) for c, fn in self._callbacks if c != chain]
        for counter in (self.files_announced, self.messages_malformed, self.files_received,
                        self.duplicates_skipped, self.retries, self.catch_up_files, self.messages_dropped,
                        self.watcher_restarts):
            counter.labels(chain)
        for gauge in (self.retry_queue_length, self.retry_queue_oldest, self.given_up_files,
                      self.last_transfer, self.last_heartbeat):
            gauge.labels(chain)
        self.arrival_latency.labels(chain)
        for atype in REQUEST_TYPES:
            self.requests.labels(chain, atype)
        for reason in REFUSAL_REASONS:
            self.requests_refused.labels(chain, reason)
        for atype in MESSAGE_TYPES:
            self.messages_received.labels(chain, atype)
            self.messages_published.labels(chain, atype)
        for scheme in schemes:
            self.transfers_started.labels(chain, scheme)
            self.transfers_succeeded.labels(chain, scheme)
            self.transferred_bytes.labels(chain, scheme)
            self.transfer_duration.labels(chain, scheme)
            for reason in FAILURE_REASONS:
                self.transfers_failed.labels(chain, scheme, reason)

    def remove_chain(self, chain: str) -> None:
        """Forget a chain's label sets and scrape callbacks after it was removed by a reload."""
        with self._lock:
            self._chains.discard(chain)
            self._callbacks[:] = [(c, fn) for c, fn in self._callbacks if c != chain]
        for metric in self._chain_metrics():
            for labels in list(metric._metrics):  # prometheus_client has no public listing
                if labels and labels[0] == chain:
                    metric.remove(*labels)

    # scrape-time values ---------------------------------------------------------------------------
    def add_scrape_callback(self, callback: ScrapeCallback, chain: str | None = None) -> Callable[[], None]:
        """Call ``callback()`` at every scrape, before the values are read; return a function removing it.

        A callback sets gauges, e.g. ``metrics.retry_queue_length.labels(chain).set(len(queue))``.
        It must be quick and must not block (it runs in the HTTP server's thread); an exception is
        logged and the scrape goes on. A callback registered with ``chain`` is dropped by
        ``remove_chain(chain)`` and by the next ``init_chain(chain)``.
        """
        return self._add(self._callbacks, (chain, callback))

    def watch_pool(self, pool: Any) -> Callable[[], None]:
        """Export a connection pool's state at scrape time; ``pool.stats()`` returns ``PoolStats``.

        Accepts a ``trollmoves.movers.pool.ConnectionPool`` or anything with the same ``stats()``
        (a ``TransferService``). Several pools are summed. Returns a function that stops watching.
        """
        return self._add(self._pools, pool)

    def _add(self, items: list, item: Any) -> Callable[[], None]:
        """Append ``item`` under the lock; return a function that removes it again (once)."""
        with self._lock:
            items.append(item)

        def remove() -> None:
            with self._lock:
                if item in items:
                    items.remove(item)
        return remove

    def _run_scrape_callbacks(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for chain, callback in callbacks:
            try:
                callback()
            except Exception:  # a broken callback never breaks a scrape
                logger.exception("Metrics scrape callback %r (chain %s) failed", callback, chain)

    def _pool_stats(self) -> dict[str, float]:
        totals = dict.fromkeys(("idle", "leased", "opened", "reused", "closed"), 0.0)
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            try:
                stats = pool.stats()
            except Exception:
                logger.exception("Cannot read the statistics of pool %r", pool)
                continue
            for key in totals:
                totals[key] += float(getattr(stats, key, 0) or 0)
        return totals

    # reading values (health tracking, tests) ------------------------------------------------------
    def per_chain(self, metric: Counter | Gauge, where: Mapping[str, str] | None = None) -> dict[str, float]:
        """Values of a chain-labelled counter or gauge summed per chain (over its other labels)."""
        totals: dict[str, float] = {}
        suffix = "_total" if isinstance(metric, Counter) else ""
        for family in metric.collect():
            for sample in family.samples:
                if suffix and not sample.name.endswith(suffix):
                    continue
                chain = sample.labels.get("chain")
                if chain is None or any(sample.labels.get(k) != v for k, v in (where or {}).items()):
                    continue
                totals[chain] = totals.get(chain, 0.0) + sample.value
        return totals

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the text format asked for by an ``Accept`` header: (body, content type)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _ScrapeTimeCollector:
    """Runs the scrape callbacks and exports pool statistics, each time the registry is collected."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def describe(self) -> list:
        return list(self._families({}))

    def collect(self) -> Iterable:
        self._metrics._run_scrape_callbacks()
        return self._families(self._metrics._pool_stats())

    @staticmethod
    def _families(stats: Mapping[str, float]) -> list:
        connections = GaugeMetricFamily("trollmoves_pool_connections", "Connections open in the connection pools",
                                        labels=["state"])
        for state in POOL_STATES:
            connections.add_metric([state], stats.get(state, 0.0))
        families = [connections]
        for key, doc in (("opened", "Connections opened by the connection pools"),
                         ("reused", "Transfers that reused a pooled connection"),
                         ("closed", "Pooled connections closed (idle, failed or at stop)")):
            family = CounterMetricFamily(f"trollmoves_pool_connections_{key}", doc)
            family.add_metric([], stats.get(key, 0.0))
            families.append(family)
        return families


# --------------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------------

@dataclass
class _ChainProgress:
    arrivals: float = 0.0
    progress: float = 0.0
    beats: float = 0.0
    waiting_since: float | None = None
    last_arrival: float | None = None
    last_progress: float | None = None
    last_beat: float | None = None


def _epoch(value: float | None) -> float | None:
    return round(value, 3) if value else None


class HealthTracker:
    """Derive each chain's stall state from the metrics, by sampling its counters over time.

    *Arrivals* are files announced plus transfers started (a server's announcements, a
    client's requests); *progress* is transfers succeeded plus files received. A chain is
    stalled when an arrival was seen after the last progress and no progress followed for
    ``stalled_after`` seconds (0 disables). When both move between two samples, progress
    wins: a quiet period after the last file was served is never a stall.
    ``stalled_after`` is a number or a function returning one (read at each sample, so a
    reload that changes it takes effect).
    """

    def __init__(self, metrics: Metrics, stalled_after: float | Callable[[], float] = DEFAULT_STALLED_AFTER,
                 clock: Callable[[], float] = time.time):
        self.metrics = metrics
        self._stalled_after = stalled_after
        self._clock = clock
        self._lock = threading.Lock()
        self._chains: dict[str, _ChainProgress] = {}

    @property
    def stalled_after(self) -> float:
        value = self._stalled_after() if callable(self._stalled_after) else self._stalled_after
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            return DEFAULT_STALLED_AFTER

    def sample(self) -> None:
        """Read the counters once; call it often (the HTTP server does every second)."""
        metrics = self.metrics
        now = self._clock()
        announced = metrics.per_chain(metrics.files_announced)
        started = metrics.per_chain(metrics.transfers_started)
        succeeded = metrics.per_chain(metrics.transfers_succeeded)
        received = metrics.per_chain(metrics.files_received)
        beats = metrics.per_chain(metrics.messages_received, {"type": "beat"})
        names = set(metrics.chains) | announced.keys() | started.keys()
        with self._lock:
            for gone in self._chains.keys() - names:
                del self._chains[gone]
            for name in names:
                arrivals = announced.get(name, 0.0) + started.get(name, 0.0)
                progress = succeeded.get(name, 0.0) + received.get(name, 0.0)
                beat = beats.get(name, 0.0)
                state = self._chains.get(name)
                if state is None or arrivals < state.arrivals or progress < state.progress:
                    state = self._chains[name] = _ChainProgress()  # new, or re-added with fresh counters
                if progress > state.progress:
                    state.last_progress = now
                    state.waiting_since = None
                elif arrivals > state.arrivals and state.waiting_since is None:
                    state.waiting_since = now
                if arrivals > state.arrivals:
                    state.last_arrival = now
                if beat > state.beats:
                    state.last_beat = now
                state.arrivals, state.progress, state.beats = arrivals, progress, beat

    def stalled_for(self, chain: str) -> float | None:
        """Seconds a chain has been stalled, or None when it is not."""
        limit = self.stalled_after
        with self._lock:
            state = self._chains.get(chain)
            waiting = state.waiting_since if state else None
        if not limit or waiting is None:
            return None
        waited = self._clock() - waiting
        return waited if waited >= limit else None

    def report(self, service_health: Mapping[str, Any] | None) -> tuple[bool, dict[str, Any]]:
        """(ok, document) for /healthz: the service's health plus stall state, per chain."""
        self.sample()
        metrics = self.metrics
        service = dict(service_health or {})
        service_chains = service.pop("chains", None)
        service_ok = service.pop("ok", None)
        problems = [f"{key} down" for key in LIVENESS_KEYS if service.get(key) is False]
        last_transfer = metrics.per_chain(metrics.last_transfer)
        last_heartbeat = metrics.per_chain(metrics.last_heartbeat)
        with self._lock:
            tracked = dict(self._chains)
        names = set(metrics.chains) | set(service_chains or {})
        chains: dict[str, Any] = {}
        for name in sorted(names):
            info = dict(service_chains.get(name) or {}) if isinstance(service_chains, Mapping) else {}
            chain_problems = [f"not {key}" for key in LIVENESS_KEYS if info.get(key) is False]
            if isinstance(service_chains, Mapping) and name not in service_chains:
                chain_problems.append("not running")
            elif info.get("ok") is False and not chain_problems:
                chain_problems.append("not ok")
            down = bool(chain_problems)
            stalled = self.stalled_for(name)
            if stalled is not None:
                chain_problems.append(f"stalled: files arrived but nothing transferred for {stalled:.0f} s")
            state = tracked.get(name, _ChainProgress())
            info.update({
                "state": "down" if down else "stalled" if stalled is not None else "ok",
                "stalled": stalled is not None,
                "last_arrival": _epoch(state.last_arrival),
                "last_transfer": _epoch(last_transfer.get(name) or state.last_progress),
                "last_heartbeat": _epoch(last_heartbeat.get(name) or state.last_beat),
                "problems": chain_problems,
            })
            chains[name] = info
            problems.extend(f"chain {name}: {problem}" for problem in chain_problems)
        if service_ok is False and not problems:
            problems.append("service reports not ok")
        ok = not problems
        document = {"status": "ok" if ok else "fail", "daemon": metrics.daemon, "version": metrics.version,
                    "time": round(self._clock(), 3), "stalled_after": self.stalled_after}
        document.update(service)
        document.update({"ok": ok, "problems": problems, "chains": chains})
        return ok, document


# --------------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------------

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


def _stalled_after_of(health: Callable | None) -> Callable[[], float]:
    """``[trollmoves] stalled_after`` of the service a bound ``health`` method belongs to, read live."""
    service = getattr(health, "__self__", None)

    def read() -> float:
        config = getattr(service, "config", None)
        value = getattr(getattr(config, "daemon", None), "stalled_after", None)
        return DEFAULT_STALLED_AFTER if value is None else value
    return read


class MetricsHTTPServer:
    """``/metrics`` and ``/healthz`` of one service, on a threaded HTTP server in daemon threads.

    ``port`` 0 binds a free port, readable from ``.port`` after ``start()``. ``health`` is the
    service's ``health() -> dict`` (optional). ``stalled_after`` defaults to the service's
    ``[trollmoves] stalled_after`` (followed across reloads), else 600 s.
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


__all__ = [
    "DEFAULT_STALLED_AFTER",
    "FAILURE_REASONS",
    "MESSAGE_TYPES",
    "POOL_STATES",
    "REFUSAL_REASONS",
    "REQUEST_TYPES",
    "SCHEMES",
    "HealthTracker",
    "Metrics",
    "MetricsHTTPServer",
    "message_type_label",
    "scheme_label",
]
