"""Scheduler: delayed work on one thread (hot-spare delays, retries, delayed re-announcements).

One thread and a heap, rather than a ``threading.Timer`` per file: a burst of ten
thousand announcements with a ``processing_delay`` must not become ten thousand threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Scheduler:
    """Run callables at a later time on one thread (bounded threads, unlike one Timer per file)."""

    def __init__(self, name: str = "scheduler"):
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def call_later(self, delay: float, function: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), function))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic()))
                if self._stopping:
                    return
                _, _, function = heapq.heappop(self._heap)
            try:
                function()
            except Exception:  # noqa: BLE001
                logger.exception("Scheduled task failed")

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
