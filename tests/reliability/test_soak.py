"""Soak: many small files through a server process and a client process, resources sampled.

Files (100 bytes) are written into the server's origin as fast as the pair delivers
them (at most ``WINDOW`` in flight); the server deletes each source once pushed and
the test removes each delivered file, so inodes stay few. Every second the RSS, open
file descriptors (/proc/PID/fd) and threads of both daemons are sampled. Asserted:
every file delivered exactly once, and between the 10 % mark and the end RSS and file
descriptors grow by at most 10 % and threads not at all: never more than the idle daemon's
threads plus its worker pool (whose threads start lazily, so one may start late).

The full form (TROLLMOVES_FULL_FAULTS=1) moves 100,000 files and compares the end
with the 10 % mark, as the issue asks. The CI form moves 20,000 and compares with the
11,000 mark: the server's bounded caches (10,000 announcements kept for catch-up and
confinement, 10,000 completed pushes) are full there, as they are at the full form's
10 % mark, so that their filling is not taken for a leak.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.reliability.helpers import (
    FULL,
    client_chain,
    client_process,
    full_or_ci,
    ready,
    sample,
    server_chain,
    server_process,
    stop_within,
    write_ini,
)
from tests.servers import free_port
from trollmoves.server import ServerOptions

FILES = int(os.environ.get("TROLLMOVES_SOAK_FILES", "0")) or full_or_ci(100_000, 20_000)
BASELINE = FILES // 10 if FULL else max(FILES // 10, 11_000)
WINDOW = 400
POOLS = {"server": ServerOptions().workers_per_chain + 1, "client": 4}
"""Threads a daemon starts lazily, up to a bound: the push workers of a server chain and the reaper of
its connection pool (started with the first pooled connection), the fetch workers of a client chain.
A pool thread started late is not thread growth; a thread beyond them is."""
SIZE = 100
DEADLINE = 120 + FILES / 100
"""Seconds the files may take: 100 files/s at least (about 500 are moved on the 2-core CI machine)."""


@pytest.mark.timeout(DEADLINE + 120)
def test_soak(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    publish_port = free_port()
    server_ini = write_ini(tmp_path / "server.ini", {
        "trollmoves": {"drain_timeout": 5},
        "chain": server_chain(src, "/reliability/soak", free_port(), delete=True, remove_delay=0,
                              connection_parameters__hardlink=False)})
    client_ini = write_ini(tmp_path / "client.ini", {
        "trollmoves": {"drain_timeout": 5, "state_directory": tmp_path / "state"},
        "chain": client_chain(f"127.0.0.1:{publish_port}", f"file://{dst}/", "/reliability/soak")})
    delivered: set[str] = set()
    arrivals = 0
    samples: list[dict] = []
    payload = b"x" * SIZE
    started = time.monotonic()

    def collect() -> None:
        nonlocal arrivals
        with os.scandir(dst) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                os.unlink(entry.path)
                delivered.add(entry.name)
                arrivals += 1

    server = server_process(server_ini, publish_port, tmp_path / "server.log", verbose=False)
    client = client_process(client_ini, tmp_path / "client.log", verbose=False)
    try:
        ready(server, client)
        time.sleep(1.0)
        idle = {"server": sample(server.proc.pid).threads, "client": sample(client.proc.pid).threads}
        written = 0
        next_sample = time.monotonic()
        while len(delivered) < FILES:
            while written < FILES and written - len(delivered) < WINDOW:
                name = f"soak{written:07d}.dat"
                tmp = src / f".{name}"
                tmp.write_bytes(payload)
                os.replace(tmp, src / name)
                written += 1
            collect()
            if time.monotonic() >= next_sample:
                next_sample += 1.0
                samples.append({"t": round(time.monotonic() - started, 1), "delivered": len(delivered),
                                "server": sample(server.proc.pid).__dict__, "client": sample(client.proc.pid).__dict__})
                assert server.proc.poll() is None and client.proc.poll() is None, "a daemon died"
            if time.monotonic() - started > DEADLINE:
                raise AssertionError(f"only {len(delivered)} of {FILES} files delivered in time")
            time.sleep(0.005)
        end = {"t": round(time.monotonic() - started, 1), "delivered": len(delivered),
               "server": sample(server.proc.pid).__dict__, "client": sample(client.proc.pid).__dict__}
        samples.append(end)
        time.sleep(1.0)
        collect()
        stopped = {"server": stop_within(server, 8), "client": stop_within(client, 8)}
    finally:
        client.stop()
        server.stop()
    mark = next(s for s in samples if s["delivered"] >= BASELINE)
    report = {"files": FILES, "idle_threads": idle, "seconds": end["t"], "files_per_second": round(FILES / end["t"], 1),
              "baseline": mark, "at_end": end, "samples": samples}
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=1))
    print(f"soak {FILES} files in {end['t']} s; at {BASELINE} files: {mark}; at the end: {end}")
    assert stopped == {"server": (0, stopped["server"][1]), "client": (0, stopped["client"][1])}, stopped
    assert arrivals == FILES == len(delivered), f"{arrivals} arrivals for {len(delivered)} distinct files"
    assert delivered == {f"soak{i:07d}.dat" for i in range(FILES)}
    for daemon in ("server", "client"):
        before, after = mark[daemon], end[daemon]
        assert after["rss_kib"] <= before["rss_kib"] * 1.10, f"{daemon} RSS grew: {before} -> {after}"
        assert after["fds"] <= max(before["fds"] * 1.10, before["fds"] + 2), f"{daemon} fds grew: {before} -> {after}"
        bound = idle[daemon] + POOLS[daemon]
        peak = max(s[daemon]["threads"] for s in samples)
        assert peak <= bound, f"{daemon}: {peak} threads, more than {idle[daemon]} idle + {POOLS[daemon]} workers"
        assert after["threads"] <= max(before["threads"], bound), f"{daemon} threads grew: {before} -> {after}"
    if FULL:
        print(json.dumps({k: v for k, v in report.items() if k != "samples"}))
