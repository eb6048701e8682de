"""A pool of open connections, reused across files and closed when idle.

Opening an SSH or FTP session costs several round trips and, for SSH, a key
exchange; a chain sending thousands of small files a day should pay that once.
The pool belongs to a transfer service (one per daemon, or per test), never to
a module or a mover class, so two services in one process share nothing.

* Keyed by (scheme, host, port, user, digest of the connection settings).
* A connection is lent to one caller at a time (``lease``) and handed back
  when the caller is done; one that failed at the transport level is closed.
* Idle connections are closed after their ``idle_timeout`` (0.19's
  ``connection_uptime``, default 30 s) by one reaper thread per pool that waits
  on a Condition, and when more than ``max_idle`` are kept (oldest first).
* ``close()`` closes the idle connections, stops the reaper and interrupts the
  lent ones (``Connection.abort()``: a transfer blocked on a frozen server ends
  now instead of at its timeout); they are closed when handed back. A closed
  pool lends nothing more (``PoolClosedError``, transient).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from trollmoves.errors import TransientTransferError

logger = logging.getLogger(__name__)


class PoolClosedError(TransientTransferError):
    """A lease was asked of a closed pool (the transfer service is stopping)."""


@dataclass(frozen=True)
class PoolStats:
    """Counters for tests and metrics: how many connections were opened, reused, closed, idle."""

    opened: int
    reused: int
    closed: int
    idle: int
    leased: int


@dataclass
class Lease:
    """A connection lent by the pool; ``reused`` tells whether it was opened earlier."""

    connection: object
    reused: bool
    discard: bool = False


class ConnectionPool:
    """Thread-safe pool of idle connections with expiry and a size limit."""

    def __init__(self, idle_timeout: float = 30.0, max_idle: int = 16,
                 clock: Callable[[], float] = time.monotonic, reap_in_background: bool = True):
        """``reap_in_background=False`` leaves expiry to ``expire()`` and to the next lease:
        a test that drives ``clock`` by hand wants no thread racing it on real time."""
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._clock = clock
        self._cond = threading.Condition()
        self._idle: OrderedDict[int, tuple[Hashable, object, float]] = OrderedDict()
        self._serial = 0
        self._leased = 0
        self._lent: dict[int, object] = {}
        self._opened = self._reused = self._closed = 0
        self._closing = False
        self._reaper: threading.Thread | None = None
        self._reap_in_background = reap_in_background
        self._reaper_deadline: float | None = None

    @contextlib.contextmanager
    def lease(self, key: Hashable, factory: Callable[[], object],
              idle_timeout: float | None = None) -> Iterator[Lease]:
        """Lend an idle connection for ``key`` or open one with ``factory``.

        On a normal exit the connection goes back to the pool unless
        ``lease.discard`` was set or it no longer looks alive; on an exception
        it is closed unless it still looks alive (a refused file does not spoil
        an SSH session, a reset does). Raises PoolClosedError once ``close()`` ran.
        """
        lease = self._take(key)
        if lease is None:
            self._check_open()
            connection = factory()
            with self._cond:
                self._opened += 1
                self._leased += 1
                self._lent[id(connection)] = connection
                closing = self._closing
            lease = Lease(connection, reused=False)
            if closing:  # closed while the factory was connecting
                self._give_back(key, lease, idle_timeout, failed=True)
                self._check_open()
        try:
            yield lease
        except BaseException:
            self._give_back(key, lease, idle_timeout, failed=True)
            raise
        self._give_back(key, lease, idle_timeout, failed=False)

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(self._opened, self._reused, self._closed, len(self._idle), self._leased)

    def expire(self) -> int:
        """Close the connections idle past their deadline now; return how many."""
        now = self._clock()
        with self._cond:
            due = [serial for serial, (_, _, deadline) in self._idle.items() if deadline <= now]
            stale = [self._idle.pop(serial)[1] for serial in due]
        for connection in stale:
            self._close(connection, "idle")
        return len(stale)

    def close(self) -> None:
        """Close every idle connection, stop the reaper, interrupt the lent ones (closed when returned)."""
        with self._cond:
            self._closing = True
            idle = [connection for _, connection, _ in self._idle.values()]
            self._idle.clear()
            self._cond.notify_all()
            reaper = self._reaper
        for connection in idle:
            self._close(connection, "pool closed")
        self.interrupt("transfer interrupted: the transfer service is closing")
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join()

    def interrupt(self, reason: str = "transfer interrupted") -> int:
        """``abort()`` every lent connection (from any thread); return how many. The pool stays open."""
        with self._cond:
            lent = list(self._lent.values())
        for connection in lent:
            _abort(connection, reason)
        return len(lent)

    # internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        with self._cond:
            if self._closing:
                raise PoolClosedError("transfer service closed: no new connections")

    def _take(self, key: Hashable) -> Lease | None:
        while True:
            with self._cond:
                found = None
                for serial in reversed(self._idle):  # most recently used first
                    if self._idle[serial][0] == key:
                        found = serial
                        break
                if found is None:
                    return None
                _, connection, deadline = self._idle.pop(found)
                expired = deadline <= self._clock()
                if not expired and _alive(connection):
                    self._reused += 1
                    self._leased += 1
                    self._lent[id(connection)] = connection
                    return Lease(connection, reused=True)
            self._close(connection, "expired" if expired else "dead")

    def _give_back(self, key: Hashable, lease: Lease, idle_timeout: float | None, failed: bool) -> None:
        connection = lease.connection
        keep = not lease.discard and _alive(connection)
        timeout = self.idle_timeout if idle_timeout is None else idle_timeout
        evicted = []
        with self._cond:
            self._leased -= 1
            self._lent.pop(id(connection), None)
            if keep and not self._closing and timeout > 0:
                self._serial += 1
                deadline = self._clock() + timeout
                self._idle[self._serial] = (key, connection, deadline)
                while len(self._idle) > self.max_idle:
                    evicted.append(self._idle.popitem(last=False)[1][1])
                if self._reap_in_background:
                    self._start_reaper()
                    # Wake the reaper only when it must wake earlier than planned: with one
                    # idle timeout per pool that is almost never, so a busy chain does not
                    # wake a thread per file.
                    if self._reaper_deadline is None or deadline < self._reaper_deadline:
                        self._cond.notify_all()
            else:
                evicted.append(connection)
        for item in evicted:
            self._close(item, "failed" if failed and item is connection else "not kept")

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="trollmoves-pool-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                deadlines = [deadline for _, _, deadline in self._idle.values()]
                self._reaper_deadline = min(deadlines) if deadlines else None
                wait = self._reaper_deadline - self._clock() if deadlines else None
                if wait is None or wait > 0:
                    self._cond.wait(None if wait is None else min(wait, 3600))
                    continue
                self._reaper_deadline = None
            self.expire()

    def _close(self, connection: object, why: str) -> None:
        logger.debug("Closing pooled connection %s (%s)", connection, why)
        with self._cond:
            self._closed += 1
        try:
            connection.close()
        except Exception as err:  # noqa: BLE001 - closing is best effort
            logger.debug("Error closing %s: %s", connection, err)


def _abort(connection: object, reason: str) -> None:
    abort = getattr(connection, "abort", None)
    if abort is None:
        return
    logger.debug("Interrupting %s (%s)", connection, reason)
    try:
        abort(reason)
    except Exception as err:  # noqa: BLE001 - best effort
        logger.debug("Error interrupting %s: %s", connection, err)


def _alive(connection: object) -> bool:
    try:
        return bool(connection.alive())
    except Exception:  # noqa: BLE001 - a broken connection is simply not alive
        return False
