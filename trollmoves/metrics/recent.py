"""Files per chain in the last minute and the last hour, for ``trollmoves status`` and dashboards.

Prometheus derives rates from counters with ``rate()``; a one-shot command reading a single
scrape cannot. So each daemon keeps, per chain, how many files it handled in each second of
the last hour (at most 3600 small buckets per chain, fewer when files are rarer), and exports
the two sums as gauges at scrape time (``trollmoves_files_last_minute``,
``trollmoves_files_last_hour``). "Handled" is what ``trollmoves_last_file_timestamp_seconds``
means for the daemon: announced, received, dispatched, downloaded, published or stored.
"""

from __future__ import annotations

import threading
from collections import deque

MINUTE = 60
HOUR = 3600


class RecentFiles:
    """Per-chain counts of files in whole-second buckets over the last hour; thread-safe.

    The last minute is the 60 buckets ending with the current second, the last hour the 3600
    ending with it; older buckets are dropped when a chain is written or read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, deque[list[int]]] = {}

    def add(self, chain: str, count: int, now: float) -> None:
        """Count ``count`` files of ``chain`` at time ``now`` (epoch seconds)."""
        second = int(now)
        with self._lock:
            buckets = self._buckets.setdefault(chain, deque())
            if buckets and buckets[-1][0] == second:
                buckets[-1][1] += count
            else:
                buckets.append([second, count])
                _drop_older(buckets, second)

    def counts(self, chain: str, now: float) -> tuple[int, int]:
        """(files in the last minute, files in the last hour) of ``chain`` at time ``now``."""
        second = int(now)
        with self._lock:
            buckets = self._buckets.get(chain)
            if not buckets:
                return 0, 0
            _drop_older(buckets, second)
            hour = sum(count for _, count in buckets)
            minute = sum(count for at, count in buckets if at > second - MINUTE)
        return minute, hour

    def forget(self, chain: str) -> None:
        """Drop a chain removed by a reload."""
        with self._lock:
            self._buckets.pop(chain, None)


def _drop_older(buckets: deque[list[int]], second: int) -> None:
    """Drop the buckets that fell out of the hour ending with ``second``."""
    while buckets and buckets[0][0] <= second - HOUR:
        buckets.popleft()
