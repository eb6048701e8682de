"""The floor under file-arrival latency: the bare cost of each hop our daemons must make.

    python perf/macro/hops.py [--count 100]

Measures, between two processes on this machine, with no trollmoves code in the way:
inotify (a file closed -> a process blocked in poll() on its inotify descriptor wakes),
ZeroMQ PUB -> SUB, and DEALER -> ROUTER (one 600-byte frame); for the watcher,
our KernelInotifyWatcher (file closed -> callback; the pyinotify-based watcher it replaced
was removed in issue 16); and, in this process, the copy of a 4 KiB file (read it, write
it under a temporary name, close, rename into place, as a mover does). Each cross-process
sample includes the way back to the measuring process (a multiprocessing queue, ~0.1 ms),
so the figures are upper bounds of each hop. A file's arrival needs at least inotify +
PUB/SUB + DEALER/ROUTER + the copy: ``measure()`` returns their sum, which ``perf/run``
compares with the daemons' arrival p50 in the same run (``macro.arrival_vs_hops.p50``,
issue 17 goal 5).
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import select
import shutil
import statistics
import tempfile
import time


def _raw_inotify(directory: str, queue) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(0)
    libc.inotify_add_watch(fd, directory.encode(), 0x8)  # IN_CLOSE_WRITE
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    queue.put("ready")
    while True:
        poller.poll(1000)
        os.read(fd, 65536)
        queue.put(time.time())


def _watcher(directory: str, queue, kind: str) -> None:
    from trollmoves import watching

    getattr(watching, kind)(directory, lambda _path: queue.put(time.time())).start()
    queue.put("ready")
    time.sleep(3600)


def _subscriber(port: int, queue) -> None:
    import zmq

    socket = zmq.Context().socket(zmq.SUB)
    socket.connect(f"tcp://127.0.0.1:{port}")
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    queue.put("ready")
    while True:
        socket.recv()
        queue.put(time.time())


def _router(queue, ports) -> None:
    import zmq

    socket = zmq.Context().socket(zmq.ROUTER)
    ports.put(socket.bind_to_random_port("tcp://127.0.0.1"))
    while True:
        socket.recv_multipart()
        queue.put(time.time())


def _time_hops(count: int, act, queue) -> list[float]:
    """``count`` times: do ``act()``, wait for the other process to report the time it saw it."""
    samples = []
    for _ in range(count):
        started = time.time()
        act()
        samples.append(queue.get() - started)
        time.sleep(0.03)
    return samples


def _file_hop(count: int, target, *args) -> list[float]:
    directory = tempfile.mkdtemp(prefix="hops-")
    queue = mp.Queue()
    process = mp.Process(target=target, args=(directory, queue, *args), daemon=True)
    process.start()
    queue.get()
    time.sleep(0.2)
    names = iter(range(count))

    def write_file():
        with open(os.path.join(directory, f"f{next(names)}"), "wb") as stream:
            stream.write(b"x" * 4096)

    samples = _time_hops(count, write_file, queue)
    process.kill()
    return samples


def _pub_sub(count: int) -> list[float]:
    import zmq

    publisher = zmq.Context.instance().socket(zmq.PUB)
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    queue = mp.Queue()
    process = mp.Process(target=_subscriber, args=(port, queue), daemon=True)
    process.start()
    queue.get()
    time.sleep(0.5)
    samples = _time_hops(count, lambda: publisher.send(b"x" * 600), queue)
    process.kill()
    publisher.close(0)
    return samples


def _dealer_router(count: int) -> list[float]:
    import zmq

    queue, ports = mp.Queue(), mp.Queue()
    process = mp.Process(target=_router, args=(queue, ports), daemon=True)
    process.start()
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{ports.get()}")
    time.sleep(0.5)
    samples = _time_hops(count, lambda: dealer.send_multipart([b"", b"y" * 600]), queue)
    process.kill()
    dealer.close(0)
    return samples


def _copy_4kib(count: int, size: int = 4096) -> list[float]:
    """Copy a ``size``-byte file: read, write to a temporary name, close, rename (one mover's copy, no IPC)."""
    directory = tempfile.mkdtemp(prefix="hops-copy-")
    source = os.path.join(directory, "source.dat")
    with open(source, "wb") as stream:
        stream.write(os.urandom(size))
    samples = []
    for number in range(count):
        target = os.path.join(directory, f"copy{number}.dat")
        started = time.perf_counter()
        with open(source, "rb") as src, open(target + ".part", "wb") as dst:
            dst.write(src.read())
        os.rename(target + ".part", target)
        samples.append(time.perf_counter() - started)
        os.unlink(target)
        time.sleep(0.005)
    shutil.rmtree(directory, ignore_errors=True)
    return samples


# The hops a file's arrival needs, in order (the watcher row is context: our watcher's own cost).
ARRIVAL_HOPS = ("inotify", "pub_sub", "dealer_router", "copy_4kib")
TITLES = {"inotify": "inotify: file closed -> poll() wakes (bare)",
          "watcher": "KernelInotifyWatcher: file closed -> callback",
          "pub_sub": "ZeroMQ PUB -> SUB, 600 bytes",
          "dealer_router": "ZeroMQ DEALER -> ROUTER, 600 bytes",
          "copy_4kib": "copy of a 4 KiB file (read, write .part, rename)"}


def measure(count: int = 100) -> dict:
    """Each hop's samples (s), p50 and p90, and ``arrival_hops_p50_s``: the sum of the p50s a file needs."""
    samples = {"inotify": _file_hop(count, _raw_inotify),
               "watcher": _file_hop(count, _watcher, "KernelInotifyWatcher"),
               "pub_sub": _pub_sub(count),
               "dealer_router": _dealer_router(count),
               "copy_4kib": _copy_4kib(count)}
    hops = {}
    for name, values in samples.items():
        values.sort()
        hops[name] = {"title": TITLES[name], "p50_s": statistics.median(values),
                      "p90_s": values[int(0.9 * len(values))], "n": len(values)}
    return {"hops": hops, "arrival_hops": list(ARRIVAL_HOPS),
            "arrival_hops_p50_s": sum(hops[name]["p50_s"] for name in ARRIVAL_HOPS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    result = measure(parser.parse_args().count)
    for hop in result["hops"].values():
        print(f"{hop['title']:50s} p50 {1e3 * hop['p50_s']:.3f} ms  p90 {1e3 * hop['p90_s']:.3f} ms")
    print(f"{'sum of the arrival hops (' + ' + '.join(result['arrival_hops']) + ')':50s} "
          f"p50 {1e3 * result['arrival_hops_p50_s']:.3f} ms")


if __name__ == "__main__":
    main()
