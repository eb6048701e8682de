"""The announcement history of a serving chain: what it announced, what it may serve, what it lists.

A server (and a mirror) serves only files it announced. Each chain keeps its last
``announce_history`` announcements, newest last; a file pushed out of that window stays
servable while it still exists (``forget_vanished`` drops it once it is gone), so a
busy chain does not refuse a file a slow client asks for. The same history answers
``info`` requests: the files of every chain of the process (0.19 kept one cache for
the whole server), and with ``catch_up`` the recent announcements themselves.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from trollmoves.push_plan import catch_up_window

MAX_INFO_COUNT = 2256
SERVABLE_AFTER_HISTORY = 200_000  # files pushed out of a history that stay servable while they exist


@dataclass
class Announced:
    """What this server announced for one file: the message and when."""

    path: str
    subject: str
    atype: str
    data: dict
    time: float
    seq: int


class AnnouncementHistory:
    """One chain's announcements by path (``entries``, oldest first) and the files still servable after them."""

    def __init__(self, topic: str, size: int):
        self.topic = topic
        self.size = size
        self.entries: OrderedDict[str, Announced] = OrderedDict()
        self.lock = threading.Lock()
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._seq = 0

    def __len__(self) -> int:
        return len(self.entries)

    def remember(self, path: str, atype: str, data: dict, when: float | None = None) -> None:
        """Record an announcement of ``path`` (at ``when``, default now); the oldest beyond ``size`` expire."""
        with self.lock:
            self._seq += 1
            self.entries.pop(path, None)
            self._expired.pop(path, None)
            self.entries[path] = Announced(path, self.topic, atype, data, time.time() if when is None else when,
                                           self._seq)
            while len(self.entries) > self.size:
                old = self.entries.popitem(last=False)[0]
                if os.path.exists(old):
                    self._expired[old] = None
            while len(self._expired) > SERVABLE_AFTER_HISTORY:
                self._expired.popitem(last=False)

    def get(self, path: str) -> Announced | None:
        with self.lock:
            return self.entries.get(path)

    def announced(self, path: str) -> bool:
        """Is ``path`` in the history (not counting files pushed out of it)?"""
        with self.lock:
            return path in self.entries

    def servable(self, path: str) -> bool:
        """Was ``path`` announced: in the history, or pushed out of it but still there?"""
        with self.lock:
            return path in self.entries or path in self._expired

    def forget_vanished(self) -> None:
        """Drop the files pushed out of the history that no longer exist (the others stay servable)."""
        with self.lock:
            paths = list(self._expired)
        gone = [path for path in paths if not os.path.exists(path)]
        with self.lock:
            for path in gone:
                self._expired.pop(path, None)

    def requestable(self) -> list[Announced]:
        """The announcements made with a request address (the ones a client can ask for)."""
        with self.lock:
            return [a for a in self.entries.values() if a.data.get("request_address")]

    def since(self, since: float, limit: int) -> list[dict]:
        """The last ``limit`` requestable announcements after ``since``, oldest first, as a catch-up lists them."""
        with self.lock:
            recent = list(self.entries.values())
        missed = [a for a in recent if a.time > since and a.data.get("request_address")]
        return [{"subject": a.subject, "type": a.atype, "data": a.data, "time": a.time}
                for a in missed[len(missed) - limit:]]


def announced_files(histories: Iterable[AnnouncementHistory], subject: str, max_count: int) -> list[str]:
    """The ``info`` reply's files, as 0.19 listed them: ``topic/uid`` of every chain of the process.

    0.19 kept one file cache for the whole server, so a request on any chain's port
    lists the announcements of all chains whose entry starts with the request
    subject, most recent first. Like 0.19 it lists what was announced with a
    request address (standalone announcements and, with the backlog off, the files
    present at start are not listed).
    """
    announced: list[Announced] = []
    for history in histories:
        announced += history.requestable()
    announced.sort(key=lambda a: (a.time, a.seq), reverse=True)
    files = []
    for entry in announced:
        name = f"{entry.subject}/{entry.data.get('uid', os.path.basename(entry.path))}"
        if name.startswith(subject):
            files.append(name)
            if len(files) >= max_count:
                break
    return files


def uptime_text(started: float) -> str:
    return str(dt.timedelta(seconds=time.monotonic() - started))


def info_reply_data(history: AnnouncementHistory, subject: str, data: Any,
                    files: Callable[[str, int], list[str]], started: float) -> dict[str, Any]:
    """The data of an ``info`` reply: the files of the process, and with ``catch_up`` this chain's announcements.

    A ``catch_up`` with values a client got wrong raises BadRequest.
    """
    data = data if isinstance(data, dict) else {}
    try:
        max_count = min(int(data.get("max_count", MAX_INFO_COUNT)), MAX_INFO_COUNT)
    except (TypeError, ValueError):
        max_count = MAX_INFO_COUNT
    reply: dict[str, Any] = {"files": files(subject, max_count), "max_count": max_count,
                             "uptime": uptime_text(started)}
    catch_up = data.get("catch_up")
    if isinstance(catch_up, dict):
        since, limit = catch_up_window(catch_up)
        reply["announcements"] = history.since(since, limit)
    return reply
