"""The request port of a serving chain: ``ping``, ``info``, ``ack`` and ``push`` answered as 0.19 did.

Every request gets exactly one reply, at once (no 100 ms sleep), with error texts
bounded (``bounded_reply``): what a peer sends is never echoed at full size. A
refused request is counted (``requests_refused``) and logged as one WARNING line.
Pushes run in a bounded worker pool; what to push where is decided by
``push_plan.plan_push``. A push already in progress for the same file and
destination is joined, not started again, and one that completed is answered from a
cache (a resent request or a hot spare's retry never transfers twice) while its local
copy is still there, or for a remote destination within ``PUSHED_CACHE_TTL``.

Everything the port needs is given to it: the chain's settings, its announcement
history, the transfer service, the deleter, the metrics, ``refusal(path)`` (why the
chain must not serve a file) and, for the mirror, ``source_for(path)`` (the local copy
of a file, pulled first if needed).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from trollmoves import messaging
from trollmoves.errors import TransferError
from trollmoves.metrics import scheme_label
from trollmoves.push_plan import (
    BadRequest,
    PushItem,
    Refusal,
    clean_destination,
    entry_path,
    path_refusal,
    plan_push,
    uri_entries,
)
from trollmoves.redact import redact
from trollmoves.services.announcing import AnnouncementHistory, info_reply_data

logger = logging.getLogger(__name__)

PUSHED_CACHE_TTL = 60.0  # s a completed push to a remote destination answers a repeated request (no transfer)
PUSHED_CACHE_SIZE = 10_000
POLL_INTERVAL = 0.5  # s a poll of the request socket waits: how soon a stop is noticed
INLINE_PUSH_MAX_SIZE = 1 << 20  # bytes: a push of local files this small is served in the request thread
INLINE_PUSH_MAX_FILES = 16
INLINE_PUSH_SLOW = 0.25  # s: an inline push slower than this sends the chain's pushes to the pool ...
INLINE_PUSH_BACKOFF = 300.0  # s: ... for this long (a slow or hung destination file system)


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


class RequestPort:
    """Answer one chain's requests; ``push`` in a pool of ``workers`` threads.

    ``chain``: the chain's settings (name, station, allowed_destinations, transfer_options,
    delete, compression, remove_delay). ``files(subject, max_count)``: the ``info``
    listing of the whole process.
    """

    def __init__(self, chain: Any, history: AnnouncementHistory, *, transfers: Any, deleter: Any, metrics: Any,
                 workers: int, refusal: Callable[[str], str | None],
                 files: Callable[[str, int], list[str]],
                 source_for: Callable[[str], tuple[str, str | None]] | None = None):
        self.chain = chain
        self.history = history
        self.transfers = transfers
        self.deleter = deleter
        self.metrics = metrics
        self.refusal = refusal
        self.files = files
        self.source_for = source_for
        self.server: messaging.RequestServer | None = None
        self.workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"push:{chain.name}")
        self.pushed_cache_ttl = PUSHED_CACHE_TTL
        self.started = time.monotonic()
        self._inflight: dict[tuple[str, str], Future] = {}
        self._completed: OrderedDict[tuple, CompletedPush] = OrderedDict()
        self._inflight_lock = threading.Lock()
        self._inline_paused_until = 0.0
        self._stop = threading.Event()

    def inflight(self) -> int:
        """Pushes in progress (a mirror's: files requested downstream, being pulled and relayed)."""
        with self._inflight_lock:
            return len(self._inflight)

    # lifecycle ------------------------------------------------------------------------------------
    def open(self, port: int, bind_address: str, curve: Any) -> threading.Thread:
        """Bind the request socket and start answering; returns the thread doing it."""
        self.server = messaging.RequestServer(port, bind_address, curve=curve).start()
        thread = threading.Thread(target=self._serve, args=(self.server,), name=f"requests:{self.chain.name}",
                                  daemon=True)
        thread.start()
        return thread

    def drain(self, timeout: float, abort: threading.Event | None) -> None:
        """Stop answering; let pushes in progress finish, and after ``timeout`` set ``abort`` (if given)."""
        self._stop.set()
        with self._inflight_lock:
            running = list(self._inflight.values())
        aborted = abort is not None and bool(wait(running, timeout).not_done)
        if aborted:
            logger.warning("Chain %s: aborting the pushes still running after %g s: %d", self.chain.name, timeout,
                           len(self._inflight))
            abort.set()
            self.transfers.interrupt()  # a push blocked on a frozen peer ends now, not at its timeout
        self.workers.shutdown(wait=True, cancel_futures=aborted)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    # requests -------------------------------------------------------------------------------------
    def _serve(self, server: messaging.RequestServer) -> None:
        """Receive on the socket bound at ``open`` (replies go through ``self.server``, which tests replace)."""
        while not self._stop.is_set():
            try:
                requests = server.poll(POLL_INTERVAL)
            except Exception:  # noqa: BLE001
                logger.exception("Chain %s: request port error", self.chain.name)
                self._stop.wait(POLL_INTERVAL)  # a socket that keeps failing must not flood the log
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
                self.server.reply(request, messaging.make_message("error", "unknown"))
            else:
                self.server.reply(request, messaging.make_message(
                    "/error", "err", f"malformed request: {str(request.error)[:200]}"))
            return
        message = request.message
        atype = message.type if message.type in ("push", "ack", "info", "ping") else "unknown"
        self.metrics.child(self.metrics.requests, name, atype).inc()
        logger.debug("Chain %s: %s request on %s", name, messaging.shorten(message.type, 40),
                     messaging.shorten(message.subject))
        if atype == "push":
            if self._can_push_inline(message):
                self._push_inline(request)
            else:
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
        self.server.reply(request, bounded_reply(reply))

    def info(self, message: messaging.Message) -> messaging.Message:
        return messaging.make_message(message.subject, "info", info_reply_data(
            self.history, message.subject, message.data, self.files, self.started))

    def ack(self, message: messaging.Message) -> messaging.Message:
        data = message.data
        if not isinstance(data, dict) or not data:
            return messaging.make_message(message.subject, "error")
        for entry in uri_entries(data):
            path = entry_path(entry)
            reason = self.refusal(path)
            if reason:
                return messaging.make_message(message.subject, "err",
                                              self._refused(path_refusal(message.type, path, reason)))
            if self.chain.delete or self.chain.compression:
                self.deleter.schedule(path, self.chain.remove_delay)
        return messaging.make_message(message.subject, "ack", clean_destination(data))

    def _refused(self, refusal: Refusal) -> str:
        """Count and log a refusal; the text of its ``err`` reply."""
        if refusal.reason is not None:
            self.metrics.requests_refused.labels(self.chain.name, refusal.reason).inc()
        if refusal.log is not None:
            logger.warning("Chain %s: %s", self.chain.name, refusal.log)
        return refusal.reply

    def _can_push_inline(self, message: messaging.Message) -> bool:
        """Whether a push is small and local: served at once in this thread, without the pool.

        Handing a request to a worker and its reply back costs two thread wake-ups, more CPU
        than hard-linking or copying a small file. Only local destinations (``file://``) of at
        most INLINE_PUSH_MAX_FILES files of at most INLINE_PUSH_MAX_SIZE bytes each (their size
        on disk, not what the request claims) qualify, never the mirror's (it may pull first),
        and not while a recent inline push was slow (``_inline_paused_until``).
        """
        data = message.data
        if self.source_for is not None or not isinstance(data, dict) or time.monotonic() < self._inline_paused_until:
            return False
        destination = data.get("destination")
        if not isinstance(destination, str) or urlsplit(destination).scheme not in ("file", ""):
            return False
        entries = uri_entries(data)
        if not entries or len(entries) > INLINE_PUSH_MAX_FILES:
            return False
        with self._inflight_lock:  # joining a worker's push of the same file would block this thread
            busy = {path for path, _ in self._inflight}
        for entry in entries:
            if entry_path(entry) in busy:
                return False
            try:
                if os.stat(entry_path(entry)).st_size > INLINE_PUSH_MAX_SIZE:
                    return False
            except (OSError, ValueError, TypeError):
                return False  # the pool's path reports the error, as before
        return True

    def _push_inline(self, request: messaging.Request) -> None:
        started = time.monotonic()
        self._push_and_reply(request)
        took = time.monotonic() - started
        if took > INLINE_PUSH_SLOW:
            self._inline_paused_until = time.monotonic() + INLINE_PUSH_BACKOFF
            logger.warning("Chain %s: a local push took %.2f s; pushes go through the worker pool for the next "
                           "%.0f s", self.chain.name, took, INLINE_PUSH_BACKOFF)

    def _push_and_reply(self, request: messaging.Request) -> None:
        try:
            reply = self.push(request.message)
        except Exception as exc:  # noqa: BLE001
            logger.exception("Chain %s: error serving a push", self.chain.name)
            reply = messaging.make_message(request.message.subject, "err", redact(exc)[:300] or "error")
        self.server.reply(request, bounded_reply(reply))

    def push(self, message: messaging.Message) -> messaging.Message:
        """Plan the push (push_plan), transfer each file once, and build the one reply."""
        plan = plan_push(message.type, message.data, self.chain.allowed_destinations, self.refusal)
        if isinstance(plan, Refusal):
            reply_type, reply_data = "err", self._refused(plan)
        else:  # the files in order; the first that fails ends the push
            errors = (self._transfer_once(item, plan.backup_targets) for item in plan.items)
            error = next((error for error in errors if error), None)
            reply_type, reply_data = ("err", error) if error else (plan.reply_type, plan.reply_data)
        return messaging.make_message(message.subject, reply_type, reply_data)

    # transfers ------------------------------------------------------------------------------------
    def _transfer_once(self, item: PushItem, backup_targets: list | None) -> str | None:
        """Transfer one file unless the same transfer is running (join it) or already done (reuse it)."""
        path, destination, rel_path = item.path, item.destination, item.rel_path
        if self.source_for is not None:
            path, error = self.source_for(path)
            if error:
                return error
        try:
            stat = os.stat(path)
        except OSError as exc:
            return f"[Errno {exc.errno}] {exc.strerror}: '{messaging.shorten(path)}'"
        done_key = (path, stat.st_size, stat.st_mtime_ns, destination, rel_path)
        with self._inflight_lock:
            done = self._completed.get(done_key)
            if done is not None and still_delivered(done, time.monotonic(), self.pushed_cache_ttl):
                logger.info("Chain %s: %s already pushed to %s, not transferring again", self.chain.name, path,
                            item.shown)
                return None
            if done is not None:
                logger.info("Chain %s: %s was pushed to %s before, but that copy is gone or expired: "
                            "transferring again", self.chain.name, path, item.shown)
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
            error = self._transfer(path, item, backup_targets)
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

    def _transfer(self, path: str, item: PushItem, backup_targets: list | None) -> str | None:
        scheme = scheme_label(urlsplit(item.destination).scheme)
        name = self.chain.name
        self.metrics.child(self.metrics.transfers_started, name, scheme).inc()
        try:
            result = self.transfers.transfer(path, item.destination, options=self.chain.transfer_options,
                                             rel_path=item.rel_path,
                                             backup_targets=list(backup_targets or []) or None)
        except (TransferError, OSError, ValueError, KeyError) as exc:
            if isinstance(exc, TransferError):
                reason = "permanent" if exc.__class__.__name__.startswith("Permanent") else "transient"
            else:
                reason = "error"
            self.metrics.transfers_failed.labels(name, scheme, reason).inc()
            error = messaging.shorten(redact(exc))
            logger.error("Chain %s: push of %s to %s failed: %s", name, path, messaging.shorten(item.shown), error)
            return error
        metrics = self.metrics
        metrics.child(metrics.transfers_succeeded, name, scheme).inc()
        metrics.child(metrics.transferred_bytes, name, scheme).inc(result.size)
        metrics.child(metrics.transfer_duration, name, scheme).observe(result.duration)
        metrics.child(metrics.last_transfer, name).set(time.time())
        logger.info("Chain %s: pushed %s to %s (%d bytes, %.3f s)", name, path, result.destination, result.size,
                    result.duration)
        if self.chain.delete or self.chain.compression:
            self.deleter.schedule(path, self.chain.remove_delay)
        return None
