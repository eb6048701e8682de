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

from tests.daemons.conftest import free_port, running, wait_for
from tests.reliability.helpers import (
    client_chain,
    final_names,
    in_process_client,
    in_process_server,
    server_chain,
    write_ini,
)

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
