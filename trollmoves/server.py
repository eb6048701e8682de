"""The server (move_it_server.py): watch directories, announce files, push them on request.

Per chain (INI section), top to bottom in this module: a watcher reports new files
(``start_watcher``, ``backlog``); the announcer matches each against the chain's
``origin`` pattern and publishes a ``file`` message exactly as trollmoves 0.19 does
(plus ``checksum``, ``size`` and ``mtime``, ``announce_file``); a listen chain instead
re-announces the messages of a topic (``relay``); what may be served is decided by
``refusal``; the request port (services.request_port, with the push decision in
push_plan) answers ``push``, ``ack``, ``info`` and ``ping`` with the original reply types.

What we fix (reference §7): a push is served only for a file this server
announced, whose real path lies under the chain's origin directory and which
matches the full pattern (the original compared base names only); requests are
answered at once (no 100 ms sleep); a push already in progress for the same file
and destination is joined, not started again, and a push that already completed
is answered from a cache (so a resent request or a hot-spare's retry never
transfers twice); transfers run in a bounded worker pool; two chains on one
request port are refused at config load.

Beyond the original, ``info`` requests with ``{"catch_up": {"since": <epoch>}}``
return the recent announcements themselves, which our clients use to request the
files announced while they were away.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from trollmoves import messaging
from trollmoves.config import Config, ServerChain, thaw
from trollmoves.errors import MessageDecodeError
from trollmoves.matching import PatternMatcher
from trollmoves.metrics import Metrics
from trollmoves.push_plan import entry_path, reply_type, uri_entries
from trollmoves.services.deleter import Deleter
from trollmoves.services.serving import ServerOptions, ServingChain, ServingDaemon, ServingParts
from trollmoves.standalone import standalone_archive_data
from trollmoves.unpack import decompress
from trollmoves.watching import InotifyWatcher, PollingWatcher, is_temporary_name, scan

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "move_it_server"
INLINE_ANNOUNCE_MAX_SIZE = 1 << 20  # bytes: a file this small is announced by the thread that found it
BACKLOG_SETTLE = 1.0  # s a file found at start must stay unchanged before it is announced (if it is that new)
LISTEN_LOOKUP_INTERVAL = 2.0  # s between nameserver look-ups of a listen chain following new publishers


# --------------------------------------------------------------------------------------------------
# Helpers: where a file is, whether it settled, its checksum
# --------------------------------------------------------------------------------------------------

def within(path: str, directory: str, resolved: bool = False) -> bool:
    """Is the real path of ``path`` inside the real path of ``directory`` (both given resolved if ``resolved``)?"""
    real = path if resolved else os.path.realpath(path)
    base = directory if resolved else os.path.realpath(directory)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


def split_recent(paths: list[str], settle: float) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """(files unchanged for ``settle`` s, {recently modified file: (size, mtime_ns)})."""
    settled, recent = [], {}
    horizon = time.time_ns() - int(settle * 1e9)
    for path in paths:
        stamp = _stamp(path)
        if stamp is None:
            continue
        if stamp[1] > horizon:
            recent[path] = stamp
        else:
            settled.append(path)
    return settled, recent


def checksum(path: str, method: str) -> dict | None:
    """The ``checksum`` field of an announcement (None: ``none``, or the file cannot be read)."""
    if method == "none":
        return None
    from trollmoves.movers.checksum import file_checksum

    try:
        return file_checksum(path, method).as_dict()
    except OSError as exc:
        logger.warning("Cannot checksum %s: %s", path, exc.strerror)
        return None


# --------------------------------------------------------------------------------------------------
# One chain: watch, announce (or relay), serve what was announced
# --------------------------------------------------------------------------------------------------

class ServedChain(ServingChain):
    """A chain's watcher, announcer and request port."""

    def __init__(self, chain: ServerChain, parts: ServingParts):
        super().__init__(chain, parts)
        self.options = parts.options
        self.matcher = PatternMatcher(chain.origin) if chain.origin else None
        self.recursive = bool(self.matcher) and (
            chain.origin_inotify_base_dir_skip_levels is not None or
            os.path.dirname(self.matcher.glob) != self.matcher.directory)
        self._last_stat: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.queue: queue.Queue[str | None] = queue.Queue(maxsize=100_000)
        self._queued = 0  # paths queued and not yet announced (under _queued_lock)
        self._queued_lock = threading.Lock()
        self._announce_lock = threading.Lock()  # held while a file is announced, by either thread
        self.watcher: InotifyWatcher | PollingWatcher | None = None
        self.listener = None

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.metrics.init_chain(self.chain.name)
        self.open_request_port()
        self._spawn(self._announce_loop, f"announce:{self.chain.name}")
        if self.chain.listen:
            self.start_listening()
        if self.chain.unpack and self.chain.request_port:
            logger.warning("Chain %s: unpack is used in standalone mode only (no request_port), as in 0.19: "
                           "archives are announced as files", self.chain.name)
        if self.matcher:
            try:
                self.start_watcher()
            except OSError as exc:
                self.last_error = str(exc)
                logger.error("Error starting chain %s: %s (will retry)", self.chain.name, exc)
                return
            self.backlog()

    def stop(self, timeout: float) -> None:
        """Stop intake and let pushes in progress finish (aborted after ``timeout`` when the server stops)."""
        self._stop.set()
        if self.watcher is not None:
            self.watcher.stop(timeout)
        self.queue.put(None)
        self.drain(timeout)
        if self.listener is not None:
            self.listener.stop(timeout)
        self.join(timeout)

    # watching -------------------------------------------------------------------------------------
    def start_watcher(self) -> None:
        directory = self.matcher.directory
        if self.options.polling:
            self.watcher = PollingWatcher(directory, self.enqueue, self.chain.watchdog_timeout, self.recursive)
        else:
            self.watcher = InotifyWatcher(directory, self.enqueue, self.recursive, on_overflow=self.rescan)
        self.watcher.start()
        self.last_error = None
        logger.info("Chain %s watching %s%s", self.chain.name, directory, " (polling)" if
                    self.options.polling else "")

    def backlog(self) -> None:
        """Announce the files already present (or, with the backlog off, only remember them as served)."""
        if not self.matcher:
            return
        existing = [p for p in scan(self.matcher.directory, self.recursive) if self.matcher.parse(p) is not None]
        if self.options.backlog:
            if existing:
                logger.info("Chain %s: announcing %d files already present", self.chain.name, len(existing))
            self._enqueue_settled(existing)
        else:
            for path in existing:
                self._remember_silently(path)

    def _announce_when_settled(self, recent: dict[str, tuple[int, int]]) -> None:
        """Backlog files modified just before the start may still be written by a producer that
        does not write atomically: announce each only if it has not changed for BACKLOG_SETTLE s.
        One that changed is announced by the watcher (started before the scan) when it is closed."""
        if self._stop.wait(BACKLOG_SETTLE):
            return
        for path, stamp in recent.items():
            now = _stamp(path)
            if now == stamp:
                self.enqueue(path)
            else:
                logger.info("Chain %s: %s was still being written at start: announced when closed",
                            self.chain.name, path)

    def rescan(self) -> None:
        """After an inotify overflow: every file again (announced ones are skipped by their stamp)."""
        self._enqueue_settled(scan(self.matcher.directory, self.recursive))

    def _enqueue_settled(self, paths: list[str]) -> None:
        """Queue files found by a scan; those modified within BACKLOG_SETTLE s only once they stay unchanged."""
        settled, recent = split_recent(paths, BACKLOG_SETTLE)
        for path in settled:
            self.enqueue(path)
        if recent:
            self._spawn(lambda: self._announce_when_settled(recent), f"settle:{self.chain.name}")

    def healthy(self) -> bool:
        return self.matcher is None or (self.watcher is not None and self.watcher.is_alive())

    def restart_watcher(self) -> bool:
        if self.watcher is not None:
            self.watcher.stop(2.0)
            self.watcher = None
        self.metrics.watcher_restarts.labels(self.chain.name).inc()
        try:
            self.start_watcher()
        except OSError as exc:
            self.last_error = str(exc)
            logger.error("Chain %s: cannot restart the watcher: %s", self.chain.name, exc)
            return False
        self.backlog() if self.options.backlog else None
        return True

    # announcing -----------------------------------------------------------------------------------
    def enqueue(self, path: str) -> None:
        """Announce ``path``: at once in this thread when nothing is queued and it is small, else queued.

        The hand-off to the announce thread cost a thread wake-up on every file's way to its
        client; a small file is announced by the thread that found it (the watcher) when no
        announcement is queued or running, so the order of announcements stays the order in
        which files were found. Large files (their checksum takes time) and compressed ones go
        through the queue, so the watcher keeps reading events.
        """
        if self._stop.is_set():
            return  # stopping: as before, nothing found from now on is announced
        if self._announce_lock.acquire(blocking=False):  # never waits: the announce thread may be busy
            try:
                with self._queued_lock:
                    idle = not self._queued
                if idle and self._quick_to_announce(path):
                    self._announce_safely(path)
                    return
            finally:
                self._announce_lock.release()
        with self._queued_lock:
            self._queued += 1
        try:
            self.queue.put(path, timeout=10)
        except queue.Full:
            with self._queued_lock:
                self._queued -= 1
            logger.error("Chain %s: announcement queue full, %s will be found by the next rescan",
                         self.chain.name, path)

    def _quick_to_announce(self, path: str) -> bool:
        if self.chain.compression or self.chain.unpack:
            return False
        try:
            return os.stat(path).st_size <= INLINE_ANNOUNCE_MAX_SIZE
        except OSError:
            return True  # announce_file says why it is not announced

    def _announce_loop(self) -> None:
        while not self._stop.is_set():
            path = self.queue.get()
            if path is None:
                return
            with self._announce_lock:
                self._announce_safely(path)
            with self._queued_lock:  # only now: an inline announcement never overtakes a queued one
                self._queued -= 1

    def _announce_safely(self, path: str) -> None:
        try:
            self.announce_file(path)
        except Exception:  # noqa: BLE001 - one bad file never stops the chain
            logger.exception("Chain %s: could not announce %s", self.chain.name, path)

    def announce_file(self, path: str) -> None:
        if is_temporary_name(path) or self.matcher is None:
            return
        fields = self.matcher.parse(path)
        if fields is None:
            logger.debug("Chain %s: %s does not match %s", self.chain.name, path, self.chain.origin)
            return
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            logger.warning("Chain %s: %s vanished before it could be announced", self.chain.name, path)
            return
        if stat.st_size == 0:
            logger.debug("Chain %s: %s is empty, not announced", self.chain.name, path)
            return
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._last_stat.get(path) == stamp:
            return  # the same file reported twice (scan + event): announce once
        self._last_stat[path] = stamp
        self._last_stat.move_to_end(path)
        while len(self._last_stat) > self.chain.announce_history:
            self._last_stat.popitem(last=False)
        served_path = path
        if self.chain.compression:
            try:
                served_path = decompress(path, self.chain.compression, self.chain.working_directory,
                                         self.chain.prog)
            except (OSError, EOFError, subprocess.SubprocessError) as exc:
                logger.error("Chain %s: cannot decompress %s: %s", self.chain.name, path, exc)
                return
            if self.chain.delete:
                os.remove(path)
            self.parts.deleter.schedule(served_path, self.chain.remove_delay)
            stat = os.stat(served_path)
        if self.chain.unpack and not self.chain.request_port:
            try:
                data = standalone_archive_data(served_path, self.chain.unpack, fields, dict(thaw(self.chain.info)))
            except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
                logger.error("Chain %s: cannot list the members of %s (unpack = %s): %s", self.chain.name,
                             served_path, self.chain.unpack, exc)
                return
            self.publish(served_path, "dataset", data)
            return
        data = self.message_data(served_path, fields, stat)
        self.publish(served_path, "file", data)

    def message_data(self, path: str, fields: dict, stat: os.stat_result) -> dict:
        data: dict[str, Any] = dict(thaw(self.chain.info))
        data.update(fields)
        if self.chain.request_port:
            data["uri"] = path
            data["uid"] = os.path.basename(path)
            data["request_address"] = self.parts.request_address(self.chain)
        else:
            host = socket.gethostname()
            uri = f"ssh://{host}{path}"
            data = {"filesystem": {"cls": "fsspec.implementations.sftp.SFTPFileSystem", "args": [],
                                   "host": host, "protocol": "ssh"}, "uri": uri, "uid": uri, **data}
        data["size"] = stat.st_size
        data["mtime"] = stat.st_mtime
        summed = checksum(path, self.chain.checksum)
        if summed is not None:
            data["checksum"] = summed
        return data

    def publish(self, path: str, atype: str, data: dict) -> None:
        try:
            message = messaging.make_message(self.chain.topic, atype, data)
        except MessageDecodeError as exc:
            logger.error("Chain %s: cannot announce %s: %s", self.chain.name, path, exc)
            return
        self.remember(path, atype, data)
        if self.parts.publish(message, self.chain.name):
            self.metrics.child(self.metrics.files_announced, self.chain.name).inc()
            self.metrics.files_done(self.chain.name)
            logger.debug("Announced %s on %s", path, self.chain.topic)  # per file at INFO: the push line

    def _remember_silently(self, path: str) -> None:
        """Backlog disabled: files present at start are servable, but not announced."""
        try:
            stat = os.stat(path)
        except OSError:
            return
        if stat.st_size:
            self.remember(path, "file", {"uri": path, "uid": os.path.basename(path)})

    # listen chains --------------------------------------------------------------------------------
    def start_listening(self) -> None:
        """Subscribe as 0.19's listen chain did (posttroll ``Subscribe`` with the chain's keys).

        Only ``addresses`` with ``nameserver = false`` is a plain subscription; otherwise
        the publishers of ``services`` (default: all) are looked up on the nameserver
        (default localhost) for up to ``timeout`` s, and with ``addr_listener`` (default
        true) publishers that register later are followed too.
        """
        from trollmoves.listening import Subscription

        chain = self.chain
        if chain.translate:
            logger.warning("Chain %s: translate only rewrites the sender of received messages, which a "
                           "re-announcement does not carry (as in 0.19): it changes nothing", chain.name)
        plain = bool(chain.addresses) and chain.nameserver is False
        nameserver: str | bool = False if plain else (
            chain.nameserver if isinstance(chain.nameserver, str) else "localhost")
        self.listener = Subscription(f"chain {chain.name}", self.relay,
                                     lambda _e: self.metrics.messages_malformed.labels(chain.name).inc(),
                                     lookup_interval=LISTEN_LOOKUP_INTERVAL,
                                     lookup_timeout=max(1, min(chain.timeout, 5)),
                                     follow=chain.addr_listener, start_lookup_for=chain.timeout)
        self.listener.configure(chain.addresses, list(chain.topics) or [chain.listen], nameserver,
                                chain.services)
        self.listener.start()

    def relay(self, message) -> None:
        """Re-announce a message whose files are all local, with this chain's topic and request address."""
        entries = uri_entries(message.data)
        if not entries or not all(urlsplit(str(e["uri"])).scheme in ("", "file") for e in entries):
            logger.debug("Chain %s: not relaying a message with non-local files", self.chain.name)
            return
        data = dict(thaw(self.chain.info))
        data.update(message.data)
        if self.chain.request_port:
            data["request_address"] = self.parts.request_address(self.chain)
        for entry in entries:
            self.remember(entry_path(entry), message.type, data)
        msg = messaging.make_message(self.chain.topic, message.type, data)
        if self.parts.publish(msg, self.chain.name):
            self.metrics.files_announced.labels(self.chain.name).inc(len(entries))
            self.metrics.files_done(self.chain.name, len(entries))

    # what may be served ---------------------------------------------------------------------------
    def _real_origin(self) -> str:
        """realpath of the watched directory, resolved again at most once a second (it rarely changes)."""
        now = time.monotonic()
        cached = getattr(self, "_real_origin_cache", None)
        if cached is None or now - cached[0] > 1.0:
            cached = self._real_origin_cache = (now, os.path.realpath(self.matcher.directory))
        return cached[1]

    def refusal(self, path: str) -> str | None:
        """Why this server must not serve ``path`` (None: it may)."""
        if not self.announcements.servable(path):
            return "not_announced"
        if self.matcher is not None and not self.chain.compression:
            real = os.path.realpath(path)
            if not within(real, self._real_origin(), resolved=True):
                return "outside_origin"
            if self.matcher.parse(path) is None and self.matcher.parse(real) is None:
                return "pattern_mismatch"
        elif self.chain.compression:
            workdir = self.chain.working_directory or tempfile.gettempdir()
            if not within(path, workdir):
                return "outside_origin"
        return None


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class Server(ServingDaemon):
    """The server service: its chains (ServedChain), one publisher, a deleter, and the housekeeping."""

    kind = "server"

    def __init__(self, config: Config, options: ServerOptions | None = None, metrics: Metrics | None = None,
                 transfers=None):
        super().__init__(config, options or ServerOptions(), metrics, transfers)

    def make_chain(self, chain: ServerChain) -> ServedChain:
        return ServedChain(chain, self.parts)


__all__ = ["Server", "ServerOptions", "ServedChain", "Deleter", "reply_type"]
