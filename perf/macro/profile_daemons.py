"""Where our daemons spend their CPU per file: py-spy over a server + client pair under load.

    python perf/macro/profile_daemons.py [--files 5000] [--batch 500] [--rate 200]

Starts our ``move_it_server.py`` and ``move_it_client.py`` (same chain as
``daemons.py``), attaches ``py-spy record`` (by default only the thread holding
the GIL, i.e. the Python CPU work; ``--all-threads`` for every non-idle thread;
function granularity) to both, feeds files in bursts, and prints the
functions with the most samples, by own time and by inclusive time, per
process, with the share of the process's samples. The collapsed stacks are
kept under ``perf/results/profile-<process>.txt`` for flame graphs.
Needs ``pip install py-spy`` (not a dependency of the suite; perf/run only uses
it with ``--profile``).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, log, workdir

from macro.daemons import Bench

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """``function (path/to/module.py)`` -> ``module.py:function`` with the package kept for ours."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match['func']}"


def aggregate(collapsed: Path, top: int) -> dict:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        # py-spy raw: "process ...;thread (0x..);frame;frame;..." (process/thread only with those options)
        names = [short(frame) for frame in frames if not frame.startswith(("process ", "thread "))]
        thread = next((frame for frame in frames if frame.startswith("thread ")), "")
        threads[thread] += samples
        total += samples
        if names:
            own[names[-1]] += samples
            for name in set(names):
                inclusive[name] += samples
    return {
        "samples": total,
        "own": [(name, count, count / total) for name, count in own.most_common(top)],
        "inclusive": [(name, count, count / total) for name, count in inclusive.most_common(top * 2)],
        "threads": [(name, count, count / total) for name, count in threads.most_common(10)],
    }


def profile(files: int, batch: int, rate: int, top: int, gil: bool = True) -> dict:
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with workdir("perf-profile-") as base:
        bench = Bench(base, which=("ours",))
        spies = {}
        try:
            bench.start()
            pair = bench.pairs["ours"]
            for role in ("server", "client"):
                out = RESULTS / f"profile-{role}.txt"
                spies[role] = (subprocess.Popen(
                    ["py-spy", "record", "--pid", str(getattr(pair, role).pid), "--rate", str(rate), "--threads",
                     "--function", "--format", "raw", "--output", str(out), "--nonblocking",
                     *(["--gil"] if gil else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
            time.sleep(1.0)
            done = 0
            started = time.perf_counter()
            while done < files:
                run = bench.burst(pair, min(batch, files - done), stall=15.0)
                done += run["files"]
            elapsed = time.perf_counter() - started
            log(f"  profiled {done} files in {elapsed:.1f} s ({done / elapsed:.0f} files/s)")
        finally:
            for proc, _ in spies.values():
                proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
            for proc, _ in spies.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            bench.stop()
    report = {"files": files, "rate_hz": rate, "gil_only": gil}
    for role, (_, out) in spies.items():
        if out.exists():
            report[role] = aggregate(out, top)
    return report


def print_report(report: dict) -> None:
    for role in ("server", "client"):
        if role not in report:
            continue
        data = report[role]
        what = "only threads holding the GIL" if report.get("gil_only") else "idle threads excluded"
        print(f"\n## {role}: {data['samples']} samples ({report['rate_hz']} Hz, {what})")
        print("\nthreads:")
        for name, count, share in data["threads"]:
            print(f"  {100 * share:5.1f} %  {name}")
        print("\nown time:")
        for name, count, share in data["own"]:
            print(f"  {100 * share:5.1f} %  {name}")
        print("\ninclusive time:")
        for name, count, share in data["inclusive"]:
            print(f"  {100 * share:5.1f} %  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--all-threads", action="store_true",
                        help="sample every non-idle thread (default: only the thread holding the GIL)")
    args = parser.parse_args()
    print_report(profile(args.files, args.batch, args.rate, args.top, gil=not args.all_threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
