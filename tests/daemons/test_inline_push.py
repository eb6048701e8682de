"""Small local pushes are served in the request thread: a hung remote destination does not delay them.

The server hands a push of remote or large files to its worker pool; a push of a few small files
to a ``file://`` destination is served at once (issue 17: the hand-off to a worker and back cost
more CPU than the hard link). What a user sees: with every push worker stuck on a destination
that never answers, local deliveries still go through, and a large file still waits its turn.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from tests.daemons.helpers import Collector, drop, new_server, request_push, running, wait_for
from trollmoves.services import request_port


class SilentPeer:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word (a hung FTP server)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def _announced(seen, count):
    wait_for(lambda: len(seen.of_type("file")) >= count, what=f"{count} announcements")
    return {os.path.basename(m.data["uri"]): dict(m.data) for m in seen.of_type("file")}


def test_local_push_is_served_while_every_worker_waits_on_a_hung_peer(dirs):
    peer = SilentPeer()
    server = new_server(dirs, "connection_parameters__retries = 0\n        connection_parameters__connect_timeout = 6\n"
                        "        connection_parameters__timeout = 6", workers_per_chain=1)
    try:
        with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
            drop(dirs, 2, size=1000)
            drop(dirs, 1, size=request_port.INLINE_PUSH_MAX_SIZE + 1, start=2)
            data = _announced(seen, 3)
            hung = threading.Thread(target=lambda: request_push(
                server, data["NOAA19_000.dat"], f"ftp://user:secret@127.0.0.1:{peer.port}/in/"),
                daemon=True)
            hung.start()
            wait_for(lambda: peer.accepted, what="the push to the silent peer to connect")
            started = time.monotonic()
            reply = request_push(server, data["NOAA19_001.dat"], f"file://{dirs['dst']}/")
            small_took = time.monotonic() - started
            assert reply.type == "file", reply.data
            assert (dirs["dst"] / "NOAA19_001.dat").read_bytes() == (dirs["src"] / "NOAA19_001.dat").read_bytes()
            assert small_took < 3, f"a small local push waited {small_took:.1f} s behind the hung transfer"
            # a large file goes through the pool: it is served only once the worker is free again
            started = time.monotonic()
            reply = request_push(server, data["NOAA19_002.dat"], f"file://{dirs['dst']}/")
            large_took = time.monotonic() - started
            assert reply.type == "file", reply.data
            # the only worker was stuck until the hung push timed out (6 s after it connected)
            assert large_took > 2, f"the large push was served in {large_took:.1f} s, not after the hung one"
            hung.join(10)
            assert (dirs["dst"] / "NOAA19_002.dat").stat().st_size == request_port.INLINE_PUSH_MAX_SIZE + 1
    finally:
        peer.close()


def test_a_slow_local_push_sends_the_next_ones_to_the_pool(dirs, monkeypatch, caplog):
    monkeypatch.setattr(request_port, "INLINE_PUSH_SLOW", 0.0)  # every inline push counts as slow
    server = new_server(dirs)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        drop(dirs, 2, size=1000)
        data = _announced(seen, 2)
        for name in ("NOAA19_000.dat", "NOAA19_001.dat"):
            assert request_push(server, data[name], f"file://{dirs['dst']}/").type == "file"
    assert sorted(os.listdir(dirs["dst"])) == ["NOAA19_000.dat", "NOAA19_001.dat"]
    slow = [r.getMessage() for r in caplog.records if "pushes go through the worker pool" in r.getMessage()]
    assert len(slow) == 1, slow  # the first was inline and slow; the second went to the pool
