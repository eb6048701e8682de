"""ChainService: the chains of a daemon, run, checked, reloaded and stopped in one place.

Server, mirror, client and move_it each run one chain per config section. What they
share lives here once: the running chains by name under one lock, starting a chain
(one that fails to start is logged and left out, the others run), the housekeeping
thread (a ``tick`` every second for heartbeats, a watcher check every
``check_interval``), restarting a chain whose watcher died and giving up after
``max_restarts`` consecutive unhealthy checks as 0.19 does, a config reload that
restarts only the chains that changed, and stopping.

A daemon gives a ``make_chain`` factory; the chain it returns needs ``start()`` and
``stop(timeout)``, and for the watcher check ``healthy()``, ``restart_watcher()``,
``last_error`` and ``consecutive_restarts``; an optional ``periodic()`` runs at each check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class RunningChain(Protocol):
    """What the service needs of a chain."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...


def chain_changes(old: Sequence[Any], new: Sequence[Any]) -> tuple[list[str], list[str], list[str]]:
    """Names of the chains (removed, changed, added) between two configs; equal chains are left alone."""
    before = {chain.name: chain for chain in old}
    after = {chain.name: chain for chain in new}
    removed = [name for name in before if name not in after]
    changed = [name for name in after if name in before and before[name] != after[name]]
    added = [name for name in after if name not in before]
    return removed, changed, added


class ChainService:
    """The running chains of one daemon, with their housekeeping.

    ``make_chain(chain_config)`` builds a (not yet started) chain. ``tick()`` runs about
    once a second on the housekeeping thread (heartbeats); with ``check_interval`` the
    watchers are checked that often (``check_chains``), and with ``max_restarts`` > 0 the
    daemon's ``fatal_error`` is set after that many consecutive unhealthy checks of one
    chain. ``shared_stop_deadline``: ``stop(timeout)`` bounds the whole stop (the server:
    pushes in progress get what is left of it); otherwise each chain gets ``timeout``.
    """

    def __init__(self, kind: str, make_chain: Callable[[Any], RunningChain], metrics: Any, *,
                 tick: Callable[[], None] | None = None, check_interval: float | None = None,
                 max_restarts: int = 0, shared_stop_deadline: bool = False, reload_stop_timeout: float = 5.0):
        self.kind = kind
        self.make_chain = make_chain
        self.metrics = metrics
        self.chains: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.tick = tick
        self.check_interval = check_interval
        self.max_restarts = max_restarts
        self.shared_stop_deadline = shared_stop_deadline
        self.reload_stop_timeout = reload_stop_timeout
        self.fatal: str | None = None
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None

    # lifecycle ------------------------------------------------------------------------------------
    def start(self, chain_configs: Sequence[Any]) -> None:
        """Start every chain, then the housekeeping thread."""
        for chain_config in chain_configs:
            self.start_chain(chain_config)
        self._housekeeper = threading.Thread(target=self._housekeeping, name=f"{self.kind}-housekeeping",
                                             daemon=True)
        self._housekeeper.start()

    def start_chain(self, chain_config: Any) -> Any | None:
        """Build and start one chain; one that cannot start (OSError) is logged, stopped and left out."""
        chain = self.make_chain(chain_config)
        try:
            chain.start()
        except OSError as exc:
            logger.error("Error starting chain %s: %s", chain_config.name, exc)
            chain.stop(1.0)
            return None
        self.chains[chain_config.name] = chain
        return chain

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the housekeeping and every chain (each finishes or hands back what it was doing)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        with self.lock:
            running = list(self.chains.values())
            self.chains.clear()
        for chain in running:
            chain.stop(max(0.0, deadline - time.monotonic()) if self.shared_stop_deadline else timeout)
        if self._housekeeper is not None:
            self._housekeeper.join(timeout)

    def reload(self, old: Any, config: Any, apply_config: Callable[[Any], None]) -> None:
        """Apply a new config: removed chains stop (and lose their metrics), changed ones restart, new ones start.

        A chain whose section is unchanged keeps running, its subscriptions, watchers and
        request port untouched. ``old`` is the config running now; ``apply_config(config)`` records the new config in the daemon
        (under the same lock, so a check never sees half of it).
        """
        new = {chain.name: chain for chain in config.chains}
        with self.lock:
            removed, changed, added = chain_changes(old.chains, config.chains)
            for name in removed:
                logger.info("Chain %s removed", name)
                running = self.chains.pop(name, None)
                if running is not None:
                    running.stop(self.reload_stop_timeout)
                self.metrics.remove_chain(name)
            for name in changed + added:
                running = self.chains.pop(name, None)
                if running is not None:
                    logger.info("Chain %s changed: restarting it", name)
                    running.stop(self.reload_stop_timeout)
                else:
                    logger.info("Chain %s added", name)
                self.start_chain(new[name])
            apply_config(config)
        self.metrics.reloads.labels("success").inc()

    # housekeeping ---------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        last_check = time.monotonic()
        while not self._stop.wait(1.0):
            if self.tick is not None:
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - a failed heartbeat never stops the housekeeping
                    logger.exception("Heartbeat failed")
            if self.check_interval is not None and time.monotonic() - last_check >= self.check_interval:
                last_check = time.monotonic()
                self.check_chains()

    def check_chains(self) -> None:
        """Restart the watchers that died or whose directory was missing (it may exist now).

        As 0.19: when a chain has been found not watching at ``max_restarts`` consecutive
        checks (restarted or not: a watcher that keeps dying counts too), the daemon reports
        a fatal error, for a process manager to restart it (0: never).
        """
        with self.lock:
            for chain in self.chains.values():
                if self._stop.is_set():
                    return
                periodic = getattr(chain, "periodic", None)
                if periodic is not None:
                    periodic()
                if chain.healthy():
                    chain.consecutive_restarts = 0
                    continue
                chain.consecutive_restarts += 1
                logger.warning("Chain %s is not watching (%s): restarting its watcher (attempt %d)",
                               chain.chain.name, chain.last_error or "watcher stopped", chain.consecutive_restarts)
                chain.restart_watcher()
                if self.max_restarts and chain.consecutive_restarts >= self.max_restarts:
                    self.fatal = (f"chain {chain.chain.name} could not be restarted after "
                                  f"{chain.consecutive_restarts} attempts: {chain.last_error}")
