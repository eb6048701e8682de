"""Item 3: ``allowed_destinations`` is checked on the final, normalised target of a push.

A requester tries ``..`` in the destination, an absolute or ``..`` push ``path``, a percent-escaped
``..`` and another port; each is refused (``err`` reply, refusal metric, nothing written). The
documented form ``file:///dir/`` accepts what a real local client sends (``file://<hostname>/dir/``).
"""

from __future__ import annotations

import os
import socket

from tests.daemons.helpers import Collector, client_config, drop, new_server, running, sha256, wait_for
from trollmoves import messaging
from trollmoves.client import Client
from trollmoves.state import StateStore


def _push(server, data, destination, path=None):
    request = dict(data)
    request["destination"] = destination
    if path is not None:
        request["path"] = path
    address = server.request_address(server.config.chains[0])
    return messaging.Requester(address).request(messaging.make_message("/test/files", "push", request), 10)


def _refused(server):
    return server.metrics.registry.get_sample_value(
        "trollmoves_requests_refused_total", {"chain": "chain", "reason": "destination_not_allowed"}) or 0


def test_escapes_are_refused_and_the_documented_form_works(dirs, tmp_path):
    allowed = dirs["dst"]
    outside = tmp_path / "outside"
    outside.mkdir()
    server = new_server(dirs, f"allowed_destinations = file://{allowed}/ ftp://127.0.0.1/pub/")
    hostile = [
        (f"file://{allowed}/../outside/", None),
        (f"file://{allowed}/", str(outside) + "/"),
        (f"file://{allowed}/", "../outside/"),
        (f"file://{allowed}/%2e%2e/outside/", None),
        (f"file://{allowed}x/", None),
        ("ftp://127.0.0.1:2121/pub/", None),
    ]
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        drop(dirs, 1)
        wait_for(lambda: seen.of_type("file"), what="an announcement")
        data = seen.of_type("file")[0].data
        for number, (destination, path) in enumerate(hostile, 1):
            reply = _push(server, data, destination, path)
            assert reply.type == "err", (destination, path, reply)
            assert _refused(server) == number, (destination, path)
        assert os.listdir(outside) == [] and not os.path.exists(f"{allowed}x")
        # what a user sees afterwards: ping answered, a genuine local client is served
        address = server.request_address(server.config.chains[0])
        assert messaging.Requester(address).request(messaging.make_message("/test/files", "ping"), 5).type == "pong"
        client = Client(client_config(dirs, server.publisher.port), state=StateStore(str(dirs["state"] / "c.db")))
        with running(client):
            with Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"], "/test") as finals:
                genuine = drop(dirs, 1, start=1)[0]
                wait_for(lambda: finals.finals(), what="the genuine file delivered")
        # the client sends file://<hostname>/...; the allow-list says file:///...
        assert f"file://{socket.gethostname()}/" in str(finals.of_type("push")[-1].data["destination"])
    assert sha256(str(allowed / os.path.basename(genuine))) == sha256(genuine)
    assert _refused(server) == len(hostile)


def test_a_relative_local_destination_is_refused(dirs, tmp_path, monkeypatch):
    """``nonsense``, ``1e400`` or ``file:rel`` would land in the server's working directory: refused.

    0.19 wrote there; without an allow-list this is the only confinement a relative path gets.
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    server = new_server(dirs)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        drop(dirs, 1)
        wait_for(lambda: seen.of_type("file"), what="an announcement")
        data = seen.of_type("file")[0].data
        for number, destination in enumerate(["nonsense", "1e400", "file:rel/dir/", "./here/"], 1):
            reply = _push(server, data, destination)
            assert reply.type == "err" and "absolute" in str(reply.data), (destination, reply)
            assert _refused(server) == number
        assert os.listdir(cwd) == [], "nothing written relative to the server's working directory"
        reply = _push(server, data, f"file://{dirs['dst']}/")
        assert reply.type == "file", reply
    assert sha256(str(dirs["dst"] / data["uid"])) == sha256(data["uri"])
