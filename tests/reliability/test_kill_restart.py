"""kill -9 of the server, then of the client, during a steady 1000-file flow; both restarted.

What a user sees is asserted: every file at the destination under its final name,
byte-identical, no temporary left, no file transferred twice (the server's log), one
final ``file`` message per file on the client's publisher (a fixed port, so a
subscriber follows it across the restart), and both daemons stopping cleanly on
SIGTERM at the end.

The one exception is the kill window of the client, which no design can close over
ZeroMQ PUB/SUB (a PUB socket never says whether a message left the process): the final
message of a file the killed client had just received is either published again after
the restart, or, when the kill lands between the commit and ZeroMQ's I/O thread writing
the queued message, not at all. Published again happens two ways: (a) killed before the
file was committed as handled: the client resumes the request, the server answers from
its cache without a second transfer; (b) killed after the commit, which queues the
message in the state store's outbox, and after the send but before the outbox row was
cleared: the restarted client sends the outbox again. A file in (b) is therefore either
repeated or (if ZeroMQ had not written it yet) lost, never both and never more than once.
The test names those files from the daemons' logs and allows them, at most one per worker.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import pytest

from tests.daemons.helpers import Collector, sha256, wait_for
from tests.reliability.helpers import (
    client_chain,
    client_process,
    final_names,
    full_or_ci,
    last_log_time,
    log_events,
    ready,
    server_chain,
    server_process,
    stop_within,
    tracebacks,
    write_atomically,
    write_ini,
)
from tests.servers import free_port

FILES = 1000
INTERVAL = full_or_ci(0.01, 0.008)
DRAIN = 5
WORKERS = 4  # the client's workers per chain: at most this many files are in flight at a kill


@pytest.mark.timeout(300)
def test_server_then_client_killed_during_a_flow(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for directory in (src, dst, state):
        directory.mkdir()
    publish_port, request_port, client_port = free_port(), free_port(), free_port()
    settings = {"drain_timeout": DRAIN}
    sini = write_ini(tmp_path / "server.ini", {
        "trollmoves": settings,
        "chain": server_chain(src, "/reliability/files", request_port, connection_parameters__hardlink=False)})
    cini = write_ini(tmp_path / "client.ini", {
        "trollmoves": {**settings, "state_directory": state},
        "chain": client_chain(f"127.0.0.1:{publish_port}", f"file://{dst}/", "/reliability/files",
                              publish_port=client_port, transfer_req_timeout=2)})

    def start_server(run):
        return server_process(sini, publish_port, tmp_path / f"server-{run}.log")

    def start_client(run):
        return client_process(cini, tmp_path / f"client-{run}.log")

    contents: dict[str, bytes] = {}
    written = threading.Event()
    progress = {"count": 0}

    def writer():
        for index in range(FILES):
            name = f"flow{index:04d}.dat"
            data = os.urandom(2048 + (index * 37) % 4096)
            contents[name] = data
            write_atomically(src / name, data)
            progress["count"] = index + 1
            time.sleep(INTERVAL)
        written.set()

    daemons = []
    server = start_server(1)
    client = start_client(1)
    daemons += [server, client]
    thread = threading.Thread(target=writer, daemon=True)
    try:
        ready(server, client)
        with Collector([f"tcp://127.0.0.1:{client_port}"], "/reliability") as seen:
            thread.start()
            wait_for(lambda: progress["count"] >= FILES * 3 // 10, timeout=60, what="30 % written")
            server.kill()
            time.sleep(1.0)
            server = start_server(2)
            daemons.append(server)
            server.wait_log("Chain chain watching")
            back = time.monotonic()
            wait_for(lambda: progress["count"] >= FILES * 6 // 10 and time.monotonic() - back > 2, timeout=60,
                     what="60 % written")
            client.kill()
            time.sleep(1.0)
            client = start_client(2)
            daemons.append(client)
            client.wait_log("Chain chain following")
            assert written.wait(120), "the writer did not finish"
            wait_for(lambda: len(final_names(dst)) == FILES, timeout=120, interval=0.2,
                     what=f"{FILES} files at the destination")
            killed_log, restarted_log = tmp_path / "client-1.log", tmp_path / "client-2.log"

            def unexplained_missing():
                have = {m.data["uid"] for m in seen.finals()}
                return set(contents) - have - kill_window(killed_log, restarted_log)[1]

            try:
                wait_for(lambda: not unexplained_missing(), timeout=60, interval=0.2, what="final messages")
            except AssertionError:
                missing = sorted(unexplained_missing())
                raise AssertionError(f"no final message for {len(missing)} files: {missing[:50]}") from None
            time.sleep(2.0)  # late duplicates would show up here
        finals = collections.Counter(m.data["uid"] for m in seen.finals())
    finally:
        results = {d.log_path: stop_within(d, DRAIN + 3) for d in daemons if d.proc.poll() is None}
        for daemon in daemons:
            daemon.stop()

    for log_path, (code, took) in results.items():
        assert code == 0, f"{log_path}: exit {code} after {took:.1f} s"
    assert sorted(final_names(dst)) == sorted(contents), "missing or unexpected names at the destination"
    for name, data in contents.items():
        assert sha256(str(dst / name)) == sha256_bytes(data), f"{name} differs from its source"
    assert [n for n in os.listdir(dst) if n.startswith(".")] == [], "temporaries left at the destination"
    resumed, unflushed = kill_window(killed_log, restarted_log)
    duplicated = {uid for uid, n in finals.items() if n > 1}
    lost = set(contents) - set(finals)
    print(f"kill window of the client: {len(resumed)} resumed after being received, {len(unflushed)} committed "
          f"but possibly unsent; final messages repeated: {sorted(duplicated)}, missing: {sorted(lost)}")
    assert max(finals.values()) <= 2
    assert duplicated <= resumed | unflushed, \
        f"final messages published more than once: {duplicated - resumed - unflushed}"
    assert lost <= unflushed, f"final messages never published: {lost - unflushed}"
    assert len(duplicated | lost) <= WORKERS, "more files in the kill window than the client has workers"
    pushes = collections.Counter(name for log in ("server-1.log", "server-2.log")
                                 for _, name in log_events(tmp_path / log, r"pushed \S+/(\S+) to"))
    last_push = log_events(tmp_path / "server-1.log", r"pushed \S+/(\S+) to")[-1][0]
    at_kill = {name for when, name in log_events(tmp_path / "server-1.log", r"pushed \S+/(\S+) to")
               if last_push - when <= 0.05}
    twice = {name for name, n in pushes.items() if n > 1}
    assert set(pushes) == set(contents)
    assert twice <= at_kill, f"transferred twice: {twice - at_kill}"
    logs = "".join(daemon.log() for daemon in daemons)
    assert tracebacks(logs) == []


def kill_window(killed_log, restarted_log) -> tuple[set[str], set[str]]:
    """The files whose final message a kill -9 of the client may repeat or lose (see the test's doc).

    (a) confirmed by the server to the killed client ("received") but resumed as pending by the
    restarted one: killed before the file was committed as handled, so its final message is
    published again (at least once, never lost); (b) confirmed in the killed client's last 50 ms and
    not resumed: committed with its message in the outbox, and killed around the send: the message
    is lost if ZeroMQ had not written it, or sent again from the outbox if the row was not cleared.
    """
    received = {name: when for when, name in log_events(killed_log, r"received (\S+) from")}
    if not os.path.exists(restarted_log):
        return set(), set()
    resumed = {name for _, name in log_events(restarted_log, r"resuming the pending request of (\S+)")}
    last = last_log_time(killed_log)
    recent = {name for name, when in received.items() if last - when <= 0.05}
    return resumed & set(received), recent - resumed


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
