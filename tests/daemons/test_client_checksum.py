"""The client's ``checksum`` key: a delivered copy is verified against the announced checksum.

A peer that announces one content and delivers another (here a stand-in server whose push
writes corrupted bytes, over real sockets) must not get a ``file`` message published for the
corrupt copy; the copy is removed and the failure counted. A genuine file still arrives.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from urllib.parse import urlsplit

import xxhash

from tests.daemons.helpers import Collector, load, running, wait_for, write
from trollmoves import messaging
from trollmoves.client import Client
from trollmoves.state import StateStore


class CorruptingServer:
    """Announces files with their true xxh3_128; on push, writes them to the destination, some corrupted."""

    def __init__(self, corrupt: set[str]):
        self.corrupt = corrupt
        self.publisher = messaging.Publisher("move_it_server", 0, "127.0.0.1")
        self.requests = messaging.RequestServer(0, "127.0.0.1")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self.publisher.start()
        self.requests.start()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.requests.close()
        self.publisher.stop()

    def announce(self, path: str) -> None:
        with open(path, "rb") as stream:
            value = xxhash.xxh3_128_hexdigest(stream.read())
        self.publisher.send(messaging.make_message("/test/files", "file", {
            "uri": path, "uid": os.path.basename(path), "request_address": f"127.0.0.1:{self.requests.port}",
            "checksum": {"method": "xxh3_128", "value": value}}))

    def _serve(self):
        while not self._stop.is_set():
            for request in self.requests.poll(0.1):
                data = dict(request.message.data)
                target = os.path.join(urlsplit(data["destination"]).path, data["uid"])
                if data["uid"] in self.corrupt:
                    with open(target, "wb") as stream:
                        stream.write(b"corrupted on the way")
                else:
                    shutil.copyfile(data["uri"], target)
                self.requests.reply(request, messaging.make_message(request.message.subject, "file", data))


def test_corrupt_delivery_is_not_published_and_is_removed(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    bad, good = src / "bad.dat", src / "good.dat"
    bad.write_bytes(os.urandom(5000))
    good.write_bytes(os.urandom(5000))
    server = CorruptingServer({"bad.dat"}).start()
    try:
        config = load(write(tmp_path / "client.ini", f"""
            [chain]
            providers = 127.0.0.1:{server.publisher.port}
            destination = file://{dst}/
            topic = /test/files
            publish_port = 0
            publish_address = 127.0.0.1
            nameservers = False
            catch_up = False
        """), "client")
        client = Client(config, state=StateStore(None))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            time.sleep(1.0)  # slow joiner: let the client's subscription reach the stand-in publisher
            server.announce(str(bad))
            server.announce(str(good))
            wait_for(lambda: [m for m in seen.finals() if m.data.get("uid") == "good.dat"],
                     what="good.dat's final message")
            wait_for(lambda: (client.metrics.registry.get_sample_value(
                "trollmoves_transfers_failed_total",
                {"chain": "chain", "scheme": "file", "reason": "checksum"}) or 0) >= 1,
                what="the checksum failure counted")
        assert (dst / "good.dat").read_bytes() == good.read_bytes()
        assert not (dst / "bad.dat").exists(), "the corrupt copy is removed"
        assert not [m for m in seen.finals() if m.data.get("uid") == "bad.dat"], \
            "no file message for a corrupt copy"
    finally:
        server.stop()


def test_a_file_taken_by_a_consumer_before_verification_counts_as_arrived(tmp_path):
    """Downstream tools often move a file away as soon as it appears: that is no failed transfer.

    Requesting it again would fail against a server that already deleted its source, and the
    entry would stay pending (the soak test saw the client's memory grow with such entries).
    """
    from trollmoves.client import verify_arrival

    good = tmp_path / "good.dat"
    good.write_bytes(b"payload")
    value = xxhash.xxh3_128_hexdigest(b"payload")
    announced = {"uid": "good.dat", "checksum": {"method": "xxh3_128", "value": value}}
    assert verify_arrival(announced, f"file://{tmp_path}/", "/", "xxh3_128") is None
    good.unlink()
    assert verify_arrival(announced, f"file://{tmp_path}/", "/", "xxh3_128") is None, "taken: arrived"
    good.write_bytes(b"tampered")
    mismatch = verify_arrival(announced, f"file://{tmp_path}/", "/", "xxh3_128")
    assert mismatch and "good.dat" in mismatch and not good.exists()
    assert verify_arrival(announced, f"file://{tmp_path}/", "/", "none") is None
