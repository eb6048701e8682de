"""The server (move_it_server.py): watch directories, announce files, push them on request.

Per chain (INI section): a watcher reports new files; the announcer matches each
against the chain's ``origin`` pattern and publishes a ``file`` message exactly as
trollmoves 0.19 does (plus ``checksum``, ``size`` and ``mtime``); the request port
answers ``push``, ``ack``, ``info`` and ``ping`` with the original reply types.

What we fix (reference §7): a push is served only for a file this server
announced, whose real path lies under the chain's origin directory and which
matches the full pattern (the original compared base names only); requests are
answered at once (no 100 ms sleep); a push already in progress for the same file
and destination is joined, not started again, and a push that already completed
is answered from a cache (so a resent request or a hot-spare's retry never
transfers twice) while its local copy is still there, or for a remote destination
within ``PUSHED_CACHE_TTL``; transfers run in a bounded worker pool; two chains on one
request port are refused at config load.

Beyond the original, ``info`` requests with ``{"catch_up": {"since": <epoch>}}``
return the recent announcements themselves, which our clients use to request the
files announced while they were away.
"""

from __future__ import annotations

import bz2
import contextlib
import datetime as dt
import heapq
import logging
import os
import queue
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trollmoves import confine, messaging
from trollmoves.chains import reload_chains
from trollmoves.config import Config, ServerChain, thaw
from trollmoves.errors import MessageDecodeError, RequestError, TransferError
from trollmoves.matching import PatternMatcher
from trollmoves.metrics import Metrics, scheme_label
from trollmoves.redact import clean_url, redact
from trollmoves.watching import InotifyWatcher, PollingWatcher, is_temporary_name, scan

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "move_it_server"
MAX_INFO_COUNT = 2256
HEARTBEAT_INTERVAL = 30
REJOIN_GRACE = 1.0
BACKLOG_SETTLE = 1.0  # s a file found at start must stay unchanged before it is announced (if it is that new)
SERVABLE_AFTER_HISTORY = 200_000
LISTEN_LOOKUP_INTERVAL = 2.0  # s between nameserver look-ups of a listen chain following new publishers
PUSHED_CACHE_TTL = 60.0  # s a completed push to a remote destination answers a repeated request (no transfer)
PUSHED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class ServerOptions:
    """Command-line level options of a server (or mirror)."""

    publish_port: int = 9010
    publish_address: str = "*"
    backlog: bool = True
    backlog_delay: float = 0.0
    polling: bool = False
    chain_check_interval: float = 30.0
    max_notifier_restarts: int = 10
    workers_per_chain: int = 8
    publisher_name: str = PUBLISHER_NAME


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------

def file_entries(data: Any) -> list[dict]:
    """Every dict holding a ``uri`` anywhere in message data (top level, dataset, collection)."""
    return messaging.entries_with(data, "uri")


def reply_type(data: dict, request_type: str) -> str:
    """The original's reply type after a push: file, dataset or collection, else the request type."""
    if "uri" in data:
        return "file"
    if "dataset" in data:
        return "dataset"
    if "collection" in data:
        return "collection"
    return request_type


def clean_destination(data: dict) -> dict:
    """A copy of request data with the destination stripped of credentials (scheme + host + path)."""
    reply = dict(data)
    if "destination" in reply and isinstance(reply["destination"], str):
        reply["destination"] = clean_url(reply["destination"])
    return reply


def push_reply_data(data: dict) -> dict:
    """The data of a successful push reply: the request's, with a credential-free destination that includes a
    top-level ``path`` (0.19 replies ``join(destination path, path)``, the file actually written)."""
    reply = clean_destination(data)
    rel_path = data.get("path")
    if isinstance(rel_path, str) and rel_path and isinstance(reply.get("destination"), str):
        parts = urlsplit(reply["destination"])
        reply["destination"] = urlunsplit(parts._replace(path=os.path.join(parts.path, rel_path)))
    return reply


def push_directory(destination: str, rel_path: str | None) -> str:
    """The destination of a push without ``path``: it names a directory, the file keeps its name.

    0.19's clients always publish ``join(destination path, uid)`` as the received file's URI
    (and create that directory first); a destination without a trailing slash written *as* the
    file would overwrite itself with every file and leave those URIs pointing at nothing. With
    a ``path`` (relative path) in the request the joined path names the file, as in 0.19.
    """
    if rel_path:
        return destination
    parts = urlsplit(destination)
    if not parts.path or parts.path.endswith("/"):
        return destination
    return urlunsplit(parts._replace(path=parts.path + "/"))


