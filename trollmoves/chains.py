"""Config reload for services made of chains: only the chains that changed are restarted.

A chain whose section is unchanged keeps running (its subscriptions, watchers and
request port untouched); a changed one is stopped and started again; removed ones
stop and lose their metrics; new ones start. Shared by the server (and mirror)
and the client, which hold their running chains in ``service.chains`` by name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


def chain_changes(old: Sequence[Any], new: Sequence[Any]) -> tuple[list[str], list[str], list[str]]:
    """Names of the chains (removed, changed, added) between two configs; equal chains are left alone."""
    before = {chain.name: chain for chain in old}
    after = {chain.name: chain for chain in new}
    removed = [name for name in before if name not in after]
    changed = [name for name in after if name in before and before[name] != after[name]]
    added = [name for name in after if name not in before]
    return removed, changed, added


def reload_chains(service: Any, config: Any, stop_timeout: float = 5.0) -> None:
    """Apply a new config to ``service`` (``config``, ``chains``, ``_lock``, ``_start_chain``, ``metrics``)."""
    removed, changed, added = chain_changes(service.config.chains, config.chains)
    new = {chain.name: chain for chain in config.chains}
    with service._lock:
        for name in removed:
            logger.info("Chain %s removed", name)
            running = service.chains.pop(name, None)
            if running is not None:
                running.stop(stop_timeout)
            service.metrics.remove_chain(name)
        for name in changed + added:
            running = service.chains.pop(name, None)
            if running is not None:
                logger.info("Chain %s changed: restarting it", name)
                running.stop(stop_timeout)
            else:
                logger.info("Chain %s added", name)
            service._start_chain(new[name])
        service.config = config
    service.metrics.reloads.labels("success").inc()
