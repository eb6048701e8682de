"""Server -> client benchmarks with real daemon processes: ours against trollmoves 0.19.0.

Both pairs (a ``move_it_server.py`` and a ``move_it_client.py`` each) run at the
same time on this machine, with the same chain configuration (same pattern,
topic layout, local ``file://`` destination, default mover options, i.e. a hard
link when source and destination share a file system, as in 0.19). The
original runs from its own venv (``TROLLMOVES_019_VENV``). The harness, in this
process:

* writes each source file (4 KiB of random bytes) and takes ``perf_counter()``
  right after ``close()``: the server's close-after-write event;
* watches each destination directory with inotify and takes the time at which
  the file has its full size under its final name (arrival);
* subscribes to each client's publisher and takes the time at which the
  client's final ``file`` message (no ``request_address``) for that file is
  received (publication).

Latency: one file at a time, alternating between the two pairs (which one goes
first alternates too), the next file only after the previous one was published
(or timed out) plus a short pause, so each figure is an unloaded latency.
Throughput: a burst of N files written as fast as possible into one pair's
origin, files/s = N / (last arrival - first write); rounds alternate between
the pairs. CPU per file: utime+stime of the server and client processes
(/proc) over a burst, divided by N. Burst (ours only, issue 17): 10,000 files
dropped at once; every file must arrive exactly once (the destination holds
exactly the N names, each final message is published once), and the run
reports files/s and the drop-to-arrival percentiles.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import ORIGINAL_VENV, Proc, free_port, log, original_installed, our_script, summary

from macro.inotify import CompletionWatcher

FILE_SIZE = 4096
PATTERN = "{platform_name}_{start_time:%Y%m%d_%H%M%S}_{number:06d}.dat"
START = time.strftime("%Y%m%d_%H%M%S", time.gmtime(1_700_000_000))


def isolated_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with posttroll's fixed ports moved to free ones (no clash with other runs)."""
    env = dict(os.environ)
    for name in ("POSTTROLL_NAMESERVER_PORT", "POSTTROLL_BROADCAST_PORT", "POSTTROLL_ADDRESS_PUBLISH_PORT"):
        env[name] = str(free_port())
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


class Subscriber:
    """Receives every message of some publishers (raw zmq SUB, drained per poll), timestamped at receipt."""

    def __init__(self, on_final):
        self.on_final = on_final
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.malformed = 0
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="subscriber", daemon=True)

    def connect(self, address: str) -> None:
        self.socket.connect(address)

    def start(self) -> Subscriber:
        self._thread.start()
        return self

    def _run(self) -> None:
        from trollmoves.errors import MessageDecodeError
        from trollmoves.messaging import decode

        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            batch = []
            while True:
                try:
                    raw = self.socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                batch.append((raw, time.perf_counter()))
            for raw, stamp in batch:
                self.received += 1
                if b" file " not in raw[:200]:
                    continue
                try:
                    message = decode(raw)
                except MessageDecodeError:
                    self.malformed += 1
                    continue
                data = message.data
                if isinstance(data, dict) and "request_address" not in data and "uid" in data:
                    self.on_final(str(data["uid"]), stamp)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close(0)
        self.context.term()


