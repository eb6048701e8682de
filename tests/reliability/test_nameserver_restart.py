"""The posttroll nameserver killed and restarted on the same ports: publishers and subscribers meet again.

A client chain registers its publisher with ``nameservers = localhost``. The session's
nameserver is killed (kill -9) and started again on the same POSTTROLL_* ports; the
client's registration comes back by itself (it is re-sent periodically), a look-up by
service name (``trollmoves.messaging.lookup_addresses``) finds the publisher again, and
subscribers by service name (ours: look-up + Subscriber; posttroll's NSSubscriber, as
downstream tools use) receive the client's messages.

The restarted nameserver replaces the session's for the rest of the session and is
stopped by its PID at the end of the session.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from tests import servers
from tests.daemons.helpers import Collector, running, wait_for
from tests.reliability.helpers import (
    client_chain,
    in_process_client,
    in_process_server,
    kill_tree,
    server_chain,
    write_ini,
)
from tests.servers import free_port
from trollmoves import messaging


@pytest.fixture(scope="session")
def nameserver_replacements():
    """Nameservers started to replace the session's one; stopped by PID at the end of the session."""
    started: list[servers.PosttrollNameserver] = []
    yield started
    for handle in started:
        handle.stop()


def found(service: str, nameserver: str) -> list[str]:
    return messaging.lookup_addresses(service, nameserver, timeout=1)


def receives_by_service(service: str, server_dir, nameserver: str, name: str) -> bool:
    """Look the service up, subscribe, make the client publish a file message: received?"""
    addresses = found(service, nameserver)
    if not addresses:
        return False
    with Collector(addresses, "/reliability") as seen:
        (server_dir / name).write_bytes(os.urandom(100))
        try:
            wait_for(lambda: any(m.data.get("uid") == name for m in seen.finals()), timeout=10,
                     what=f"the final message of {name}")
        except AssertionError:
            return False
    return True


def ns_subscriber_receives(service: str, server_dir, nameserver: str, name: str) -> bool:
    from posttroll.subscriber import NSSubscriber

    subscriber = NSSubscriber(service, topics="/reliability", nameserver=nameserver, timeout=5).start()
    try:
        messages = subscriber.recv(timeout=0.1)
        time.sleep(0.5)  # let the subscription reach the publisher
        (server_dir / name).write_bytes(os.urandom(100))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = next(messages)
            if message is not None and message.type == "file" and message.data.get("uid") == name:
                return True
        return False
    finally:
        subscriber.close()


@pytest.mark.timeout(120)
def test_nameserver_restart(tmp_path, nameserver, nameserver_replacements):
    src = tmp_path / "src"
    src.mkdir()
    chain = f"ns_{uuid.uuid4().hex[:8]}"
    service = f"move_it_{chain}"
    server = in_process_server(write_ini(tmp_path / "server.ini", {"chain": server_chain(
        src, "/reliability/ns", free_port())}))
    with running(server):
        client = in_process_client(write_ini(tmp_path / "client.ini", {chain: client_chain(
            f"127.0.0.1:{server.publisher.port}", f"file://{tmp_path}/dst/", "/reliability/ns",
            nameservers=nameserver.host)}))
        with running(client):
            address = client.chains[chain].publisher.address
            wait_for(lambda: found(service, nameserver.host) == [address], timeout=20, interval=0.2,
                     what="the client's publisher registered")
            assert receives_by_service(service, src, nameserver.host, "before.dat")

            current = nameserver_replacements[-1] if nameserver_replacements else nameserver
            kill_tree(current.pid)
            wait_for(lambda: not current.running, timeout=10, what="the nameserver gone")
            assert found(service, nameserver.host) == []

            replacement = servers.start_nameserver(tmp_path / "nameserver", nameserver.ports)
            nameserver_replacements.append(replacement)
            assert replacement.port == nameserver.port
            wait_for(lambda: found(service, nameserver.host) == [address], timeout=20, interval=0.2,
                     what="the client's publisher found again after the restart")
            assert receives_by_service(service, src, nameserver.host, "after.dat")
            assert ns_subscriber_receives(service, src, nameserver.host, "after-ns.dat")
