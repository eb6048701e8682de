"""Deleter: removes served files at their due time (``delete``, ``compression``, mirror copies).

One thread and a heap: a file is removed ``remove_delay`` s after it was served, so a
client's resent request within that window still finds it.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time

logger = logging.getLogger(__name__)


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
