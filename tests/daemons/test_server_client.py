"""Server and client end to end: real sockets, real files, real SFTP/FTP servers.

What a user sees is asserted: bytes at the destination, messages on the wire
(types, order, fields), error replies, exit codes.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import xxhash

from tests.controller import DaemonProcess
from tests.daemons.helpers import (
    Collector,
    client_config,
    drop,
    load,
    new_server,
    request_push,
    running,
    server_config,
    sha256,
    wait_for,
    write,
)
from tests.servers import free_port
from trollmoves import messaging
from trollmoves.client import Client
from trollmoves.server import Server, ServerOptions
from trollmoves.state import StateStore


def test_local_transfer_messages_and_bytes(dirs):
    server = new_server(dirs)
    with running(server):
        client = Client(client_config(dirs, server.publisher.port), state=StateStore(str(dirs["state"] / "c.db")))
        with running(client):
            chain = client.chains["chain"]
            with Collector([f"tcp://127.0.0.1:{server.publisher.port}",
                            f"tcp://127.0.0.1:{chain.publisher.port}"], "/test") as seen:
                sources = drop(dirs, 3)
                wait_for(lambda: len(seen.finals()) == 3, what="three final messages")
                time.sleep(0.3)
    for path in sources:
        assert sha256(str(dirs["dst"] / os.path.basename(path))) == sha256(path)
    announcements = seen.of_type("file", with_key="request_address")
    assert len(announcements) == 3
    first = announcements[0].data
    assert list(first)[:7] == ["sensor", "stations", "platform_name", "number", "uri", "uid", "request_address"]
    assert first["stations"] == ["a", "b"] and first["platform_name"] == "NOAA19"
    assert first["request_address"] == server.request_address(server.config.chains[0])
    with open(first["uri"], "rb") as stream:
        assert first["checksum"] == {"method": "xxh3_128", "value": xxhash.xxh3_128_hexdigest(stream.read())}
    assert first["size"] == 1000
    for final in seen.finals():
        data = final.data
        assert data["uri"] == str(dirs["dst"] / data["uid"])
        assert data["origin"] == first["request_address"]
        assert "destination" not in data and "request_address" not in data
        assert final.subject == "/test/files"
    # order on the client's publisher: push, then ack, then the final file message, per file
    for uid in (os.path.basename(p) for p in sources):
        order = [m.type for _, m in seen.messages if isinstance(m.data, dict) and m.data.get("uid") == uid
                 and m.type in ("push", "ack") or (m.type == "file" and m.data.get("uid") == uid
                                                   and "request_address" not in m.data)]
        assert order == ["push", "ack", "file"], order
    assert len(seen.finals()) == 3, "each file announced once to the client's subscribers"


@pytest.mark.parametrize("create_target_directory", ["True", "False"])
def test_destination_without_trailing_slash_names_a_directory(dirs, create_target_directory):
    """0.19's client destination always names a directory: ``.../sub/deeper`` receives ``sub/deeper/<uid>``.

    Nothing of ``sub/`` exists beforehand; each published ``uri`` must name an identical existing file.
    """
    server = new_server(dirs)
    target = dirs["dst"] / "sub" / "deeper"
    with running(server):
        client = Client(client_config(dirs, server.publisher.port, f"file://{target}",
                                      extra=f"create_target_directory = {create_target_directory}"),
                        state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            sources = drop(dirs, 5)
            wait_for(lambda: len(seen.finals()) == 5, what="five final messages")
    delivered = sorted(str(p.relative_to(dirs["dst"])) for p in dirs["dst"].rglob("*") if p.is_file())
    assert delivered == sorted(f"sub/deeper/{os.path.basename(p)}" for p in sources)
    for path in sources:
        assert sha256(str(target / os.path.basename(path))) == sha256(path)
    for final in seen.finals():
        assert final.data["uri"] == str(target / final.data["uid"])
        assert sha256(final.data["uri"]) == sha256(str(dirs["src"] / final.data["uid"]))


def test_our_server_delivers_into_a_destination_directory_sent_without_slash(dirs):
    """A 0.19 client sends ``file://host/dir`` (no slash) after creating ``dir``: the file goes inside."""
    server = new_server(dirs)
    target = dirs["dst"] / "plain"
    target.mkdir()
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        time.sleep(0.3)
        source = drop(dirs, 1)[0]
        wait_for(lambda: seen.of_type("file"), what="the announcement")
        request = messaging.Requester(server.request_address(server.config.chains[0]))
        data = {"uri": source, "uid": os.path.basename(source), "destination": f"file://localhost{target}"}
        reply = request.request(messaging.make_message("/test/files", "push", data), timeout=10)
    assert reply.type == "file", reply.data
    assert sha256(str(target / os.path.basename(source))) == sha256(source)
    assert reply.data["destination"] == f"file://localhost{target}"


