"""Mirror end to end: inside server -> mirror -> outside client, three real processes."""

from __future__ import annotations

import datetime as dt
import logging
import os
import textwrap
import threading
import time

import pytest

from tests.controller import DaemonProcess, console_script
from tests.daemons.helpers import Collector, load, running, sha256, wait_for, write
from tests.servers import free_port, require_or_skip
from trollmoves import messaging
from trollmoves.errors import ConfigError
from trollmoves.mirror import Mirror, ServerOptions
from trollmoves.server import Server
from trollmoves.state import StateStore

ORIGINAL = os.path.join(os.environ.get("TROLLMOVES_019_VENV", "/opt/trollmoves-0.19-venv"), "bin")


def _inside_server_ini(tmp_path, src, request_port, extra=""):
    """The inside server of these tests: MSG4_nnn.dat files on /inside/hrit."""
    return write(tmp_path / "server.ini", f"""
        [hrit]
        origin = {src}/{{platform_name}}_{{number:03d}}.dat
        topic = /inside/hrit
        request_port = {request_port}
        request_address = 127.0.0.1
        {extra}
    """)


def _setup(tmp_path, client_program):
    src, mirror_dir, dst = (tmp_path / name for name in ("src", "mirror", "dst"))
    for directory in (src, mirror_dir, dst):
        directory.mkdir()
    server_pub, server_req, mirror_pub, mirror_req, client_pub = (free_port() for _ in range(5))
    server_ini = _inside_server_ini(tmp_path, src, server_req, "info = sensor=seviri")
    mirror_ini = write(tmp_path / "mirror.ini", f"""
        [trollmoves]
        state_directory = {tmp_path}/state

        [hrit]
        providers = 127.0.0.1:{server_pub}
        client_topic = /inside/hrit
        destination = file://{mirror_dir}/
        origin = {mirror_dir}/{{filename}}
        request_address = 127.0.0.1
        request_port = {mirror_req}
        topic = /outside/hrit
        delete = True
        remove_delay = 1
    """)
    client_ini = write(tmp_path / "client.ini", f"""
        [hrit]
        providers = 127.0.0.1:{mirror_pub}
        destination = file://{dst}/
        topic = /outside/hrit
        publish_port = {client_pub}
        nameservers = False
    """)
    processes = [
        DaemonProcess(["move_it_server.py", "-p", str(server_pub), "--disable-backlog", "-v", server_ini],
                      tmp_path / "server.log"),
        DaemonProcess(["move_it_mirror.py", "-p", str(mirror_pub), "-v", mirror_ini],
                      tmp_path / "mirror.log"),
        DaemonProcess([client_program, "-v", client_ini], tmp_path / "client.log"),
    ]
    return src, mirror_dir, dst, client_pub, processes


@pytest.mark.parametrize("client", ["ours", "original-0.19"])
@pytest.mark.timeout(120)
def test_inside_server_mirror_outside_client(tmp_path, client):
    if client == "ours":
        program = console_script("move_it_client.py")
    else:
        program = os.path.join(ORIGINAL, "move_it_client.py")
        if not os.path.exists(program):
            require_or_skip("trollmoves 0.19.0 not installed (tests/run_all.sh makes it)")
    src, mirror_dir, dst, client_pub, processes = _setup(tmp_path, program)
    server, mirror, outside = processes
    try:
        for process in processes:
            process.start()
        server.wait_log("Chain hrit watching")
        mirror.wait_log("Publisher move_it_mirror listening")
        if client == "ours":
            outside.wait_log("Chain hrit following")
        _wait_until_connected(src, dst)
        with Collector([f"tcp://127.0.0.1:{client_pub}"], "/outside") as seen:
            time.sleep(1.0)
            sources = []
            for index in range(3):
                path = src / f"MSG4_{index:03d}.dat"
                path.write_bytes(os.urandom(100_000))
                sources.append(path)
            wait_for(lambda: all((dst / p.name).exists() for p in sources), timeout=60,
                     what="files at the outside client's destination")
            wait_for(lambda: len([m for m in seen.of_type("file") if "origin" in m.data
                                  and m.data["uid"].startswith("MSG4")]) == 3, timeout=30,
                     what="three final messages")
        for path in sources:
            assert sha256(str(dst / path.name)) == sha256(str(path))
        final = [m for m in seen.of_type("file") if "origin" in m.data and m.data["uid"].startswith("MSG4")][0]
        assert final.data["origin"] == f"127.0.0.1:{mirror.args and _mirror_req(tmp_path)}"
        assert final.data["sensor"] == "seviri"
        wait_for(lambda: not any(mirror_dir.iterdir()), timeout=15, what="the mirror's copies removed (delete)")
    finally:
        for process in reversed(processes):
            process.stop()


