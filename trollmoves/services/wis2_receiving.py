"""One WIS2 subscribe chain: notification -> checks -> verified download -> posttroll ``file`` message.

Order of a delivery, and why each step is where it is:

1. parse and check the notification (``notification.parse``, the optional schema); a
   refused one is counted, logged with its topic, and acknowledged (it will not improve);
2. ``SeenStore.classify``: a notification id seen within ``seen_ttl``, a ``canonical``
   whose data_id is stored, or an ``update`` not newer than what is stored is skipped;
   a ``deletion`` removes the stored file when ``on_deletion = delete``;
3. the file is stored under a temporary name, its length and integrity verified, then
   renamed into ``destination`` (inline ``content`` is used instead of a download when
   present and verified);
4. ``SeenStore.record_stored`` commits the data_id, the id and the posttroll announcement
   (the outbox) in one transaction; the announcement is sent, then marked sent;
5. only then the MQTT message is acknowledged.

A kill -9 before step 4 leaves the message unacknowledged: the broker delivers it again
to our persistent session and the file is stored again under the same name. After
step 4 the outbox sends the announcement at the next start, and the redelivered message
is a duplicate id. A file is therefore announced once, and never lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trollmoves import messaging
from trollmoves.config import Wis2SubscribeChain
from trollmoves.errors import MessageDecodeError
from trollmoves.metrics.wis2 import DOWNLOAD_FAILURES, REJECT_REASONS, Wis2Metrics, one_of
from trollmoves.redact import redact, strip_password
from trollmoves.services.wis2_publishing import broker_settings, connect
from trollmoves.wis2 import notification
from trollmoves.wis2.fetch import FetchError, fetch, remove_file, safe_local_name, store_content
from trollmoves.wis2.mqtt import MqttSubscriber
from trollmoves.wis2.seen import SeenStore

logger = logging.getLogger(__name__)

ANNOUNCED_FIELDS = ("platform_name", "sensor", "orbit_number", "start_orbit", "end_orbit", "format",
                    "data_processing_level", "variant", "product")
"""WNM properties copied into the posttroll message, for trollflow2-style filters."""
EXPIRE_INTERVAL = 600.0


def announcement(chain: Wis2SubscribeChain, incoming: notification.Incoming, topic: str, path: str,
                 size: int) -> messaging.Message:
    """The posttroll ``file`` message of a stored WIS2 file."""
    data: dict[str, Any] = {"uri": path, "uid": os.path.basename(path), "size": size,
                            "data_id": incoming.data_id, "wis2_topic": topic, "wis2_id": incoming.id}
    if incoming.start_time is not None:
        data["start_time"] = incoming.start_time.replace(tzinfo=None)
    if incoming.end_time is not None:
        data["end_time"] = incoming.end_time.replace(tzinfo=None)
    properties = incoming.properties
    for name in ANNOUNCED_FIELDS:
        value = properties.get(name)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            data[name] = value
    if incoming.integrity_method and incoming.integrity_digest is not None:
        data["checksum"] = {"method": incoming.integrity_method, "value": incoming.integrity_digest.hex()}
    return messaging.make_message(chain.publish_topic, "file", data)


class NotificationReceiver:
    """A subscribe chain: its MQTT session, its dedup store, its download workers."""

    def __init__(self, chain: Wis2SubscribeChain, metrics: Wis2Metrics, seen_path: str,
                 send: Callable[[messaging.Message], bool]):
        self.chain = chain
        self.metrics = metrics
        self.send = send
        self.seen = SeenStore(seen_path)
        self.validator = notification.load_validator(chain.schema) if chain.schema else None
        self.pool = ThreadPoolExecutor(max(1, chain.workers), thread_name_prefix=f"wis2-in:{chain.name}")
        self.cancel = threading.Event()
        self.mqtt = MqttSubscriber(broker_settings(chain), chain.subscribe, self._on_delivery,
                                   shared_group=chain.shared_group)
        self._last_expire = 0.0
        self._lock = threading.Lock()
        self._outbox_lock = threading.Lock()
        """Held from an announcement's outbox row to its ``announced`` mark, and by ``flush_outbox``: a row
        is sent by one of them, never by both."""
        self.in_progress = 0
        self._id_locks = [threading.Lock() for _ in range(64)]
        self._path_locks = [threading.Lock() for _ in range(64)]
        """Striped locks: one decision per data_id, one download per local name, at a time (two pools, taken
        in that order, so that they never deadlock)."""

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        os.makedirs(self.chain.destination, exist_ok=True)
        self.flush_outbox()
        connect(self.mqtt, self.metrics, self.chain.name)

    def stop(self, timeout: float) -> None:
        """Stop receiving, let running downloads finish for ``timeout`` s, then cancel them (unacknowledged,
        they come again at the next start)."""
        self.mqtt.stop(timeout)
        deadline = time.monotonic() + timeout
        while self.in_progress and time.monotonic() < deadline:
            time.sleep(0.05)
        self.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.seen.close()

    @property
    def connected(self) -> bool:
        return bool(self.mqtt.connected)

    def flush_outbox(self) -> int:
        """Send the announcements stored before a crash or stop; the count sent."""
        sent = 0
        with self._outbox_lock:
            pending = self.seen.pending_announcements()
            for row, raw in pending:
                sent += self._send_queued(row, raw)
        return sent

    def _send_queued(self, row: int, raw: str) -> int:
        """Send one outbox row (the caller holds the outbox lock); 1 when sent."""
        try:
            message = messaging.decode(raw)
        except MessageDecodeError as exc:
            logger.error("WIS2 %s: dropping an unreadable queued announcement: %s", self.chain.name, exc)
            self.seen.announced(row)
            return 0
        if not self.send(message):
            return 0
        logger.info("WIS2 %s: announced %s (stored earlier, its announcement was queued)", self.chain.name,
                    message.data.get("uri"))
        self.seen.announced(row)
        return 1

    # deliveries -----------------------------------------------------------------------------------
    def _on_delivery(self, delivery) -> None:
        """paho's network thread: hand over at once (the broker's in-flight window bounds the backlog)."""
        with self._lock:
            self.in_progress += 1
        try:
            self.pool.submit(self._handle_safely, delivery)
        except RuntimeError:  # shut down: left unacknowledged, the broker delivers it again
            with self._lock:
                self.in_progress -= 1

    def _handle_safely(self, delivery) -> None:
        try:
            self.handle(delivery)
        except Exception:  # a bug must not kill the worker; the message stays unacknowledged
            logger.exception("WIS2 %s: handling a notification on %s failed unexpectedly", self.chain.name,
                             delivery.topic)
        finally:
            with self._lock:
                self.in_progress -= 1

    def handle(self, delivery) -> None:
        """One delivery, start to acknowledgement (see the module docstring for the order)."""
        chain = self.chain.name
        self.metrics.received.labels(chain).inc()
        self._expire_ids()
        try:
            incoming = notification.parse(delivery.payload, validator=self.validator)
        except notification.NotificationError as exc:
            self.metrics.rejected.labels(chain, one_of(exc.reason, REJECT_REASONS, "fields")).inc()
            logger.warning("WIS2 %s: refused a notification on %s: %s", chain, delivery.topic, redact(exc))
            delivery.ack()
            return
        with self._id_locks[hash(incoming.data_id) % len(self._id_locks)]:  # one decision at a time per data_id
            if self._settle(incoming, delivery.topic):
                delivery.ack()

    def _settle(self, incoming: notification.Incoming, topic: str) -> bool:
        """Skip, delete or store one notification; True when its message may be acknowledged."""
        chain = self.chain.name
        decision = self.seen.classify(notification_id=incoming.id, data_id=incoming.data_id, rel=incoming.rel,
                                      pubtime=incoming.pubtime, ttl=self.chain.seen_ttl)
        if decision in ("duplicate_id", "duplicate_data_id", "stale_update"):
            kind = {"duplicate_id": "id", "duplicate_data_id": "data_id"}.get(decision, decision)
            self.metrics.duplicates.labels(chain, kind).inc()
            logger.debug("WIS2 %s: skipping %s (%s)", chain, incoming.data_id, decision)
            self.seen.record_seen(incoming.id)
            return True
        if decision in ("delete", "delete_unknown"):
            self._delete(incoming, decision == "delete")
            return True
        return self._store(incoming, topic)

    def _delete(self, incoming: notification.Incoming, known: bool) -> None:
        chain = self.chain.name
        action = "unknown" if not known else "deleted" if self.chain.on_deletion == "delete" else "ignored"
        if action == "deleted":
            stored = self.seen.stored(incoming.data_id)
            path = stored[0] if stored else None
            try:
                if path is not None and remove_file(path):
                    logger.info("WIS2 %s: deleted %s (deletion notification for %s)", chain, path,
                                incoming.data_id)
            except FetchError as exc:
                logger.error("WIS2 %s: cannot delete %s: %s", chain, path, exc)
        else:
            logger.info("WIS2 %s: deletion notification for %s (%s)", chain, incoming.data_id, action)
        self.metrics.deletions.labels(chain, action).inc()
        self.seen.record_deleted(notification_id=incoming.id, data_id=incoming.data_id)

    def _store(self, incoming: notification.Incoming, topic: str) -> bool:
        """One download at a time per local name (its temporary is named after it)."""
        try:
            path = os.path.join(self.chain.destination, safe_local_name(incoming.href, incoming.data_id))
        except FetchError as exc:
            self.metrics.download_failures.labels(self.chain.name, "href").inc()
            logger.error("WIS2 %s: no usable local name for %s: %s", self.chain.name, incoming.data_id, exc)
            self.seen.record_seen(incoming.id)
            return True
        with self._path_locks[hash(path) % len(self._path_locks)]:
            return self._store_at(incoming, topic, path)

    def _store_at(self, incoming: notification.Incoming, topic: str, path: str) -> bool:
        """Download (or take the inline content), verify, store, announce; True when the message may be acked."""
        chain = self.chain.name
        try:
            if incoming.content is not None:
                result = store_content(incoming.content, path, length=incoming.length,
                                       integrity_method=incoming.integrity_method,
                                       integrity_digest=incoming.integrity_digest)
            else:
                result = fetch(incoming.href, path, length=incoming.length,
                               integrity_method=incoming.integrity_method,
                               integrity_digest=incoming.integrity_digest, timeout=self.chain.download_timeout,
                               retries=self.chain.download_retries, cancel=self.cancel,
                               on_retry=lambda _err, _delay: self.metrics.download_retries.labels(chain).inc())
        except FetchError as exc:
            if exc.reason == "cancelled":
                logger.info("WIS2 %s: download of %s interrupted by the stop; it comes again at the next start",
                            chain, strip_password(incoming.href))
                return False
            self.metrics.download_failures.labels(chain, one_of(exc.reason, DOWNLOAD_FAILURES, "io")).inc()
            logger.error("WIS2 %s: could not store %s (%s): %s", chain, incoming.data_id,
                         "gave up after retries" if exc.transient else "not retried", exc)
            self.seen.record_seen(incoming.id)
            return True
        message = announcement(self.chain, incoming, topic, result.path, result.size)
        with self._outbox_lock:
            row = self.seen.record_stored(notification_id=incoming.id, data_id=incoming.data_id,
                                          pubtime=incoming.pubtime, path=result.path, announcement=message.encode())
            sent = self.send(message)
            if sent:
                self.seen.announced(row)
        self.metrics.downloads.labels(chain).inc()
        self.metrics.downloaded_bytes.labels(chain).inc(result.size)
        self.metrics.download_duration.labels(chain).observe(result.duration)
        self.metrics.file_size.labels(chain, "subscribe").observe(result.size)
        self.metrics.last_notification.labels(chain).set(time.time())
        self.metrics.metrics.files_done(chain)
        logger.info("WIS2 %s: stored %s (%d bytes, %s, %.3f s)", chain, result.path, result.size, incoming.rel,
                    result.duration)
        if not sent:
            logger.warning("WIS2 %s: the announcement of %s could not be sent now; it is sent again shortly",
                           chain, result.path)
        return True

    def _expire_ids(self) -> None:
        now = time.monotonic()
        if now - self._last_expire < EXPIRE_INTERVAL:
            return
        self._last_expire = now
        forgotten = self.seen.expire(self.chain.seen_ttl)
        if forgotten:
            logger.debug("WIS2 %s: forgot %d notification ids older than %g s", self.chain.name, forgotten,
                         self.chain.seen_ttl)

    def health(self) -> dict[str, Any]:
        return {"direction": "subscribe", "connected": self.connected, "in_progress": self.in_progress,
                "last_error": str(self.mqtt.last_error) if self.mqtt.last_error else None, **self.seen.stats()}
