"""Helpers of the end-to-end tests of real daemons: config files, checksums, waiting, services, messages.

Why a plain module (not conftest.py): tests in tests/daemons, tests/hostile, tests/reliability,
tests/compat and tests/interop import these by name; a conftest is for fixtures and hooks, which
pytest finds by itself. Daemon *processes* are run with :class:`tests.controller.DaemonProcess`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import textwrap
import threading
import time

from tests.servers import free_port
from trollmoves import config as tm_config
from trollmoves import messaging
from trollmoves.server import Server, ServerOptions


def write(path, text: str) -> str:
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(textwrap.dedent(text))
    return path


def sha256(path: str) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def running(service, stop_timeout: float = 10.0):
    """Start a service, yield it, always stop it; errors in its threads fail the test."""
    errors = []
    previous = threading.excepthook

    def hook(args):
        errors.append(args)
        previous(args)

    threading.excepthook = hook
    service.start()
    try:
        yield service
    finally:
        service.stop(stop_timeout)
        threading.excepthook = previous
    assert not errors, f"exceptions in service threads: {[str(e.exc_value) for e in errors]}"


class Collector:
    """Collects messages from publishers in a background thread (our Subscriber)."""

    def __init__(self, addresses, topics="/"):
        self.messages: list[tuple[str, messaging.Message]] = []
        self._addresses = list(addresses)
        self._topics = topics
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        sub = messaging.Subscriber(self._addresses, self._topics)
        self._ready.set()
        try:
            while not self._stop.is_set():
                for address, message in sub.recv(0.1):
                    with self._lock:
                        self.messages.append((address, message))
        finally:
            sub.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.3)  # zmq slow joiner: let the subscriptions reach the publishers
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def of_type(self, atype: str, with_key: str | None = None, without_key: str | None = None):
        with self._lock:
            found = [m for _, m in self.messages if m.type == atype]
        if with_key:
            found = [m for m in found if isinstance(m.data, dict) and with_key in m.data]
        if without_key:
            found = [m for m in found if isinstance(m.data, dict) and without_key not in m.data]
        return found

    def finals(self):
        """The clients' final `file` messages (no request_address)."""
        return self.of_type("file", without_key="request_address")


def load(path, kind):
    """A config file read as the daemon of ``kind`` reads it (strictly: a bad key fails the test)."""
    return tm_config.load_strict(path, kind)


# --------------------------------------------------------------------------------------------------
# A server and a client on loopback (tests/daemons/test_server_client.py, tests/hostile)
# --------------------------------------------------------------------------------------------------


def server_config(dirs, request_port, extra=""):
    """Server config: one chain ``chain`` watching ``dirs["src"]``, requests on 127.0.0.1:``request_port``."""
    return load(write(dirs["state"] / "server.ini", f"""
        [chain]
        origin = {dirs['src']}/{{platform_name}}_{{number:03d}}.dat
        topic = /test/files
        request_port = {request_port}
        request_address = 127.0.0.1
        request_bind_address = 127.0.0.1
        info = sensor=avhrr;stations=a,b
        {extra}
    """), "server")


def client_config(dirs, publish_port, destination=None, extra="", name="chain", path=None):
    """Client config following a server that publishes on 127.0.0.1:``publish_port`` (no nameserver)."""
    destination = destination or f"file://{dirs['dst']}/"
    return load(write(path or dirs["state"] / "client.ini", f"""
        [{name}]
        providers = 127.0.0.1:{publish_port}
        destination = {destination}
        topic = /test/files
        publish_port = 0
        publish_address = 127.0.0.1
        nameservers = False
        transfer_req_timeout = 5
        {extra}
    """), "client")


def new_server(dirs, extra="", **options):
    """A Server (not started) of :func:`server_config` on a free request port, publishing on loopback."""
    return Server(server_config(dirs, free_port(), extra),
                  ServerOptions(publish_port=0, publish_address="127.0.0.1", **options))


def drop(dirs, count, prefix="NOAA19", size=1000, start=0):
    """Write ``count`` random files ``<prefix>_NNN.dat`` into ``dirs["src"]``; their paths."""
    paths = []
    for index in range(start, start + count):
        path = dirs["src"] / f"{prefix}_{index:03d}.dat"
        path.write_bytes(os.urandom(size))
        paths.append(str(path))
    return paths


def request_push(server, data, destination):
    """Send the server a ``push`` request for announced ``data`` to ``destination``, as a client would."""
    request = dict(data)
    request["destination"] = destination
    address = server.request_address(server.config.chains[0])
    return messaging.Requester(address).request(messaging.make_message("/test/files", "push", request), 10)


# --------------------------------------------------------------------------------------------------
# An upstream producer and files for the dispatcher, move_it and s3downloader tests
# --------------------------------------------------------------------------------------------------


class Feed:
    """A publisher of test messages on 127.0.0.1, as an upstream producer would run one."""

    def __init__(self, name: str = "feed", nameservers=False):
        self.publisher = messaging.Publisher(name, 0, "127.0.0.1", nameservers=nameservers).start()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.publisher.port}"

    def send(self, subject: str, atype: str, data) -> None:
        assert self.publisher.send(messaging.make_message(subject, atype, data))

    def send_raw(self, raw: str) -> None:
        self.publisher.send(raw)

    def wait_subscribed(self, service, subject: str, label: str, timeout: float = 20.0) -> None:
        """Send beats on ``subject`` until ``service`` counts one more: its subscription is then live."""
        def beats():
            return service.metrics.registry.get_sample_value(
                "trollmoves_messages_received_total", {"chain": label, "type": "beat"}) or 0

        before = beats()

        def counted():
            self.send(subject, "beat", {"probe": True})
            return beats() > before
        wait_for(counted, timeout, 0.1, "the service to receive from the feed")

    def stop(self) -> None:
        self.publisher.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def subscriber_yaml(feed: Feed, more: str = "") -> str:
    """The ``posttroll_subscriber`` section of a test config (direct subscription to the feed)."""
    return f"""
        posttroll_subscriber:
          subscribe_addresses: [{feed.address}]
          nameserver: false""" + more


def sample(service, name: str, **labels) -> float:
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


def make_file(directory, name: str, size: int = 2000) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as stream:
        stream.write(os.urandom(size))
    return path