@dataclass
class Pair:
    """One server process and one client process following it."""

    name: str                      # "ours" or "0.19"
    base: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    server: Proc | None = None
    client: Proc | None = None
    written: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)
    publications: Counter = field(default_factory=Counter)  # final messages per uid: exactly once is 1
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cond: threading.Condition | None = None

    def __post_init__(self):
        self.cond = threading.Condition(self.lock)
        self.src = self.base / "src"
        self.dst = self.base / "dst"
        self.state = self.base / "state"
        for directory in (self.src, self.dst, self.state):
            directory.mkdir(parents=True, exist_ok=True)
        self.topic = f"/bench/{'ours' if self.name == 'ours' else 'original'}"
        self.publish_port = free_port()
        self.request_port = free_port()
        self.client_port = free_port()

    @property
    def original(self) -> bool:
        return self.name != "ours"

    def configs(self) -> tuple[Path, Path]:
        server_ini = self.base / "server.ini"
        server_ini.write_text(textwrap.dedent(f"""\
            [bench]
            origin = {self.src}/{PATTERN}
            topic = {self.topic}
            request_port = {self.request_port}
            request_address = 127.0.0.1
            info = sensor=avhrr
            """))
        state = "" if self.original else f"[trollmoves]\nstate_directory = {self.state}\n\n"
        client_ini = self.base / "client.ini"
        client_ini.write_text(state + textwrap.dedent(f"""\
            [bench]
            providers = 127.0.0.1:{self.publish_port}
            destination = file://{self.dst}/
            topic = {self.topic}
            publish_port = {self.client_port}
            nameservers = False
            """))
        return server_ini, client_ini

    def start(self) -> None:
        server_ini, client_ini = self.configs()
        env = isolated_env(self.extra_env)
        if self.original:
            bindir = ORIGINAL_VENV / "bin"
            server_cmd = [bindir / "python", bindir / "move_it_server.py"]
            client_cmd = [bindir / "python", bindir / "move_it_client.py"]
        else:
            server_cmd = [sys.executable, our_script("move_it_server.py")]
            client_cmd = [sys.executable, our_script("move_it_client.py")]
        server_args = [*server_cmd, "-p", str(self.publish_port), "--disable-backlog", server_ini]
        if not self.original:
            server_args[2:2] = ["--publish-address", "127.0.0.1"]
        self.server = Proc(server_args, self.base / "server.log", env, cwd=self.base).start()
        self.client = Proc([*client_cmd, client_ini], self.base / "client.log", env, cwd=self.base).start()

    def stop(self) -> dict[str, Any]:
        codes = {}
        for role in ("client", "server"):
            proc = getattr(self, role)
            if proc is not None:
                codes[role] = proc.stop()
        return codes

    def alive(self) -> bool:
        return bool(self.server and self.client and self.server.alive() and self.client.alive())

    # -- files -------------------------------------------------------------------------------------

    def next_name(self, prefix: str = "NOAA19") -> str:
        self.counter += 1
        return f"{prefix}_{START}_{self.counter:06d}.dat"

    def write(self, name: str, payload: bytes) -> float:
        with open(self.src / name, "wb") as stream:
            stream.write(payload)
        stamp = time.perf_counter()
        with self.lock:
            self.written[name] = stamp
        return stamp

    def expected_size(self, name: str) -> int | None:
        return FILE_SIZE if name.endswith(".dat") else None

    def on_arrival(self, name: str, stamp: float) -> None:
        with self.cond:
            self.arrived.setdefault(name, stamp)
            self.cond.notify_all()

    def on_final(self, uid: str, stamp: float) -> None:
        with self.cond:
            self.published.setdefault(uid, stamp)
            self.publications[uid] += 1
            self.cond.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def clean(self) -> None:
        """Remove delivered and source files (between rounds); keeps the records."""
        for directory in (self.src, self.dst):
            for entry in os.scandir(directory):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(entry.path)


def _write_burst(directory: str, payload: bytes, conn) -> None:
    """In the writer process: wait for the names, write each file, send (start, [time after each close])."""
    names = conn.recv()
    cpu = time.process_time()
    started = time.perf_counter()
    stamps = []
    for name in names:
        with open(os.path.join(directory, name), "wb") as stream:
            stream.write(payload)
        stamps.append(time.perf_counter())  # CLOCK_MONOTONIC: the same clock as the harness's
    conn.send((started, stamps, time.process_time() - cpu))
    conn.close()


