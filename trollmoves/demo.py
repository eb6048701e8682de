"""``trollmoves demo``: nameserver, server and client on loopback, and files moving between them.

It writes an embedded default server and client config into a work directory,
starts a posttroll nameserver (no multicast), a server watching ``<work>/outbox``
and a client whose destination is ``<work>/inbox``, drops a few files into the
outbox and prints each step as it happens: announced, pushed, arrived (with the
checksum verified against the source). Exit status 0 when every file arrived
byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time

SERVER_INI = """\
# trollmoves demo server: watch the outbox, announce on the publisher, serve pushes.
[demo]
origin = {work}/outbox/{{platform_name}}_{{start_time:%Y%m%d_%H%M}}_{{segment:03d}}.dat
topic = /demo/hrit
request_port = {request_port}
request_address = 127.0.0.1
request_bind_address = 127.0.0.1
info = sensor=seviri;variant=demo
delete = False
"""

CLIENT_INI = """\
# trollmoves demo client: follow the demo server, have its files pushed into the inbox.
[demo]
providers = 127.0.0.1:{publish_port}
destination = file://{work}/inbox/{{platform_name}}/
topic = /demo/hrit
publish_port = 0
publish_address = 127.0.0.1
nameservers = {nameservers}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sha256(path: str) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trollmoves demo",
        description="Run a nameserver, a server and a client on loopback with an embedded default config, "
                    "drop files in the watched directory and show them arriving at the destination.")
    parser.add_argument("--files", type=int, default=5, help="how many files to drop (default 5)")
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per file (default 65536)")
    parser.add_argument("--workdir", help="work directory (default: a new temporary directory, removed after)")
    parser.add_argument("--no-nameserver", action="store_true", help="do not start a posttroll nameserver")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the files (default 30)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the daemons' logs")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="[%(asctime)s %(levelname)-8s %(name)s] %(message)s")
    from trollmoves import config as tm_config
    from trollmoves import messaging
    from trollmoves._accel import IMPLEMENTATION
    from trollmoves.client import Client
    from trollmoves.server import Server, ServerOptions
    from trollmoves.state import StateStore

    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="trollmoves-demo-"))
    for sub in ("outbox", "inbox"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    say = print
    say(f"trollmoves demo in {work} (speedups: {IMPLEMENTATION})")

    nameserver = None
    if not args.no_nameserver:
        try:
            nameserver = messaging.NameServerThread("127.0.0.1").start()
            say("- nameserver started (no multicast)")
        except Exception as exc:  # noqa: BLE001 - the demo works without one
            say(f"- nameserver not started ({exc}); continuing with direct addresses")

    publish_port, request_port = _free_port(), _free_port()
    server_ini = os.path.join(work, "server.ini")
    client_ini = os.path.join(work, "client.ini")
    with open(server_ini, "w", encoding="utf-8") as stream:
        stream.write(SERVER_INI.format(work=work, request_port=request_port))
    with open(client_ini, "w", encoding="utf-8") as stream:
        stream.write(CLIENT_INI.format(work=work, publish_port=publish_port,
                                       nameservers="localhost" if nameserver else "False"))
    server = Server(tm_config.load_strict(server_ini, "server"),
                    ServerOptions(publish_port=publish_port, publish_address="127.0.0.1", backlog=False))
    client = Client(tm_config.load_strict(client_ini, "client"), state=StateStore(os.path.join(work, "state.db")))
    server.start()
    say(f"- server started: watching {work}/outbox, publishing on 127.0.0.1:{publish_port}, "
        f"requests on 127.0.0.1:{request_port}")
    client.start()
    client_port = client.chains["demo"].publisher.port
    say(f"- client started: destination {work}/inbox, publishing on port {client_port}")

    watcher = messaging.Subscriber([f"tcp://127.0.0.1:{publish_port}", f"tcp://127.0.0.1:{client_port}"],
                                   "/demo")
    stop = threading.Event()
    arrived: dict[str, str] = {}
    arrivals: dict[str, int] = {}

    def watch() -> None:
        while not stop.is_set():
            for _address, message in watcher.recv(0.2):
                uid = message.data.get("uid") if isinstance(message.data, dict) else None
                if message.type == "file" and "request_address" in message.data:
                    say(f"  announced  {uid} ({message.data.get('size')} bytes, "
                        f"{message.data.get('checksum', {}).get('method', 'no')} checksum)")
                elif message.type == "file":
                    arrived[uid] = message.data["uri"]
                    arrivals[uid] = arrivals.get(uid, 0) + 1
                    say(f"  arrived    {uid} -> {message.data['uri']}")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.5)
    sources = {}
    start = time.monotonic()
    for index in range(args.files):
        name = f"MSG4_20260101_1200_{index:03d}.dat"
        path = os.path.join(work, "outbox", name)
        with open(path, "wb") as stream:
            stream.write(os.urandom(args.size))
        sources[name] = path
    say(f"- dropped {args.files} files of {args.size} bytes into the outbox")
    deadline = time.monotonic() + args.timeout
    while len(arrived) < len(sources) and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    stop.set()
    thread.join(2)
    watcher.close()
    client.stop(5)
    server.stop(5)
    if nameserver is not None:
        nameserver.stop()

    good = sum(1 for name, uri in arrived.items() if os.path.exists(uri) and _sha256(uri) == _sha256(sources[name]))
    duplicates = sum(count - 1 for count in arrivals.values())
    say(f"- {good}/{len(sources)} files arrived byte-identical in {elapsed:.2f} s; "
        f"{duplicates} duplicate arrival messages")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if good == len(sources) and not duplicates else 1
