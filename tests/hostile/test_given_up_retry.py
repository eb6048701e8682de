"""Issue 15 item 9: a file the client gave up on stays visible and is retried while the client runs.

The destination fails (a regular file stands where the destination directory must be: the
server's push fails, as it does on a full disk), the client exhausts its fast retries and gives
up. Meanwhile /healthz (``health()``) shows the file as pending and given up, and
``trollmoves_given_up_files`` counts it; once the destination is fixed, the slow retry
(``retry_given_up_interval``, shortened here) delivers the file without a restart.
"""

from __future__ import annotations

import logging
import os

from tests.daemons.helpers import load, new_server, running, sha256, wait_for, write
from trollmoves.client import Client
from trollmoves.state import StateStore


def _gauge(client, name):
    return client.metrics.registry.get_sample_value(name, {"chain": "chain"})


def test_given_up_file_is_visible_and_arrives_once_the_destination_is_fixed(dirs, caplog):
    blocker = dirs["dst"] / "sub"
    blocker.write_bytes(b"not a directory")
    server = new_server(dirs)
    with running(server):
        config = load(write(dirs["state"] / "client.ini", f"""
            [chain]
            providers = 127.0.0.1:{server.publisher.port}
            destination = file://{dirs['dst']}/sub/
            topic = /test/files
            publish_port = 0
            publish_address = 127.0.0.1
            nameservers = False
            transfer_req_timeout = 2
            retry_given_up_interval = 3
        """), "client")
        client = Client(config, state=StateStore(str(dirs["state"] / "client.db")), max_fetch_attempts=2)
        with caplog.at_level(logging.INFO, logger="trollmoves.client"), running(client):
            source = dirs["src"] / "NOAA19_001.dat"
            source.write_bytes(os.urandom(4000))
            wait_for(lambda: "giving up" in caplog.text, 30, 0.05, "the client to give up its fast retries")
            chain = client.health()["chains"]["chain"]
            assert chain["pending"] == 1 and chain["given_up"] == 1, chain
            assert _gauge(client, "trollmoves_given_up_files") == 1
            assert _gauge(client, "trollmoves_retry_queue_length") == 1
            assert len(client.state.pending("chain")) == 1
            blocker.unlink()
            delivered = dirs["dst"] / "sub" / source.name
            wait_for(lambda: delivered.exists() and sha256(str(delivered)) == sha256(str(source)), 20,
                     what="the given-up file to arrive after the destination was fixed, without a restart")
            wait_for(lambda: client.health()["chains"]["chain"]["pending"] == 0, 5, what="pending to drain")
            assert client.health()["chains"]["chain"]["given_up"] == 0
            assert _gauge(client, "trollmoves_given_up_files") == 0
            assert client.state.pending("chain") == []
            assert client.health()["ok"]


def test_given_up_file_expires_with_the_state_store_age_bound(dirs, caplog):
    server = new_server(dirs)
    (dirs["dst"] / "sub").write_bytes(b"not a directory")
    with running(server):
        config = load(write(dirs["state"] / "client.ini", f"""
            [chain]
            providers = 127.0.0.1:{server.publisher.port}
            destination = file://{dirs['dst']}/sub/
            topic = /test/files
            publish_port = 0
            publish_address = 127.0.0.1
            nameservers = False
            transfer_req_timeout = 2
            retry_given_up_interval = 0.5
        """), "client")
        store = StateStore(str(dirs["state"] / "client.db"), max_age=15.0)
        client = Client(config, state=store, max_fetch_attempts=1)
        with caplog.at_level(logging.INFO, logger="trollmoves.client"), running(client):
            (dirs["src"] / "NOAA19_002.dat").write_bytes(os.urandom(100))
            wait_for(lambda: "giving up" in caplog.text, 30, 0.05, "the client to give up")
            assert client.health()["chains"]["chain"]["given_up"] == 1
            wait_for(lambda: "expired" in caplog.text, 30, 0.1, "the given-up file to expire")
            assert "still not delivered" in caplog.text, "no slow retry before the expiry"
            wait_for(lambda: client.health()["chains"]["chain"]["pending"] == 0, 5, what="the entry dropped")
            assert _gauge(client, "trollmoves_given_up_files") == 0
            assert client.state.pending("chain") == []