def archive_members(path: str, protocol: str) -> list[str]:
    """The files of a tar or zip archive, sorted, as fsspec's archive file systems list them."""
    if protocol == "zip":
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    else:
        with tarfile.open(path, "r:*") as archive:
            names = [member.name for member in archive.getmembers() if member.isfile()]
    return sorted(name.lstrip("/") for name in names)


def standalone_archive_data(path: str, protocol: str, fields: dict, info: dict) -> dict:
    """A standalone ``unpack`` announcement: the archive's members as fsspec chained URIs (reference §3.2).

    0.19 built it with pytroll-collectors' ``extract_local_files_to_message_for_remote_use``:
    one ``dataset`` entry per member, ``tar://<member>::ssh://<host><archive>``, so that a
    reader on another host (trollflow2) opens the member through SSH without a copy.
    """
    host = socket.gethostname()
    filesystem = {"cls": f"fsspec.implementations.{protocol}:{protocol.capitalize()}FileSystem",
                  "protocol": protocol, "args": [], "fo": path, "target_protocol": "ssh",
                  "target_options": {"host": host}}
    dataset = [{"filesystem": dict(filesystem, target_options={"host": host}),
                "uri": f"{protocol}://{name}::ssh://{host}{path}", "uid": f"{protocol}://{name}"}
               for name in archive_members(path, protocol)]
    data: dict[str, Any] = {"dataset": dataset}
    data.update(info)
    data.update(fields)
    return data


class BadRequest(ValueError):
    """A request with values the server cannot use: the client's mistake, not a bug of ours.

    It is answered ``err`` and logged as one WARNING line, never with a traceback
    (a client repeating it must not fill the log).
    """


def catch_up_window(catch_up: dict) -> tuple[float, int]:
    """(since, limit) of an ``info`` request's ``catch_up``: epoch seconds and at most 10,000 announcements.

    Values a client can send wrongly (``since: 'yesterday'``, ``max_count: 'x'``, a
    list, an int too large for a float) raise BadRequest naming the field; a
    negative ``max_count`` means none.
    """
    since = catch_up.get("since", 0)
    try:
        since = since.timestamp() if isinstance(since, dt.datetime) else float(since or 0)
    except (TypeError, ValueError, OverflowError, OSError):
        raise BadRequest(f"catch_up.since must be a number of seconds since the epoch or a time, not "
                         f"{messaging.shorten(repr(since), 80)}") from None
    count = catch_up.get("max_count", 10_000)
    try:
        limit = int(count)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"catch_up.max_count must be an integer, not {messaging.shorten(repr(count), 80)}") \
            from None
    return since, max(0, min(limit, 10_000))


def bounded_reply(reply: messaging.Message) -> messaging.Message:
    """An ``err``/``error`` reply with its text shortened (messaging.shorten).

    Error texts quote what the requester sent (paths, destinations); the last
    check before a reply leaves keeps a 50 MB field from becoming a 50 MB reply,
    whichever handler built the text.
    """
    text = reply.data
    if reply.type in ("err", "error") and isinstance(text, str) and len(text) > messaging.MAX_ECHO:
        return messaging.make_message(reply.subject, reply.type, messaging.shorten(text))
    return reply


def uptime_text(started: float) -> str:
    return str(dt.timedelta(seconds=time.monotonic() - started))


def within(path: str, directory: str, resolved: bool = False) -> bool:
    """Is the real path of ``path`` inside the real path of ``directory`` (both given resolved if ``resolved``)?"""
    real = path if resolved else os.path.realpath(path)
    base = directory if resolved else os.path.realpath(directory)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def request_curve(chain, config: Config) -> messaging.CurveServerKeys | None:
    """CURVE keys of a chain's request port: the chain's own, else the daemon's, else none."""
    if getattr(chain, "curve_secret_key_file", None):
        return messaging.CurveServerKeys(chain.curve_secret_key_file, chain.curve_clients_directory)
    return publisher_curve(config)


def publisher_curve(config: Config) -> messaging.CurveServerKeys | None:
    daemon = config.daemon
    if daemon.curve_secret_key_file and daemon.curve_clients_directory:
        return messaging.CurveServerKeys(daemon.curve_secret_key_file, daemon.curve_clients_directory)
    return None


# --------------------------------------------------------------------------------------------------
# Deleter: removes served files after a delay
# --------------------------------------------------------------------------------------------------

