"""The WIS2 bridge's own metrics, registered on the daemon's ``Metrics`` registry.

Kept apart from ``definitions`` because only the bridge has them. Every label value
comes from a fixed set below (reasons are the ``reason`` words of the wis2 modules'
exceptions, mapped onto these sets), so the number of series stays bounded; known
label sets start at 0 for each chain.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from trollmoves.metrics.definitions import Metrics

PUBLISH_FAILURES = ("not_authorised", "refused", "timeout", "queue_full", "too_large", "topic", "fields",
                    "source", "outside_base", "error")
"""Why a notification was not published: ACL refusal (PUBACK >= 128), another broker refusal, no PUBACK
in time, the bounded queue full while the broker is away, over 8192 bytes, no valid topic from the
metadata, bad metadata, the file unreadable, the file outside ``base_path``, anything else."""
REJECT_REASONS = ("json", "schema", "fields", "conformance", "link", "href", "integrity", "size", "time")
"""Why an incoming notification was refused before any download (notification.NotificationError)."""
DUPLICATE_KINDS = ("id", "data_id", "stale_update")
DOWNLOAD_FAILURES = ("http_status", "length", "integrity", "network", "href", "io", "timeout", "cancelled")
BROKER_ERRORS = ("auth", "not_authorised", "refused", "tls", "unreachable", "timeout", "protocol", "closed",
                 "queue_full")
DELETION_ACTIONS = ("deleted", "ignored", "unknown")
DIRECTIONS = ("publish", "subscribe")
_SIZE_BUCKETS = (1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 23, 1 << 26, 1 << 29, 1 << 32)
_DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)


def one_of(value: str | None, allowed: tuple[str, ...], other: str) -> str:
    """``value`` when it is a known label value, else ``other``: an unexpected reason stays countable."""
    return value if value in allowed else other


class Wis2Metrics:
    """Counters and gauges of WIS2 publish and subscribe chains."""

    def __init__(self, metrics: Metrics):
        reg = metrics.registry
        self.metrics = metrics
        self.published = Counter("trollmoves_wis2_notifications_published_total",
                                 "WIS2 notifications the broker acknowledged, by link rel",
                                 ["chain", "rel"], registry=reg)
        self.publish_failures = Counter("trollmoves_wis2_publish_failures_total",
                                        "WIS2 notifications not published, by reason", ["chain", "reason"],
                                        registry=reg)
        self.received = Counter("trollmoves_wis2_notifications_received_total", "WIS2 notifications received",
                                ["chain"], registry=reg)
        self.rejected = Counter("trollmoves_wis2_notifications_rejected_total",
                                "WIS2 notifications refused before download, by reason", ["chain", "reason"],
                                registry=reg)
        self.duplicates = Counter("trollmoves_wis2_duplicates_total",
                                  "WIS2 notifications skipped as already seen, by what matched",
                                  ["chain", "kind"], registry=reg)
        self.downloads = Counter("trollmoves_wis2_downloads_total", "Files stored after verification "
                                 "(downloaded or inline)", ["chain"], registry=reg)
        self.download_failures = Counter("trollmoves_wis2_download_failures_total",
                                         "Downloads given up or refused, by reason", ["chain", "reason"],
                                         registry=reg)
        self.download_retries = Counter("trollmoves_wis2_download_retries_total",
                                        "Notifications whose download was tried again later", ["chain"],
                                        registry=reg)
        self.downloaded_bytes = Counter("trollmoves_wis2_downloaded_bytes_total", "Bytes stored", ["chain"],
                                        registry=reg)
        self.download_duration = Histogram("trollmoves_wis2_download_duration_seconds",
                                           "Duration of verified downloads", ["chain"],
                                           buckets=_DURATION_BUCKETS, registry=reg)
        self.file_size = Histogram("trollmoves_wis2_file_size_bytes", "Sizes of files published or stored",
                                   ["chain", "direction"], buckets=_SIZE_BUCKETS, registry=reg)
        self.deletions = Counter("trollmoves_wis2_deletions_total", "Deletion notifications, by action",
                                 ["chain", "action"], registry=reg)
        self.broker_connected = Gauge("trollmoves_wis2_broker_connected",
                                      "1 while the chain's MQTT connection is up", ["chain"], registry=reg)
        self.broker_errors = Counter("trollmoves_wis2_broker_errors_total",
                                     "MQTT connection errors (bad login, refused, TLS, unreachable), by reason",
                                     ["chain", "reason"], registry=reg)
        self.last_notification = Gauge("trollmoves_wis2_last_notification_timestamp_seconds",
                                       "When the chain last published or stored a file", ["chain"], registry=reg)

    def init_chain(self, chain: str, direction: str) -> None:
        """Start the chain's known label sets at 0, so that rates and alerts see them from the start."""
        self.metrics.init_chain(chain)
        self.broker_connected.labels(chain).set(0)
        for reason in BROKER_ERRORS:
            self.broker_errors.labels(chain, reason)
        if direction == "publish":
            for rel in ("canonical", "update", "deletion"):
                self.published.labels(chain, rel)
            for reason in PUBLISH_FAILURES:
                self.publish_failures.labels(chain, reason)
            return
        self.received.labels(chain)
        self.downloads.labels(chain)
        self.downloaded_bytes.labels(chain)
        self.download_retries.labels(chain)
        for reason in REJECT_REASONS:
            self.rejected.labels(chain, reason)
        for kind in DUPLICATE_KINDS:
            self.duplicates.labels(chain, kind)
        for reason in DOWNLOAD_FAILURES:
            self.download_failures.labels(chain, reason)
        for action in DELETION_ACTIONS:
            self.deletions.labels(chain, action)

    def remove_chain(self, chain: str) -> None:
        """Forget a chain removed by a reload (its series would otherwise stay frozen)."""
        for metric in (self.published, self.publish_failures, self.received, self.rejected, self.duplicates,
                       self.downloads, self.download_failures, self.download_retries, self.downloaded_bytes,
                       self.download_duration, self.file_size, self.deletions, self.broker_connected,
                       self.broker_errors, self.last_notification):
            for labels in list(metric._metrics):  # noqa: SLF001 - prometheus_client has no public listing
                if labels and labels[0] == chain:
                    metric.remove(*labels)
        self.metrics.remove_chain(chain)
