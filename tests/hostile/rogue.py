"""A rogue provider for client tests: a real publisher and request port that lie in chosen ways.

It announces what a test gives it and, on a push, delivers the announced file to the requested
destination (so the client has something real), then replies with the request's data updated by
the test's ``reply_changes`` for that uid: a uid or destination the client must not trust.
"""

from __future__ import annotations

import os
import shutil
import threading
from urllib.parse import urlsplit

from tests.daemons.helpers import load, subscriber_yaml, wait_for, write
from trollmoves import messaging
from trollmoves.client import Client
from trollmoves.state import StateStore


class RogueServer:
    """Publisher + request port on 127.0.0.1; ``pushes`` records every push request received."""

    def __init__(self, reply_changes: dict[str, dict] | None = None):
        self.reply_changes = reply_changes or {}
        self.pushes: list[dict] = []
        self.publisher = messaging.Publisher("move_it_server", 0, "127.0.0.1")
        self.requests = messaging.RequestServer(0, "127.0.0.1")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.publisher.start()
        self.requests.start()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.requests.close()
        self.publisher.stop()

    @property
    def request_address(self) -> str:
        return f"127.0.0.1:{self.requests.port}"

    def announce(self, path: str, **fields) -> None:
        data = {"uri": path, "uid": os.path.basename(path), "request_address": self.request_address}
        data.update(fields)
        self.publisher.send(messaging.make_message("/test/files", "file", data))

    def _serve(self):
        while not self._stop.is_set():
            for request in self.requests.poll(0.1):
                if request.message is None or request.message.type != "push":
                    reply = messaging.make_message("/test/files", "pong" if request.message else "err", {})
                    self.requests.reply(request, reply)
                    continue
                data = dict(request.message.data)
                self.pushes.append(data)
                target = os.path.join(urlsplit(data["destination"]).path, os.path.basename(data["uri"]))
                if os.path.isfile(data["uri"]) and os.path.isdir(os.path.dirname(target)):
                    shutil.copyfile(data["uri"], target)
                data.update(self.reply_changes.get(os.path.basename(data["uri"]), {}))
                self.requests.reply(request, messaging.make_message(request.message.subject, "file", data))


def client_with_rogue(dirs, server_port: int, rogue_port: int) -> Client:
    """A client following a genuine server and a rogue publisher, both listed in its ``providers``."""
    config = load(write(dirs["state"] / "client.ini", f"""
        [chain]
        providers = 127.0.0.1:{server_port} 127.0.0.1:{rogue_port}
        destination = file://{dirs['dst']}/
        topic = /test/files
        publish_port = 0
        publish_address = 127.0.0.1
        nameservers = False
        transfer_req_timeout = 5
    """), "client")
    return Client(config, state=StateStore(None))


def archive_dispatcher(feed, tmp_path):
    """A dispatcher fed by ``feed`` that copies ``/product`` files into ``tmp_path/archive``."""
    from trollmoves.dispatcher import Dispatcher, DispatcherOptions

    config = load(write(tmp_path / "dispatch.yaml", subscriber_yaml(feed) + f"""
        trollmoves:
          state_directory: {tmp_path}/state
        local-archive:
          host: ""
          directory: {tmp_path / "archive"}
          publish_topic: /dispatched
          dispatch_configs:
            - topics: [/product]
        """), "dispatcher")
    return Dispatcher(config, DispatcherOptions(publish_port=0, publish_address="127.0.0.1",
                                                publish_nameservers=False))


def wait_heard(client, send) -> None:
    """Call ``send()`` until the client's subscriber counts one more malformed message (no slow joiner)."""
    def counted():
        send()
        subscriber = client.chains["chain"].subscriber
        return subscriber is not None and subscriber.malformed > before
    subscriber = client.chains["chain"].subscriber
    before = subscriber.malformed if subscriber is not None else 0
    wait_for(counted, 20, 0.2, "the client to hear the rogue provider")
