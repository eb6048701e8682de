"""The connection pool's bookkeeping, with a fake clock and stand-in connection objects.

Only pure logic is faked here (time, and objects with ``alive``/``close``): the
pool never touches sockets itself; the conformance suite checks it against
real servers.
"""

import threading
import time

import pytest

from trollmoves.movers import ConnectionPool


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Conn:
    def __init__(self):
        self.closed = False
        self.is_alive = True
        self.users = 0

    def alive(self):
        return self.is_alive and not self.closed

    def close(self):
        self.closed = True


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def pool(clock):
    pool = ConnectionPool(idle_timeout=30, max_idle=2, clock=clock, reap_in_background=False)
    yield pool
    pool.close()


def test_reuse_then_expire_after_idle_timeout(pool, clock):
    with pool.lease("k", Conn) as first:
        pass
    with pool.lease("k", Conn) as second:
        assert second.reused and second.connection is first.connection
    clock.now += 31
    with pool.lease("k", Conn) as third:
        assert not third.reused
    assert first.connection.closed
    assert (pool.stats().opened, pool.stats().reused) == (2, 1)


def test_keys_are_separate_and_max_idle_evicts_oldest(pool):
    leases = {}
    for key in "abc":
        with pool.lease(key, Conn) as lease:
            leases[key] = lease.connection
    assert leases["a"].closed and not leases["b"].closed and pool.stats().idle == 2


def test_discarded_and_dead_connections_are_not_kept(pool):
    with pool.lease("k", Conn) as lease:
        lease.discard = True
    assert lease.connection.closed
    with pool.lease("k", Conn) as lease:
        pass
    lease.connection.is_alive = False
    with pool.lease("k", Conn) as again:
        assert not again.reused


def test_a_failure_closes_a_dead_connection_but_keeps_a_live_one(pool):
    with pytest.raises(RuntimeError), pool.lease("k", Conn) as lease:
        raise RuntimeError("refused file")
    assert not lease.connection.closed and pool.stats().idle == 1
    with pytest.raises(RuntimeError), pool.lease("k", Conn) as lease:
        lease.connection.is_alive = False
        raise RuntimeError("reset")
    assert lease.connection.closed and pool.stats().idle == 0


def test_close_closes_idle_connections_and_later_returns(pool):
    with pool.lease("k", Conn) as idle:
        pass
    with pool.lease("j", Conn) as busy:
        pool.close()
        assert idle.connection.closed and not busy.connection.closed
    assert busy.connection.closed


def test_reaper_closes_idle_connections_without_traffic():
    pool = ConnectionPool(idle_timeout=0.05)
    try:
        with pool.lease("k", Conn) as lease:
            pass
        deadline = time.monotonic() + 5
        while not lease.connection.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lease.connection.closed
    finally:
        pool.close()


def test_a_shorter_idle_timeout_wakes_the_reaper_early():
    pool = ConnectionPool(idle_timeout=60)
    try:
        with pool.lease("long", Conn) as long_lived:
            pass
        time.sleep(0.05)  # the reaper is now asleep until the 60 s deadline
        with pool.lease("short", Conn, idle_timeout=0.05) as short_lived:
            pass
        deadline = time.monotonic() + 5
        while not short_lived.connection.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert short_lived.connection.closed and not long_lived.connection.closed
    finally:
        pool.close()


def test_a_connection_is_lent_to_one_thread_at_a_time():
    pool = ConnectionPool(max_idle=8)
    errors = []

    def worker():
        for _ in range(200):
            with pool.lease("k", Conn) as lease:
                lease.connection.users += 1
                if lease.connection.users != 1:
                    errors.append("shared")
                lease.connection.users -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.close()
    assert not errors and pool.stats().opened <= 8 and pool.stats().leased == 0
