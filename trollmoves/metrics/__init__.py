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

The package: ``labels`` (fixed label sets and the helpers mapping onto them),
``definitions`` (``Metrics`` and its scrape-time collector), ``recent`` (files per
chain in the last minute and hour), ``space`` (free bytes of local destinations),
``health`` (``HealthTracker``, /healthz), ``health_export`` (/healthz's judgement as
the ``trollmoves_chain_up``/``_stalled`` gauges), ``http_server``
(``MetricsHTTPServer``). Import from ``trollmoves.metrics``; the names are re-exported here.
"""

from __future__ import annotations

from trollmoves.metrics.definitions import Metrics
from trollmoves.metrics.health import DEFAULT_STALLED_AFTER, HealthTracker
from trollmoves.metrics.http_server import MetricsHTTPServer
from trollmoves.metrics.labels import (
    FAILURE_REASONS,
    MESSAGE_TYPES,
    POOL_STATES,
    REFUSAL_REASONS,
    REQUEST_TYPES,
    SCHEMES,
    message_type_label,
    scheme_label,
)

# importable from here as when metrics was one module, though not part of ``__all__``
from trollmoves.metrics.definitions import ScrapeCallback  # noqa: F401
from trollmoves.metrics.health import LIVENESS_KEYS  # noqa: F401
from trollmoves.metrics.labels import RELOAD_RESULTS  # noqa: F401

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
