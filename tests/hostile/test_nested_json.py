"""Issue 15 item 1: one deeply nested JSON message must not stop a receiver.

A RecursionError from the JSON decoder is a malformed message like any other
(MessageDecodeError): skipped and counted, never the end of a receive loop or
of a batch of requests. After it, each daemon answers a ping and delivers a
genuine file.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
import zmq

from tests.daemons.helpers import Collector, drop, new_server, running, sha256, wait_for
from tests.hostile.rogue import archive_dispatcher, client_with_rogue, wait_heard
from trollmoves import messaging
from trollmoves.errors import MessageDecodeError


def nested_wire(subject: str, atype: str, depth: int) -> str:
    """A posttroll message whose JSON payload is ``depth`` nested lists."""
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    return f"pytroll:/{subject} {atype} rogue@host {now} v1.2 application/json {'[' * depth}{']' * depth}"


@pytest.mark.parametrize("depth", [3_000, 100_000])
def test_decode_maps_deep_nesting_to_a_decode_error(depth):
    with pytest.raises(MessageDecodeError):
        messaging.decode(nested_wire("/test/files", "file", depth))
    with pytest.raises(MessageDecodeError):
        messaging.decode(nested_wire("/test/files", "file", depth).encode())


def test_client_survives_a_nested_message_from_a_provider(dirs):
    """A rogue publisher listed in ``providers`` cannot kill the client's listener."""
    server = new_server(dirs)
    rogue = messaging.Publisher("rogue", 0, "127.0.0.1").start()
    try:
        with running(server):
            client = client_with_rogue(dirs, server.publisher.port, rogue.port)
            with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                            "/test") as seen:
                wait_heard(client, lambda: rogue.send(nested_wire("/test/files", "file", 100_000)))
                for _ in range(3):
                    rogue.send(nested_wire("/test/files", "file", 100_000))
                time.sleep(0.3)
                assert client.health()["ok"], client.health()
                source = drop(dirs, 1)[0]
                wait_for(lambda: len(seen.finals()) == 1, what="the genuine file delivered")
                assert client.health()["ok"], client.health()
    finally:
        rogue.stop()
    assert sha256(str(dirs["dst"] / os.path.basename(source))) == sha256(source)


def test_server_answers_every_ping_around_a_nested_request(dirs):
    """A 3,000-deep request among 200 pings: every ping answered, the nested one gets `err`."""
    server = new_server(dirs)
    target = dirs["dst"]
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        address = server.request_address(server.config.chains[0])
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{address}")
        ping = messaging.encode("/test/files", "ping").encode()
        try:
            for index in range(200):
                sock.send_multipart([b"", ping])
                if index == 100:
                    sock.send_multipart([b"", nested_wire("/test/files", "info", 3_000).encode()])
            replies = []
            while len(replies) < 201 and sock.poll(5000):
                replies.append(messaging.decode(sock.recv_multipart()[-1]).type)
        finally:
            sock.close()
        assert replies.count("pong") == 200, replies
        assert replies.count("err") == 1, replies
        requester = messaging.Requester(address)
        assert requester.request(messaging.make_message("/test/files", "ping"), 5).type == "pong"
        source = drop(dirs, 1)[0]
        wait_for(lambda: seen.of_type("file"), what="the announcement")
        data = {"uri": source, "uid": os.path.basename(source), "destination": f"file://localhost{target}"}
        reply = requester.request(messaging.make_message("/test/files", "push", data), timeout=10)
        requester.close()
    assert reply.type == "file", reply.data
    assert sha256(str(target / os.path.basename(source))) == sha256(source)


def test_dispatcher_survives_a_nested_message(tmp_path):
    """The dispatcher keeps receiving after a 100,000-deep message and dispatches the next product."""
    from tests.daemons.helpers import Feed, make_file

    src, archive = tmp_path / "src", tmp_path / "archive"
    src.mkdir()
    with Feed() as feed:
        dispatcher = archive_dispatcher(feed, tmp_path)
        with running(dispatcher), Collector([f"tcp://127.0.0.1:{dispatcher.publisher.port}"],
                                            "/dispatched") as seen:
            feed.wait_subscribed(dispatcher, "/product/probe", "dispatcher")
            feed.send_raw(nested_wire("/product/x", "file", 100_000))
            time.sleep(0.5)
            assert dispatcher.health()["ok"], dispatcher.health()
            assert dispatcher.fatal_error() is None
            path = make_file(src, "genuine.dat")
            feed.send("/product/x", "file", {"uri": path, "uid": "genuine.dat"})
            wait_for(lambda: seen.of_type("file"), what="the genuine product dispatched")
            assert dispatcher.health()["ok"], dispatcher.health()
    assert sha256(str(archive / "genuine.dat")) == sha256(path)
