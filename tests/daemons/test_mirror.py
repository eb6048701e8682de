"""Mirror end to end: inside server -> mirror -> outside client, three real processes."""

from __future__ import annotations

import os
import time

import pytest

from tests.daemons.conftest import Collector, DaemonProcess, free_port, script, sha256, wait_for, write

ORIGINAL = os.path.join(os.environ.get("TROLLMOVES_019_VENV", "/opt/trollmoves-0.19-venv"), "bin")


def _setup(tmp_path, client_program):
    src, mirror_dir, dst = (tmp_path / name for name in ("src", "mirror", "dst"))
    for directory in (src, mirror_dir, dst):
        directory.mkdir()
    server_pub, server_req, mirror_pub, mirror_req, client_pub = (free_port() for _ in range(5))
    server_ini = write(tmp_path / "server.ini", f"""
        [hrit]
        origin = {src}/{{platform_name}}_{{number:03d}}.dat
        topic = /inside/hrit
        request_port = {server_req}
        request_address = 127.0.0.1
        info = sensor=seviri
    """)
    mirror_ini = write(tmp_path / "mirror.ini", f"""
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
        DaemonProcess([script("move_it_server.py"), "-p", str(server_pub), "--disable-backlog", "-v", server_ini],
                      tmp_path / "server.log"),
        DaemonProcess([script("move_it_mirror.py"), "-p", str(mirror_pub), "-v", mirror_ini],
                      tmp_path / "mirror.log"),
        DaemonProcess([client_program, "-v", client_ini], tmp_path / "client.log"),
    ]
    return src, mirror_dir, dst, client_pub, processes


@pytest.mark.parametrize("client", ["ours", "original-0.19"])
@pytest.mark.timeout(120)
def test_inside_server_mirror_outside_client(tmp_path, client):
    if client == "ours":
        program = script("move_it_client.py")
    else:
        program = os.path.join(ORIGINAL, "move_it_client.py")
        if not os.path.exists(program):
            pytest.skip("trollmoves 0.19.0 not installed (tests/run_all.sh makes it)")
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
