"""The compatibility contract: trollmoves 0.19.0 (from PyPI, in its own venv) and ours, both ways.

(a) the original client receives files from our server; (b) our client receives
files from the original server. Both over loopback, with a posttroll nameserver
started with --no-multicast (the clients register their publishers with it).
The venv is made by tests/run_all.sh (TROLLMOVES_019_VENV).
"""

from __future__ import annotations

import os
import time

import pytest

from tests import servers
from tests.controller import DaemonProcess
from tests.daemons.helpers import Collector, sha256, wait_for, write
from tests.servers import free_port

VENV = os.environ.get("TROLLMOVES_019_VENV", "/opt/trollmoves-0.19-venv")
ORIGINAL = os.path.join(VENV, "bin")



@pytest.fixture(scope="module", autouse=True)
def _original_019():
    """Skip without trollmoves 0.19's venv; under TROLLMOVES_REQUIRE_SERVERS=1 that is a failure."""
    if not os.path.exists(os.path.join(ORIGINAL, "move_it_client.py")):
        servers.require_or_skip(f"trollmoves 0.19.0 is not installed in {VENV} (tests/run_all.sh makes it)")


def _files(src, count, prefix):
    paths = []
    for index in range(count):
        path = src / f"{prefix}_{index:03d}.dat"
        path.write_bytes(os.urandom(2000 + index))
        paths.append(path)
    return paths


@pytest.mark.timeout(120)
def test_original_client_receives_from_our_server(tmp_path, nameserver):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    publish_port, request_port, client_port = free_port(), free_port(), free_port()
    server_ini = write(tmp_path / "server.ini", f"""
        [interop]
        origin = {src}/{{platform_name}}_{{number:03d}}.dat
        topic = /interop/ours
        request_port = {request_port}
        request_address = 127.0.0.1
        info = sensor=avhrr
    """)
    client_ini = write(tmp_path / "client.ini", f"""
        [interop]
        providers = 127.0.0.1:{publish_port}
        destination = file://{dst}/
        topic = /interop/ours
        publish_port = {client_port}
        nameservers = localhost
    """)
    server = DaemonProcess(["move_it_server.py", "-p", str(publish_port), "--disable-backlog", "-v",
                            server_ini], tmp_path / "server.log").start()
    client = DaemonProcess([os.path.join(ORIGINAL, "move_it_client.py"), "-v", client_ini],
                           tmp_path / "client.log").start()
    try:
        server.wait_log("Chain interop watching")
        with Collector([f"tcp://127.0.0.1:{client_port}"], "/interop") as seen:
            time.sleep(2.0)  # the original client subscribes in its own time
            sources = _files(src, 3, "NOAA19")
            wait_for(lambda: len([m for m in seen.of_type("file") if "origin" in m.data]) == 3, timeout=60,
                     what="the original client's three file messages")
        for path in sources:
            assert sha256(str(dst / path.name)) == sha256(str(path))
        final = [m for m in seen.of_type("file") if "origin" in m.data][0]
        assert final.data["origin"] == f"127.0.0.1:{request_port}"
        assert final.data["uri"].startswith(str(dst))
        assert final.data["sensor"] == "avhrr"
        assert seen.of_type("push") and seen.of_type("ack"), "the original client publishes push and ack"
    finally:
        client.stop()
        assert server.stop() == 0


@pytest.mark.timeout(120)
def test_our_client_receives_from_the_original_server(tmp_path, nameserver):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    publish_port, request_port = free_port(), free_port()
    server_ini = write(tmp_path / "server.ini", f"""
        [interop]
        origin = {src}/{{platform_name}}_{{number:03d}}.dat
        topic = /interop/original
        request_port = {request_port}
        request_address = 127.0.0.1
        info = sensor=viirs
    """)
    client_ini = write(tmp_path / "client.ini", f"""
        [trollmoves]
        state_directory = {tmp_path}/state
        [interop]
        providers = 127.0.0.1:{publish_port}
        destination = file://{dst}/
        topic = /interop/original
        publish_port = 0
        publish_address = 127.0.0.1
        nameservers = localhost
    """)
    server = DaemonProcess([os.path.join(ORIGINAL, "move_it_server.py"), "-p", str(publish_port),
                            "--disable-backlog", "-v", server_ini], tmp_path / "server.log").start()
    client = DaemonProcess(["move_it_client.py", "-v", client_ini], tmp_path / "client.log").start()
    try:
        client.wait_log("Chain interop following")
        time.sleep(4.0)  # the original server starts its chains after a few seconds
        sources = _files(src, 3, "NPP")
        wait_for(lambda: all((dst / p.name).exists() for p in sources), timeout=60, what="three files")
        for path in sources:
            wait_for(lambda path=path: sha256(str(dst / path.name)) == sha256(str(path)), timeout=10,
                     what=f"{path.name} complete")
        # On a new provider's first announcement ours asks it (an ``info`` request with ``catch_up``) what it
        # announced meanwhile; 0.19's reply has no ``announcements``, so the client says so and goes on.
        client.wait_log(f"Chain interop: 127.0.0.1:{request_port} does not offer catch-up "
                        "(an original trollmoves server?)", timeout=20)
        assert "no catch-up from" not in client.log()
        from trollmoves.metrics import Metrics  # noqa: F401 - the client process exports them; here: the log
        assert client.log().count("received NPP_") == 3
    finally:
        assert client.stop() == 0
        server.stop()