def _wait_until_connected(src, dst, timeout=45.0):
    """Drop probe files until one reaches the outside client: every subscription is then in place.

    PUB/SUB subscriptions take effect some time after the processes start (slow
    joiners), and the original 0.19 client has no catch-up to recover a file
    announced before it was listening.
    """
    deadline = time.monotonic() + timeout
    index = 0
    while time.monotonic() < deadline:
        (src / f"PROBE_{index:03d}.dat").write_bytes(b"probe")
        index += 1
        for _ in range(10):
            if any(dst.glob("PROBE_*.dat")):
                return
            time.sleep(0.1)
    raise AssertionError("no probe file reached the outside client")


def _mirror_req(tmp_path):
    for line in (tmp_path / "mirror.ini").read_text().splitlines():
        if line.strip().startswith("request_port"):
            return line.split("=")[1].strip()
    raise AssertionError("no request_port")


# --------------------------------------------------------------------------------------------------
# Persistence: what was relayed survives a restart; upstream catch-up (the end-to-end forms with
# real daemons and kill -9 are in tests/reliability/test_mirror_restart.py)
# --------------------------------------------------------------------------------------------------

class OriginalUpstream:
    """A request port answering ``info`` as trollmoves 0.19 does: a file list, no ``announcements``."""

    def __init__(self):
        self.server = messaging.RequestServer(0, "127.0.0.1").start()
        self.address = f"127.0.0.1:{self.server.port}"
        self.infos = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for request in self.server.poll(0.1):
                self.infos += 1
                self.server.reply(request, messaging.make_message(
                    request.message.subject, "info", {"files": [], "max_count": 0, "uptime": "0:00:01"}))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.server.close()


def _mirror_config(tmp_path, extra="", state_directory=None):
    daemon = f"[trollmoves]\nstate_directory = {state_directory}\n" if state_directory else ""
    return load(write(tmp_path / "mirror.ini", daemon + textwrap.dedent(f"""
        [hrit]
        providers = 127.0.0.1:{free_port()}
        client_topic = /inside/hrit
        destination = file://{tmp_path}/mirror/
        origin = {tmp_path}/mirror/{{filename}}
        request_address = 127.0.0.1
        request_bind_address = 127.0.0.1
        request_port = {free_port()}
        topic = /outside/hrit
        transfer_req_timeout = 1
        {extra}
    """)), "mirror")


def _new_mirror(config, state):
    return Mirror(config, ServerOptions(publish_port=0, publish_address="127.0.0.1"), state=state)


def _announcement(name, request_address, when):
    return messaging.make_message("/inside/hrit", "file", {
        "uri": f"/upstream/{name}", "uid": name, "request_address": request_address, "start_time": when})


def test_restart_restores_the_relayed_announcements_without_announcing_them(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="trollmoves")
    config = _mirror_config(tmp_path, "announce_history = 3")
    store = StateStore(str(tmp_path / "mirror.sqlite"))
    when = dt.datetime(2024, 5, 1, 12, 30)
    with OriginalUpstream() as upstream:
        with running(_new_mirror(config, store)) as mirror:
            chain = mirror.chains["hrit"]
            for index in range(5):
                assert chain.from_upstream(_announcement(f"H_{index}.dat", upstream.address, when))
            assert not chain.from_upstream(_announcement("H_4.dat", upstream.address, when)), "relayed twice"
            wait_for(lambda: "re-announced H_4.dat" in caplog.text, what="the last re-announcement")
            before = {path: announced.time for path, announced in chain.history.items()}
        restarted_at = len(caplog.records)
        with running(_new_mirror(config, store)) as mirror:
            chain = mirror.chains["hrit"]
            kept = [f"/upstream/H_{index}.dat" for index in (2, 3, 4)]
            assert list(chain.sources) == kept, "the newest announce_history announcements"
            assert chain.sources[kept[0]][0].data["start_time"] == when, "typed as when received"
            assert chain.refusal(kept[0]) is None and chain.refusal("/upstream/H_0.dat") == "not_announced"
            reply = messaging.Requester(mirror.request_address(config.chains[0])).request(
                messaging.make_message("/outside/hrit", "info", {"catch_up": {"since": 0}}), 5)
            announcements = reply.data["announcements"]
            assert [a["data"]["uid"] for a in announcements] == ["H_2.dat", "H_3.dat", "H_4.dat"]
            own = f"127.0.0.1:{config.chains[0].request_port}"
            assert {a["data"]["request_address"] for a in announcements} == {own}
            assert [a["time"] for a in announcements] == [before[path] for path in kept], "original times"
            wait_for(lambda: upstream.infos >= 1, what="the catch-up request to the known upstream")
            assert not chain.from_upstream(_announcement("H_3.dat", upstream.address, when)), "known already"
    after = caplog.records[restarted_at:]
    said = [r.getMessage() for r in after]
    assert "Mirror chain hrit: restored 3 announcements from the state store" in said
    assert not [m for m in said if "re-announced" in m]
    store.close()


