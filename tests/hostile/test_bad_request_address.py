"""Issue 15 item 2: an announcement with an unusable ``request_address`` never stalls a file.

A rogue publisher listed in a client's ``providers`` announces a file with a ``request_address``
that is no ``host:port`` (a word, a number, null, a list, ...). The client must log one WARNING
naming it, count it as malformed, and still request and receive the same file when a genuine
server announces it afterwards.
"""

from __future__ import annotations

import logging
import os

import pytest

from tests.daemons.helpers import load, new_server, running, sha256, wait_for, write
from trollmoves import messaging
from trollmoves.client import Client, usable_request_address
from trollmoves.state import StateStore, file_key

BAD_ADDRESSES = ["nonsense", 12345, None, ["127.0.0.1:1"], "127.0.0.1:99999", "tcp://127.0.0.1:1;evil:2",
                 {"host": "127.0.0.1"}, ""]


def _client(dirs, providers):
    return Client(load(write(dirs["state"] / "client.ini", f"""
        [chain]
        providers = {' '.join(providers)}
        destination = file://{dirs['dst']}/
        topic = /test/files
        publish_port = 0
        publish_address = 127.0.0.1
        nameservers = False
        transfer_req_timeout = 2
    """), "client"), state=StateStore(str(dirs["state"] / "client.db")))


def _count(client, name, **labels):
    return client.metrics.registry.get_sample_value(name, dict(chain="chain", **labels)) or 0.0


@pytest.mark.parametrize("bad", BAD_ADDRESSES, ids=repr)
def test_bad_request_address_then_genuine_file_arrives(dirs, caplog, bad):
    rogue = messaging.Publisher("rogue", 0, "127.0.0.1").start()
    server = new_server(dirs)
    try:
        with running(server):
            client = _client(dirs, [f"127.0.0.1:{server.publisher.port}", f"127.0.0.1:{rogue.port}"])
            with caplog.at_level(logging.WARNING, logger="trollmoves.client"), running(client):
                uid = "NOAA19_007.dat"
                hostile = messaging.make_message("/test/files", "file", {
                    "uri": f"/nowhere/{uid}", "uid": uid, "request_address": bad})

                def seen():
                    rogue.send(hostile)
                    return _count(client, "trollmoves_messages_received_total", type="file") > 0
                wait_for(seen, 10, 0.1, "the client to receive the hostile announcement")
                wait_for(lambda: _count(client, "trollmoves_messages_malformed_total") > 0, 5,
                         what="the bad request_address to be counted as malformed")
                source = dirs["src"] / uid
                source.write_bytes(os.urandom(5000))
                delivered = dirs["dst"] / uid
                wait_for(lambda: delivered.exists() and sha256(str(delivered)) == sha256(str(source)), 20,
                         what="the genuine file to arrive")
                assert client.health()["ok"]
                # the file is complete at the destination before the client has the server's reply
                wait_for(lambda: not client.chains["chain"].pending, 5, what="the file to leave pending")
        warnings = [r for r in caplog.records
                    if r.levelno == logging.WARNING and "request_address" in r.getMessage()]
        assert warnings, "no WARNING about the bad request_address"
        assert repr(bad)[:40] in warnings[0].getMessage()
        assert len(warnings) == 1, "one WARNING per bad address, not one per message"
    finally:
        rogue.stop()


def test_bad_request_address_kept_from_before_does_not_repeat_at_restart(dirs, caplog):
    """A pending entry (and provider) with a bad address recorded by an older version is dropped at start."""
    uid = "NOAA19_008.dat"
    store = StateStore(str(dirs["state"] / "client.db"))
    bad = {"uri": f"/x/{uid}", "uid": uid, "request_address": None}
    store.add_pending("chain", file_key([uid]), {"subject": "/test/files", "type": "file", "data": bad})
    store.touch_provider("chain", "nonsense")
    store.close()
    server = new_server(dirs)
    with running(server):
        client = _client(dirs, [f"127.0.0.1:{server.publisher.port}"])
        with caplog.at_level(logging.WARNING, logger="trollmoves.client"), running(client):
            assert client.state.pending("chain") == []
            source = dirs["src"] / uid
            source.write_bytes(os.urandom(3000))
            delivered = dirs["dst"] / uid
            wait_for(lambda: delivered.exists() and sha256(str(delivered)) == sha256(str(source)), 20,
                     what="the genuine file to arrive")
            assert client.health()["ok"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("address", ["127.0.0.1:9", "tcp://127.0.0.1:9", "host-1.example.org:65535",
                                     "[::1]:4000", "tcp://[fe80::1]:1"])
def test_usable_request_addresses(address):
    assert usable_request_address(address) == address


@pytest.mark.parametrize("bad", BAD_ADDRESSES + ["127.0.0.1:0", "a b:12", "127.0.0.1", ":12",
                                                 "x" * 300 + ":1", True, 1.5])
def test_unusable_request_addresses(bad):
    assert usable_request_address(bad) is None