class BurstWriter:
    """A process that writes a burst of files as fast as it can, away from this process's GIL."""

    def __init__(self, directory: Path, payload: bytes):
        context = multiprocessing.get_context("spawn")  # no fork of this threaded process
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_write_burst, args=(str(directory), payload, child), daemon=True)
        self._process.start()
        child.close()

    def write(self, names: list[str], timeout: float = 600.0) -> tuple[float, list[float], float]:
        """(start, time after each file's close, the writer's CPU seconds): wall >> CPU means it waited."""
        try:
            self._conn.send(names)
            if not self._conn.poll(timeout):
                raise RuntimeError(f"the burst writer did not finish {len(names)} files in {timeout} s")
            return self._conn.recv()
        finally:
            self._conn.close()
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)


class Bench:
    """Both pairs, one inotify watcher per destination, one subscriber for both clients."""

    def __init__(self, base: Path, which: tuple[str, ...] = ("ours", "0.19")):
        self.pairs: dict[str, Pair] = {}
        for name in which:
            if name == "0.19" and not original_installed():
                raise RuntimeError(f"trollmoves 0.19.0 is not installed in {ORIGINAL_VENV} (tests/run_all.sh makes it)")
            self.pairs[name] = Pair(name, base / name.replace(".", ""))
        self.watchers: list[CompletionWatcher] = []
        self.subscribers: list[Subscriber] = []
        self.payload = os.urandom(FILE_SIZE)

    def start(self, warmup_timeout: float = 60.0) -> None:
        for pair in self.pairs.values():
            self.watchers.append(CompletionWatcher(str(pair.dst), pair.expected_size, pair.on_arrival).start())
            subscriber = Subscriber(pair.on_final)
            subscriber.connect(f"tcp://127.0.0.1:{pair.client_port}")
            self.subscribers.append(subscriber.start())
        for pair in self.pairs.values():
            pair.start()
        for pair in self.pairs.values():
            self.warm_up(pair, warmup_timeout)

    def warm_up(self, pair: Pair, timeout: float) -> None:
        """Drop a file every 0.5 s until one is delivered and published (slow joiners, 0.19's 3 s wait)."""
        started = time.monotonic()
        names = []
        while time.monotonic() - started < timeout:
            if not pair.alive():
                raise RuntimeError(f"{pair.name} daemons died: server {pair.server.log()[-1500:]}\n"
                                   f"client {pair.client.log()[-1500:]}")
            name = pair.next_name("WARMUP")
            names.append(name)
            pair.write(name, self.payload)
            if pair.wait(lambda: any(n in pair.published for n in names), 0.5):
                # then a few more, one at a time, so both daemons have served requests before timing
                for _ in range(3):
                    name = pair.next_name("WARMUP")
                    pair.write(name, self.payload)
                    pair.wait(lambda name=name: name in pair.published, 10)
                log(f"  {pair.name}: warm after {time.monotonic() - started:.1f} s")
                pair.wait(lambda: all(n in pair.arrived for n in names), 5)
                pair.clean()
                return
        raise RuntimeError(f"{pair.name}: no file delivered within {timeout} s; server log:\n"
                           f"{pair.server.log()[-1500:]}\nclient log:\n{pair.client.log()[-1500:]}")

    def stop(self) -> dict[str, Any]:
        codes = {}
        for name, pair in self.pairs.items():
            codes[name] = pair.stop()
        for watcher in self.watchers:
            watcher.close()
        for subscriber in self.subscribers:
            subscriber.close()
        return codes

    # -- benchmarks --------------------------------------------------------------------------------

    def latency(self, count: int, pause: float = 0.05, timeout: float = 10.0) -> dict[str, Any]:
        """``count`` files per pair, one at a time, alternating pairs."""
        samples = {name: {"arrival": [], "publication": [], "timeouts": 0} for name in self.pairs}
        order = list(self.pairs.values())
        rng = random.Random(8)
        for index in range(count):
            for pair in (order if index % 2 == 0 else order[::-1]):
                name = pair.next_name()
                written = pair.write(name, self.payload)
                done = pair.wait(lambda name=name, pair=pair: name in pair.published and name in pair.arrived,
                                 timeout)
                record = samples[pair.name]
                if not done:
                    record["timeouts"] += 1
                    continue
                record["arrival"].append(pair.arrived[name] - written)
                record["publication"].append(pair.published[name] - written)
                time.sleep(pause + rng.random() * pause)
        for pair in order:
            pair.clean()
        result = {}
        for name, record in samples.items():
            result[name] = {"arrival_s": summary(record["arrival"]), "publication_s": summary(record["publication"]),
                            "timeouts": record["timeouts"], "arrival_raw_s": record["arrival"],
                            "publication_raw_s": record["publication"]}
        return result

    def burst(self, pair: Pair, count: int, stall: float) -> dict[str, Any]:
        """Write ``count`` files at once; wait for all to arrive and be published (or no progress for ``stall`` s).

        The files are written by a separate process (``BurstWriter``): written from this one, the
        writes wait for the GIL behind the watcher and subscriber threads (up to the 5 ms switch
        interval each), which capped a burst at ~900 files/s whatever the daemons did.
        """
        names = [pair.next_name() for _ in range(count)]
        writer = BurstWriter(pair.src, self.payload)
        cpu_before = {role: getattr(pair, role).cpu_seconds() for role in ("server", "client")}
        first, stamps, writer_cpu = writer.write(names)
        with pair.lock:
            pair.written.update(zip(names, stamps))
        last_written = stamps[-1] if stamps else first

        def progress() -> tuple[int, int]:
            return (sum(1 for n in names if n in pair.arrived), sum(1 for n in names if n in pair.published))

        seen = (-1, -1)
        while True:
            now_seen = progress()
            if now_seen == (count, count):
                break
            if now_seen == seen:
                log(f"  {pair.name}: no progress for {stall} s at {now_seen[0]}/{count} arrived, "
                    f"{now_seen[1]}/{count} published; giving up on the rest")
                break
            seen = now_seen
            pair.wait(lambda: progress() == (count, count), stall)
        cpu_after = {role: getattr(pair, role).cpu_seconds() for role in ("server", "client")}
        arrivals = [pair.arrived[n] for n in names if n in pair.arrived]
        publications = [pair.published[n] for n in names if n in pair.published]
        delivered = len(arrivals)
        last_arrival = max(arrivals) if arrivals else first
        last_published = max(publications) if publications else first
        cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
        time.sleep(0.5)  # a late duplicate publication would show up here
        expected = set(names)
        in_destination = [entry.name for entry in os.scandir(pair.dst)]
        latencies = [pair.arrived[n] - pair.written[n] for n in names if n in pair.arrived]
        with pair.lock:
            duplicates = {n: pair.publications[n] for n in names if pair.publications[n] > 1}
        pair.clean()
        for watcher in self.watchers:
            for name in names:
                watcher.forget(name)
        return {
            "files": count, "delivered": delivered, "published": len(publications),
            "write_s": last_written - first, "writer_cpu_s": writer_cpu,
            "to_last_arrival_s": last_arrival - first,
            "to_last_publication_s": last_published - first,
            "files_per_s": delivered / (last_arrival - first) if delivered else 0.0,
            "published_per_s": len(publications) / (last_published - first) if publications else 0.0,
            "cpu_s": cpu, "cpu_us_per_file": 1e6 * sum(cpu.values()) / max(delivered, 1),
            "arrival_s": summary(latencies),
            "exactly_once": {"destination_files": len(in_destination),
                             "missing_in_destination": len(expected - set(in_destination)),
                             "unexpected_in_destination": sorted(set(in_destination) - expected)[:20],
                             "published_more_than_once": len(duplicates),
                             "duplicate_examples": dict(list(duplicates.items())[:20])},
        }

    def throughput(self, count: int, rounds: int, stall: float = 15.0) -> dict[str, Any]:
        runs: dict[str, list[dict]] = {name: [] for name in self.pairs}
        order = list(self.pairs.values())
        for number in range(rounds):
            for pair in (order if number % 2 == 0 else order[::-1]):
                run = self.burst(pair, count, stall)
                runs[pair.name].append(run)
                log(f"  throughput {pair.name} round {number + 1}: {run['delivered']}/{count} in "
                    f"{run['to_last_arrival_s']:.2f} s = {run['files_per_s']:.1f} files/s, "
                    f"CPU {run['cpu_us_per_file']:.0f} us/file")
                time.sleep(1.0)
        result = {}
        for name, items in runs.items():
            best = max(items, key=lambda run: run["files_per_s"])
            result[name] = {"best": best, "runs": items}
        return result


