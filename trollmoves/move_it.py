"""move_it.py: watch directories and copy each new file to every destination (reference §1.5, §2.5).

Per chain (INI section): a watcher (inotify, or polling with ``-w``) reports new
files; those matching ``origin`` are decompressed if ``compression`` is set, copied
to every URL of ``destinations`` with the transfer service (atomic, checksummed,
``connection_parameters`` honoured: the original passed none), announced with
one ``file`` message per destination when a publish port is given (``-p``:
subject ``topic``, ``info`` items and the fields parsed from the name, ``uri`` =
destination path, ``uid`` = base name, ``request_address`` only with
``request_port``), and deleted when ``delete`` is true. Files already there at
start or when a chain is added are handled too, unless ``--disable-backlog``.

What we fix (reference §7.3): ``delete`` removes the source once every
destination has it, and does not crash (the original read a ``delete_hook`` that
was never set, killing the watcher); a file whose copy failed is not deleted (the
original deleted it anyway); a failed decompression does not copy the compressed
file in its place. Destinations follow 0.19's movers: a URL ending in ``/`` (or
an existing local directory, or a bare ``s3://bucket``) is a directory and the
file keeps its name; any other URL names the file itself (``s3://bucket/name``
writes the object ``name``). The ``uri`` of the message is the path actually
written (0.19 joined the destination path and the base name even when the
destination named the file, announcing a path that did not exist).

Health checks as in 0.19: every ``--chain-check-interval`` s a chain whose watcher
died (or whose directory was missing) is restarted, and the program stops with
exit 1 after ``--max-notifier-restarts`` consecutive failed restarts (0: never).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from trollmoves import messaging
from trollmoves.config import Config, MoveItChain, thaw
from trollmoves.errors import MessageDecodeError, PermanentTransferError, TransferError
from trollmoves.matching import PatternMatcher
from trollmoves.metrics import Metrics, scheme_label
from trollmoves.redact import redact, strip_password
from trollmoves.retrying import WorkerPool
from trollmoves.services.chain_service import ChainService
from trollmoves.unpack import decompress
from trollmoves.watching import InotifyWatcher, PollingWatcher, is_temporary_name, scan

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "move_it"
HEARTBEAT_INTERVAL = 30


@dataclass(frozen=True)
class MoveItOptions:
    """Command-line level options: ``-p`` (None: no publisher), ``--disable-backlog``, ``-w``."""

    publish_port: int | None = None
    publish_address: str = "*"
    backlog: bool = True
    polling: bool = False
    chain_check_interval: float = 30.0
    max_notifier_restarts: int = 10
    workers_per_chain: int = 4
    max_queued: int = 10_000


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------

def as_directory(destination: str) -> str:
    """A destination URL read as a directory (trailing slash added if missing)."""
    parts = urlsplit(destination)
    if parts.scheme == "s3" and not parts.path:
        return destination + "/"
    return destination if destination.endswith("/") else destination + "/"


def names_a_file(destination: str) -> bool:
    """Does this destination name the file itself (0.19's movers), rather than a directory?

    A trailing slash, a bare ``s3://bucket`` and an existing local directory are directories.
    """
    parts = urlsplit(destination)
    if not parts.path or parts.path.endswith("/"):
        return False
    if parts.scheme in ("", "file"):
        return not os.path.isdir(parts.path)
    return True


def message_data(chain: MoveItChain, fields: dict, destination: str, copied: str, own_ip: str | None = None,
                 result=None) -> dict[str, Any]:
    """The data of the ``file`` message for one destination (0.19's ``create_message_with_request_info``)."""
    data: dict[str, Any] = dict(thaw(chain.info))
    data.update(fields)
    if result is not None:  # the path actually written (the destination may name the file)
        uri = urlsplit(result.destination).path
        if not urlsplit(destination).path:  # s3://bucket, ftp://host: 0.19's join("", name) is relative
            uri = uri.lstrip("/")
    else:
        uri = os.path.join(urlsplit(destination).path, os.path.basename(copied))
    data["uri"] = uri
    data["uid"] = os.path.basename(uri)
    if chain.request_port:
        data["request_address"] = f"{chain.request_address or own_ip or messaging.own_ip()}:{chain.request_port}"
    if result is not None:
        data["size"] = result.size
        if result.checksum is not None:
            data["checksum"] = result.checksum.as_dict()
    return data


# --------------------------------------------------------------------------------------------------
# One chain
# --------------------------------------------------------------------------------------------------

class MovedChain:
    """A chain's watcher and its copy workers; what it needs is given, it never reaches back."""

    def __init__(self, chain: MoveItChain, *, metrics: Metrics, options: MoveItOptions, transfers: Any,
                 publisher: messaging.Publisher | None, own_ip: Callable[[], str]):
        self.chain = chain
        self.metrics = metrics
        self.options = options
        self.transfers = transfers
        self.publisher = publisher
        self.own_ip = own_ip
        self.matcher = PatternMatcher(chain.origin)
        self.recursive = os.path.dirname(self.matcher.glob) != self.matcher.directory
        self.watcher: InotifyWatcher | PollingWatcher | None = None
        self.pool = WorkerPool(options.workers_per_chain, options.max_queued, f"move:{chain.name}")
        self._stop = threading.Event()
        self._seen: dict[str, tuple[int, int]] = {}
        self._seen_lock = threading.Lock()
        self._warned_topic = False
        self.last_error: str | None = None
        self.consecutive_restarts = 0

    def start(self) -> None:
        """Watch ``origin``'s directory (a missing one is retried by the health check), then the backlog."""
        self.metrics.init_chain(self.chain.name)
        for destination in self.chain.destinations:  # the first local one: free space for the disk-full alert
            if self.metrics.watch_destination(self.chain.name, destination):
                break
        for destination in self.chain.destinations:
            if names_a_file(destination):
                logger.warning("Chain %s: destination %s has no trailing slash and names the file itself "
                               "(as in 0.19): each new file replaces it; end it with / for a directory",
                               self.chain.name, strip_password(destination))
        self.watch()

    def watch(self) -> bool:
        options = self.options
        directory = self.matcher.directory
        if options.polling:
            watcher = PollingWatcher(directory, self.enqueue, self.chain.watchdog_timeout, self.recursive)
        else:
            watcher = InotifyWatcher(directory, self.enqueue, self.recursive, on_overflow=self.backlog)
        try:
            self.watcher = watcher.start()
        except OSError as exc:
            self.last_error = str(exc)
            logger.error("Chain %s cannot watch %s: %s (will retry)", self.chain.name, directory, exc)
            return False
        self.last_error = None
        logger.info("Chain %s watching %s%s", self.chain.name, directory, " (polling)" if options.polling else "")
        if options.backlog:
            self.backlog()
        return True

    def backlog(self) -> None:
        existing = [path for path in scan(self.matcher.directory, self.recursive) if self.matcher.parse(path)]
        if existing:
            logger.info("Chain %s: %d files already present", self.chain.name, len(existing))
        for path in existing:
            self.enqueue(path)

    def healthy(self) -> bool:
        return self.watcher is not None and self.watcher.is_alive()

    def restart_watcher(self) -> bool:
        if self.watcher is not None:
            self.watcher.stop(2.0)
            self.watcher = None
        self.metrics.watcher_restarts.labels(self.chain.name).inc()
        return self.watch()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self.watcher is not None:
            self.watcher.stop(timeout)
        left = self.pool.drain(timeout)
        if left:
            logger.warning("Chain %s: %d files still being copied after %g s", self.chain.name, left, timeout)
        self.pool.shutdown()

    # work -----------------------------------------------------------------------------------------
    def enqueue(self, path: str) -> None:
        if is_temporary_name(path) or self.matcher.parse(path) is None:
            return
        if self.pool.take_slot(self._stop):
            self.pool.submit(self._process, path)

    def _process(self, path: str) -> None:
        try:
            self.process(path)
        except Exception:  # one bad file never stops the chain
            logger.exception("Chain %s: could not handle %s", self.chain.name, path)

    def _first_time(self, path: str) -> bool:
        """The same file reported twice (backlog scan and event, two close events): handled once."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            logger.warning("Chain %s: %s vanished before it could be copied", self.chain.name, path)
            return False
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._seen_lock:
            if self._seen.get(path) == stamp:
                return False
            self._seen[path] = stamp
            if len(self._seen) > 100_000:
                self._seen.clear()
        return True

    def process(self, path: str) -> bool:
        """Copy one file to every destination; True when all of them have it."""
        chain = self.chain
        fields = self.matcher.parse(path)
        if fields is None or not self._first_time(path):
            return False
        logger.info("Chain %s: we have a match: %s", chain.name, path)
        copied = path
        if chain.compression:
            try:
                copied = decompress(path, chain.compression, chain.working_directory, chain.prog)
            except (OSError, EOFError, subprocess.SubprocessError) as exc:
                self.metrics.transfers_failed.labels(chain.name, "file", "error").inc()
                logger.error("Chain %s: could not decompress %s: %s (not copied)", chain.name, path, exc)
                return False
        try:
            copies = [self.copy(copied, destination, fields) for destination in chain.destinations]  # every one
            done = all(copies)
        finally:
            if copied != path:
                _remove(copied)
        if done:
            self.metrics.files_done(chain.name)
        if done and chain.delete:
            _remove(path)
            with self._seen_lock:
                self._seen.pop(path, None)
            logger.debug("Removed %s", path)
        elif not done:
            logger.error("Chain %s: %s was not copied to every destination%s", chain.name, path,
                         "; not deleted" if chain.delete else "")
        return done

    def copy(self, source: str, destination: str, fields: dict) -> bool:
        chain = self.chain
        target = destination
        scheme = scheme_label(urlsplit(target).scheme)
        shown = strip_password(target)
        self.metrics.transfers_started.labels(chain.name, scheme).inc()
        try:
            result = self.transfers.transfer(source, target, options=chain.transfer_options)
        except TransferError as exc:
            reason = "permanent" if isinstance(exc, PermanentTransferError) else "transient"
            self.metrics.transfers_failed.labels(chain.name, scheme, reason).inc()
            logger.error("Chain %s: could not copy %s to %s: %s", chain.name, source, shown, redact(exc))
            return False
        self.metrics.transfers_succeeded.labels(chain.name, scheme).inc()
        self.metrics.transferred_bytes.labels(chain.name, scheme).inc(result.size)
        self.metrics.transfer_duration.labels(chain.name, scheme).observe(result.duration)
        self.metrics.last_transfer.labels(chain.name).set(time.time())
        logger.info("Successfully copied %s to %s", source, result.destination)
        self.publish(target, source, fields, result)
        return True

    def publish(self, destination: str, copied: str, fields: dict, result) -> None:
        publisher = self.publisher
        if publisher is None:
            return
        if not self.chain.topic:
            if not self._warned_topic:
                self._warned_topic = True
                logger.warning("Chain %s has no topic: nothing is published for it", self.chain.name)
            return
        data = message_data(self.chain, fields, destination, copied, self.own_ip(), result)
        try:
            message = messaging.make_message(self.chain.topic, "file", data)
        except MessageDecodeError as exc:
            logger.error("Chain %s: cannot publish %s: %s", self.chain.name, data["uri"], exc)
            return
        if publisher.send(message):
            self.metrics.messages_published.labels(self.chain.name, "file").inc()
        else:
            self.metrics.messages_dropped.labels(self.chain.name).inc()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("Could not remove %s: %s", path, exc.strerror)


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class MoveIt:
    """The move_it service: an optional publisher and the chains (run by a ChainService)."""

    kind = "move_it"

    def __init__(self, config: Config, options: MoveItOptions | None = None, metrics: Metrics | None = None,
                 transfers=None):
        from trollmoves.movers import TransferService

        self.config = config
        self.options = options or MoveItOptions()
        self.metrics = metrics or Metrics(self.kind)
        self.transfers = transfers or TransferService()
        self._own_transfers = transfers is None
        self.publisher: messaging.Publisher | None = None
        self._own_ip: str | None = None
        self.service = ChainService(self.kind, self._make_chain, self.metrics, tick=self._heartbeat,
                                    check_interval=self.options.chain_check_interval,
                                    max_restarts=self.options.max_notifier_restarts)
        self.ready = threading.Event()

    @property
    def chains(self) -> dict[str, MovedChain]:
        return self.service.chains

    def start(self) -> None:
        if self.options.publish_port is not None:
            self.publisher = messaging.Publisher(PUBLISHER_NAME, self.options.publish_port,
                                                 self.options.publish_address, nameservers=False).start()
            self._heartbeat()
        self.service.start(self.config.chains)
        self.ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.service.stop(timeout)
        if self.publisher is not None:
            self.publisher.stop()
        if self._own_transfers:
            self.transfers.close()

    def reload(self, config: Config) -> None:
        """Rebuild changed chains, start new ones, stop removed ones; unchanged chains keep running."""
        self.service.reload(self.config, config, lambda new: setattr(self, "config", new))

    def check_chains(self) -> None:
        """What the housekeeping does every ``chain_check_interval`` s (ChainService.check_chains)."""
        self.service.check_chains()

    def health(self) -> dict[str, Any]:
        chains = {name: {"watching": moved.healthy(), "error": moved.last_error}
                  for name, moved in list(self.chains.items())}
        return {"ok": all(c["watching"] for c in chains.values()), "chains": chains,
                "publisher": self.publisher.port if self.publisher is not None else None}

    def fatal_error(self) -> str | None:
        return self.service.fatal

    def own_ip(self) -> str:
        if self._own_ip is None:
            self._own_ip = messaging.own_ip()
        return self._own_ip

    def _make_chain(self, chain: MoveItChain) -> MovedChain:
        return MovedChain(chain, metrics=self.metrics, options=self.options, transfers=self.transfers,
                          publisher=self.publisher, own_ip=self.own_ip)

    def _heartbeat(self) -> None:
        if self.publisher is not None:
            self.publisher.heartbeat(HEARTBEAT_INTERVAL)


__all__ = ["MoveIt", "MoveItOptions", "MovedChain", "as_directory", "message_data", "names_a_file"]
