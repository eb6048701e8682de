"""Item 4: a rogue provider's reply cannot make a client unpack (and delete) files outside its destination.

With ``compression = tar`` and ``delete = True``, replies naming ``/elsewhere/victim.tar``,
``../victim/victim2.tar`` or another destination are refused (WARNING + refusal metric); the victims
stay untouched, and a genuine archive from the same provider is still unpacked and published.
"""

from __future__ import annotations

import io
import os
import tarfile
import time

from tests.daemons.helpers import Collector, load, running, wait_for, write
from tests.hostile.rogue import RogueServer
from trollmoves.client import Client
from trollmoves.state import StateStore


def make_tar(path, member: str, content: bytes = b"payload") -> str:
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return str(path)


def client_for(tmp_path, port, extra=""):
    return load(write(tmp_path / "client.ini", f"""
        [chain]
        providers = 127.0.0.1:{port}
        destination = file://{tmp_path / 'dst'}/
        topic = /test/files
        publish_port = 0
        publish_address = 127.0.0.1
        nameservers = False
        catch_up = False
        transfer_req_timeout = 5
        {extra}
    """), "client")


def refused(client):
    return client.metrics.registry.get_sample_value(
        "trollmoves_requests_refused_total", {"chain": "chain", "reason": "path_escape"}) or 0


def test_reply_uids_and_destination_outside_are_refused(tmp_path, caplog):
    for name in ("src", "dst", "elsewhere", "victim", "victim3"):
        (tmp_path / name).mkdir()
    victims = [make_tar(tmp_path / "elsewhere" / "victim.tar", "v1.txt"),
               make_tar(tmp_path / "victim" / "victim2.tar", "v2.txt"),
               make_tar(tmp_path / "victim3" / "victim3.tar", "v3.txt")]
    sources = [make_tar(tmp_path / "src" / f"{name}.tar", f"{name}.txt") for name in ("a", "b", "c", "good")]
    changes = {"a.tar": {"uid": victims[0]},
               "b.tar": {"uid": "../victim/victim2.tar"},
               "c.tar": {"uid": "victim3.tar", "destination": f"file://{tmp_path / 'victim3'}/"}}
    with RogueServer(changes) as rogue:
        client = Client(client_for(tmp_path, rogue.publisher.port, "compression = tar\ndelete = True"),
                        state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            time.sleep(1.0)  # slow joiner
            for source in sources:
                rogue.announce(source)
            wait_for(lambda: [m for m in seen.finals() if "good.txt" in str(m.data)], what="good.tar unpacked")
            wait_for(lambda: refused(client) == 3, what="three refusals counted")
            assert client.health()["ok"], client.health()
    for victim in victims:
        assert os.path.exists(victim), f"{victim} was deleted"
        assert os.listdir(os.path.dirname(victim)) == [os.path.basename(victim)], "something was unpacked"
    assert (tmp_path / "dst" / "good.txt").read_bytes() == b"payload"
    assert not [m for m in seen.finals() if "good.txt" not in str(m.data)], "no message for refused replies"
    assert sum("path_escape" in r.getMessage() or "leaves" in r.getMessage() for r in caplog.records
               if r.levelname == "WARNING") >= 3
