"""Closing a pool interrupts the connections it lent, and lends no more.

Stand-in connections (objects with ``alive``/``close``/``abort``), as in ``test_pool``: the
pool's bookkeeping is pure logic. ``test_ssh_stall`` checks the same against a frozen sshd.
"""

import pytest

from trollmoves.errors import TransientTransferError
from trollmoves.movers import ConnectionPool
from trollmoves.movers.base import DriverCache
from trollmoves.movers.pool import PoolClosedError


class Conn:
    def __init__(self):
        self.closed = False
        self.aborted: list[str] = []

    def alive(self):
        return not self.closed and not self.aborted

    def close(self):
        self.closed = True

    def abort(self, reason):
        self.aborted.append(reason)


def test_close_aborts_lent_connections_and_closes_them_when_returned():
    pool = ConnectionPool(reap_in_background=False)
    with pool.lease("idle", Conn) as idle:
        pass
    with pool.lease("busy", Conn) as busy:
        pool.close()
        assert busy.connection.aborted == ["transfer interrupted: the transfer service is closing"]
        assert not busy.connection.closed
        assert idle.connection.closed and not idle.connection.aborted
    assert busy.connection.closed
    assert pool.stats().leased == 0 and pool.stats().idle == 0


def test_a_closed_pool_lends_nothing():
    pool = ConnectionPool(reap_in_background=False)
    pool.close()
    opened = []
    with pytest.raises(PoolClosedError, match="closed"), pool.lease("k", lambda: opened.append(1) or Conn()):
        pass
    assert opened == [] and issubclass(PoolClosedError, TransientTransferError)


def test_a_connection_opened_while_the_pool_closes_is_closed_at_once():
    pool = ConnectionPool(reap_in_background=False)
    made = []

    def factory():
        pool.close()  # another thread closes the service while we connect
        made.append(Conn())
        return made[-1]

    with pytest.raises(PoolClosedError), pool.lease("k", factory):
        pass
    assert made[0].closed and pool.stats().leased == 0


def test_interrupt_aborts_lent_connections_and_keeps_the_pool_open():
    pool = ConnectionPool(reap_in_background=False)
    with pool.lease("k", Conn) as lease:
        assert pool.interrupt("drain timeout") == 1
        assert lease.connection.aborted == ["drain timeout"]
    assert lease.connection.closed  # an aborted connection is not alive: not kept
    with pool.lease("k", Conn) as again:
        assert not again.reused
    assert pool.interrupt() == 0
    pool.close()


def test_connections_without_abort_are_left_to_their_timeouts():
    class Plain:
        closed = False

        def alive(self):
            return True

        def close(self):
            self.closed = True

    pool = ConnectionPool(reap_in_background=False)
    with pool.lease("k", Plain) as lease:
        pool.close()
        assert not lease.connection.closed
    assert lease.connection.closed


def test_driver_cache_close_closes_its_items():
    class Helper:
        closed = 0

        def close(self):
            self.closed += 1

    cache = DriverCache()
    helper = cache.get("helper", Helper)
    cache.get("plain", object)
    cache.close()
    assert helper.closed == 1
    assert cache.get("helper", Helper) is not helper
