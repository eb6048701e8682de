"""Listening for posttroll file announcements: the receive thread of the dispatcher and the s3downloader.

``Subscription`` owns one ``messaging.Subscriber`` in its own thread: it connects
to direct addresses and, unless the nameserver is False, to the publishers a
nameserver knows for the configured services (looked up in a second thread at
start and every ``lookup_interval`` s, so a slow or absent nameserver never holds
up receiving; the original used posttroll's address listener, which needs
multicast or a nameserver connection of its own). A reconfiguration (reload)
rebuilds the subscriber. ``file_items`` turns a ``file``, ``dataset`` or
``collection`` message into its files, each with its metadata.

``QueuedService`` is what the dispatcher and the s3downloader share: the
subscription feeds files to ``accept``; each job is journaled in the on-disk
retry queue and run in a bounded worker pool by ``process``; failures are
settled (permanent: reported once, transient: rescheduled until ``max_age``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trollmoves import messaging
from trollmoves.errors import MessageDecodeError, PermanentTransferError, TransferError
from trollmoves.metrics import Metrics, message_type_label
from trollmoves.redact import redact
from trollmoves.retrying import RetryItem, RetryQueue, WorkerPool
from trollmoves.state import StateStore

logger = logging.getLogger(__name__)

FILE_TYPES = ("file", "dataset", "collection")
HEARTBEAT_INTERVAL = 30


def file_items(atype: str, data: Any) -> list[dict]:
    """The files of a ``file``, ``dataset`` or ``collection`` message, each with its metadata.

    A dataset's (or collection's) own metadata is copied into every file, the
    file's entries (``uri``, ``uid``, anything else it carries) taking precedence,
    as the original's ``_get_file_messages_from_dataset_message`` did. Below the
    message's own container only ``dataset`` lists are walked through (a collection
    item's ``collection`` is metadata), and an item holding ``dataset`` is a container,
    never a file itself.
    """
    if not isinstance(data, dict):
        return []
    if atype == "file":
        return [dict(data)] if "uri" in data else []
    container = "dataset" if atype == "dataset" else "collection"
    items = data.get(container)
    if not isinstance(items, list):
        return []
    base = {key: value for key, value in data.items() if key != container}
    return messaging.walk_entries(items, "uri", ("dataset",), inherit=base)


class Subscription:
    """The receive thread: one Subscriber (rebuilt when the topics or addresses change).

    ``on_message(message)`` runs in this thread; it must be quick (it only routes and
    queues). Publishers of ``services`` are looked up on the nameserver in another
    thread, at start and every ``lookup_interval`` s, so a slow or absent nameserver
    never holds up receiving.
    """

    def __init__(self, name: str, on_message, on_malformed, lookup_interval: float = 30.0,
                 lookup_timeout: float = 5.0, follow: bool = True, start_lookup_for: float = 10.0):
        """``follow`` False: look publishers up at start only (for ``start_lookup_for`` s at most, until
        one is found), as posttroll's subscriber without ``addr_listener`` does; True: keep looking
        every ``lookup_interval`` s, so that publishers started later are followed (``addr_listener``).
        """
        self.name = name  # for logs and thread names: "Dispatcher", "s3downloader"
        self.follow = follow
        self.start_lookup_for = start_lookup_for
        self.on_message = on_message
        self.on_malformed = on_malformed
        self.lookup_interval = lookup_interval
        self.lookup_timeout = lookup_timeout
        self.addresses: tuple[str, ...] = ()
        self.topics: list[str] = []
        self.nameserver: str | bool | None = False
        self.services: tuple[str, ...] = ()
        self._discovered: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._lookup_now = threading.Event()
        self._listening = threading.Event()
        self._threads: list[threading.Thread] = []
        self.error: str | None = None
        self.subscribed: list[str] = []

    def configure(self, addresses: Sequence[str], topics: Sequence[str], nameserver: str | bool | None,
                  services: Sequence[str]) -> bool:
        """Set what to subscribe to; True if it changed (the subscriber is then rebuilt)."""
        new = (tuple(addresses), list(topics), nameserver, tuple(services))
        with self._lock:
            if new == (self.addresses, self.topics, self.nameserver, self.services):
                return False
            nameserver_changed = (nameserver, tuple(services)) != (self.nameserver, self.services)
            self.addresses, self.topics, self.nameserver, self.services = new
            if nameserver_changed:
                self._discovered.clear()
        self._changed.set()
        self._lookup_now.set()
        return True

    def start(self, timeout: float = 10.0) -> None:
        for target, name in ((self._receive_loop, f"receive:{self.name}"), (self._lookup_loop, f"ns:{self.name}")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._lookup_now.set()
        if self._threads:
            self._threads[0].join(timeout)

    def alive(self) -> bool:
        return bool(self._threads) and self._threads[0].is_alive()

    def _receive_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._changed.clear()
                with self._lock:
                    addresses, topics = list(self.addresses), list(self.topics)
                subscriber = messaging.Subscriber((), topics, on_malformed=self.on_malformed)
                for address in addresses:
                    self._add(subscriber, address)
                self._listening.set()
                logger.info("%s subscribed to %s on %s", self.name, " ".join(topics) or "(all topics)",
                            " ".join(addresses) or "(nameserver publishers only)")
                failed: set[str] = set()
                try:
                    while not self._stop.is_set() and not self._changed.is_set():
                        with self._lock:
                            new = self._discovered - set(subscriber.addresses) - failed
                        for address in sorted(new):
                            logger.info("%s: subscribing to %s (from the nameserver)", self.name, address)
                            if not self._add(subscriber, address):
                                failed.add(address)
                        self.subscribed = subscriber.addresses
                        for _address, message in subscriber.recv(0.25):
                            try:
                                self.on_message(message)
                            except Exception:  # a bad message never ends the loop
                                logger.exception("%s: error handling a %s message on %s", self.name,
                                                 message.type, message.subject)
                finally:
                    subscriber.close()
        except Exception as exc:
            self.error = f"receiving stopped: {exc}"
            self._listening.set()
            raise

    def _add(self, subscriber: messaging.Subscriber, address: str) -> bool:
        """Connect to one publisher; a bad address is reported and skipped, never the end of receiving."""
        try:
            subscriber.add(address)
        except Exception as exc:  # noqa: BLE001 - zmq refuses malformed endpoints with various errors
            logger.error("%s: cannot subscribe to %r: %s", self.name, address, exc)
            return False
        return True

    def _lookup_loop(self) -> None:
        warned = False
        started = time.monotonic()
        while not self._stop.is_set():
            self._lookup_now.clear()
            with self._lock:
                nameserver, services = self.nameserver, self.services or ("",)
            if nameserver is not False and nameserver is not None:
                host = nameserver if isinstance(nameserver, str) else "localhost"
                found: list[str] = []
                for service in services:
                    found += messaging.lookup_addresses(service, host, self.lookup_timeout)
                if not found and not warned:
                    logger.warning("%s: no publisher found on nameserver %s for %s", self.name, host,
                                   ", ".join(s or "(all services)" for s in services))
                    warned = True
                with self._lock:
                    if (nameserver, services) == (self.nameserver, self.services or ("",)):
                        self._discovered.update(found)
                if not self.follow and (found or time.monotonic() - started >= self.start_lookup_for):
                    logger.debug("%s: not following new publishers (addr_listener off)", self.name)
                    return
            wait = self.lookup_interval if self.follow else min(1.0, self.lookup_interval)
            self._lookup_now.wait(wait)



# --------------------------------------------------------------------------------------------------
# The service skeleton: subscription -> journaled jobs -> worker pool
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueOptions:
    """Pool, nameserver look-up and retry polling settings of a QueuedService."""

    workers: int = 4
    max_queued: int = 1000
    lookup_interval: float = 30.0
    lookup_timeout: float = 5.0
    retry_poll_interval: float = 0.5


class QueuedService:
    """Receive, journal, work, settle. Subclasses set ``kind``/``label`` and implement
    ``accept`` (receive thread: queue what is wanted), ``process`` (a worker: do one job
    and settle it), ``queue_chains`` (retry-queue chains, for the gauges)."""

    kind = "service"
    label = "service"
    """The ``chain`` label of the metrics about received messages, and the name in logs."""

    def __init__(self, config, options: QueueOptions, metrics: Metrics | None, state: StateStore | None):
        self.config = config
        self.options = options
        self.metrics = metrics or Metrics(self.kind)
        self._own_state = state is None
        self._state = state
        self.publisher: messaging.Publisher | None = None
        self.retries: RetryQueue | None = None
        self.subscription = Subscription(self.label, self._on_message, self._on_malformed,
                                         options.lookup_interval, options.lookup_timeout)
        self.pool = WorkerPool(options.workers, options.max_queued, self.kind)
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self.ready = threading.Event()

    @property
    def state(self) -> StateStore:
        return self._state

    # lifecycle ------------------------------------------------------------------------------------
    def _run_queue(self, state_file: str, retry_settings, publisher: messaging.Publisher | None) -> None:
        """The end of ``start``: state, publisher, retry queue and receive thread up; ready."""
        if self._state is None:
            self._state = StateStore(state_file)
        self.metrics.messages_malformed.labels(self.label)
        for atype in (*FILE_TYPES, "other"):
            self.metrics.messages_received.labels(self.label, atype)
        self.publisher = publisher
        if publisher is not None:
            publisher.heartbeat(HEARTBEAT_INTERVAL)
        self.retries = RetryQueue(self._state, retry_settings, self._submit_retry, self.options.retry_poll_interval,
                                  on_tick=self._tick, name=f"{self.kind}-retries")
        self.subscription.start()
        self.retries.start()
        waiting = sum(self.retries.stats(name)[0] for name in self.queue_chains())
        if waiting:
            logger.info("%s: %d jobs waiting in the retry queue", self.label, waiting)
        self.ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving, let running jobs finish for ``timeout`` s, then abort them (they stay queued)."""
        self._stop.set()
        self.subscription.stop(timeout)
        if self.retries is not None:
            self.retries.stop(timeout)
        left = self.pool.drain(timeout)
        if left:
            logger.warning("%s: %d jobs still running or waiting after %g s: aborting them (they stay in the "
                           "retry queue)", self.label, left, timeout)
        self._cancel.set()
        self.pool.shutdown()
        if self.publisher is not None:
            self.publisher.stop()
        self._close()
        if self._own_state and self._state is not None:
            self._state.close()

    def _close(self) -> None:
        """Subclass resources to release at the end of ``stop``."""

    def health(self) -> dict[str, Any]:
        receiving = self.subscription.alive()
        return {"ok": receiving and not self._stop.is_set(), "receiving": receiving,
                "subscribed": list(self.subscription.subscribed),
                "publisher": self.publisher.port if self.publisher is not None else None}

    def fatal_error(self) -> str | None:
        return self.subscription.error

    def queue_chains(self) -> list[str]:
        raise NotImplementedError

    def _tick(self) -> None:
        if self.publisher is not None:
            self.publisher.heartbeat(HEARTBEAT_INTERVAL)
        self.retries.update_gauges(self.metrics, self.queue_chains())

    # receiving ------------------------------------------------------------------------------------
    def _on_malformed(self, _exc: MessageDecodeError) -> None:
        self.metrics.messages_malformed.labels(self.label).inc()

    def _on_message(self, message: messaging.Message) -> None:
        self.metrics.messages_received.labels(self.label, message_type_label(message.type)).inc()
        if message.type not in FILE_TYPES:
            return
        files = file_items(message.type, message.data)
        if not files:
            self.metrics.messages_malformed.labels(self.label).inc()
            logger.warning("Ignoring a %s message on %s without any uri", message.type, message.subject)
            return
        for data in files:
            self.accept(message.subject, data)

    def accept(self, subject: str, data: dict) -> None:
        raise NotImplementedError

    def queue(self, chain: str, subject: str, data: dict, prepared: Any = None) -> bool:
        """Journal one job and hand it to the pool (waits while the pool is full); False when stopping."""
        try:
            raw = messaging.make_message(subject, "file", data).encode()
        except MessageDecodeError as exc:
            logger.error("%s: cannot queue %s: %s", self.label, data.get("uri"), exc)
            return False
        if not self.pool.take_slot(self._stop):
            return False
        self._submit(self.retries.journal(chain, {"message": raw}), prepared)
        return True

    def _submit_retry(self, item: RetryItem) -> bool:
        if self._stop.is_set() or not self.pool.try_slot():
            return False
        return self._submit(item, None)

    def _submit(self, item: RetryItem, prepared: Any) -> bool:
        if self.pool.submit(self._run, item, prepared):
            return True
        self.retries.release(item)  # the pool is shut down: the row stays for the next process
        return False

    # working --------------------------------------------------------------------------------------
    def _run(self, item: RetryItem, prepared: Any) -> None:
        try:
            self.process(item, prepared)
        except Exception as exc:  # a bug must not lose the file: keep it queued
            logger.exception("%s: queued job %s (%s) failed unexpectedly", self.label, item["id"], item["chain"])
            self.retries.failed(item, redact(exc))

    def process(self, item: RetryItem, prepared: Any) -> None:
        raise NotImplementedError

    def queued_message(self, item: RetryItem) -> messaging.Message | None:
        """The file message journaled with a job (None, and the row dropped, if it cannot be read)."""
        try:
            return messaging.decode(item["payload"]["message"])
        except (MessageDecodeError, KeyError, TypeError) as exc:
            logger.error("%s: dropping an unreadable queued job for %s: %s", self.label, item["chain"], exc)
            self.retries.done(item)
            return None

    def settle_failure(self, item: RetryItem, exc: TransferError, chain: str, scheme: str, what: str) -> None:
        """Permanent: report once and forget. Transient: reschedule with backoff, or give up at max_age.
        Interrupted by ``stop``: leave the row for the next process."""
        if isinstance(exc, PermanentTransferError):
            self.metrics.transfers_failed.labels(chain, scheme, "permanent").inc()
            logger.error("Could not %s: %s (permanent error, not retried)", what, redact(exc))
            self.retries.done(item)
            return
        if self._cancel.is_set():
            logger.info("Interrupted by the stop: %s left in the retry queue", what)
            self.retries.release(item)
            return
        self.metrics.transfers_failed.labels(chain, scheme, "transient").inc()
        due = self.retries.failed(item, redact(exc))
        if due is None:
            logger.error("Could not %s: %s; giving up after %d attempts in %.0f s", what, redact(exc),
                         item.get("attempts", 1), time.time() - float(item["first_at"]))
        else:
            self.metrics.retries.labels(chain).inc()
            logger.warning("Could not %s: %s; retrying in %.1f s", what, redact(exc), max(0.0, due - time.time()))


__all__ = ["FILE_TYPES", "QueueOptions", "QueuedService", "Subscription", "file_items"]
