"""Issue 15 item 10: size and echo amplification.

Request and subscription sockets refuse messages above ``max_message_size``
(zmq.MAXMSGSIZE, 16 MiB by default), and what a peer sent is echoed in
replies and log lines only in a shortened form. After each oversized input
the daemon answers a ping and delivers a genuine file.
"""

from __future__ import annotations

import logging
import os
import time

import zmq

from tests.daemons.helpers import Collector, drop, new_server, running, sha256, wait_for
from tests.hostile.rogue import client_with_rogue, wait_heard
from trollmoves import messaging

MB = 1024 * 1024


def raw_replies(address: str, payload: bytes, wait: float) -> list[bytes]:
    """Send one raw request on a DEALER (REQ envelope); every reply frame received within ``wait`` s."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{address}")
    try:
        sock.send_multipart([b"", payload])
        replies = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if sock.poll(100):
                replies.append(sock.recv_multipart()[-1])
        return replies
    finally:
        sock.close()


def assert_serves_a_genuine_file(dirs, server, seen, requester):
    assert requester.request(messaging.make_message("/test/files", "ping"), 5).type == "pong"
    source = drop(dirs, 1, prefix="GENUINE")[0]
    wait_for(lambda: [m for m in seen.of_type("file") if m.data.get("uid") == os.path.basename(source)],
             what="the announcement")
    push = {"uri": source, "uid": os.path.basename(source), "destination": f"file://localhost{dirs['dst']}"}
    reply = requester.request(messaging.make_message("/test/files", "push", push), timeout=10)
    assert reply.type == "file", reply.data
    assert sha256(str(dirs["dst"] / os.path.basename(source))) == sha256(source)


def test_a_50_mb_push_gets_no_50_mb_reply_or_log_line(dirs, caplog):
    server = new_server(dirs)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        address = server.request_address(server.config.chains[0])
        push = {"uri": "/" + "u" * (50 * MB), "uid": "big", "destination": f"file://localhost{dirs['dst']}"}
        with caplog.at_level(logging.DEBUG, logger="trollmoves"):
            replies = raw_replies(address, messaging.encode("/test/files", "push", push).encode(), 3.0)
        assert all(len(reply) < 2000 for reply in replies), [len(reply) for reply in replies]
        assert all(len(r.getMessage()) < 2000 for r in caplog.records), \
            max(len(r.getMessage()) for r in caplog.records)
        requester = messaging.Requester(address)
        assert_serves_a_genuine_file(dirs, server, seen, requester)
        requester.close()


def test_a_long_uri_under_the_limit_gets_a_short_err_and_log_line(dirs, caplog):
    server = new_server(dirs)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        requester = messaging.Requester(server.request_address(server.config.chains[0]))
        long_path = "/" + "u" * (5 * MB)
        for data in ({"uri": long_path, "uid": "big", "destination": f"file://localhost{dirs['dst']}"},
                     {"uri": long_path, "uid": "big", "destination": "file://localhost/" + "d" * (5 * MB)}):
            with caplog.at_level(logging.DEBUG, logger="trollmoves"):
                caplog.clear()
                reply = requester.request(messaging.make_message("/test/files", "push", data), timeout=20)
            assert reply.type == "err"
            assert len(str(reply.data)) < 1000, len(str(reply.data))
            assert all(len(r.getMessage()) < 2000 for r in caplog.records), \
                max(len(r.getMessage()) for r in caplog.records)
        assert_serves_a_genuine_file(dirs, server, seen, requester)
        requester.close()


def test_client_never_acts_on_an_oversized_announcement(dirs):
    """A provider's 20 MB announcement is refused by the socket: no push is requested for it."""
    server = new_server(dirs)
    rogue = messaging.Publisher("rogue", 0, "127.0.0.1").start()
    trap = zmq.Context.instance().socket(zmq.ROUTER)
    trap.setsockopt(zmq.LINGER, 0)
    trap_port = trap.bind_to_random_port("tcp://127.0.0.1")
    try:
        with running(server):
            client = client_with_rogue(dirs, server.publisher.port, rogue.port)
            with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                            "/test") as seen:
                wait_heard(client, lambda: rogue.send("pytroll://test/files probe"))
                announcement = {"uri": "/data/big.dat", "uid": "big.dat", "padding": "p" * (20 * MB),
                                "request_address": f"127.0.0.1:{trap_port}"}
                rogue.send(messaging.make_message("/test/files", "file", announcement))
                assert not trap.poll(3000), "the client requested a push for an oversized announcement"
                assert client.health()["ok"], client.health()
                source = drop(dirs, 1)[0]
                wait_for(lambda: len(seen.finals()) == 1, what="the genuine file delivered")
                assert client.health()["ok"], client.health()
    finally:
        trap.close()
        rogue.stop()
    assert sha256(str(dirs["dst"] / os.path.basename(source))) == sha256(source)