class Deleter:
    """One thread removing files at their due time (``delete``/``compression`` chains)."""

    def __init__(self):
        self._heap: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="deleter", daemon=True)

    def start(self) -> Deleter:
        self._thread.start()
        return self

    def schedule(self, path: str, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, path))
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, path = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                try:
                    os.remove(path)
                    logger.info("Removed %s", path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    logger.warning("Could not remove %s: %s", path, exc.strerror)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)


# --------------------------------------------------------------------------------------------------
# Server-side decompression
# --------------------------------------------------------------------------------------------------

def decompress(path: str, method: str, working_directory: str | None, prog: str) -> str:
    """Decompress ``path`` into ``working_directory``; return the new path (written atomically)."""
    workdir = working_directory or tempfile.gettempdir()
    os.makedirs(workdir, exist_ok=True)
    name = os.path.basename(path)
    if method == "bzip":
        target = os.path.join(workdir, name[:-4] if name.endswith(".bz2") else name + ".out")
        tmp = os.path.join(workdir, "." + os.path.basename(target) + ".tmp")
        try:
            with bz2.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            # a corrupt archive (or a full disk) leaves nothing behind in the working directory
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return target
    # xrit: the decompressor writes <name with C_ -> __> into its working directory
    target_name = name[:-2] + "__" if name.endswith("C_") else name
    target = os.path.join(workdir, target_name)
    if name == target_name:
        shutil.copy(path, target)
        return target
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".trollmoves_") as tmpdir:
        result = subprocess.run([prog, path], cwd=tmpdir, capture_output=True, timeout=600, check=False)
        produced = os.path.join(tmpdir, target_name)
        if result.returncode != 0 or not os.path.exists(produced):
            raise OSError(f"{prog} failed on {path} (exit {result.returncode}): "
                          f"{result.stderr.decode(errors='replace')[:200]}")
        os.replace(produced, target)
    return target


# --------------------------------------------------------------------------------------------------
# One chain
# --------------------------------------------------------------------------------------------------

@dataclass
class Announced:
    """What this server announced for one file: the message and when."""

    path: str
    subject: str
    atype: str
    data: dict
    time: float
    seq: int


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


@dataclass(frozen=True)
class CompletedPush:
    """A push that completed: where the copy landed if it is on this host, its size, and when."""

    local_copy: str | None
    size: int
    at: float


def delivered_local_copy(source: str, destination: str, rel_path: str | None) -> str | None:
    """The path of the copy a completed push to a ``file://`` destination left on this host, else None."""
    from trollmoves.movers.destination import parse_destination
    from trollmoves.movers.local import FileMover

    try:
        target = parse_destination(destination, rel_path)
        return FileMover.remote_path(target, source) if target.scheme in ("file", "") else None
    except (ValueError, TransferError):
        return None


def still_delivered(done: CompletedPush, now: float, ttl: float) -> bool:
    """Whether a completed push may answer a repeated request without a new transfer.

    A local copy is checked for what it is (still there, same size): a re-push after it was
    deleted or truncated transfers again. A remote copy cannot be checked cheaply, so the entry
    only bridges the resend window (``ttl``): a resent request or a hot spare's retry does not
    transfer twice, a re-push later does.
    """
    if done.local_copy is None:
        return now - done.at < ttl
    try:
        return os.stat(done.local_copy).st_size == done.size
    except OSError:
        return False


