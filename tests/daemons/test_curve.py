"""CURVE authentication on the request and publish sockets: only known client keys get in."""

from __future__ import annotations

import os

import pytest
import zmq.auth

from tests.daemons.helpers import Collector, load, running, sha256, wait_for, write
from tests.servers import free_port
from trollmoves import messaging
from trollmoves.client import Client
from trollmoves.errors import RequestError
from trollmoves.server import Server, ServerOptions
from trollmoves.state import StateStore


@pytest.fixture
def keys(tmp_path):
    made = {}
    for name in ("server", "client", "intruder"):
        directory = tmp_path / "keys" / name
        directory.mkdir(parents=True)
        public, secret = zmq.auth.create_certificates(str(directory), name)
        made[name] = {"public": public, "secret": secret}
    allowed = tmp_path / "keys" / "allowed"
    allowed.mkdir()
    os.link(made["client"]["public"], allowed / "client.key")
    made["allowed"] = str(allowed)
    return made


def test_curve_request_port_and_publisher(tmp_path, keys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    request_port = free_port()
    server_cfg = load(write(tmp_path / "server.ini", f"""
        [trollmoves]
        curve_secret_key_file = {keys['server']['secret']}
        curve_clients_directory = {keys['allowed']}
        [secure]
        origin = {src}/{{name}}.dat
        topic = /secure
        request_port = {request_port}
        request_address = 127.0.0.1
        curve_secret_key_file = {keys['server']['secret']}
        curve_clients_directory = {keys['allowed']}
    """), "server")
    server = Server(server_cfg, ServerOptions(publish_port=0, publish_address="127.0.0.1"))
    with running(server):
        client_cfg = load(write(tmp_path / "client.ini", f"""
            [secure]
            providers = 127.0.0.1:{server.publisher.port}
            destination = file://{dst}/
            topic = /secure
            nameservers = False
            publish_address = 127.0.0.1
            curve_secret_key_file = {keys['client']['secret']}
            curve_server_public_key_file = {keys['server']['public']}
        """), "client")
        client = Client(client_cfg, state=StateStore(None))
        with running(client):
            with Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/secure") as eavesdropper:
                (src / "one.dat").write_bytes(b"secret payload")
                wait_for(lambda: (dst / "one.dat").exists(), what="the file via CURVE")
            assert sha256(str(dst / "one.dat")) == sha256(str(src / "one.dat"))
            assert eavesdropper.messages == [], "an unauthenticated subscriber received announcements"
            ping = messaging.make_message("/secure", "ping")
            with pytest.raises(RequestError):
                messaging.Requester(f"127.0.0.1:{request_port}").request(ping, timeout=1.5)
            intruder = messaging.CurveClientKeys(keys["intruder"]["secret"], keys["server"]["public"])
            with pytest.raises(RequestError):
                messaging.Requester(f"127.0.0.1:{request_port}", intruder).request(ping, timeout=1.5)
            friend = messaging.CurveClientKeys(keys["client"]["secret"], keys["server"]["public"])
            assert messaging.Requester(f"127.0.0.1:{request_port}", friend).request(ping, 5).type == "pong"


def test_curve_keys_must_come_in_pairs(tmp_path, keys):
    cfg = write(tmp_path / "half.ini", f"""
        [half]
        origin = {tmp_path}/{{name}}.dat
        topic = /x
        request_port = {free_port()}
        curve_secret_key_file = {keys['server']['secret']}
    """)
    from trollmoves import config

    errors = config.load(cfg, "server").errors
    assert any("half.ini [half] curve_clients_directory" in error for error in errors), errors
