"""One WIS2 publish chain: a posttroll file announcement -> one WIS2 Notification Message on MQTT.

The bridge journals each announced file before this runs (the retry queue of
``QueuedService``), so a notification the broker did not acknowledge is published
again later, also after a restart. What this module decides:

* the WIS2 topic from the message metadata (``TopicTemplate``: aliases, then
  ``normalise_level``), the ``data_id`` from its template (``{leaf}`` is the topic's
  part after the policy), and the link: the local path under ``base_path`` mapped onto
  ``base_url``. A file outside ``base_path`` has no public URL and is refused;
* the integrity value: sha512 from the announcement when it carries one, otherwise
  computed here in one pass over the file (the same pass reads the bytes for inline
  ``content`` when the file is small enough);
* ``canonical`` for a data_id never published, ``update`` for one published with other
  bytes, nothing for the same bytes announced again (a re-sent posttroll message or a
  retried job must not give WIS2 consumers a second notification), and ``deletion``
  for a published file that was removed. The published data ids (with their path,
  topic, link and digest, which a deletion repeats) live in a small SQLite table beside
  the daemon state;
* failures as TransferErrors: transient (no PUBACK in time, broker away, queue full)
  are retried by the bridge's queue; permanent (ACL refusal, a topic the metadata
  cannot fill, a message over 8192 bytes, a missing file) are reported once.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from trollsift import compose

from trollmoves import confine
from trollmoves.config import Wis2PublishChain
from trollmoves.errors import PermanentTransferError, TransientTransferError
from trollmoves.metrics.wis2 import PUBLISH_FAILURES, Wis2Metrics, one_of
from trollmoves.movers.checksum import file_checksum
from trollmoves.redact import strip_password
from trollmoves.wis2 import notification
from trollmoves.wis2.mqtt import BrokerSettings, MqttError, MqttPublisher
from trollmoves.wis2.topics import TopicError, TopicTemplate

logger = logging.getLogger(__name__)

INLINE_MAX_BYTES = (notification.MAX_INLINE_CHARS // 4) * 3 - 3
"""Largest file whose base64 stays under MAX_INLINE_CHARS characters."""
DEFAULT_MEDIA_TYPE = "application/octet-stream"
_MEDIA_TYPES = {".nc": "application/x-netcdf", ".h5": "application/x-hdf5", ".hdf": "application/x-hdf",
                ".grib": "application/x-grib", ".grib2": "application/x-grib2", ".bufr": "application/x-bufr",
                ".tif": "image/tiff", ".tiff": "image/tiff", ".png": "image/png", ".jpg": "image/jpeg"}


class PublishRefused(PermanentTransferError):
    """A notification that retrying cannot publish; ``reason`` is a PUBLISH_FAILURES word."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class PublishDelayed(TransientTransferError):
    """A notification the broker did not take yet (away, slow, queue full): the bridge retries it."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def broker_settings(chain: Any) -> BrokerSettings:
    """The MQTT connection of a chain (publish or subscribe)."""
    return BrokerSettings(url=chain.broker, username=chain.username, password=chain.password, ca_file=chain.ca_file,
                          client_id=chain.client_id, protocol=chain.mqtt_version, keepalive=chain.keepalive,
                          session_expiry=getattr(chain, "session_expiry", 86400))


def connect(connection: Any, metrics: Wis2Metrics, chain: str) -> None:
    """Start an MQTT connection; a refused login (or TLS, protocol) error is counted, then raised. An
    unreachable broker is no error here: paho keeps trying in the background."""
    try:
        connection.start()
    except MqttError as exc:
        metrics.broker_errors.labels(chain, exc.reason).inc()
        raise


def media_type(path: str, configured: str | None) -> str:
    if configured:
        return configured
    suffix = os.path.splitext(path)[1].lower()
    return _MEDIA_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or DEFAULT_MEDIA_TYPE


def public_href(path: str, base_path: str, base_url: str) -> str:
    """The URL of a local file under ``base_path`` (percent-encoded), or PublishRefused."""
    real_base = os.path.realpath(base_path)
    real = os.path.realpath(path)
    if real != real_base and not real.startswith(real_base.rstrip(os.sep) + os.sep):
        raise PublishRefused(f"{path} is outside base_path {base_path}: it has no URL under {base_url}",
                             "outside_base")
    relative = os.path.relpath(real, real_base).replace(os.sep, "/")
    return f"{base_url}/{quote(relative)}"


def announced_sha512(data: Mapping[str, Any]) -> bytes | None:
    """The sha512 digest an announcement already carries (``checksum: {method, value}``), if any."""
    checksum = data.get("checksum")
    if not isinstance(checksum, Mapping):
        return None
    method = str(checksum.get("method", "")).lower().replace("-", "").replace("_", "")
    try:
        return bytes.fromhex(str(checksum.get("value"))) if method == "sha512" else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Published:
    """What was last published for a data_id: enough to tell an update and to announce a deletion."""

    data_id: str
    digest: str
    size: int
    path: str
    topic: str
    href: str
    media_type: str


class PublishedIds:
    """data_id -> what was published last: canonical vs update vs nothing new, and deletions by path.

    One SQLite file per chain; written only after the broker acknowledged, so a crash in
    between publishes again (the consumers' data_id de-duplication absorbs it) rather
    than never.
    """

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS published (data_id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                         "size INTEGER NOT NULL, path TEXT NOT NULL, topic TEXT NOT NULL, href TEXT NOT NULL, "
                         "media_type TEXT NOT NULL, published_at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS published_path ON published (path)")

    def _one(self, where: str, value: str) -> Published | None:
        with self._lock:
            row = self._db.execute("SELECT data_id, digest, size, path, topic, href, media_type FROM published "
                                   f"WHERE {where} = ? ORDER BY published_at DESC LIMIT 1", (value,)).fetchone()
        return Published(*row) if row else None

    def by_data_id(self, data_id: str) -> Published | None:
        return self._one("data_id", data_id)

    def by_path(self, path: str) -> Published | None:
        return self._one("path", path)

    def record(self, item: Published) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO published VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (item.data_id, item.digest, item.size, item.path, item.topic, item.href,
                              item.media_type, time.time()))

    def forget(self, data_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM published WHERE data_id = ?", (data_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class NotificationPublisher:
    """A publish chain's MQTT connection and its file -> notification logic."""

    def __init__(self, chain: Wis2PublishChain, metrics: Wis2Metrics, published_path: str):
        self.chain = chain
        self.metrics = metrics
        self.template = TopicTemplate(chain.wis2_topic, aliases=chain.aliases,
                                      constants={"centre_id": chain.centre_id, "policy": chain.policy})
        self.mqtt = MqttPublisher(broker_settings(chain), queue_size=chain.queue_size, name=chain.name)
        self.published = PublishedIds(published_path)

    def start(self) -> None:
        connect(self.mqtt, self.metrics, self.chain.name)

    def stop(self, timeout: float) -> None:
        self.mqtt.stop(timeout)
        self.published.close()

    @property
    def connected(self) -> bool:
        return bool(self.mqtt.connected)

    def publish_file(self, data: Mapping[str, Any], path: str) -> str | None:
        """Publish the notification of one announced file; the rel published, None if nothing new.

        Raises PublishRefused (permanent) or PublishDelayed (transient).
        """
        chain = self.chain
        try:
            topic = self.template.compose(data)
        except TopicError as exc:
            raise PublishRefused(f"no WIS2 topic for {path} from {chain.wis2_topic!r}: {exc}", "topic") from None
        href = public_href(path, chain.base_path, chain.base_url)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise PublishRefused(f"cannot read {path}: {exc.strerror}", "source") from None
        content, digest = self._content_and_digest(path, size, data)
        digest_hex = digest.hex()
        data_id = self._data_id(data, topic, path)
        last = self.published.by_data_id(data_id)
        previous = last.digest if last is not None else None
        if previous == digest_hex:
            logger.info("Not publishing %s again: data_id %s was published with the same bytes", path, data_id)
            return None
        rel = "canonical" if previous is None else "update"
        kind = media_type(path, chain.media_type)
        try:
            message = notification.build(
                data_id=data_id, href=href, length=size, media_type=kind,
                integrity=("sha512", base64.b64encode(digest).decode("ascii")), rel=rel, metadata=data,
                properties=chain.properties, content=content)
            payload = notification.encode(message, drop_content_if_large=True)
        except notification.NotificationError as exc:
            reason = "too_large" if exc.reason == "size" else "fields"
            raise PublishRefused(f"cannot build the notification of {path}: {exc}", reason) from None
        self._send(topic, payload, path)
        self.published.record(Published(data_id, digest_hex, size, path, topic, href, kind))
        self.metrics.published.labels(chain.name, rel).inc()
        self.metrics.file_size.labels(chain.name, "publish").observe(size)
        self.metrics.last_notification.labels(chain.name).set(time.time())
        self.metrics.metrics.files_done(chain.name)
        logger.info("Published the WIS2 notification of %s (%s, %d bytes) on %s", path, rel, size, topic)
        return rel

    def publish_deletion(self, path: str) -> bool:
        """A ``deletion`` notification for a file we announced (a remove_it ``del`` message); False when no
        notification was ever published for ``path`` (nothing to withdraw)."""
        last = self.published.by_path(path)
        if last is None:
            logger.info("No WIS2 notification was published for %s: no deletion to announce", path)
            return False
        try:
            message = notification.build(
                data_id=last.data_id, href=last.href, length=last.size, media_type=last.media_type,
                integrity=("sha512", base64.b64encode(bytes.fromhex(last.digest)).decode("ascii")), rel="deletion")
            payload = notification.encode(message)
        except notification.NotificationError as exc:
            raise PublishRefused(f"cannot build the deletion notification of {path}: {exc}", "fields") from None
        self._send(last.topic, payload, path)
        self.published.forget(last.data_id)
        self.metrics.published.labels(self.chain.name, "deletion").inc()
        logger.info("Published the WIS2 deletion of %s (data_id %s) on %s", path, last.data_id, last.topic)
        return True

    def _content_and_digest(self, path: str, size: int, data: Mapping[str, Any]) -> tuple[bytes | None, bytes]:
        """(inline bytes or None, sha512 digest): one read of the file at most."""
        if self.chain.inline_content and size <= INLINE_MAX_BYTES:
            import hashlib

            try:
                with open(path, "rb") as stream:
                    content = stream.read(INLINE_MAX_BYTES + 1)
            except OSError as exc:
                raise PublishRefused(f"cannot read {path}: {exc.strerror}", "source") from None
            if len(content) == size:
                return content, hashlib.sha512(content).digest()
        digest = announced_sha512(data)
        if digest is not None and len(digest) == 64:
            return None, digest
        try:
            return None, bytes.fromhex(file_checksum(path, "sha512").value)
        except OSError as exc:
            raise PublishRefused(f"cannot read {path}: {exc.strerror}", "source") from None

    def _data_id(self, data: Mapping[str, Any], topic: str, path: str) -> str:
        metadata = dict(data)
        metadata.setdefault("uid", os.path.basename(path))
        metadata.update(centre_id=self.chain.centre_id, policy=self.chain.policy, leaf=self.template.leaf(topic))
        try:
            for field in confine.template_fields(self.chain.data_id):
                if field != "leaf":
                    confine.check_field(metadata.get(field), f"field {field!r}")
            return compose(self.chain.data_id, metadata)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise PublishRefused(f"cannot compose the data_id of {path} from {self.chain.data_id!r}: "
                                 f"{type(exc).__name__} {exc}", "fields") from None

    def _send(self, topic: str, payload: bytes, path: str) -> None:
        broker = strip_password(self.chain.broker)
        try:
            outcome = self.mqtt.publish(topic, payload, timeout=self.chain.publish_timeout)
        except MqttError as exc:
            raise PublishDelayed(f"notification of {path} not acknowledged by {broker}: {exc}",
                                 one_of(exc.reason, PUBLISH_FAILURES, "error")) from None
        if not outcome.ok:
            raise PublishRefused(f"the broker {broker} refused the notification of {path} on {topic}: "
                                 f"reason code {outcome.reason_code} ({outcome.reason})",
                                 "not_authorised" if outcome.reason_code == 135 else "refused")