def test_sftp_destination(dirs, sshd_server):
    extra = (f"connection_parameters__ssh_private_key_file = {sshd_server.client_key}\n"
             f"        connection_parameters__known_hosts = {sshd_server.known_hosts}")
    server = new_server(dirs, extra)
    target = f"{sshd_server.root}/sftp-dst"
    with running(server):
        client = Client(client_config(dirs, server.publisher.port,
                                      f"sftp://{sshd_server.user}@127.0.0.1:{sshd_server.port}{target}/"),
                        state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            sources = drop(dirs, 2, size=300_000)
            wait_for(lambda: len(seen.finals()) == 2, what="two final messages")
    for path in sources:
        assert sha256(os.path.join(target, os.path.basename(path))) == sha256(path)
    uri = seen.finals()[0].data["uri"]
    assert uri.startswith(target) or uri.startswith(f"sftp://{sshd_server.user}@127.0.0.1:{sshd_server.port}")


def test_ftp_destination_with_login(dirs, ftp_server):
    server = new_server(dirs)
    with running(server):
        client = Client(client_config(dirs, server.publisher.port,
                                      f"ftp://127.0.0.1:{ftp_server.port}/incoming/",
                                      extra=f"login = {ftp_server.user}:{ftp_server.password}\n"
                                            f"        create_target_directory = False"),
                        state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            sources = drop(dirs, 2)
            wait_for(lambda: len(seen.finals()) == 2, what="two final messages")
    for path in sources:
        assert sha256(os.path.join(ftp_server.root, "incoming", os.path.basename(path))) == sha256(path)
    published = [m.encode() for _, m in seen.messages]
    assert not any(ftp_server.password in text for text in published), "the FTP password was published"
    push = seen.of_type("push")[0]
    # as 0.19 (tests/compat ftp_slash): the published push carries neither password nor user name
    assert push.data["destination"].startswith(f"ftp://127.0.0.1:{ftp_server.port}/incoming")


def test_requests_outside_the_announced_files_are_refused(dirs, tmp_path):
    server = new_server(dirs)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "NOAA19_001.dat").write_bytes(b"secret")
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        drop(dirs, 1)
        wait_for(lambda: seen.of_type("file"), what="an announcement")
        good = dict(seen.of_type("file")[0].data)
        (dirs["src"] / "NOAA19_050.dat").write_bytes(b"x")  # in origin, never announced: written below
        os.symlink(outside / "NOAA19_001.dat", dirs["src"] / ".hidden_link")
        attempts = {
            "dot-dot": str(dirs["src"] / ".." / "secret" / "NOAA19_001.dat"),
            "absolute elsewhere": str(outside / "NOAA19_001.dat"),
            "system file": "/etc/passwd",
            "symlink out": str(dirs["src"] / ".hidden_link"),
        }
        for what, uri in attempts.items():
            reply = request_push(server, dict(good, uri=uri, uid=os.path.basename(uri)),
                                 f"file://{dirs['dst']}/")
            assert reply.type == "err", what
            assert reply.data == f"{uri} not reachable", what
        assert os.listdir(dirs["dst"]) == []
        reply = request_push(server, good, f"file://{dirs['dst']}/")
        assert reply.type == "file" and reply.data["destination"] == f"file://{dirs['dst']}/"
    refused = server.metrics.registry.get_sample_value("trollmoves_requests_refused_total",
                                                       {"chain": "chain", "reason": "not_announced"})
    assert refused == 4


def test_destination_allow_list(dirs, tmp_path):
    server = new_server(dirs, f"allowed_destinations = file://{dirs['dst']}/")
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        drop(dirs, 1)
        wait_for(lambda: seen.of_type("file"), what="an announcement")
        data = seen.of_type("file")[0].data
        assert request_push(server, data, f"file://{tmp_path}/elsewhere/").type == "err"
        assert request_push(server, data, f"file://{dirs['dst']}/").type == "file"


def test_repeated_push_transfers_once(dirs):
    server = new_server(dirs)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        drop(dirs, 1, size=5_000_000)
        wait_for(lambda: seen.of_type("file"), what="an announcement")
        data = seen.of_type("file")[0].data
        replies = []
        destination = f"file://{dirs['dst']}/"
        threads = [threading.Thread(target=lambda: replies.append(request_push(server, data, destination)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.type for r in replies] == ["file"] * 4
        assert request_push(server, data, f"file://{dirs['dst']}/").type == "file"
    done = server.metrics.registry.get_sample_value("trollmoves_transfers_succeeded_total",
                                                    {"chain": "chain", "scheme": "file"})
    assert done == 1


def test_ping_info_unknown_and_malformed(dirs):
    import zmq

    server = new_server(dirs, "station = norrkoping")
    with running(server):
        address = server.request_address(server.config.chains[0])
        requester = messaging.Requester(address)
        pong = requester.request(messaging.make_message("/test/files", "ping"), 5)
        assert (pong.type, pong.data) == ("pong", {"station": "norrkoping"})
        assert requester.request(messaging.make_message("/test/files", "bogus"), 5).type == "unknown"
        info = requester.request(messaging.make_message("/test", "info", {"max_count": 5}), 5)
        assert info.type == "info" and info.data["max_count"] == 5 and info.data["files"] == []
        context = zmq.Context.instance()
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{address}")
        sock.send(b"this is not a pytroll message")
        assert sock.poll(5000), "no reply to a malformed request"
        assert messaging.decode(sock.recv()).type == "err"
        sock.close()
        assert requester.request(messaging.make_message("/test/files", "ping"), 5).type == "pong"


def test_client_restart_catches_up_without_duplicates(dirs):
    server = new_server(dirs)
    state_path = str(dirs["state"] / "client.db")
    with running(server):
        cfg = client_config(dirs, server.publisher.port)
        client = Client(cfg, state=StateStore(state_path))
        with running(client):
            first = drop(dirs, 3)
            wait_for(lambda: len(os.listdir(dirs["dst"])) == 3, what="first files")
        # the client is down: these announcements reach nobody
        missed = drop(dirs, 4, start=10)
        time.sleep(0.5)
        client = Client(cfg, state=StateStore(state_path))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            later = drop(dirs, 2, start=20)
            wait_for(lambda: len(os.listdir(dirs["dst"])) == 9, what="all nine files")
            time.sleep(1.0)
    for path in first + missed + later:
        assert sha256(str(dirs["dst"] / os.path.basename(path))) == sha256(path)
    uids = [m.data["uid"] for m in seen.finals()]
    assert sorted(uids) == sorted(os.path.basename(p) for p in missed + later), "re-transferred or skipped"
    pushed = server.metrics.registry.get_sample_value("trollmoves_transfers_succeeded_total",
                                                      {"chain": "chain", "scheme": "file"})
    assert pushed == 9


def test_two_providers_one_transfer_and_failover(dirs, tmp_path):
    """The same file announced by two servers is requested once; a failing server is skipped."""
    broken_dirs = dict(dirs, src=dirs["src"])
    good = new_server(dirs)
    other = Server(server_config({"src": dirs["src"], "state": tmp_path}, free_port()),
                   ServerOptions(publish_port=0, publish_address="127.0.0.1"))
    with running(good), running(other):
        cfg = load(write(dirs["state"] / "two.ini", f"""
            [chain]
            providers = 127.0.0.1:{good.publisher.port} 127.0.0.1:{other.publisher.port}
            destination = file://{dirs['dst']}/
            topic = /test/files
            nameservers = False
            publish_address = 127.0.0.1
        """), "client")
        client = Client(cfg, state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            drop(broken_dirs, 3)
            wait_for(lambda: len(seen.finals()) == 3, what="three files")
            time.sleep(0.5)
    assert len(seen.finals()) == 3
    total = sum(s.metrics.registry.get_sample_value("trollmoves_transfers_succeeded_total",
                                                    {"chain": "chain", "scheme": "file"}) for s in (good, other))
    assert total == 3


@pytest.mark.timeout(180)
def test_console_scripts_reload_and_stop(dirs, tmp_path):
    publish_port, request_port = free_port(), free_port()
    server_ini = write(tmp_path / "server.ini", f"""
        [chain]
        origin = {dirs['src']}/{{name}}.dat
        topic = /test/files
        request_port = {request_port}
        request_address = 127.0.0.1
    """)
    client_ini = write(tmp_path / "client.ini", f"""
        [trollmoves]
        state_directory = {dirs['state']}
        log_implementation = false
        [chain]
        providers = 127.0.0.1:{publish_port}
        destination = file://{dirs['dst']}/
        topic = /test/files
        publish_port = 0
        nameservers = False
    """)
    server = DaemonProcess(["move_it_server.py", "-p", str(publish_port), "--publish-address",
                            "127.0.0.1", "-v", server_ini], tmp_path / "server.log").start()
    client = DaemonProcess(["move_it_client.py", "-v", client_ini], tmp_path / "client.log").start()
    try:
        server.wait_log("Chain chain watching")
        client.wait_log("Chain chain following")
        assert "using compiled speedups" in server.log() or "using pure-Python twin" in server.log()
        assert "move_it_client" in client.log() and "starting" in client.log()
        assert "using compiled speedups" not in client.log() and "using pure-Python twin" not in client.log(), \
            "[trollmoves] log_implementation = false"
        time.sleep(0.5)
        (dirs["src"] / "one.dat").write_bytes(b"1" * 100)
        wait_for(lambda: (dirs["dst"] / "one.dat").exists(), what="one.dat at the destination")
        # add a chain and reload with SIGHUP
        other_src = tmp_path / "src2"
        other_src.mkdir()
        with open(server_ini, "a", encoding="utf-8") as stream:
            stream.write(f"\n[second]\norigin = {other_src}/{{name}}.dat\ntopic = /test/files\n"
                         f"request_port = {free_port()}\nrequest_address = 127.0.0.1\n")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_log("Chain second added")
        (other_src / "two.dat").write_bytes(b"2" * 100)
        wait_for(lambda: (dirs["dst"] / "two.dat").exists(), what="two.dat via the reloaded chain")
    finally:
        assert server.stop() == 0, server.log()[-2000:]
        assert client.stop() == 0, client.log()[-2000:]


def test_broken_config_exits_nonzero_with_a_clear_message(tmp_path):
    bad = write(tmp_path / "bad.ini", """
        [chain]
        origin = /data/{name.dat
        topic = /x
        request_port = 9
    """)
    proc = DaemonProcess(["move_it_server.py", "-p", str(free_port()), bad], tmp_path / "bad.log").start()
    code = proc.proc.wait(30)
    proc.stop()
    assert code != 0
    assert "bad.ini [chain] origin" in proc.log()
    assert "Traceback" not in proc.log()


@pytest.mark.timeout(240)
def test_hot_spare_pair_primary_killed_midway(dirs, tmp_path):
    """Two clients, same section; the primary is killed with SIGKILL midway: every file exactly once."""
    publish_port, request_port, primary_port = free_port(), free_port(), free_port()
    server_ini = write(tmp_path / "server.ini", f"""
        [chain]
        origin = {dirs['src']}/{{name}}.dat
        topic = /test/files
        request_port = {request_port}
        request_address = 127.0.0.1
    """)
    common = f"""
        destination = file://{dirs['dst']}/
        topic = /test/files
        nameservers = False
        transfer_req_timeout = 2
    """
    primary_ini = write(tmp_path / "primary.ini", f"""
        [trollmoves]
        state_directory = {tmp_path}/primary-state
        [chain]
        providers = 127.0.0.1:{publish_port}
        publish_port = {primary_port}
        {common}
    """)
    secondary_ini = write(tmp_path / "secondary.ini", f"""
        [trollmoves]
        state_directory = {tmp_path}/secondary-state
        [chain]
        providers = 127.0.0.1:{publish_port} 127.0.0.1:{primary_port}
        publish_port = 0
        processing_delay = 0.5
        {common}
    """)
    server = DaemonProcess(["move_it_server.py", "-p", str(publish_port), "-v", server_ini],
                           tmp_path / "server.log").start()
    primary = DaemonProcess(["move_it_client.py", "-v", primary_ini], tmp_path / "primary.log").start()
    secondary = DaemonProcess(["move_it_client.py", "-v", secondary_ini],
                              tmp_path / "secondary.log").start()
    names = [f"file{index:03d}" for index in range(40)]
    try:
        server.wait_log("Chain chain watching")
        primary.wait_log("Chain chain following")
        secondary.wait_log("Chain chain following")
        time.sleep(1.0)
        for index, name in enumerate(names):
            (dirs["src"] / f"{name}.dat").write_bytes(os.urandom(50_000))
            if index == 20:
                primary.kill(signal.SIGKILL)
            time.sleep(0.05)
        wait_for(lambda: all((dirs["dst"] / f"{n}.dat").exists() for n in names), timeout=90,
                 what="every file at the destination")
        time.sleep(1.0)
    finally:
        secondary.stop()
        primary.stop()
        server.stop()
    for name in names:
        assert sha256(str(dirs["dst"] / f"{name}.dat")) == sha256(str(dirs["src"] / f"{name}.dat"))
    server_log = server.log()
    for name in names:
        assert server_log.count(f"pushed {dirs['src']}/{name}.dat") == 1, f"{name} transferred more than once"
    received = primary.log().count("received file") + secondary.log().count("received file")
    assert received >= len(names)
    assert secondary.log().count("received file") > 0, "the spare never took over"


def test_client_stops_promptly_while_a_server_does_not_answer(dirs, tmp_path):
    """A request waiting for a server that never replies (transfer_req_timeout 20 s, so up to 60 s
    with resends) does not hold up the client's stop; the request stays pending for the next start."""
    import zmq

    context = zmq.Context.instance()
    silent = context.socket(zmq.ROUTER)  # takes requests, never answers
    silent.setsockopt(zmq.LINGER, 0)
    request_port = silent.bind_to_random_port("tcp://127.0.0.1")
    publisher = messaging.Publisher("silent_server", free_port(), "127.0.0.1").start()
    ini = write(tmp_path / "client.ini", f"""
        [hrit]
        providers = 127.0.0.1:{publisher.port}
        destination = file://{dirs["dst"]}/
        topic = /silent
        publish_port = 0
        publish_address = 127.0.0.1
        nameservers = False
        transfer_req_timeout = 20
    """)
    state = StateStore(str(tmp_path / "state.sqlite"))
    client = Client(load(ini, "client"), state=state)
    client.start()
    try:
        announcement = messaging.make_message("/silent", "file", {
            "uid": "stuck.dat", "uri": "/nowhere/stuck.dat", "request_address": f"127.0.0.1:{request_port}"})
        poller = zmq.Poller()
        poller.register(silent, zmq.POLLIN)
        deadline = time.monotonic() + 20
        while not poller.poll(100):  # announce until the request arrives (slow joiner)
            assert time.monotonic() < deadline, "no request reached the silent server"
            publisher.send(announcement)
    finally:
        started = time.monotonic()
        client.stop(timeout=2.0)
        stopped_in = time.monotonic() - started
        publisher.stop()
        silent.close()
    assert stopped_in < 3.0, f"stop took {stopped_in:.1f} s"
    reopened = StateStore(str(tmp_path / "state.sqlite"))
    assert [key for key, _ in reopened.pending("hrit")], "the unanswered request must stay pending"
    reopened.close()
