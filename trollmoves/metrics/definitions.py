"""The metrics of one daemon (``Metrics``), on an injected registry, and their scrape-time values.

Each service owns one ``Metrics`` (no global registry), so that a test can run two
services in one process. Values that are cheaper to read when Prometheus asks than to
keep up to date (retry queues, pooled connections) come from scrape callbacks and
pools, run by ``_ScrapeTimeCollector`` each time the registry is collected. The same collector
exports what is computed when asked: files per chain in the last minute and hour (``recent``),
the free space of local destinations (``space``) and whether the state store can be written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from trollmoves.metrics.labels import (
    FAILURE_REASONS,
    MESSAGE_TYPES,
    POOL_STATES,
    REFUSAL_REASONS,
    RELOAD_RESULTS,
    REQUEST_TYPES,
    SCHEMES,
)
from trollmoves.metrics.recent import RecentFiles
from trollmoves.metrics.space import local_root, space

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)

ScrapeCallback = Callable[[], None]


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
        self._children: dict[tuple, Any] = {}
        self._recent = RecentFiles()
        self._destinations: dict[str, str] = {}
        self._state_stores: list[Callable[[], Any]] = []
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
        self.last_file = Gauge("trollmoves_last_file_timestamp_seconds",
                               "Time the chain last announced, received, dispatched, downloaded, published or "
                               "stored a file (0 if none yet)", ["chain"], registry=reg)
        self.pending_files = Gauge("trollmoves_pending_files", "Files requested and not delivered yet (client: "
                                   "announced and requested; mirror: requested and being relayed)", ["chain"],
                                   registry=reg)
        self.last_heartbeat = Gauge("trollmoves_last_heartbeat_timestamp_seconds",
                                    "Time a heartbeat was last received from a provider (0 if none yet)",
                                    ["chain"], registry=reg)
        self.reloads = Counter("trollmoves_config_reloads_total", "Config reloads, by result", ["result"],
                               registry=reg)
        self.watcher_restarts = Counter("trollmoves_watcher_restarts_total", "Directory watcher restarts",
                                        ["chain"], registry=reg)
        self.catch_up_files = Counter("trollmoves_catch_up_files_total",
                                      "Files requested (client) or relayed (mirror) after a catch-up query",
                                      ["chain"], registry=reg)
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
                self.last_heartbeat, self.watcher_restarts, self.catch_up_files, self.last_file,
                self.pending_files)

    @property
    def chains(self) -> frozenset[str]:
        """The chains initialised and not removed."""
        with self._lock:
            return frozenset(self._chains)

    def init_chain(self, chain: str, schemes: Iterable[str] = SCHEMES) -> None:
        """Create every label set of a chain at zero, so that rates exist from the start.

        Values of a chain initialised before (a chain restarted by a reload) are kept. Scrape
        callbacks and the destination registered earlier for this chain are dropped: they belong
        to the old instance.
        """
        with self._lock:
            self._chains.add(chain)
            self._callbacks[:] = [(c, fn) for c, fn in self._callbacks if c != chain]
            self._destinations.pop(chain, None)
        for counter in (self.files_announced, self.messages_malformed, self.files_received,
                        self.duplicates_skipped, self.retries, self.catch_up_files, self.messages_dropped,
                        self.watcher_restarts):
            counter.labels(chain)
        for gauge in (self.retry_queue_length, self.retry_queue_oldest, self.given_up_files,
                      self.last_transfer, self.last_heartbeat, self.last_file):
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

    def child(self, metric: Any, *labelvalues: str) -> Any:
        """``metric.labels(*labelvalues)``, looked up once.

        ``labels()`` validates, locks and builds a key at every call: a few microseconds that
        the per-file paths paid ten times per file. The children are kept until a chain is
        removed (``remove_chain`` forgets them, so a removed chain's counts cannot come back).
        """
        key = (id(metric), labelvalues)
        try:
            return self._children[key]
        except KeyError:
            child = self._children[key] = metric.labels(*labelvalues)
            return child

    def remove_chain(self, chain: str) -> None:
        """Forget a chain's label sets and scrape callbacks after it was removed by a reload."""
        with self._lock:
            self._children.clear()
            self._chains.discard(chain)
            self._callbacks[:] = [(c, fn) for c, fn in self._callbacks if c != chain]
            self._destinations.pop(chain, None)
        self._recent.forget(chain)
        for metric in self._chain_metrics():
            for labels in list(metric._metrics):  # prometheus_client has no public listing
                if labels and labels[0] == chain:
                    metric.remove(*labels)

    def files_done(self, chain: str, count: int = 1) -> None:
        """``count`` files of ``chain`` announced, received, dispatched, downloaded, published or stored now.

        Sets ``trollmoves_last_file_timestamp_seconds`` and feeds the last-minute and last-hour
        counts; called where the daemon counts the file in its own counter.
        """
        now = time.time()
        self.child(self.last_file, chain).set(now)
        self._recent.add(chain, count, now)

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

    def watch_destination(self, chain: str, destination: str | None) -> bool:
        """Export the free and total bytes of a chain's local destination at scrape time.

        ``destination`` is a URL or path template; only its fixed local part is measured (see
        ``metrics.space``). False (nothing exported) for a remote one. Dropped by ``remove_chain``
        and the next ``init_chain`` of the chain, like its scrape callbacks.
        """
        root = local_root(destination)
        if root is None:
            return False
        with self._lock:
            self._destinations[chain] = root
        return True

    def watch_state_store(self, store: Callable[[], Any]) -> Callable[[], None]:
        """Export ``trollmoves_state_store_writable`` and ``_errors_total`` of the store ``store()`` returns.

        ``store`` is read at each scrape (a daemon opens its store at start): a ``StateStore``,
        or None while there is none. Returns a function that stops watching.
        """
        return self._add(self._state_stores, store)

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

    def _scrape_families(self) -> list:
        """The families computed at scrape time besides the pools': recent files, space, state store."""
        now = time.time()
        with self._lock:
            chains = sorted(self._chains)
            destinations = dict(self._destinations)
            stores = list(self._state_stores)
        minute = GaugeMetricFamily("trollmoves_files_last_minute", "Files handled in the last 60 s (as "
                                   "trollmoves_last_file_timestamp_seconds counts them)", labels=["chain"])
        hour = GaugeMetricFamily("trollmoves_files_last_hour", "Files handled in the last 3600 s", labels=["chain"])
        for chain in chains:
            in_minute, in_hour = self._recent.counts(chain, now)
            minute.add_metric([chain], in_minute)
            hour.add_metric([chain], in_hour)
        free = GaugeMetricFamily("trollmoves_destination_free_bytes", "Bytes free (for unprivileged users) "
                                 "on the file system of the chain's local destination", labels=["chain"])
        size = GaugeMetricFamily("trollmoves_destination_size_bytes", "Total bytes of the file system of the "
                                 "chain's local destination", labels=["chain"])
        for chain, directory in sorted(destinations.items()):
            measured = space(directory)
            if measured is not None:
                free.add_metric([chain], measured[0])
                size.add_metric([chain], measured[1])
        families = [minute, hour, free, size]
        if stores:
            families += _state_store_families(stores)
        return families

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
        return list(self._families({})) + [GaugeMetricFamily(name, "") for name in _SCRAPE_TIME_GAUGES] + [
            CounterMetricFamily("trollmoves_state_store_errors", "")]

    def collect(self) -> Iterable:
        self._metrics._run_scrape_callbacks()
        return self._families(self._metrics._pool_stats()) + self._metrics._scrape_families()

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


_SCRAPE_TIME_GAUGES = ("trollmoves_files_last_minute", "trollmoves_files_last_hour",
                       "trollmoves_destination_free_bytes", "trollmoves_destination_size_bytes",
                       "trollmoves_state_store_writable")


def _state_store_families(stores: list[Callable[[], Any]]) -> list:
    """Whether the daemon's state store can be written now, and its failed writes so far.

    Nothing while no store is open (before the start, after the stop).
    """
    writable, errors, seen = 1.0, 0.0, False
    for get_store in stores:
        try:
            store = get_store()
            if store is None:
                continue
            seen = True
            errors += float(store.write_errors)
            if not store.writable():
                writable = 0.0
        except Exception:  # a broken store never breaks a scrape; it is reported as unwritable
            logger.exception("Cannot check the state store")
            writable = 0.0
    if not seen:
        return []
    writable_family = GaugeMetricFamily("trollmoves_state_store_writable", "1 when the state store (SQLite) "
                                        "and its directory can be written, 0 when not")
    writable_family.add_metric([], writable)
    errors_family = CounterMetricFamily("trollmoves_state_store_errors", "Failed writes to the state store")
    errors_family.add_metric([], errors)
    return [writable_family, errors_family]
