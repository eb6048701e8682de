"""A backlog larger than the server's announcement history is still served completely.

A server restarted on a reception host can find more files waiting than its
``announce_history`` keeps (the default is 10,000): it announces them all at once,
faster than clients fetch them. A request for a file announced but since pushed out
of the history is still a request for an announced file under the origin, and must
be served; before the fix it was refused as "not announced" and, after the client's
retries, the file was given up.
"""

from __future__ import annotations

import os

import pytest

from tests.daemons.helpers import running, wait_for
from tests.reliability.helpers import (
    client_chain,
    final_names,
    in_process_client,
    in_process_server,
    server_chain,
    write_ini,
)
from tests.servers import free_port

FILES = 300
HISTORY = 20


@pytest.mark.timeout(120)
def test_backlog_larger_than_the_history_is_served(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for index in range(FILES):
        (src / f"backlog{index:04d}.dat").write_bytes(os.urandom(1000))
    publish_port = free_port()
    server_ini = write_ini(tmp_path / "server.ini", {"chain": server_chain(
        src, "/reliability/backlog", free_port(), announce_history=HISTORY)})
    client = in_process_client(write_ini(tmp_path / "client.ini", {"chain": client_chain(
        f"127.0.0.1:{publish_port}", f"file://{dst}/", "/reliability/backlog", transfer_req_timeout=5)}))
    with running(client):
        server = in_process_server(server_ini, publish_port)
        with running(server):
            wait_for(lambda: len(final_names(dst)) == FILES, timeout=60, interval=0.2,
                     what=f"all {FILES} files of the backlog")
            refused = server.metrics.registry.get_sample_value("trollmoves_requests_refused_total",
                                                               {"chain": "chain", "reason": "not_announced"})
    assert refused == 0


@pytest.mark.timeout(60)
def test_a_file_still_being_written_at_start_is_delivered_whole(tmp_path):
    """A producer that writes in place (no temporary name) is still writing when the server starts:
    the backlog must not announce the partial file (the client would keep it and skip the
    complete one as a duplicate); the file arrives whole, once, when the producer closes it."""
    import hashlib
    import time

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "old.dat").write_bytes(b"settled long ago")
    old = time.time() - 60
    os.utime(src / "old.dat", (old, old))
    publish_port = free_port()
    server_ini = write_ini(tmp_path / "server.ini", {"chain": server_chain(
        src, "/reliability/partial", free_port(), connection_parameters__hardlink=False)})  # a link would grow along
    client = in_process_client(write_ini(tmp_path / "client.ini", {"chain": client_chain(
        f"127.0.0.1:{publish_port}", f"file://{dst}/", "/reliability/partial")}))
    content = os.urandom(300_000)
    with running(client), open(src / "growing.dat", "wb") as producer:
        producer.write(content[:1000])
        producer.flush()
        with running(in_process_server(server_ini, publish_port)):
            for start in range(1000, len(content), 20_000):  # ~2 s of writing after the start
                time.sleep(0.13)
                producer.write(content[start:start + 20_000])
                producer.flush()
            producer.close()
            wait_for(lambda: final_names(dst) == ["growing.dat", "old.dat"], timeout=30, what="both files")
            time.sleep(1.5)  # a second delivery (a re-announcement) would land now
    delivered = (dst / "growing.dat").read_bytes()
    assert hashlib.sha256(delivered).hexdigest() == hashlib.sha256(content).hexdigest(), (
        f"partial file delivered: {len(delivered)} of {len(content)} bytes")
    assert final_names(dst) == ["growing.dat", "old.dat"]
