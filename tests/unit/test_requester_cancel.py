"""A request waiting for its reply can be cancelled from another thread (a stopping client).

Real zmq sockets: a ROUTER that never answers stands for a server busy with a long push, and
the RequestServer of ``messaging`` answers where a reply is wanted.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import zmq

from trollmoves import messaging
from trollmoves.errors import RequestError

HOST = "127.0.0.1"
LONG = 30.0
"""The reply timeout of a waiting request: a cancel must not wait for it."""


@pytest.fixture
def silent_port():
    silent = zmq.Context.instance().socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port(f"tcp://{HOST}")
    yield port
    silent.close()


@pytest.fixture
def answering_port():
    server = messaging.RequestServer(0, bind_address=HOST).start()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            for request in server.poll(0.05):
                server.reply(request, messaging.make_message("/x", "ack", request.message.data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.port
    stop.set()
    thread.join(5)
    server.close()


class Waiting(threading.Thread):
    """``requester.request`` in a thread; ``error`` and ``ended_at`` examined by the test."""

    def __init__(self, requester: messaging.Requester, **kwargs):
        super().__init__(daemon=True)
        self.requester, self.kwargs = requester, kwargs
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            self.requester.request(messaging.make_message("/x", "push", {"uid": "f"}), **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - examined by the test
            self.error = exc
        self.ended_at = time.monotonic()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("how", ["cancel", "close"])
@pytest.mark.parametrize("resend_after", [None, 10.0], ids=["no-resend", "resend"])
def test_a_waiting_request_is_cancelled_promptly(silent_port, how, resend_after):
    requester = messaging.Requester(f"{HOST}:{silent_port}", pooled=True)
    waiters = [Waiting(requester, timeout=LONG, resend_after=resend_after) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)  # all three are now waiting in poll
    assert all(waiter.is_alive() for waiter in waiters)
    cancelled_at = time.monotonic()
    getattr(requester, how)()
    for waiter in waiters:
        waiter.join(LONG)
        assert not waiter.is_alive()
        assert isinstance(waiter.error, RequestError) and "cancelled" in str(waiter.error)
        assert waiter.ended_at - cancelled_at < 0.5
    assert requester.cancelled


def test_a_cancelled_requester_refuses_new_requests_at_once(answering_port):
    requester = messaging.Requester(f"{HOST}:{answering_port}", pooled=True)
    assert requester.request(messaging.make_message("/x", "ping", {"n": 1}), timeout=5).data == {"n": 1}
    requester.cancel()
    started = time.monotonic()
    with pytest.raises(RequestError, match="cancelled"):
        requester.request(messaging.make_message("/x", "ping"), timeout=LONG)
    assert time.monotonic() - started < 0.1
    requester.close()
    requester.close()  # idempotent


def test_pooled_sockets_are_still_reused_and_close_releases_everything(answering_port):
    before = _open_fds()
    requester = messaging.Requester(f"{HOST}:{answering_port}", pooled=True)
    for n in range(5):
        reply = requester.request(messaging.make_message("/x", "push", {"n": n}), timeout=5, resend_after=2)
        assert reply.data == {"n": n}
    assert len(requester._idle) == 1  # one socket served all five requests
    requester.close()
    assert requester._idle == [] and requester._pipe == []
    time.sleep(0.2)  # zmq closes its TCP connection in its own I/O thread
    assert _open_fds() <= before


def test_throwaway_requesters_do_not_leak_descriptors(answering_port):
    """The mirror and the tests create a Requester per request and never close it."""
    messaging.Requester(f"{HOST}:{answering_port}").request(messaging.make_message("/x", "ping"), timeout=5)
    before = _open_fds()
    for _ in range(20):
        messaging.Requester(f"{HOST}:{answering_port}").request(messaging.make_message("/x", "ping"), timeout=5)
    time.sleep(0.2)
    assert _open_fds() <= before + 2


def test_timeout_still_reported_as_before(silent_port):
    requester = messaging.Requester(f"{HOST}:{silent_port}")
    with pytest.raises(RequestError, match=f"no reply from tcp://{HOST}:{silent_port} within 0.3 s"):
        requester.request(messaging.make_message("/a", "ping"), timeout=0.3)
