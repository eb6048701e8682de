"""The WIS2 bridge (``trollmoves wis2``): our files onto WIS2, and WIS2 files into pytroll chains.

*Publish chains*: a receive thread subscribes to the union of their posttroll
``topics`` (``subscribe_addresses`` and the publishers of ``services`` on the
nameserver); each file of a ``file``/``dataset``/``collection`` message is journaled
in the on-disk retry queue for every publish chain whose topics match, and a worker
publishes its WIS2 Notification Message on the chain's broker, waiting for the
PUBACK (``services.wis2_publishing``). A notification the broker did not acknowledge
is retried with backoff until ``max_age``, also after a restart; one the broker
refuses (its ACL: PUBACK reason code 135) is reported once. A ``del`` message (remove_it's
``/deletion``) for a file the chain published is journaled the same way and withdrawn with a
``deletion`` notification.

*Subscribe chains*: a persistent MQTT session (fixed client id) on the chain's
topic filters; each notification is checked, de-duplicated against a SQLite store that
survives restarts, downloaded with verification, stored, announced on posttroll from
the publisher named ``wis2`` (``-p``), and only then acknowledged to the broker
(``services.wis2_receiving``).

Each chain has its own MQTT connection; a chain whose broker refuses our login is
reported (log, ``trollmoves_wis2_broker_errors_total{reason="auth"}``, health 503) and
tried again every minute, while the other chains run.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trollmoves import messaging
from trollmoves.conditions import matches_topics
from trollmoves.config import Config, RetrySettings, Wis2PublishChain, Wis2SubscribeChain
from trollmoves.destinations import local_path
from trollmoves.errors import PermanentTransferError, TransferError
from trollmoves.listening import QueuedService, QueueOptions
from trollmoves.metrics import Metrics
from trollmoves.metrics.wis2 import PUBLISH_FAILURES, Wis2Metrics, one_of
from trollmoves.redact import redact, strip_password
from trollmoves.retrying import RetryItem, state_path
from trollmoves.services.catch_up import REJOIN_GRACE
from trollmoves.services.wis2_publishing import NotificationPublisher
from trollmoves.services.wis2_receiving import NotificationReceiver
from trollmoves.state import StateStore
from trollmoves.wis2.mqtt import MqttError

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "wis2"
DELETION_KEY = "_wis2_deletion"
"""Marks a journaled job as the withdrawal of a file (from a ``del`` message), not its announcement."""
RESTART_INTERVAL = 60.0
"""Seconds between attempts to start a chain whose broker refused our login or could not be set up."""


@dataclass(frozen=True)
class Wis2Options(QueueOptions):
    """Command-line level options: ``-p`` (posttroll publisher port of subscribe chains; None: a random port)
    and ``-n`` (nameservers to register it with)."""

    publish_port: int | None = None
    publish_nameservers: Sequence[str] | bool | None = None
    publish_address: str = "*"


def _file_part(name: str) -> str:
    """A chain name as a safe file-name part for its state files."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "chain"


