"""An on-disk queue of work to retry with exponential backoff (dispatcher, s3downloader).

Every job is journaled in the state store's retry table *before* it is first
tried (due one ``initial_delay`` later, as if that first try were going to
fail): a ``kill -9`` at any moment leaves the job in the table, and the next
process retries it. Success removes the row; a transient failure reschedules it
``initial_delay * 2**(n-1)`` seconds later (at most ``max_delay``) until the job
is ``max_age`` seconds old; a permanent failure removes it (reported once by
the caller). At-least-once: a job killed after its transfer but before the row
was removed is done again after the restart.

One thread looks for due rows and hands each to ``submit`` (the owner's bounded
worker pool, ``WorkerPool``); a row handed out is not handed out again until it
is finished. ``state_path`` says where a daemon's state store lives.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trollmoves.config import Config, RetrySettings
from trollmoves.state import StateStore, default_state_path

logger = logging.getLogger(__name__)

RetryItem = dict[str, Any]
"""A row: id, chain, payload, first_at, due, attempts (tries counted so far), last_error."""


def state_path(config: Config, kind: str, fallback_directory: str | None = None) -> str:
    """Where a daemon keeps its state: ``[trollmoves] state_directory``, else ``fallback_directory``
    (the dispatcher's ``retry: state_directory``), else the per-config default."""
    directory = config.daemon.state_directory or fallback_directory
    default = default_state_path(config.path, kind)
    return os.path.join(directory, os.path.basename(default)) if directory else default


def retry_delay(attempts: int, settings: RetrySettings) -> float:
    """Pause after the ``attempts``-th failed try: exponential, capped at ``max_delay``."""
    exponent = min(max(attempts, 1) - 1, 60)
    return min(settings.max_delay, settings.initial_delay * (2 ** exponent))


def next_due(attempts: int, first_at: float, now: float, settings: RetrySettings) -> float | None:
    """When to try again after a failure, or None when the job is too old to be tried again."""
    deadline = first_at + settings.max_age
    if now >= deadline:
        return None
    return min(now + retry_delay(attempts, settings), deadline)


class RetryQueue:
    """The retry table of one StateStore, polled by one thread."""

    def __init__(self, state: StateStore, settings: RetrySettings, submit: Callable[[RetryItem], bool],
                 poll_interval: float = 0.5, on_tick: Callable[[], None] | None = None, name: str = "retries"):
        self.state = state
        self.settings = settings
        self.submit = submit
        self.poll_interval = poll_interval
        self.on_tick = on_tick
        self._in_flight: set[int] = set()
        self._fresh: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> RetryQueue:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # jobs -----------------------------------------------------------------------------------------
    def journal(self, chain: str, payload: dict[str, Any]) -> RetryItem:
        """Record a new job (handed out already: the caller runs it now)."""
        now = time.time()
        item_id = self.state.add_retry(chain, payload, now + self.settings.initial_delay)
        with self._lock:
            self._in_flight.add(item_id)
            self._fresh[item_id] = chain
        return {"id": item_id, "chain": chain, "payload": payload, "first_at": now, "due": now, "attempts": 1,
                "last_error": ""}

    def done(self, item: RetryItem) -> None:
        """The job succeeded, or failed for good: forget it."""
        self.state.remove_retry(item["id"])
        self._release(item)

    def failed(self, item: RetryItem, error: str, now: float | None = None) -> float | None:
        """A transient failure: reschedule (return the due time) or give up (remove, return None)."""
        now = time.time() if now is None else now
        due = next_due(int(item.get("attempts") or 1), float(item["first_at"]), now, self.settings)
        if due is None:
            self.state.remove_retry(item["id"])
        else:
            self.state.reschedule_retry(item["id"], due, error[:500])
        self._release(item)
        return due

    def release(self, item: RetryItem) -> None:
        """The job was not run (stopping): leave its row for the next process."""
        self._release(item)

    def _release(self, item: RetryItem) -> None:
        with self._lock:
            self._in_flight.discard(item["id"])
            self._fresh.pop(item["id"], None)

    # stats ----------------------------------------------------------------------------------------
    def stats(self, chain: str) -> tuple[int, float]:
        """(jobs waiting for a retry, enqueue time of the oldest or 0); first tries in progress excluded."""
        count, oldest = self.state.retry_stats(chain)
        with self._lock:
            fresh = sum(1 for name in self._fresh.values() if name == chain)
        waiting = max(0, count - fresh)
        return waiting, (oldest if waiting else 0.0)

    def update_gauges(self, metrics, chains: Iterable[str]) -> None:
        for chain in chains:
            waiting, oldest = self.stats(chain)
            metrics.retry_queue_length.labels(chain).set(waiting)
            metrics.retry_queue_oldest.labels(chain).set(oldest)

    # the polling thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll_once()
                if self.on_tick is not None:
                    self.on_tick()
            except Exception:  # a state store hiccup must not end the retries
                logger.exception("Retry queue: polling failed")

    def poll_once(self, now: float | None = None) -> int:
        """Hand every due row not already in flight to ``submit``; return how many were handed out."""
        handed = 0
        for item in self.state.due_retries(now, limit=200):
            with self._lock:
                if item["id"] in self._in_flight:
                    continue
                self._in_flight.add(item["id"])
            if self._stop.is_set() or not self.submit(item):
                self._release(item)
                break
            handed += 1
        return handed


class WorkerPool:
    """A bounded pool: at most ``max_queued`` jobs waiting or running, ``workers`` threads.

    ``take_slot`` blocks (the receive loop slows down instead of queueing without
    bound); ``try_slot`` does not (the retry poller just tries again later). A job
    given a slot must be passed to ``submit``, which always frees the slot at the end.
    """

    def __init__(self, workers: int, max_queued: int, name: str):
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(max(1, max_queued))
        self._active = 0
        self._idle = threading.Condition()

    def take_slot(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self._slots.acquire(timeout=0.5):
                return True
        return False

    def try_slot(self) -> bool:
        return self._slots.acquire(blocking=False)

    def submit(self, function: Callable[..., None], *args: Any) -> bool:
        """Run ``function(*args)`` in the pool; False (slot freed) when the pool is shut down."""
        with self._idle:
            self._active += 1
        try:
            self._executor.submit(self._run, function, *args)
        except RuntimeError:
            self._done()
            return False
        return True

    def _run(self, function: Callable[..., None], *args: Any) -> None:
        try:
            function(*args)
        finally:
            self._done()

    def _done(self) -> None:
        self._slots.release()
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the jobs to finish; return how many are still running or waiting."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            return self._active

    def shutdown(self) -> None:
        """Jobs not started are dropped (their queue rows stay for the next process); running ones joined."""
        self._executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["RetryItem", "RetryQueue", "WorkerPool", "next_due", "retry_delay", "state_path"]