class ServedChain:
    """A chain's watcher, announcer and request port."""

    def __init__(self, chain: ServerChain, server: Server):
        self.chain = chain
        self.server = server
        self.metrics = server.metrics
        self.matcher = PatternMatcher(chain.origin) if chain.origin else None
        self.recursive = bool(self.matcher) and (
            chain.origin_inotify_base_dir_skip_levels is not None or
            os.path.dirname(self.matcher.glob) != self.matcher.directory)
        self.history: OrderedDict[str, Announced] = OrderedDict()
        self.history_lock = threading.Lock()
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._seq = 0
        self._last_stat: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.queue: queue.Queue[str | None] = queue.Queue(maxsize=100_000)
        self.watcher: InotifyWatcher | PollingWatcher | None = None
        self.consecutive_restarts = 0
        self.request_server: messaging.RequestServer | None = None
        self.workers = ThreadPoolExecutor(max_workers=server.options.workers_per_chain,
                                          thread_name_prefix=f"push:{chain.name}")
        self._inflight: dict[tuple[str, str], Future] = {}
        self._completed: OrderedDict[tuple, CompletedPush] = OrderedDict()
        self.pushed_cache_ttl = PUSHED_CACHE_TTL
        self._inflight_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = time.monotonic()
        self.listener = None
        self.last_error: str | None = None

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.metrics.init_chain(self.chain.name)
        if self.chain.request_port:
            self.request_server = messaging.RequestServer(self.chain.request_port, self.chain.request_bind_address,
                                                          curve=request_curve(self.chain, self.server.config)).start()
            self._spawn(self._serve_requests, f"requests:{self.chain.name}")
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

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_watcher(self) -> None:
        directory = self.matcher.directory
        if self.server.options.polling:
            self.watcher = PollingWatcher(directory, self.enqueue, self.chain.watchdog_timeout, self.recursive)
        else:
            self.watcher = InotifyWatcher(directory, self.enqueue, self.recursive, on_overflow=self.rescan)
        self.watcher.start()
        self.last_error = None
        logger.info("Chain %s watching %s%s", self.chain.name, directory, " (polling)" if
                    self.server.options.polling else "")

    def backlog(self) -> None:
        """Announce the files already present (or, with the backlog off, only remember them as served)."""
        if not self.matcher:
            return
        existing = [p for p in scan(self.matcher.directory, self.recursive) if self.matcher.parse(p) is not None]
        if self.server.options.backlog:
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
        self.backlog() if self.server.options.backlog else None
        return True

    def stop(self, timeout: float, abort: threading.Event | None = None) -> None:
        """Stop intake and let pushes in progress finish; after ``timeout`` set ``abort`` (if given)."""
        self._stop.set()
        if self.watcher is not None:
            self.watcher.stop(timeout)
        self.queue.put(None)
        with self._inflight_lock:
            running = list(self._inflight.values())
        aborted = abort is not None and bool(wait(running, timeout).not_done)
        if aborted:
            logger.warning("Chain %s: aborting the pushes still running after %g s: %d", self.chain.name, timeout,
                           len(self._inflight))
            abort.set()
            self.server.transfers.interrupt()  # a push blocked on a frozen peer ends now, not at its timeout
        self.workers.shutdown(wait=True, cancel_futures=aborted)
        if self.listener is not None:
            self.listener.stop(timeout)
        for thread in self._threads:
            thread.join(timeout)
        if self.request_server is not None:
            self.request_server.close()

    # announcing -----------------------------------------------------------------------------------
    def enqueue(self, path: str) -> None:
        try:
            self.queue.put(path, timeout=10)
        except queue.Full:
            logger.error("Chain %s: announcement queue full, %s will be found by the next rescan",
                         self.chain.name, path)

    def _announce_loop(self) -> None:
        while not self._stop.is_set():
            path = self.queue.get()
            if path is None:
                return
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
            self.server.deleter.schedule(served_path, self.chain.remove_delay)
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
            data["request_address"] = self.server.request_address(self.chain)
        else:
            host = socket.gethostname()
            uri = f"ssh://{host}{path}"
            data = {"filesystem": {"cls": "fsspec.implementations.sftp.SFTPFileSystem", "args": [],
                                   "host": host, "protocol": "ssh"}, "uri": uri, "uid": uri, **data}
        data["size"] = stat.st_size
        data["mtime"] = stat.st_mtime
        checksum = self.server.checksum(path, self.chain.checksum)
        if checksum is not None:
            data["checksum"] = checksum
        return data

    def publish(self, path: str, atype: str, data: dict) -> None:
        try:
            message = messaging.make_message(self.chain.topic, atype, data)
        except MessageDecodeError as exc:
            logger.error("Chain %s: cannot announce %s: %s", self.chain.name, path, exc)
            return
        self.remember(path, atype, data)
        if self.server.publish(message, self.chain.name):
            self.metrics.files_announced.labels(self.chain.name).inc()
            logger.info("Announced %s on %s", path, self.chain.topic)

    def remember(self, path: str, atype: str, data: dict) -> None:
        with self.history_lock:
            self._seq += 1
            self.history.pop(path, None)
            self._expired.pop(path, None)
            self.history[path] = Announced(path, self.chain.topic, atype, data, time.time(), self._seq)
            while len(self.history) > self.chain.announce_history:
                old = self.history.popitem(last=False)[0]
                if os.path.exists(old):
                    self._expired[old] = None
            while len(self._expired) > SERVABLE_AFTER_HISTORY:
                self._expired.popitem(last=False)

    def forget_vanished(self) -> None:
        """Drop the files pushed out of the history that no longer exist (the others stay servable)."""
        with self.history_lock:
            paths = list(self._expired)
        gone = [path for path in paths if not os.path.exists(path)]
        with self.history_lock:
            for path in gone:
                self._expired.pop(path, None)

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
        entries = file_entries(message.data)
        if not entries or not all(urlsplit(str(e["uri"])).scheme in ("", "file") for e in entries):
            logger.debug("Chain %s: not relaying a message with non-local files", self.chain.name)
            return
        data = dict(thaw(self.chain.info))
        data.update(message.data)
        if self.chain.request_port:
            data["request_address"] = self.server.request_address(self.chain)
        for entry in entries:
            path = urlsplit(str(entry["uri"])).path
            self.remember(path, message.type, data)
        msg = messaging.make_message(self.chain.topic, message.type, data)
        if self.server.publish(msg, self.chain.name):
            self.metrics.files_announced.labels(self.chain.name).inc(len(entries))

    # requests -------------------------------------------------------------------------------------
    def _serve_requests(self) -> None:
        server = self.request_server
        while not self._stop.is_set():
            try:
                requests = server.poll(0.5)
            except Exception:  # noqa: BLE001
                logger.exception("Chain %s: request port error", self.chain.name)
                continue
            for request in requests:
                self.dispatch(request)

    def dispatch(self, request: messaging.Request) -> None:
        name = self.chain.name
        if request.message is None:
            self.metrics.requests_refused.labels(name, "malformed").inc()
            self.metrics.requests.labels(name, "unknown").inc()
            logger.warning("Chain %s: malformed request: %s", name, request.error)
            if request.raw == b"":
                self.request_server.reply(request, messaging.make_message("error", "unknown"))
            else:
                self.request_server.reply(request, messaging.make_message(
                    "/error", "err", f"malformed request: {str(request.error)[:200]}"))
            return
        message = request.message
        atype = message.type if message.type in ("push", "ack", "info", "ping") else "unknown"
        self.metrics.requests.labels(name, atype).inc()
        logger.debug("Chain %s: %s request on %s", name, messaging.shorten(message.type, 40),
                     messaging.shorten(message.subject))
        if atype == "push":
            self.workers.submit(self._push_and_reply, request)
            return
        try:
            if atype == "ping":
                reply = messaging.make_message(message.subject, "pong", {"station": self.chain.station})
            elif atype == "info":
                reply = self.info(message)
            elif atype == "ack":
                reply = self.ack(message)
            else:
                reply = messaging.make_message(message.subject, "unknown")
        except BadRequest as exc:
            self.metrics.requests_refused.labels(name, "malformed").inc()
            logger.warning("Chain %s: bad %s request: %s", name, message.type, exc)
            reply = messaging.make_message(message.subject, "err", str(exc))
        except Exception as exc:  # noqa: BLE001 - a handler error is an `error` reply, not a crash
            logger.exception("Chain %s: error handling a %s request", name, message.type)
            reply = messaging.make_message(message.subject, "error", redact(exc)[:300] or "error")
        self.request_server.reply(request, bounded_reply(reply))

    def info(self, message) -> messaging.Message:
        data = message.data if isinstance(message.data, dict) else {}
        try:
            max_count = min(int(data.get("max_count", MAX_INFO_COUNT)), MAX_INFO_COUNT)
        except (TypeError, ValueError):
            max_count = MAX_INFO_COUNT
        with self.history_lock:
            recent = list(reversed(self.history.values()))
        reply: dict[str, Any] = {"files": self.server.announced_files(message.subject, max_count),
                                 "max_count": max_count, "uptime": uptime_text(self.started)}
        catch_up = data.get("catch_up")
        if isinstance(catch_up, dict):
            since, limit = catch_up_window(catch_up)
            missed = [a for a in reversed(recent) if a.time > since and a.data.get("request_address")]
            reply["announcements"] = [{"subject": a.subject, "type": a.atype, "data": a.data, "time": a.time}
                                      for a in missed[len(missed) - limit:]]
        return messaging.make_message(message.subject, "info", reply)

    def ack(self, message) -> messaging.Message:
        data = message.data
        if not isinstance(data, dict) or not data:
            return messaging.make_message(message.subject, "error")
        for entry in file_entries(data):
            path = urlsplit(str(entry["uri"])).path
            refusal = self.refusal(path)
            if refusal:
                return self._refuse(message, path, refusal)
            if self.chain.delete or self.chain.compression:
                self.server.deleter.schedule(path, self.chain.remove_delay)
        return messaging.make_message(message.subject, "ack", clean_destination(data))

    def _real_origin(self) -> str:
        """realpath of the watched directory, resolved again at most once a second (it rarely changes)."""
        now = time.monotonic()
        cached = getattr(self, "_real_origin_cache", None)
        if cached is None or now - cached[0] > 1.0:
            cached = self._real_origin_cache = (now, os.path.realpath(self.matcher.directory))
        return cached[1]

    def refusal(self, path: str) -> str | None:
        """Why this server must not serve ``path`` (None: it may)."""
        with self.history_lock:
            announced = path in self.history or path in self._expired
        if not announced:
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

    def _refuse(self, message, path: str, reason: str) -> messaging.Message:
        self.metrics.requests_refused.labels(self.chain.name, reason).inc()
        shown = messaging.shorten(path)  # a peer's path: never echoed or logged at full size
        logger.warning("Chain %s: refused a %s request for %s (%s)", self.chain.name, message.type, shown,
                       reason.replace("_", " "))
        return messaging.make_message(message.subject, "err", f"{shown} not reachable")

    def _push_and_reply(self, request: messaging.Request) -> None:
        try:
            reply = self.push(request.message)
        except Exception as exc:  # noqa: BLE001
            logger.exception("Chain %s: error serving a push", self.chain.name)
            reply = messaging.make_message(request.message.subject, "err", redact(exc)[:300] or "error")
        self.request_server.reply(request, bounded_reply(reply))

    def push(self, message) -> messaging.Message:
        data = message.data
        if not isinstance(data, dict):
            return messaging.make_message(message.subject, "err", "push request without data")
        entries = file_entries(data)
        if not entries:
            return messaging.make_message(message.subject, "err", "push request without any uri")
        destination = data.get("destination")
        if not isinstance(destination, str) or not destination:
            return messaging.make_message(message.subject, "err", "push request without destination")
        refused = self._refused_destination(message, destination, entries)
        if refused is not None:
            return refused
        paths = []
        for entry in entries:
            path = urlsplit(str(entry["uri"])).path
            refusal = self.refusal(path)
            if refusal:
                return self._refuse(message, path, refusal)
            paths.append((path, entry))
        for path, entry in paths:
            rel_path = entry.get("path")
            error = self._transfer_once(path, push_directory(destination, rel_path), rel_path,
                                        data.get("backup_targets"))
            if error:
                return messaging.make_message(message.subject, "err", error)
        return messaging.make_message(message.subject, reply_type(data, message.type), push_reply_data(data))

    def _refused_destination(self, message, destination: str, entries: list[dict]) -> messaging.Message | None:
        """An ``err`` reply if a final target (destination joined with an entry's ``path``) is not allowed.

        The check runs on normalised URLs (confine.allowed), so ``..``, a ``path`` field, another port or
        another spelling of this host can neither slip past the allow-list nor be refused by mistake.
        """
        parts = urlsplit(destination)
        if parts.scheme.lower() in ("", "file") and not parts.path.startswith("/"):
            # a relative local path would land wherever this daemon happens to run
            self.metrics.requests_refused.labels(self.chain.name, "destination_not_allowed").inc()
            logger.warning("Chain %s: refused a push to the relative local path %r", self.chain.name,
                           messaging.shorten(clean_url(destination)))
            return messaging.make_message(message.subject, "err",
                                          f"destination {messaging.shorten(clean_url(destination))} "
                                          "is not an absolute path")
        if not self.chain.allowed_destinations:
            return None
        for entry in entries:
            rel_path = entry.get("path")
            rel_path = rel_path if isinstance(rel_path, str) else None
            if not confine.allowed(destination, rel_path, self.chain.allowed_destinations):
                self.metrics.requests_refused.labels(self.chain.name, "destination_not_allowed").inc()
                logger.warning("Chain %s: refused a push to %s%s (not in allowed_destinations)", self.chain.name,
                               clean_url(destination)[:300], f" with path {rel_path[:300]!r}" if rel_path else "")
                return messaging.make_message(message.subject, "err",
                                              f"destination {clean_url(destination)[:300]} not allowed")
        return None

    def _transfer_once(self, path: str, destination: str, rel_path: str | None,
                       backup_targets: list | None) -> str | None:
        """Transfer one file unless the same transfer is running (join it) or already done (reuse it)."""
        try:
            stat = os.stat(path)
        except OSError as exc:
            return f"[Errno {exc.errno}] {exc.strerror}: '{messaging.shorten(path)}'"
        done_key = (path, stat.st_size, stat.st_mtime_ns, destination, rel_path)
        with self._inflight_lock:
            done = self._completed.get(done_key)
            if done is not None and still_delivered(done, time.monotonic(), self.pushed_cache_ttl):
                logger.info("Chain %s: %s already pushed to %s, not transferring again", self.chain.name, path,
                            clean_url(destination))
                return None
            if done is not None:
                logger.info("Chain %s: %s was pushed to %s before, but that copy is gone or expired: "
                            "transferring again", self.chain.name, path, clean_url(destination))
                del self._completed[done_key]
            future = self._inflight.get((path, destination))
            owner = future is None
            if owner:
                future = Future()
                self._inflight[(path, destination)] = future
        if not owner:
            logger.info("Chain %s: joining the push of %s in progress", self.chain.name, path)
            return future.result()
        error: str | None = "transfer interrupted"  # an exception in _transfer is no completed push
        try:
            error = self._transfer(path, destination, rel_path, backup_targets)
        finally:
            with self._inflight_lock:
                del self._inflight[(path, destination)]
                if error is None:
                    self._completed[done_key] = CompletedPush(
                        delivered_local_copy(path, destination, rel_path), stat.st_size, time.monotonic())
                    while len(self._completed) > PUSHED_CACHE_SIZE:
                        self._completed.popitem(last=False)
            future.set_result(error)
        return error

    def _transfer(self, path: str, destination: str, rel_path: str | None, backup_targets: list | None) -> str | None:
        scheme = scheme_label(urlsplit(destination).scheme)
        name = self.chain.name
        self.metrics.transfers_started.labels(name, scheme).inc()
        try:
            result = self.server.transfers.transfer(path, destination, options=self.chain.transfer_options,
                                                    rel_path=rel_path,
                                                    backup_targets=list(backup_targets or []) or None)
        except TransferError as exc:
            reason = "permanent" if exc.__class__.__name__.startswith("Permanent") else "transient"
            self.metrics.transfers_failed.labels(name, scheme, reason).inc()
            error = messaging.shorten(redact(exc))
            logger.error("Chain %s: push of %s to %s failed: %s", name, path,
                         messaging.shorten(clean_url(destination)), error)
            return error
        except (OSError, ValueError, KeyError) as exc:
            self.metrics.transfers_failed.labels(name, scheme, "error").inc()
            error = messaging.shorten(redact(exc))
            logger.error("Chain %s: push of %s to %s failed: %s", name, path,
                         messaging.shorten(clean_url(destination)), error)
            return error
        self.metrics.transfers_succeeded.labels(name, scheme).inc()
        self.metrics.transferred_bytes.labels(name, scheme).inc(result.size)
        self.metrics.transfer_duration.labels(name, scheme).observe(result.duration)
        self.metrics.last_transfer.labels(name).set(time.time())
        logger.info("Chain %s: pushed %s to %s (%d bytes, %.3f s)", name, path, result.destination, result.size,
                    result.duration)
        if self.chain.delete or self.chain.compression:
            self.server.deleter.schedule(path, self.chain.remove_delay)
        return None


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class Server:
    """The server service: chains, one publisher, a deleter, and the housekeeping loop."""

    kind = "server"
    chain_class: type = ServedChain

    def __init__(self, config: Config, options: ServerOptions | None = None, metrics: Metrics | None = None,
                 transfers=None):
        from trollmoves.movers import TransferService

        self.config = config
        self.options = options or ServerOptions()
        self.metrics = metrics or Metrics(self.kind)
        self._abort = threading.Event()
        self.transfers = transfers or TransferService(cancel=self._abort)
        self._own_transfers = transfers is None
        self.metrics.watch_pool(self.transfers)
        self.publisher: messaging.Publisher | None = None
        self.deleter = Deleter()
        self.chains: dict[str, ServedChain] = {}
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._fatal: str | None = None
        self._own_ip: str | None = None
        self._publish_after = 0.0
        self._lock = threading.Lock()
        self.ready = threading.Event()

    # service protocol -----------------------------------------------------------------------------
    def start(self) -> None:
        self.publisher = messaging.Publisher(self.options.publisher_name, self.options.publish_port,
                                             self.options.publish_address, nameservers=False,
                                             curve=publisher_curve(self.config)).start()
        self._publish_after = time.monotonic() + (REJOIN_GRACE if self.options.publish_port else 0.0)
        self.deleter.start()
        if self.options.backlog_delay:
            time.sleep(self.options.backlog_delay)
        for chain in self.config.chains:
            self._start_chain(chain)
        self.publisher.heartbeat(HEARTBEAT_INTERVAL)
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self._housekeeper.start()
        self.ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for served in list(self.chains.values()):
            served.stop(max(0.0, deadline - time.monotonic()), self._abort if self._own_transfers else None)
        self.chains.clear()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout)
        self.deleter.stop()
        if self.publisher is not None:
            self.publisher.stop()
        if self._own_transfers:
            self.transfers.close()

    def reload(self, config: Config) -> None:
        """Rebuild changed chains, start new ones, stop removed ones; unchanged chains keep running."""
        reload_chains(self, config)

    def fatal_error(self) -> str | None:
        return self._fatal

    # internals ------------------------------------------------------------------------------------
    def _start_chain(self, chain: ServerChain) -> None:
        served = self.chain_class(chain, self)
        try:
            served.start()
        except OSError as exc:
            logger.error("Error starting chain %s: %s", chain.name, exc)
            served.stop(1.0)
            return
        self.chains[chain.name] = served

    def request_address(self, chain: ServerChain) -> str:
        if chain.request_address:
            host = chain.request_address
        else:
            if self._own_ip is None:
                self._own_ip = messaging.own_ip()
            host = self._own_ip
        return f"{host}:{chain.request_port}"

    def checksum(self, path: str, method: str) -> dict | None:
        if method == "none":
            return None
        from trollmoves.movers.checksum import file_checksum

        try:
            return file_checksum(path, method).as_dict()
        except OSError as exc:
            logger.warning("Cannot checksum %s: %s", path, exc.strerror)
            return None

    def publish(self, message, chain_name: str) -> bool:
        wait = self._publish_after - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        ok = self.publisher.send(message)
        if ok:
            self.metrics.messages_published.labels(chain_name, message.type if message.type in
                                                   ("file", "dataset", "collection") else "other").inc()
        else:
            self.metrics.messages_dropped.labels(chain_name).inc()
        return ok

    def _housekeeping(self) -> None:
        last_check = time.monotonic()
        while not self._stop.wait(1.0):
            try:
                self.publisher.heartbeat(HEARTBEAT_INTERVAL)
            except Exception:  # noqa: BLE001
                logger.exception("Heartbeat failed")
            if time.monotonic() - last_check >= self.options.chain_check_interval:
                last_check = time.monotonic()
                self.check_chains()

    def check_chains(self) -> None:
        with self._lock:
            for served in self.chains.values():
                served.forget_vanished()
                if served.healthy():
                    served.consecutive_restarts = 0
                    continue
                served.consecutive_restarts += 1
                logger.warning("Chain %s is not watching (%s): restarting its watcher (attempt %d)",
                               served.chain.name, served.last_error or "watcher stopped",
                               served.consecutive_restarts)
                served.restart_watcher()
                limit = self.options.max_notifier_restarts
                # as 0.19: give up after ``limit`` consecutive unhealthy checks, even when each
                # restart itself succeeds (a watcher that keeps dying must not run forever)
                if limit and served.consecutive_restarts >= limit:
                    self._fatal = (f"chain {served.chain.name} could not be restarted after "
                                   f"{served.consecutive_restarts} attempts: {served.last_error}")

    def announced_files(self, subject: str, max_count: int) -> list[str]:
        """The ``info`` reply's files, as 0.19 listed them: ``topic/uid`` of every chain of the process.

        0.19 kept one file cache for the whole server, so a request on any chain's port
        lists the announcements of all chains whose entry starts with the request
        subject, most recent first. Like 0.19 it lists what was announced with a
        request address (standalone announcements and, with the backlog off, the files
        present at start are not listed).
        """
        announced: list[Announced] = []
        for served in list(self.chains.values()):
            with served.history_lock:
                announced += [a for a in served.history.values() if a.data.get("request_address")]
        announced.sort(key=lambda a: (a.time, a.seq), reverse=True)
        files = []
        for entry in announced:
            name = f"{entry.subject}/{entry.data.get('uid', os.path.basename(entry.path))}"
            if name.startswith(subject):
                files.append(name)
                if len(files) >= max_count:
                    break
        return files

    def health(self) -> dict[str, Any]:
        """Per-chain state for /healthz."""
        chains = {}
        for name, served in self.chains.items():
            chains[name] = {"watching": served.healthy(), "announced": len(served.history),
                            "error": served.last_error}
        return {"publisher": self.publisher is not None and not self._stop.is_set(), "chains": chains,
                "ok": all(c["watching"] for c in chains.values()) and self._fatal is None}


__all__ = ["Server", "ServerOptions", "ServedChain", "Deleter", "file_entries", "reply_type", "RequestError"]
