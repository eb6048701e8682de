"""The s3downloader (s3downloader.py): download the S3 objects that messages announce, announce the local files.

Flow: a receive thread subscribes to ``subscribe-topic`` (``subscriber_addresses``
and, unless the nameserver is False, the publishers of ``services``); each
``file`` message with an ``s3://bucket/key`` uri (as pytroll-collectors'
s3stalker sends them), and each file of a ``dataset`` or ``collection``, becomes
one download in a worker pool: the object goes to
``download_destination/<basename>`` under a temporary name, its checksum is
computed while the bytes are written, and it is renamed into place once its size
is verified; then a ``file`` message goes out on ``publish-topic`` from the
publisher named ``s3downloader`` (reference §1.9, §2.8, §3.9).

Which object (reference §3.9, §7.10): 0.19 fetched ``<bucket>/<basename of the uri
path>`` from the configured bucket, whatever the uri's scheme. We do the same for
every uri that is not ``s3://`` (a path, an ``https://endpoint/bucket/key`` URL, an
fsspec chained uri); for an ``s3://bucket/dir/name`` uri we fetch the key
``dir/name`` first, because the basename alone misses every object below the
bucket root (0.19 logged an error and lost those files), and fall back to 0.19's
``name`` when that key does not exist. What we also fix: dataset and collection
messages are downloaded file by file (the original read a top-level ``uri`` and
failed); the ``logging`` section is optional; the published message has a
``uid`` (the local base name) besides ``uri``, and ``size``/``checksum``.
Like the original it drops ``dataset``, ``collection``, ``filename``,
``compress``, ``tst``, ``file_list`` and ``path`` from the data.

What we add: an object already downloaded (same uri, ETag and size) is not
downloaded or announced again, also after a restart (handled records in the
state store); a failed download waits in the on-disk retry queue
(``trollmoves.retrying``) instead of being dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from trollmoves import messaging
from trollmoves.config import Config, RetrySettings, S3DownloaderSettings
from trollmoves.errors import MessageDecodeError, TransferError, TransientTransferError
from trollmoves.listening import QueuedService, QueueOptions
from trollmoves.metrics import Metrics
from trollmoves.movers.checksum import finish, new_hasher, normalise_method
from trollmoves.retrying import RetryItem, state_path
from trollmoves.state import StateStore, file_key

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "s3downloader"
DROPPED_KEYS = ("dataset", "collection", "filename", "compress", "tst", "uri", "uid", "file_list", "path")
"""Keys the original removed from the data before republishing (we then add ``uri`` and ``uid`` back)."""
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class S3DownloaderOptions(QueueOptions):
    """Command-line level options: ``-r`` (subscribe nameserver) and ``-n`` (publisher's nameservers)."""

    subscribe_nameserver: str | bool = "localhost"
    publish_nameservers: Sequence[str] | bool | None = None
    publish_address: str = "*"
    retry: RetrySettings = field(default_factory=RetrySettings)


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------

def object_keys(uri: Any, default_bucket: str) -> tuple[str, list[str]] | None:
    """(bucket, keys to try in order) for an announced uri; None if it names no object.

    The bucket is always the configured one, as in 0.19. ``s3://bucket/dir/name``:
    ``dir/name``, then 0.19's ``name``; any other uri: 0.19's basename of its path.
    """
    if not isinstance(uri, str):
        return None
    parts = urlsplit(uri)
    name = os.path.basename(parts.path)
    if not name:
        return None
    if parts.scheme != "s3":
        return default_bucket, [name]
    if parts.netloc and parts.netloc != default_bucket:
        logger.debug("%s names bucket %s; downloading from the configured bucket %s", uri, parts.netloc,
                     default_bucket)
    key = parts.path.lstrip("/")
    return default_bucket, [key] if key == name else [key, name]


def object_location(uri: Any, default_bucket: str) -> tuple[str, str] | None:
    """(bucket, first key to try) of an announced uri (see ``object_keys``); None if it names no object."""
    found = object_keys(uri, default_bucket)
    return None if found is None else (found[0], found[1][0])


def published_data(data: dict, local_path: str, size: int | None = None,
                   checksum: dict | None = None) -> dict[str, Any]:
    """The data of the message announcing a downloaded file."""
    out = {key: value for key, value in data.items() if key not in DROPPED_KEYS}
    out["uri"] = local_path
    out["uid"] = os.path.basename(local_path)
    if size is not None:
        out["size"] = size
    if checksum is not None:
        out["checksum"] = checksum
    return out


def handled_key(uri: str, etag: str | None, size: int | None) -> str:
    """Identity of an object version: uri, ETag and size (a replaced object is downloaded again)."""
    return file_key([uri, f"etag:{etag or ''}", f"size:{size if size is not None else ''}"])


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class S3Downloader(QueuedService):
    """The s3downloader service: subscription, download pool, retry queue, publisher."""

    kind = "s3downloader"
    label = "s3downloader"

    def __init__(self, config: Config, options: S3DownloaderOptions | None = None, metrics: Metrics | None = None,
                 state: StateStore | None = None):
        super().__init__(config, options or S3DownloaderOptions(), metrics, state)
        self.settings: S3DownloaderSettings = config.chains[0]
        self._client = None
        self._client_lock = threading.Lock()
        self._downloading: set[str] = set()
        self._downloading_changed = threading.Condition()
        self.metrics.watch_state_store(lambda: self._state)

    @property
    def name(self) -> str:
        return self.settings.name

    # service protocol -----------------------------------------------------------------------------
    def start(self) -> None:
        self.metrics.init_chain(self.name, ("s3",))
        self.metrics.watch_destination(self.name, self.settings.download_destination)
        os.makedirs(self.settings.download_destination, exist_ok=True)
        nameservers = self.options.publish_nameservers
        if nameservers is None:
            nameservers = self.settings.nameservers
        publisher = messaging.Publisher(PUBLISHER_NAME, self.settings.publish_port, self.options.publish_address,
                                        nameservers=nameservers).start()
        if not self.settings.publish_topic:
            logger.warning("No publish-topic configured: downloaded files are not announced")
        self._configure_subscription()
        self._run_queue(state_path(self.config, self.kind), self.options.retry, publisher)

    def reload(self, config: Config) -> None:
        self.config = config
        self.settings = config.chains[0]
        with self._client_lock:
            self._client = None
        if self._configure_subscription():
            logger.info("s3downloader: subscription changed, resubscribing")
        self.metrics.reloads.labels("success").inc()

    def health(self) -> dict[str, Any]:
        health = super().health()
        health["retry_queue"], health["oldest_retry"] = (self.retries.stats(self.name) if self.retries is not None
                                                         else (0, 0.0))
        return health

    def queue_chains(self) -> list[str]:
        return [self.name]

    def _configure_subscription(self) -> bool:
        settings = self.settings
        nameserver = settings.nameserver if settings.nameserver is not None else self.options.subscribe_nameserver
        return self.subscription.configure(settings.subscriber_addresses, list(settings.subscribe_topic),
                                           nameserver, settings.services)

    # receiving ------------------------------------------------------------------------------------
    def accept(self, subject: str, data: dict) -> None:
        if object_keys(data.get("uri"), self.settings.bucket) is None:
            logger.warning("Ignoring %s: its path names no object (no base name)", data.get("uri"))
            self.metrics.transfers_failed.labels(self.name, "s3", "refused").inc()
            return
        self.queue(self.name, subject, data, data)

    # downloading ----------------------------------------------------------------------------------
    def process(self, item: RetryItem, data: dict | None = None) -> None:
        """Download one announced object (unless already done) and settle its queue row."""
        if data is None:
            message = self.queued_message(item)
            if message is None:
                return
            data = message.data
        uri = data.get("uri")
        location = object_keys(uri, self.settings.bucket)
        if location is None:
            self.retries.done(item)
            return
        with self._exclusive(uri):
            self._download(item, data, uri, *location)

    @contextlib.contextmanager
    def _exclusive(self, uri: str) -> Iterator[None]:
        """One download per uri at a time: a duplicate announcement waits, then finds it handled."""
        with self._downloading_changed:
            while uri in self._downloading:
                self._downloading_changed.wait()
            self._downloading.add(uri)
        try:
            yield
        finally:
            with self._downloading_changed:
                self._downloading.discard(uri)
                self._downloading_changed.notify_all()

    def _download(self, item: RetryItem, data: dict, uri: str, bucket: str, keys: list[str]) -> None:
        name = self.name
        target = os.path.join(self.settings.download_destination, os.path.basename(keys[0]))
        self.metrics.transfers_started.labels(name, "s3").inc()
        started = time.monotonic()
        try:
            size, checksum, skipped = self._fetch(uri, bucket, keys, target)
        except TransferError as exc:
            self.settle_failure(item, exc, name, "s3", f"download {uri}")
            return
        self.retries.done(item)
        if skipped:
            self.metrics.duplicates_skipped.labels(name).inc()
            logger.info("Already downloaded %s (same ETag and size): not downloading it again", uri)
            return
        duration = time.monotonic() - started
        self.metrics.transfers_succeeded.labels(name, "s3").inc()
        self.metrics.transferred_bytes.labels(name, "s3").inc(size)
        self.metrics.transfer_duration.labels(name, "s3").observe(duration)
        self.metrics.files_received.labels(name).inc()
        self.metrics.last_transfer.labels(name).set(time.time())
        self.metrics.files_done(name)
        logger.info("Downloaded %s to %s (%d bytes, %.3f s)", uri, target, size, duration)
        self.publish(data, target, size, checksum)

    def _get_object(self, bucket: str, keys: list[str]) -> tuple[str, dict]:
        """GET the first of ``keys`` that exists: (its s3:// location, the response)."""
        from trollmoves.movers.s3 import translate_s3_error

        for index, key in enumerate(keys):
            where = f"s3://{bucket}/{key}"
            try:
                return where, self.client().get_object(Bucket=bucket, Key=key)
            except Exception as exc:  # noqa: BLE001 - every botocore/urllib3 error becomes a Transfer error
                missing = getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404")
                if missing and index + 1 < len(keys):
                    logger.info("%s does not exist; trying s3://%s/%s (0.19's key)", where, bucket,
                                keys[index + 1])
                    continue
                if index:
                    where = f"s3://{bucket}/{keys[0]}, nor {where}"
                raise translate_s3_error(exc, where, "download failed") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, uri: str, bucket: str, keys: list[str], target: str) -> tuple[int, dict | None, bool]:
        """GET the object into ``target`` atomically; (size, checksum, skipped as a duplicate)."""
        from trollmoves.movers.s3 import translate_s3_error

        where, response = self._get_object(bucket, keys)
        body = response["Body"]
        etag = str(response.get("ETag", "")).strip('"') or None
        expected = response.get("ContentLength")
        record = handled_key(uri, etag, expected)
        if self._state.is_handled(self.name, record):
            body.close()
            return int(expected or 0), None, True
        method = normalise_method(self.settings.checksum)
        hasher = new_hasher(method)
        tmp = os.path.join(os.path.dirname(target) or ".", f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.part")
        try:
            written = _write_stream(body, tmp, hasher, self._cancel)
            if expected is not None and written != int(expected):
                raise TransientTransferError(f"download of {where} incomplete: {written} of {expected} bytes",
                                             where)
            os.replace(tmp, target)
        except Exception as exc:  # noqa: BLE001 - as above; no partial file is left behind
            _remove_quietly(tmp)
            raise translate_s3_error(exc, where, "download failed") from None
        finally:
            body.close()
        self._state.mark_handled(self.name, record, [uri])
        checksum = finish(method, hasher)
        return written, (checksum.as_dict() if checksum is not None else None), False

    def client(self):
        """One boto3 client (thread-safe), built from ``s3_kwargs`` in s3fs spelling as the S3 mover does."""
        with self._client_lock:
            if self._client is None:
                from trollmoves.movers.s3 import S3Settings, make_client

                options = self.settings.transfer_options
                self._client = make_client(S3Settings(options), options)
            return self._client

    def publish(self, data: dict, target: str, size: int, checksum: dict | None) -> None:
        if not self.settings.publish_topic or self.publisher is None:
            return
        try:
            message = messaging.make_message(self.settings.publish_topic, "file",
                                             published_data(data, target, size, checksum))
        except MessageDecodeError as exc:
            logger.error("Cannot announce %s: %s", target, exc)
            return
        if self.publisher.send(message):
            self.metrics.messages_published.labels(self.name, "file").inc()
        else:
            self.metrics.messages_dropped.labels(self.name).inc()


def _write_stream(body, path: str, hasher, cancel: threading.Event) -> int:
    """Write a botocore stream to ``path``, feeding the hasher with the same chunks; return the size."""
    written = 0
    with open(path, "wb") as stream:
        for chunk in body.iter_chunks(CHUNK_SIZE):
            if cancel.is_set():
                raise TransientTransferError(f"download to {path} cancelled")
            stream.write(chunk)
            if hasher is not None:
                hasher.update(chunk)
            written += len(chunk)
    return written


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


__all__ = ["S3Downloader", "S3DownloaderOptions", "handled_key", "object_keys", "object_location",
           "published_data"]
