"""RequesterPool: one pooled requester per server a chain sends requests to.

A client asks the same few servers for file after file: their request sockets are
kept and reused rather than opened per file. On stop, a worker waiting for a reply
gives up at once (``cancel``) instead of after its timeout, and no new requester is
made; then the sockets are closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from trollmoves import messaging
from trollmoves.errors import RequestError


class RequesterPool:
    """Requesters by request address; ``max_idle`` idle sockets kept per server (the chain's workers).

    ``stopping()`` tells whether the chain is stopping: then no new requester is made.
    """

    def __init__(self, name: str, stopping: Callable[[], bool], curve: Any = None, max_idle: int = 4):
        self.name = name
        self.stopping = stopping
        self.curve = curve
        self.max_idle = max_idle
        self._requesters: dict[str, messaging.Requester] = {}
        self._lock = threading.Lock()

    def get(self, request_address: str) -> messaging.Requester:
        """The pooled requester of one server: its sockets are reused from file to file."""
        with self._lock:
            requester = self._requesters.get(request_address)
            if requester is None and self.stopping():
                raise RequestError(f"chain {self.name} is stopping: no new request to {request_address}")
            if requester is None:
                requester = self._requesters[request_address] = messaging.Requester(
                    request_address, self.curve, pooled=True, max_idle=self.max_idle)
            return requester

    def cancel(self) -> None:
        """A worker waiting for a reply gives up now, not after 3 x its timeout."""
        with self._lock:
            for requester in self._requesters.values():
                requester.cancel()

    def close(self) -> None:
        with self._lock:
            for requester in self._requesters.values():
                requester.close()
            self._requesters.clear()
