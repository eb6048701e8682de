"""A network cut between two hosts: server and client in their own network namespaces.

The namespaces are joined by a veth pair on a private /30 (10.231.77.0/30, which exists
only inside them). While files keep being announced, the link is set down for a while,
then up again. Asserted: the client notices the silence (``heartbeat_alarm_scale``),
resubscribes, asks the server what it announced meanwhile (catch-up) and gets every
file, each transferred once and byte-identical; both daemons stop cleanly.

The CI form cuts for 6 s; the full form (TROLLMOVES_FULL_FAULTS=1) for 45 s, longer
than the client's catch-up margin (30 s), so that the catch-up must start from the
last message heard, not from the last resubscription.
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
import time

import pytest

from tests.daemons.helpers import wait_for
from tests.reliability.helpers import (
    NamespacePair,
    client_chain,
    client_process,
    final_names,
    full_or_ci,
    in_process_client,
    log_events,
    ready,
    server_chain,
    server_process,
    stop_within,
    write_atomically,
    write_ini,
)
from tests.servers import free_port

CUT = full_or_ci(45.0, 6.0)
INTERVAL = 0.25
DRAIN = 5


@pytest.fixture
def namespaces():
    pair = NamespacePair(f"{os.getpid() % 0xFFFF:04x}")
    try:
        pair.create()
    except OSError as exc:
        pair.delete()
        pytest.skip(f"cannot create network namespaces: {exc}")
    try:
        yield pair
    finally:
        pair.delete()


@pytest.mark.timeout(300)
def test_link_down_then_up_client_resubscribes_and_catches_up(tmp_path, namespaces):
    ns = namespaces
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    publish_port = free_port()
    server_ini = write_ini(tmp_path / "server.ini", {
        "trollmoves": {"drain_timeout": DRAIN},
        "chain": server_chain(src, "/reliability/cut", free_port(), host=ns.server_ip)})
    client_ini = write_ini(tmp_path / "client.ini", {
        "trollmoves": {"drain_timeout": DRAIN, "state_directory": tmp_path / "state"},
        "chain": client_chain(f"{ns.server_ip}:{publish_port}", f"file://{dst}/", "/reliability/cut",
                              heartbeat_alarm_scale=0.1, transfer_req_timeout=5)})
    contents: dict[str, bytes] = {}
    during: list[str] = []
    cut = threading.Event()
    done = threading.Event()

    def writer():
        index = 0
        while not done.is_set():
            name = f"cut{index:04d}.dat"
            contents[name] = os.urandom(10_000)
            write_atomically(src / name, contents[name])
            if cut.is_set():
                during.append(name)
            index += 1
            time.sleep(INTERVAL)

    stopped = {}
    thread = threading.Thread(target=writer, daemon=True)
    server = server_process(server_ini, publish_port, tmp_path / "server.log", ns.server_ip, ns.prefix(ns.server_ns))
    client = client_process(client_ini, tmp_path / "client.log", ns.prefix(ns.client_ns))
    try:
        ready(server, client)
        time.sleep(1.0)
        thread.start()
        wait_for(lambda: len(final_names(dst)) >= 8, timeout=30, what="files flowing before the cut")
        ns.link(False)
        cut.set()
        time.sleep(CUT)
        cut.clear()
        ns.link(True)
        time.sleep(3.0)
        done.set()
        thread.join(5)
        wait_for(lambda: final_names(dst) == sorted(contents), timeout=60, interval=0.2,
                 what="every file, those announced during the cut included")
        stopped["client"] = stop_within(client, DRAIN + 3)
        stopped["server"] = stop_within(server, DRAIN + 3)
    finally:
        done.set()
        ns.link(True)
        client.stop()
        server.stop()
    for name, data in contents.items():
        with open(dst / name, "rb") as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == hashlib.sha256(data).hexdigest(), name
    assert during, "no file was written during the cut"
    for who, (code, took) in stopped.items():
        assert code == 0, f"the {who} did not stop cleanly on SIGTERM (exit {code} after {took:.1f} s)"
    client_log = client.log()
    assert "resubscribing" in client_log
    caught_up = log_events(tmp_path / "client.log", r"catch-up from \S+: requesting (\d+) missed files")
    assert caught_up, "the client did not catch up"
    pushes = collections.Counter(n for _, n in log_events(tmp_path / "server.log", r"pushed \S+/(\S+) to"))
    assert set(pushes) == set(contents)
    assert max(pushes.values()) == 1, {n: c for n, c in pushes.items() if c > 1}
    print(f"cut {CUT:.0f} s: {len(during)} files written during the cut, catch-up requests "
          f"{[int(n) for _, n in caught_up]}, stopped {stopped}")


def test_resubscription_catches_up_from_the_last_message_heard(tmp_path, monkeypatch):
    """Fast form of the long cut: the catch-up after the n-th resubscription of a silent provider
    still starts from the last message heard (it used to start from the previous resubscription,
    so a cut longer than the 30 s margin lost the files announced at its beginning)."""
    from trollmoves import messaging
    from trollmoves.client import CATCH_UP_MARGIN, FollowedChain

    port = free_port()
    client = in_process_client(write_ini(tmp_path / "client.ini", {"chain": client_chain(
        f"127.0.0.1:{port}", f"file://{tmp_path}/", "/reliability/cut", heartbeat_alarm_scale=0.1)}))
    followed = FollowedChain(client.config.chains[0], client.chain_parts())
    asked = []
    monkeypatch.setattr(followed, "catch_up", lambda address, since: asked.append((address, since)))
    address = f"tcp://127.0.0.1:{port}"
    subscriber = messaging.Subscriber([address], "/reliability")
    try:
        now = time.monotonic()
        followed.request_addresses_by_provider[address] = {"127.0.0.1:1"}
        followed.provider_last_heard[address] = now - 100.0  # the last announcement, before the cut
        followed.provider_last_message[address] = now - 5.0  # the previous resubscription
        followed._check_heartbeats(subscriber)
        followed.workers.shutdown(wait=True)
    finally:
        subscriber.close()
        client.state.close()
    assert len(asked) == 1 and asked[0][0] == "127.0.0.1:1"
    assert asked[0][1] == pytest.approx(time.time() - 100.0 - CATCH_UP_MARGIN, abs=2.0)