def test_an_upstream_without_catch_up_is_said_once_at_info(tmp_path, caplog):
    """An original 0.19 server answers ``info`` without announcements: not an error, said once."""
    caplog.set_level(logging.DEBUG, logger="trollmoves")
    store = StateStore(None)
    with OriginalUpstream() as upstream:
        store.touch_provider("hrit", upstream.address, time.time() - 60)
        with running(_new_mirror(_mirror_config(tmp_path), store)) as mirror:
            wait_for(lambda: upstream.infos == 1, what="the catch-up request at start")
            assert mirror.chains["hrit"].catch_up(upstream.address, 0) == 0
    said = [r for r in caplog.records if "does not offer catch-up" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO]
    assert upstream.address in said[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "trollmoves.mirror"]
    store.close()


def test_an_unwritable_state_directory_is_a_config_error_at_start(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    config = _mirror_config(tmp_path, state_directory=f"{tmp_path}/a-file/state")
    mirror = Mirror(config, ServerOptions(publish_port=0, publish_address="127.0.0.1"))
    with pytest.raises(ConfigError, match="a-file/state"):
        mirror.start()
    mirror.stop(1.0)


def test_an_announcement_still_delayed_at_stop_is_sent_after_the_restart(tmp_path, caplog):
    """With ``delay``, a relay not yet announced when the mirror stopped is announced once it is due."""
    caplog.set_level(logging.INFO, logger="trollmoves")
    config = _mirror_config(tmp_path, "delay = 1.5")
    store = StateStore(str(tmp_path / "mirror.sqlite"))
    with OriginalUpstream() as upstream:
        with running(_new_mirror(config, store)) as mirror:
            assert mirror.chains["hrit"].from_upstream(_announcement("D_0.dat", upstream.address, None))
        assert "re-announced D_0.dat" not in caplog.text, "stopped before the delay was over"
        with running(_new_mirror(config, store)):
            wait_for(lambda: "re-announced D_0.dat" in caplog.text, 5, what="the delayed announcement")
            time.sleep(0.2)
    assert caplog.text.count("re-announced D_0.dat") == 1
    store.close()


def test_an_announcement_lost_on_the_way_is_relayed_by_the_periodic_catch_up(tmp_path, caplog):
    """The inside server recorded a file whose announcement never reached the mirror (a network
    cut, a slow joiner): the mirror's periodic catch-up relays it, once."""
    caplog.set_level(logging.INFO, logger="trollmoves")
    src = tmp_path / "src"
    src.mkdir()
    server_pub, server_req, mirror_pub = free_port(), free_port(), free_port()
    server_ini = _inside_server_ini(tmp_path, src, server_req)
    mirror_config = load(write(tmp_path / "mirror.ini", f"""
        [hrit]
        providers = 127.0.0.1:{server_pub}
        client_topic = /inside/hrit
        destination = file://{tmp_path}/mirror/
        origin = {tmp_path}/mirror/{{filename}}
        request_address = 127.0.0.1
        request_port = {free_port()}
        topic = /outside/hrit
    """), "mirror")
    server = Server(load(server_ini, "server"), ServerOptions(publish_port=server_pub, publish_address="127.0.0.1",
                                                              backlog=False))
    store = StateStore(str(tmp_path / "mirror.sqlite"))
    mirror = Mirror(mirror_config, ServerOptions(publish_port=mirror_pub, publish_address="127.0.0.1"), state=store)
    with running(server), running(mirror):
        inside, relay = server.chains["hrit"], mirror.chains["hrit"]
        relay.periodic_catch_up = 1.0
        (src / "MSG4_000.dat").write_bytes(b"heard")
        wait_for(lambda: "re-announced MSG4_000.dat" in caplog.text, what="a first relay (the upstream is known)")
        with Collector([f"tcp://127.0.0.1:{mirror_pub}"], "/outside") as seen:
            lost, outside = src / "MSG4_001.dat", tmp_path / "MSG4_001.dat"
            outside.write_bytes(b"lost")
            os.link(outside, lost)  # a new link is no close-after-write: the server's watcher stays silent
            inside.remember(str(lost), "file", inside.message_data(  # recorded, never published
                str(lost), inside.matcher.parse(str(lost)), os.stat(lost)))
            wait_for(lambda: [m for m in seen.of_type("file") if m.data.get("uid") == "MSG4_001.dat"], timeout=15,
                     what="the lost file relayed by the periodic catch-up")
            time.sleep(2.5)  # two more periodic catch-ups: no second relay
            relayed = [m for m in seen.of_type("file") if m.data.get("uid") == "MSG4_001.dat"]
    assert len(relayed) == 1
    assert relayed[0].data["request_address"] == mirror.request_address(mirror_config.chains[0])
    store.close()
