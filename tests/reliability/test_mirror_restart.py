"""The mirror survives a restart: inside server -> mirror -> outside client, the mirror stopped or killed.

What a user sees is asserted: (a) a file the mirror announced before it was
killed with ``kill -9`` is still delivered, byte-identical, to an outside client
that asks for it after the restart (the mirror's state store gives back both the
announcement the client catches up on and the upstream source to pull from);
(b) files the inside server announced while the mirror was down reach a running
outside client after the mirror restarts, each exactly once (the mirror catches
up from upstream and relays only what it missed).
"""

from __future__ import annotations

import logging
import os
import re
import time

import pytest

from tests.controller import DaemonProcess
from tests.daemons.helpers import Collector, load, running, sha256, wait_for, write
from tests.servers import free_port
from trollmoves.client import Client
from trollmoves.mirror import Mirror
from trollmoves.server import Server, ServerOptions
from trollmoves.state import StateStore

INSIDE_TOPIC = "/inside/hrit"
OUTSIDE_TOPIC = "/outside/hrit"


@pytest.fixture
def setup(tmp_path):
    """Directories, fixed ports and the three configs (the mirror's ports must survive its restart)."""
    made = {name: tmp_path / name for name in ("src", "mirror", "dst", "state")}
    for directory in made.values():
        directory.mkdir()
    made["server_pub"], server_req, made["mirror_pub"], mirror_req = (free_port() for _ in range(4))
    made["server_ini"] = write(tmp_path / "server.ini", f"""
        [hrit]
        origin = {made['src']}/{{name}}.dat
        topic = {INSIDE_TOPIC}
        request_port = {server_req}
        request_address = 127.0.0.1
        request_bind_address = 127.0.0.1
    """)
    made["mirror_ini"] = write(tmp_path / "mirror.ini", f"""
        [trollmoves]
        state_directory = {made['state']}

        [hrit]
        providers = 127.0.0.1:{made['server_pub']}
        client_topic = {INSIDE_TOPIC}
        destination = file://{made['mirror']}/
        origin = {made['mirror']}/{{filename}}
        request_address = 127.0.0.1
        request_bind_address = 127.0.0.1
        request_port = {mirror_req}
        topic = {OUTSIDE_TOPIC}
        transfer_req_timeout = 5
    """)
    made["client_ini"] = write(tmp_path / "client.ini", f"""
        [hrit]
        providers = 127.0.0.1:{made['mirror_pub']}
        destination = file://{made['dst']}/
        topic = {OUTSIDE_TOPIC}
        publish_port = 0
        publish_address = 127.0.0.1
        nameservers = False
        transfer_req_timeout = 5
    """)
    return made


def inside_server(setup) -> Server:
    return Server(load(setup["server_ini"], "server"),
                  ServerOptions(publish_port=setup["server_pub"], publish_address="127.0.0.1"))


def outside_client(setup) -> Client:
    state = StateStore(str(setup["state"] / "client.sqlite"))
    return Client(load(setup["client_ini"], "client"), state=state)


def in_process_mirror(setup) -> Mirror:
    return Mirror(load(setup["mirror_ini"], "mirror"),
                  ServerOptions(publish_port=setup["mirror_pub"], publish_address="127.0.0.1", backlog=False))


def mirror_process(setup, log) -> DaemonProcess:
    return DaemonProcess(["move_it_mirror.py", "-p", str(setup["mirror_pub"]), "--publish-address",
                          "127.0.0.1", "-v", setup["mirror_ini"]], log)


def drop(src, names) -> dict[str, str]:
    """Write ``<name>.dat`` files with random bytes; {file name: sha256}."""
    written = {}
    for name in names:
        path = src / f"{name}.dat"
        path.write_bytes(os.urandom(50_000))
        written[path.name] = sha256(str(path))
    return written


def connect(src, dst, timeout: float = 20.0) -> list[str]:
    """Drop probe files until one reaches the outside client, then wait for every probe; their names.

    Subscriptions take effect some time after the daemons start; once one probe
    went through, every hop is connected, and the catch-ups (mirror from the
    server, client from the mirror) recover the probes dropped before that.
    """
    deadline = time.monotonic() + timeout
    names: list[str] = []
    while not any(dst.glob("PROBE_*.dat")):
        assert time.monotonic() < deadline, "no probe file reached the outside client"
        names += drop(src, [f"PROBE_{len(names):03d}"])
        for _ in range(20):
            if any(dst.glob("PROBE_*.dat")):
                break
            time.sleep(0.05)
    wait_for(lambda: all((dst / name).exists() for name in names), 20, what="every probe delivered")
    return names