class Wis2Bridge(QueuedService):
    """The bridge service: publish chains (posttroll -> WIS2) and subscribe chains (WIS2 -> posttroll)."""

    kind = "wis2"
    label = "wis2"

    def __init__(self, config: Config, options: Wis2Options | None = None, metrics: Metrics | None = None,
                 state: StateStore | None = None):
        super().__init__(config, options or Wis2Options(), metrics or Metrics("wis2"), state)
        self.wis2_metrics = Wis2Metrics(self.metrics)
        self.metrics.watch_state_store(lambda: self._state)
        self._lock = threading.Lock()
        self._publishers: dict[str, NotificationPublisher] = {}
        self._receivers: dict[str, NotificationReceiver] = {}
        self._chains: dict[str, Any] = {}
        self._failed: dict[str, tuple[str, float]] = {}
        """chain -> (why it is not running, when to try again)."""
        self._state_dir = ""
        self._announce_after = 0.0
        """Announcements wait until then after a start: subscribers need a moment to (re)connect to a new
        publisher, and a message sent before that is lost while its outbox row says it was sent."""

    # service protocol -----------------------------------------------------------------------------
    def start(self) -> None:
        state_file = state_path(self.config, self.kind)
        self._state_dir = os.path.dirname(state_file) or "."
        publisher = None
        if any(isinstance(chain, Wis2SubscribeChain) for chain in self.config.chains) or \
                self.options.publish_port is not None:
            publisher = messaging.Publisher(PUBLISHER_NAME, self.options.publish_port or 0,
                                            self.options.publish_address,
                                            nameservers=self.options.publish_nameservers).start()
        self.publisher = publisher
        self._announce_after = time.monotonic() + REJOIN_GRACE
        for chain in self.config.chains:
            self._start_chain(chain)
        self._configure_subscription(self.config)
        self._run_queue(state_file, RetrySettings(), publisher)

    def _close(self) -> None:
        with self._lock:
            receivers, publishers = list(self._receivers.values()), list(self._publishers.values())
            self._receivers.clear()
            self._publishers.clear()
        for part in (*receivers, *publishers):
            part.stop(2.0)

    def stop(self, timeout: float = 10.0) -> None:
        """Receivers first (their downloads announce on the posttroll publisher), then the publish queue."""
        with self._lock:
            receivers = list(self._receivers.values())
            self._receivers.clear()
        for receiver in receivers:
            receiver.stop(timeout)
        super().stop(timeout)

    def reload(self, config: Config) -> None:
        """Chains whose settings changed are restarted; added ones started, removed ones stopped."""
        old, new = self._chains, {chain.name: chain for chain in config.chains}
        for name, chain in old.items():
            if new.get(name) != chain:
                self._stop_chain(name)
                if name not in new:
                    logger.info("WIS2 chain %s removed", name)
                    self.wis2_metrics.remove_chain(name)
        for name, chain in new.items():
            if old.get(name) != chain:
                self._start_chain(chain)
        self.config = config
        if self._configure_subscription(config):
            logger.info("WIS2: posttroll subscription changed, resubscribing")
        self.metrics.reloads.labels("success").inc()

    def health(self) -> dict[str, Any]:
        health = super().health()
        chains: dict[str, Any] = {}
        with self._lock:
            publishers, receivers, failed = dict(self._publishers), dict(self._receivers), dict(self._failed)
        for name, publisher in publishers.items():
            waiting, oldest = self.retries.stats(name) if self.retries is not None else (0, 0.0)
            chains[name] = {"direction": "publish", "connected": publisher.connected, "retry_queue": waiting,
                            "oldest_retry": oldest}
        for name, receiver in receivers.items():
            chains[name] = receiver.health()
        for name, (why, _when) in failed.items():
            chains[name] = {"connected": False, "error": why}
        health["chains"] = chains
        health["ok"] = bool(health["ok"] or not publishers) and not failed and \
            all(chain.get("connected") for chain in chains.values())
        return health

    def queue_chains(self) -> list[str]:
        with self._lock:
            return list(self._publishers)

    # chains ---------------------------------------------------------------------------------------
    def _start_chain(self, chain: Any) -> None:
        direction = "publish" if isinstance(chain, Wis2PublishChain) else "subscribe"
        self.wis2_metrics.init_chain(chain.name, direction)
        if direction == "subscribe":
            self.metrics.watch_destination(chain.name, chain.destination)
        self._chains[chain.name] = chain
        state_base = os.path.join(self._state_dir, f"wis2-{_file_part(chain.name)}")
        try:
            if direction == "publish":
                part: Any = NotificationPublisher(chain, self.wis2_metrics, state_base + "-published.sqlite")
            else:
                part = NotificationReceiver(chain, self.wis2_metrics, state_base + "-seen.sqlite", self._announce)
        except (OSError, ValueError) as exc:
            self._chain_failed(chain, f"cannot set up: {redact(exc)}")
            return
        try:
            part.start()
        except MqttError as exc:
            part.stop(1.0)
            self._chain_failed(chain, f"broker {strip_password(chain.broker)}: {redact(exc)}")
            return
        with self._lock:
            self._failed.pop(chain.name, None)
            (self._publishers if direction == "publish" else self._receivers)[chain.name] = part
        logger.info("WIS2 %s chain %s started on %s", direction, chain.name, strip_password(chain.broker))

    def _chain_failed(self, chain: Any, why: str) -> None:
        logger.error("WIS2 chain %s is not running: %s (tried again in %.0f s)", chain.name, why, RESTART_INTERVAL)
        with self._lock:
            self._failed[chain.name] = (why, time.monotonic() + RESTART_INTERVAL)

    def _stop_chain(self, name: str) -> None:
        with self._lock:
            part = self._publishers.pop(name, None) or self._receivers.pop(name, None)
            self._failed.pop(name, None)
            self._chains.pop(name, None)
        if part is not None:
            part.stop(5.0)

    def _tick(self) -> None:
        super()._tick()
        now = time.monotonic()
        with self._lock:
            due = [name for name, (_why, when) in self._failed.items() if when <= now]
            publishers, receivers = dict(self._publishers), list(self._receivers.values())
        for name in due:
            chain = self._chains.get(name)
            if chain is not None and not self._stop.is_set():
                self._start_chain(chain)
        for receiver in receivers:
            receiver.flush_outbox()
        for name, part in (*publishers.items(), *((r.chain.name, r) for r in receivers)):
            self.wis2_metrics.broker_connected.labels(name).set(1 if part.connected else 0)

    def _configure_subscription(self, config: Config) -> bool:
        chains = [chain for chain in config.chains if isinstance(chain, Wis2PublishChain)]
        topics: list[str] = []
        addresses: list[str] = []
        services: list[str] = []
        for chain in chains:
            topics += [topic for topic in chain.topics if topic not in topics]
            addresses += [address for address in chain.subscribe_addresses if address not in addresses]
            services += [service for service in chain.services if service not in services]
        nameserver = next((chain.nameserver for chain in chains if chain.nameserver), False)
        return self.subscription.configure(addresses, topics, nameserver if topics else False, services)

    def _announce(self, message: messaging.Message) -> bool:
        """Send a subscribe chain's posttroll ``file`` message (thread-safe)."""
        if self.publisher is None:
            return False
        wait = self._announce_after - time.monotonic()
        if wait > 0 and self._stop.wait(wait):
            return False  # stopping: the outbox row stays and is sent at the next start
        if self.publisher.send(message):
            self.metrics.messages_published.labels(self.label, "file").inc()
            return True
        self.metrics.messages_dropped.labels(self.label).inc()
        return False

    # publish side (receive thread and workers) ----------------------------------------------------
    def _on_message(self, message: messaging.Message) -> None:
        """``del`` messages (remove_it's ``/deletion``) withdraw what was published for the file."""
        if message.type != "del":
            super()._on_message(message)
            return
        self.metrics.messages_received.labels(self.label, "other").inc()
        uri = message.data.get("uri") if isinstance(message.data, dict) else None
        if local_path(uri) is None:
            return
        with self._lock:
            chains = [chain for name, chain in self._chains.items() if isinstance(chain, Wis2PublishChain)]
        for chain in chains:
            if matches_topics(message.subject, chain.topics) and \
                    not self.queue(chain.name, message.subject, {"uri": uri, DELETION_KEY: True}):
                return

    def accept(self, subject: str, data: dict) -> None:
        with self._lock:
            chains = [publisher.chain for publisher in self._publishers.values()]
            chains += [chain for name, chain in self._chains.items()
                       if name in self._failed and isinstance(chain, Wis2PublishChain)]
        for chain in chains:
            if not matches_topics(subject, chain.topics):
                continue
            if local_path(data.get("uri")) is None:
                logger.error("WIS2 %s: cannot announce %s (%s): the uri is not a file on this host", chain.name,
                             data.get("uri"), subject)
                self.wis2_metrics.publish_failures.labels(chain.name, "source").inc()
                continue
            if not self.queue(chain.name, subject, data):
                return

    def process(self, item: RetryItem, prepared: Any = None) -> None:
        name = item["chain"]
        with self._lock:
            publisher = self._publishers.get(name)
            configured = name in self._chains
        if publisher is None:
            if configured:  # its broker is not reachable with our login yet: keep the job
                self.retries.failed(item, "the chain's broker connection is not up")
            else:
                logger.warning("Dropping a queued WIS2 notification of chain %s: no longer configured", name)
                self.retries.done(item)
            return
        message = self.queued_message(item)
        if message is None:
            return
        path = local_path(message.data.get("uri"))
        try:
            if message.data.get(DELETION_KEY):
                publisher.publish_deletion(path or "")
            else:
                publisher.publish_file(message.data, path or "")
        except TransferError as exc:
            self._settle(item, exc, name, path)
            return
        self.retries.done(item)

    def _settle(self, item: RetryItem, exc: TransferError, chain: str, path: str | None) -> None:
        reason = one_of(getattr(exc, "reason", None), PUBLISH_FAILURES, "error")
        self.wis2_metrics.publish_failures.labels(chain, reason).inc()
        if isinstance(exc, PermanentTransferError):
            logger.error("WIS2 %s: %s (not retried)", chain, redact(exc))
            self.retries.done(item)
            return
        if self._cancel.is_set():
            self.retries.release(item)
            return
        due = self.retries.failed(item, redact(exc))
        if due is None:
            logger.error("WIS2 %s: giving up on the notification of %s: %s", chain, path, redact(exc))
        else:
            self.metrics.retries.labels(chain).inc()
            logger.warning("WIS2 %s: %s; retrying in %.1f s", chain, redact(exc), max(0.0, due - time.time()))


__all__ = ["PUBLISHER_NAME", "Wis2Bridge", "Wis2Options"]
