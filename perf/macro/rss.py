"""Resident memory of our server + client as files keep flowing (issue 4: flat after 10,000 files).

One pair of our daemons (the chain of ``daemons.py``) gets files in bursts of
``batch`` (4 KiB each); after each burst is delivered and published, the source
and destination files are removed (as a cleaner would), so only the daemons'
own state can grow. VmRSS of both processes (/proc/PID/status) is read at each
checkpoint after a short settle. The ratio is RSS(first checkpoint) /
RSS(last checkpoint): 1.0 = flat, the goal "within 10 %" is >= 1/1.1 = 0.909.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import log

from macro.daemons import Bench


def run(base: Path, first: int, last: int, batch: int = 500, every: int | None = None,
        settle: float = 1.0) -> dict[str, Any]:
    every = every or first
    checkpoints = sorted({first, last, *range(every, last + 1, every)})
    bench = Bench(base, which=("ours",))
    samples: list[dict[str, Any]] = []
    lost = 0
    started = time.monotonic()
    try:
        bench.start()
        pair = bench.pairs["ours"]
        samples.append({"files": 0, "server": pair.server.rss_bytes(), "client": pair.client.rss_bytes()})
        done = 0
        for checkpoint in checkpoints:
            while done < checkpoint:
                run = bench.burst(pair, min(batch, checkpoint - done), stall=20.0)
                lost += run["files"] - min(run["delivered"], run["published"])
                done += run["files"]
                if not pair.alive():
                    raise RuntimeError(f"our daemons died after {done} files")
            time.sleep(settle)
            sample = {"files": done, "server": pair.server.rss_bytes(), "client": pair.client.rss_bytes(),
                      "elapsed_s": time.monotonic() - started}
            samples.append(sample)
            log(f"  rss after {done} files: server {sample['server'] / 2**20:.1f} MiB, "
                f"client {sample['client'] / 2**20:.1f} MiB ({sample['elapsed_s']:.0f} s)")
    finally:
        codes = bench.stop()
    by_files = {sample["files"]: sample for sample in samples}
    at_first = by_files[first]["server"] + by_files[first]["client"]
    at_last = by_files[last]["server"] + by_files[last]["client"]
    return {"first": first, "last": last, "batch": batch, "samples": samples, "lost": lost,
            "rss_first_bytes": at_first, "rss_last_bytes": at_last, "growth": at_last / at_first - 1.0,
            "ratio": at_first / at_last, "exit_codes": codes, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    import argparse
    import json

    from common import workdir

    parser = argparse.ArgumentParser(description="RSS of our server + client after N files")
    parser.add_argument("--first", type=int, default=10_000)
    parser.add_argument("--last", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with workdir("perf-rss-") as base:
        print(json.dumps(run(base, args.first, args.last, args.batch), indent=1))