def wait_log_after(process: DaemonProcess, offset: int, pattern: str, timeout: float = 20.0) -> str:
    """Wait for ``pattern`` in a process log past ``offset`` (the log of its earlier runs is ignored)."""
    def found():
        assert process.proc.poll() is None, f"the mirror exited:\n{process.log()[-3000:]}"
        return re.search(pattern, process.log()[offset:])
    wait_for(found, timeout, 0.05, f"{pattern!r} in {process.log_path}")
    return process.log()[offset:]


def messages(records, pattern: str) -> list[str]:
    return [r.getMessage() for r in records if re.search(pattern, r.getMessage())]


@pytest.mark.timeout(60)
def test_file_announced_before_a_kill_is_still_served(setup):
    """kill -9 of the mirror process: an outside client catches up after the restart and gets the file."""
    mirror_log = setup["state"].parent / "mirror.log"
    server = inside_server(setup)
    with running(server):
        mirror = mirror_process(setup, mirror_log).start()
        try:
            mirror.wait_log("Started; config")
            with running(outside_client(setup)):
                connect(setup["src"], setup["dst"])
            # the outside client is away; the mirror relays a new file that nobody requests yet
            sums = drop(setup["src"], ["MSG4_001"])
            mirror.wait_log("re-announced MSG4_001.dat")
            mirror.kill(9)
            mirror.stop()
            assert not (setup["mirror"] / "MSG4_001.dat").exists(), "pulled before anyone asked"
            restarted_at = len(mirror.log())
            mirror = mirror_process(setup, mirror_log).start()
            wait_log_after(mirror, restarted_at, "Started; config")
            with running(outside_client(setup)):
                wait_for(lambda: (setup["dst"] / "MSG4_001.dat").exists(), 20,
                         what="the file announced before the kill at the outside client")
            wait_log_after(mirror, restarted_at, r"caught up 0 missed files from 127\.0\.0\.1:")
        finally:
            code = mirror.stop()
    assert code == 0, mirror.log()[-3000:]
    assert sha256(str(setup["dst"] / "MSG4_001.dat")) == sums["MSG4_001.dat"]
    after = mirror.log()[restarted_at:]
    assert re.search(r"Mirror chain hrit: restored [2-9]\d* announcements from the state store", after), after
    assert "pulled MSG4_001.dat" in after
    assert "re-announced" not in after, "what was restored must not be announced again"
    assert "Traceback" not in mirror.log()


@pytest.mark.timeout(60)
def test_files_announced_while_the_mirror_is_down_arrive_once(setup, caplog):
    """The mirror stopped, three files announced inside, the mirror started again: each delivered once."""
    caplog.set_level(logging.INFO, logger="trollmoves")
    server = inside_server(setup)
    with running(server), running(outside_client(setup)) as client, \
            Collector([f"tcp://127.0.0.1:{client.chains['hrit'].publisher.port}"], OUTSIDE_TOPIC) as seen:
        with running(in_process_mirror(setup)):
            probes = connect(setup["src"], setup["dst"])
        sums = drop(setup["src"], [f"MSG4_{index:03d}" for index in range(3)])
        history = server.chains["hrit"].history
        wait_for(lambda: all(str(setup["src"] / name) in history for name in sums), 10,
                 what="the inside server's announcements")
        restarted_at = len(caplog.records)
        with running(in_process_mirror(setup)):
            wait_for(lambda: all((setup["dst"] / name).exists() for name in sums), 20,
                     what="the files missed by the mirror at the outside client")
            wait_for(lambda: len([m for m in seen.finals() if m.data["uid"] in sums]) >= 3, 10,
                     what="the outside client's final messages")
            time.sleep(0.5)  # room for a duplicate to show up
    for name, digest in sums.items():
        assert sha256(str(setup["dst"] / name)) == digest
    finals = [m.data["uid"] for m in seen.finals()]
    assert sorted(uid for uid in finals if uid in sums) == sorted(sums), "each file delivered exactly once"
    after = caplog.records[restarted_at:]
    assert messages(after, rf"Mirror chain hrit: restored {len(probes)} announcements from the state store")
    assert messages(after, r"Mirror chain hrit: caught up 3 missed files from 127\.0\.0\.1:")
    announced = messages(after, r"re-announced")
    assert sorted(announced) == sorted(f"Mirror chain hrit: re-announced {name}" for name in sums), announced
    pushes = messages(caplog.records, r"pushed .*/MSG4_\d+\.dat to")
    assert len(pushes) == 6, f"one pull (inside) and one push (outside) per file: {pushes}"
