"""Health from the metrics: a chain where files arrive but nothing is transferred is *stalled*.

``HealthTracker`` samples the counters of a ``Metrics`` over time (the HTTP server does every
second) and builds the ``/healthz`` document from them and the service's own
``health()``; the daemons need no code for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trollmoves.metrics.definitions import Metrics

DEFAULT_STALLED_AFTER = 600.0
LIVENESS_KEYS = ("watching", "listening", "receiving", "publisher", "subscriber", "running", "connected")
"""Keys of a service's health dict (top level or per chain) whose ``False`` makes /healthz fail."""


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
