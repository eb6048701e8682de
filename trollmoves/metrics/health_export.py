"""/healthz's judgement of each chain as gauges, so that Prometheus can alert on it.

``trollmoves_chain_up{chain}`` is 1 while the chain is not *down* as /healthz judges it
(watching, listening, connected, started) and nothing the whole daemon depends on is down
(its publisher, its subscription); ``trollmoves_chain_stalled{chain}`` is 1 while /healthz
calls the chain stalled (files arrived, nothing moved for ``stalled_after`` s). A stalled chain
is still up: the two answer different questions (is it running? is it moving?).
``trollmoves_chain_expected_interval_seconds{chain}`` is the cadence the operator expects
(``[trollmoves] expected_interval`` / ``expected_intervals``), exported only when set, for the
alert "no file for longer than expected".

All three are computed at scrape time from the same report /healthz serves; the
``MetricsHTTPServer`` registers the collector, so the daemons need no code for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from trollmoves.metrics.health import LIVENESS_KEYS

logger = logging.getLogger(__name__)

NAMES = ("trollmoves_chain_up", "trollmoves_chain_stalled", "trollmoves_chain_expected_interval_seconds")


def chain_states(document: Mapping[str, Any], known: Iterable[str] = ()) -> dict[str, tuple[bool, bool]]:
    """{chain: (up, stalled)} from a /healthz document (``HealthTracker.report``).

    A ``known`` chain missing from the document (the service's ``health()`` failed) is down.
    """
    daemon_down = any(document.get(key) is False for key in LIVENESS_KEYS)
    states = dict.fromkeys(known, (False, False))
    for name, info in (document.get("chains") or {}).items():
        info = info if isinstance(info, Mapping) else {}
        up = not daemon_down and info.get("state") != "down"
        states[name] = (up, bool(info.get("stalled")))
    return states


def expected_interval(settings: Any, chain: str) -> float:
    """The expected cadence of ``chain`` from the daemon settings (0: not set)."""
    for name, seconds in getattr(settings, "expected_intervals", None) or ():
        if name == chain:
            return float(seconds)
    return float(getattr(settings, "expected_interval", 0.0) or 0.0)


class HealthCollector:
    """Collector of the chain gauges.

    ``report()`` is the /healthz report, ``settings()`` the daemon settings (``DaemonSettings``
    or None), ``chains()`` the chains the metrics know.
    """

    def __init__(self, report: Callable[[], tuple[bool, Mapping[str, Any]]], settings: Callable[[], Any],
                 chains: Callable[[], Iterable[str]] = tuple):
        self._report = report
        self._settings = settings
        self._chains = chains

    def describe(self) -> list:
        return [GaugeMetricFamily(name, "") for name in NAMES]

    def collect(self) -> Iterable:
        up = GaugeMetricFamily("trollmoves_chain_up", "1 when the chain is running (watching, listening, connected) "
                               "and the daemon's publisher and subscription are up, as /healthz judges it",
                               labels=["chain"])
        stalled = GaugeMetricFamily("trollmoves_chain_stalled", "1 when /healthz calls the chain stalled: files "
                                    "arrived but nothing moved for stalled_after seconds", labels=["chain"])
        expected = GaugeMetricFamily("trollmoves_chain_expected_interval_seconds", "The chain's expected cadence "
                                     "([trollmoves] expected_interval, expected_intervals); only when set",
                                     labels=["chain"])
        try:
            _ok, document = self._report()
            settings = self._settings()
        except Exception:  # never break a scrape; /healthz says what is wrong
            logger.exception("Cannot read the health report for the chain gauges")
            document, settings = {}, None
        for name, (chain_up, chain_stalled) in sorted(chain_states(document, self._chains()).items()):
            up.add_metric([name], 1.0 if chain_up else 0.0)
            stalled.add_metric([name], 1.0 if chain_stalled else 0.0)
            seconds = expected_interval(settings, name)
            if seconds > 0:
                expected.add_metric([name], seconds)
        return [up, stalled, expected]
