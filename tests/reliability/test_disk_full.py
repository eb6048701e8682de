"""Destination disk full: a 2 MiB tmpfs as the client's destination, a file larger than the free space.

Asserted: a clear error naming the file and "No space left" in the logs, the failure
counted (``trollmoves_transfers_failed_total`` with its reason, on the server that
pushes and on the client that asked), the source kept although its chain deletes served
files, nothing at the final name and no temporary left; once space is freed (a filler
file removed) the client's retry delivers the file, byte-identical, and only then is
the source deleted.
"""

from __future__ import annotations

import logging
import os
import time

import pytest

from tests.daemons.helpers import Collector, running, sha256, wait_for
from tests.reliability.helpers import (
    client_chain,
    in_process_client,
    in_process_server,
    mount_tmpfs,
    server_chain,
    unmount,
    write_ini,
)
from tests.servers import free_port


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted by the test, unmounted at teardown."""
    try:
        mount_point = mount_tmpfs(tmp_path / "small-disk", "size=2m,mode=0755")
    except OSError as exc:
        pytest.skip(f"{exc} (needs root)")
    try:
        yield mount_point
    finally:
        unmount(mount_point)


@pytest.mark.timeout(120)
def test_disk_full_is_reported_and_delivery_resumes_after_space_is_freed(tmp_path, small_disk, caplog):
    caplog.set_level(logging.DEBUG)
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    state.mkdir()
    dst = small_disk / "incoming"
    dst.mkdir()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1536 << 10))
    server = in_process_server(write_ini(state / "server.ini", {"chain": server_chain(
        src, "/reliability/full", free_port(), delete=True, remove_delay=0.2)}))
    with running(server):
        client = in_process_client(write_ini(state / "client.ini", {"chain": client_chain(
            f"127.0.0.1:{server.publisher.port}", f"file://{dst}/", "/reliability/full", transfer_req_timeout=5)}),
            str(state / "client.db"))
        with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/reliability") as seen:
            big = src / "big.dat"
            data = os.urandom(1 << 20)
            big.write_bytes(data)

            def failures(registry, reason):
                return registry.get_sample_value("trollmoves_transfers_failed_total",
                                                 {"chain": "chain", "scheme": "file", "reason": reason}) or 0

            wait_for(lambda: failures(server.metrics.registry, "permanent") >= 1, timeout=20,
                     what="the failed push counted on the server")
            wait_for(lambda: failures(client.metrics.registry, "error") >= 1, timeout=20,
                     what="the failed request counted on the client")
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any(str(big) in text and "No space left on device" in text for text in errors), errors
            assert any("big.dat" in text and "No space left on device" in text and r.name == "trollmoves.client"
                       for r in caplog.records if r.levelno >= logging.ERROR for text in [r.getMessage()])
            time.sleep(0.5)  # longer than remove_delay: a wrongly scheduled delete would have happened
            assert big.exists(), "the source was deleted although it was not delivered"
            assert os.listdir(dst) == [], "a partial file or a temporary was left at the destination"
            assert seen.finals() == []

            filler.unlink()
            wait_for(lambda: seen.finals(), timeout=30, what="the file delivered after space was freed")
            assert sha256(str(dst / "big.dat")) == sha256_bytes(data)
            assert os.listdir(dst) == ["big.dat"]
            wait_for(lambda: not big.exists(), timeout=10, what="the source deleted once delivered")
    assert client.metrics.registry.get_sample_value("trollmoves_retries_total", {"chain": "chain"}) >= 1
    assert len(seen.finals()) == 1


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