def exactly_once_failures(run: dict[str, Any]) -> list[str]:
    """What breaks "every file arrives exactly once" in a burst's record (empty: none)."""
    check, count = run["exactly_once"], run["files"]
    problems = []
    if run["delivered"] != count or check["missing_in_destination"]:
        problems.append(f"{count - run['delivered']} arrivals missing, {check['missing_in_destination']} files "
                        "missing in the destination")
    if run["published"] != count:
        problems.append(f"{count - run['published']} final messages missing")
    if check["destination_files"] != count or check["unexpected_in_destination"]:
        problems.append(f"{check['destination_files']} files in the destination for {count} "
                        f"(unexpected: {check['unexpected_in_destination']})")
    if check["published_more_than_once"]:
        problems.append(f"{check['published_more_than_once']} files published more than once "
                        f"({check['duplicate_examples']})")
    return problems


def run(quick: bool, base: Path, latency_count: int | None = None, throughput_count: int | None = None,
        rounds: int | None = None, burst_count: int | None = None) -> dict[str, Any]:
    latency_count = latency_count or (60 if quick else 200)
    throughput_count = throughput_count or (200 if quick else 1000)
    rounds = rounds or (1 if quick else 2)
    burst_count = burst_count or (2000 if quick else 10_000)
    bench = Bench(base)
    started = time.monotonic()
    try:
        bench.start()
        log(f"  latency: {latency_count} files per pair, alternating")
        latency = bench.latency(latency_count)
        for name, record in latency.items():
            log(f"  latency {name}: arrival p50 {1e3 * record['arrival_s']['p50']:.2f} ms, "
                f"publication p50 {1e3 * record['publication_s']['p50']:.2f} ms, timeouts {record['timeouts']}")
        log(f"  throughput: {throughput_count} x 4 KiB, {rounds} round(s) per pair")
        throughput = bench.throughput(throughput_count, rounds)
        log(f"  burst: {burst_count} x 4 KiB dropped at once, ours only")
        time.sleep(1.0)
        burst = bench.burst(bench.pairs["ours"], burst_count, stall=15.0)
        log(f"  burst ours: {burst['delivered']}/{burst_count} in {burst['to_last_arrival_s']:.2f} s = "
            f"{burst['files_per_s']:.0f} files/s, arrival p99 {burst['arrival_s']['p99']:.2f} s, "
            f"CPU {burst['cpu_us_per_file']:.0f} us/file, exactly once: "
            f"{'; '.join(exactly_once_failures(burst)) or 'yes'}")
    finally:
        codes = bench.stop()
    return {"latency": latency, "throughput": throughput, "burst": burst, "exit_codes": codes,
            "latency_files": latency_count, "throughput_files": throughput_count, "rounds": rounds,
            "burst_files": burst_count, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    import argparse
    import json

    from common import workdir

    parser = argparse.ArgumentParser(description="server -> client latency and throughput, ours vs 0.19")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency-count", type=int)
    parser.add_argument("--throughput-count", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--burst-count", type=int)
    args = parser.parse_args()
    with workdir("perf-daemons-") as base:
        out = run(args.quick, base, args.latency_count, args.throughput_count, args.rounds, args.burst_count)
    for record in out["latency"].values():
        record.pop("arrival_raw_s")
        record.pop("publication_raw_s")
    print(json.dumps(out, indent=1))
