"""Prometheus metrics of the trollmoves daemons, on an injected registry.

Each service owns one ``Metrics`` (no global registry), so that a test can run two
services in one process and read their values with ``registry.get_sample_value``.
Names follow Prometheus conventions: ``trollmoves_`` prefix, base units, ``_total``
for counters, ``_timestamp_seconds`` for times. Labels come from small fixed sets
(chain, scheme, reason, type); never file names, paths, URLs, hosts or users.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info  # noqa: F401

logger = logging.getLogger(__name__)

SCHEMES = ("file", "ftp", "scp", "sftp", "s3")
REQUEST_TYPES = ("push", "ack", "info", "ping", "unknown")
REFUSAL_REASONS = ("not_announced", "outside_origin", "pattern_mismatch", "destination_not_allowed",
                   "malformed", "unauthenticated")
FAILURE_REASONS = ("transient", "permanent", "refused", "timeout", "error")
MESSAGE_TYPES = ("file", "dataset", "collection", "push", "ack", "beat", "other")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)


def scheme_label(scheme: str) -> str:
    scheme = (scheme or "file").lower()
    return scheme if scheme in SCHEMES else "file"


def message_type_label(atype: str) -> str:
    return atype if atype in MESSAGE_TYPES else "other"


class Metrics:
    """All metrics of one daemon. ``daemon`` is the build-info's daemon name."""

    def __init__(self, daemon: str, registry: CollectorRegistry | None = None):
        from trollmoves import __version__
        from trollmoves._accel import IMPLEMENTATION

        self.daemon = daemon
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
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
                                         "From a file's announcement to its arrival at the destination",
                                         ["chain"], buckets=_LATENCY_BUCKETS, registry=reg)
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
        self.pool_connections = Gauge("trollmoves_pool_connections", "Open pooled connections", ["scheme"],
                                      registry=reg)
        self.last_transfer = Gauge("trollmoves_last_transfer_timestamp_seconds",
                                   "Time of the last successful transfer", ["chain"], registry=reg)
        self.reloads = Counter("trollmoves_config_reloads_total", "Config reloads, by result", ["result"],
                               registry=reg)
        self.watcher_restarts = Counter("trollmoves_watcher_restarts_total", "Directory watcher restarts",
                                        ["chain"], registry=reg)
        self.catch_up_files = Counter("trollmoves_catch_up_files_total",
                                      "Files requested after a catch-up query", ["chain"], registry=reg)
        for result in ("success", "failure"):
            self.reloads.labels(result)

    def init_chain(self, chain: str, schemes: Iterable[str] = SCHEMES) -> None:
        """Create every label set of a chain at zero, so that rates exist from the start."""
        for counter in (self.files_announced, self.messages_malformed, self.files_received,
                        self.duplicates_skipped, self.retries, self.catch_up_files, self.messages_dropped,
                        self.watcher_restarts):
            counter.labels(chain)
        self.retry_queue_length.labels(chain)
        self.retry_queue_oldest.labels(chain)
        self.last_transfer.labels(chain)
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
        """Forget a chain's label sets after it was removed by a reload."""
        for metric in (self.files_announced, self.messages_malformed, self.files_received, self.duplicates_skipped,
                       self.retries, self.catch_up_files, self.messages_dropped, self.watcher_restarts,
                       self.retry_queue_length, self.retry_queue_oldest, self.last_transfer, self.arrival_latency,
                       self.requests, self.requests_refused, self.messages_received, self.messages_published,
                       self.transfers_started, self.transfers_succeeded, self.transferred_bytes,
                       self.transfer_duration, self.transfers_failed):
            for labels in list(metric._metrics):  # noqa: SLF001 - prometheus_client has no public listing
                if labels and labels[0] == chain:
                    metric.remove(*labels)
