"""Item 5: announcement uids and destination-template fields cannot move a client outside its destination.

A rogue provider announces uids ``../../x`` and ``/abs/x`` and a ``platform_name`` of ``../../outside``
for the template ``file://<dst>/{platform_name}/``: each is refused with one WARNING naming the field
and the ``path_escape`` metric, no push is requested, no directory is created outside, no ``file``
message is published; a genuine announcement afterwards is delivered.
"""

from __future__ import annotations

import logging
import os
import time

from tests.daemons.helpers import Collector, load, running, wait_for, write
from tests.hostile.rogue import RogueServer
from trollmoves.client import Client
from trollmoves.state import StateStore


def test_escaping_uids_and_fields_are_refused(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    work = tmp_path / "a" / "b"
    (work / "src").mkdir(parents=True)
    (work / "dst").mkdir()
    source = work / "src" / "x.dat"
    source.write_bytes(b"x" * 100)
    good = work / "src" / "good.dat"
    good.write_bytes(b"genuine")
    with RogueServer() as rogue:
        config = load(write(work / "client.ini", f"""
            [chain]
            providers = 127.0.0.1:{rogue.publisher.port}
            destination = file://{work / 'dst'}/{{platform_name}}/
            topic = /test/files
            publish_port = 0
            publish_address = 127.0.0.1
            nameservers = False
            catch_up = False
            transfer_req_timeout = 5
        """), "client")
        client = Client(config, state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            time.sleep(1.0)  # slow joiner
            rogue.announce(str(source), uid="../../x", platform_name="noaa19")
            rogue.announce(str(source), uid="/abs/x", platform_name="noaa19")
            rogue.announce(str(source), uid="x1.dat", platform_name="../../outside")
            rogue.announce(str(good), platform_name="noaa19")
            wait_for(lambda: seen.finals(), what="the genuine file delivered")
            refused = client.metrics.registry.get_sample_value(
                "trollmoves_requests_refused_total", {"chain": "chain", "reason": "path_escape"})
            assert refused == 3
            assert client.health()["ok"]
    assert [p["uid"] for p in rogue.pushes] == ["good.dat"], "no request for a refused announcement"
    assert (work / "dst" / "noaa19" / "good.dat").read_bytes() == b"genuine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and sorted(p.name for p in work.iterdir()) == [
        "client.ini", "dst", "src"], "nothing created outside the destination"
    assert [m.data["uid"] for m in seen.finals()] == ["good.dat"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "path_escape" in
                r.getMessage()]
    assert len(warnings) == 3
    assert "'uid'" in warnings[0] or "uid" in warnings[0]
    assert any("platform_name" in w for w in warnings)


def test_dispatcher_refuses_fields_that_leave_the_target(tmp_path, caplog):
    """A message field composed into a dispatch directory or file pattern cannot leave the target."""
    from tests.daemons.helpers import Feed, make_file
    from trollmoves.dispatcher import Dispatcher, DispatcherOptions

    work = tmp_path / "a" / "b"
    (work / "src").mkdir(parents=True)
    with Feed() as feed:
        config = load(write(work / "d.yaml", f"""
            posttroll_subscriber:
              subscribe_addresses: [{feed.address}]
              nameserver: false
            local:
              directory: {work}/out/{{platform_name}}
              filepattern: '{{product}}.dat'
              dispatch_configs:
                - topics: [/product]
        """), "dispatcher")
        dispatcher = Dispatcher(config, DispatcherOptions())
        with running(dispatcher):
            feed.wait_subscribed(dispatcher, "/product/probe", "dispatcher")
            path = make_file(work / "src", "x.dat")
            feed.send("/product/x", "file", {"uri": path, "uid": "x.dat", "platform_name": "../../..",
                                             "product": "p1"})
            feed.send("/product/x", "file", {"uri": path, "uid": "x.dat", "platform_name": "n19",
                                             "product": "../../../p2"})
            feed.send("/product/x", "file", {"uri": path, "uid": "x.dat", "platform_name": "n19", "product": "ok"})
            wait_for(lambda: os.path.exists(work / "out" / "n19" / "ok.dat"), what="the genuine file")
            assert dispatcher.health()["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in work.iterdir()) == ["d.yaml", "out", "src"]
    assert sorted(os.listdir(work / "out" / "n19")) == ["ok.dat"]
    assert "platform_name" in caplog.text and "product" in caplog.text


def test_mirror_refuses_uids_and_fields_that_leave_its_destination(tmp_path, caplog):
    """The mirror composes its own destination from upstream fields: escapes are refused, not relayed."""
    from tests.servers import free_port
    from trollmoves import messaging
    from trollmoves.mirror import Mirror, ServerOptions

    work = tmp_path / "a" / "b"
    for name in ("src", "mirror", "dst"):
        (work / name).mkdir(parents=True)
    good = work / "src" / "good.dat"
    good.write_bytes(b"genuine")
    with RogueServer() as upstream:
        config = load(write(work / "mirror.ini", f"""
            [hrit]
            providers = 127.0.0.1:{upstream.publisher.port}
            client_topic = /test/files
            destination = file://{work}/mirror/{{platform_name}}/
            origin = {work}/mirror/{{platform_name}}/{{filename}}
            request_address = 127.0.0.1
            request_bind_address = 127.0.0.1
            request_port = {free_port()}
            topic = /outside/hrit
            transfer_req_timeout = 5
        """), "mirror")
        mirror = Mirror(config, ServerOptions(publish_port=0, publish_address="127.0.0.1"), state=StateStore(None))
        with running(mirror):
            chain = mirror.chains["hrit"]

            def announcement(**fields):
                data = {"uri": str(good), "uid": "good.dat", "request_address": upstream.request_address}
                return messaging.make_message("/test/files", "file", dict(data, **fields))
            assert not chain.from_upstream(announcement(platform_name="../../.."))
            assert not chain.from_upstream(announcement(platform_name="n19", uid="../../good.dat"))
            assert chain.from_upstream(announcement(platform_name="n19"))
            refused = mirror.metrics.registry.get_sample_value(
                "trollmoves_requests_refused_total", {"chain": "hrit", "reason": "path_escape"})
            assert refused == 2
            requester = messaging.Requester(mirror.request_address(config.chains[0]))
            assert requester.request(messaging.make_message("/outside/hrit", "ping"), 5).type == "pong"
            reply = requester.request(messaging.make_message("/outside/hrit", "push", {
                "uri": str(good), "uid": "good.dat", "platform_name": "n19",
                "destination": f"file://{work}/dst/"}), 15)
            assert reply.type == "file", reply
    assert (work / "dst" / "good.dat").read_bytes() == b"genuine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in work.iterdir()) == ["dst", "mirror", "mirror.ini", "src"]
    assert "platform_name" in caplog.text and "uid" in caplog.text
