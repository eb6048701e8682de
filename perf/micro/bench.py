"""Micro benchmarks: pattern matching, copy-and-hash, message codec, per-file CPU path.

    python perf/micro/bench.py [--quick] [--groups match,copy,codec,path] [--output FILE]
    python perf/micro/bench.py --callgrind GROUP --iterations N     (run under valgrind by run.py)
    python perf/micro/bench.py --callgrind --groups copy --copy-sizes 4k,64k,8m   (per-file copy/hash counts)

Run once per speedups implementation: ``perf/run.py`` starts it with
``TROLLMOVES_NO_EXTENSIONS=1`` for ``py`` and without for ``c`` (the selector in
``trollmoves/_accel.py`` decides, as in production). Each case times its variants
interleaved (variant A, B, A, B, ...) and keeps, per variant, the best of the
repeats (the least disturbed by other processes) and the median.

Callgrind mode: every variant runs N and then 2N iterations, each loop between two
``os.sched_yield()`` calls, which ``valgrind --dump-before=sched_yield`` turns into
separate dumps; instructions per call = (Ir(2N) - Ir(N)) / N, so start-up, imports
and loop set-up cancel out. Instruction counts do not drift with machine noise.
The copy cases under callgrind (``copy_callgrind_cases``) copy one file per call with the files
kept open, so that the count is the compiled loop (or its twin) plus the hash, per file; callgrind
counts every thread of the process (the compiled writer thread included), not the kernel.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from patterns import PATTERNS

MiB = 1 << 20


@dataclass
class Case:
    group: str
    name: str
    variants: dict[str, Callable[[], Any]]   # each call does ``per_call`` operations
    loops: int                               # calls per timed repeat
    per_call: int = 1
    unit: str = "op"
    callgrind_loops: int = 0                 # 0: not measured under callgrind
    extra: dict[str, Any] = field(default_factory=dict)
    before: Callable[[], Any] | None = None  # run (untimed) before each timed repeat of each variant


# --------------------------------------------------------------------------------------------------
# Pattern matching
# --------------------------------------------------------------------------------------------------

def match_cases(quick: bool) -> list[Case]:
    from trollsift import Parser

    from trollmoves.matching import PatternMatcher

    cases = []
    for name, (pattern, good, bad) in PATTERNS.items():
        ours = PatternMatcher(pattern)
        theirs = Parser(pattern)
        expected = theirs.parse(good)
        if ours.parse(good) != expected:
            raise AssertionError(f"{name}: PatternMatcher.parse differs from trollsift on {good}")
        for path in bad:
            if ours.parse(path) is not None or theirs.validate(path):
                raise AssertionError(f"{name}: {path} must not match")
        # warm both (trollsift's lru caches, re's cache)
        for _ in range(3):
            ours.parse(good)
            theirs.parse(good)
        cases.append(Case("match", f"{name} matching", {
            "ours PatternMatcher.parse": lambda o=ours, p=good: o.parse(p),
            "trollsift Parser.parse": lambda t=theirs, p=good: t.parse(p),
        }, loops=300 if quick else 2000, callgrind_loops=200, extra={"pattern": pattern, "path": good}))

        def reject_ours(o=ours, paths=tuple(bad)):
            for path in paths:
                o.parse(path)

        def reject_theirs(t=theirs, paths=tuple(bad)):
            for path in paths:
                t.validate(path)

        cases.append(Case("match", f"{name} non-matching", {
            "ours PatternMatcher.parse": reject_ours,
            "trollsift Parser.validate": reject_theirs,
        }, loops=2000 if quick else 10000, per_call=len(bad), callgrind_loops=500,
            extra={"pattern": pattern, "paths": bad}))
    return cases


# --------------------------------------------------------------------------------------------------
# Copy and hash
# --------------------------------------------------------------------------------------------------

def _copy_base(size: int) -> str | None:
    """tmpfs when it has room (no disk write-back noise: the loop is what is measured; the movers
    benchmark measures real file systems), else /work/tmp, else the system temporary directory."""
    for base in ("/dev/shm", "/work/tmp"):
        try:
            stat = os.statvfs(base)
        except OSError:
            continue
        if os.access(base, os.W_OK) and stat.f_bavail * stat.f_frsize > 4 * size:
            return base
    return None


class CopyFixture:
    """One source file (random bytes) and a destination path on the same (preferably tmpfs) file system."""

    def __init__(self, size: int):
        self.dir = Path(tempfile.mkdtemp(prefix="perf-copy-", dir=_copy_base(size)))
        self.src = self.dir / "src.bin"
        self.dst = self.dir / "dst.bin"
        self.size = size
        with open(self.src, "wb") as out:
            left = size
            while left:
                piece = min(left, 16 * MiB)
                out.write(os.urandom(piece))
                left -= piece
        self.buffer = bytearray(MiB)  # the movers' default buffer_size
        self.fds: list[int] = []
        self.streams: list[Any] = []

    def copy_stream(self, method: str | None) -> Callable[[], Any]:
        from trollmoves._accel import copy_stream
        from trollmoves.movers.checksum import new_hasher

        def run():
            hasher = new_hasher(method)
            src = os.open(self.src, os.O_RDONLY)
            dst = os.open(self.dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                copy_stream(src, dst, self.buffer, hasher)
            finally:
                os.close(src)
                os.close(dst)
            return hasher.hexdigest() if hasher is not None else None
        return run

    def hash_stream(self, method: str) -> Callable[[], Any]:
        from trollmoves._accel import hash_stream
        from trollmoves.movers.checksum import new_hasher

        def run():
            hasher = new_hasher(method)
            src = os.open(self.src, os.O_RDONLY)
            try:
                hash_stream(src, self.buffer, hasher)
            finally:
                os.close(src)
            return hasher.hexdigest()
        return run

    def hashlib_alone(self, method: str) -> Callable[[], Any]:
        def run():
            with open(self.src, "rb") as stream:
                return hashlib.file_digest(stream, method).hexdigest()
        return run

    def xxh3_alone(self) -> Callable[[], Any]:
        import xxhash

        def run():
            hasher = xxhash.xxh3_128()
            with open(self.src, "rb") as stream:
                while chunk := stream.read(MiB):
                    hasher.update(chunk)
            return hasher.hexdigest()
        return run

    def per_file(self, method: str | None, hash_only: bool = False) -> Callable[[], Any]:
        """Callgrind: one file's copy (or hash) through the compiled part or its twin, files kept open.

        What a mover does per file once the files are open: a buffer sized as ``Source.buffer``
        (the file plus one byte, at most 1 MiB), a fresh hasher, the loop, the digest. Opening and
        closing stay out (the same system calls for both implementations, and callgrind does
        not see the kernel); the destination is rewritten from offset 0 each time.
        """
        from trollmoves._accel import copy_stream, hash_stream
        from trollmoves.movers.checksum import new_hasher

        src = os.open(self.src, os.O_RDONLY)
        dst = os.open(self.dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.fds += [src, dst]
        buffer = bytearray(max(1, min(MiB, self.size + 1)))

        def run():
            hasher = new_hasher(method)
            os.lseek(src, 0, os.SEEK_SET)
            if hash_only:
                hash_stream(src, buffer, hasher)
            else:
                os.lseek(dst, 0, os.SEEK_SET)
                copy_stream(src, dst, buffer, hasher)
            return hasher.hexdigest() if hasher is not None else None
        return run

    def per_file_hashlib(self, method: str) -> Callable[[], Any]:
        """Callgrind baseline: ``hashlib.file_digest`` of the same (open) file."""
        stream = open(self.src, "rb")  # noqa: SIM115 - closed by close()
        self.streams.append(stream)

        def run():
            stream.seek(0)
            return hashlib.file_digest(stream, method).hexdigest()
        return run

    def per_file_xxh3(self) -> Callable[[], Any]:
        """Callgrind baseline: python xxhash over the same (open) file, as ``file_digest`` does for hashlib."""
        import xxhash

        stream = open(self.src, "rb")  # noqa: SIM115 - closed by close()
        self.streams.append(stream)
        buffer = bytearray(max(1, min(MiB, self.size + 1)))

        def run():
            stream.seek(0)
            hasher = xxhash.xxh3_128()
            with memoryview(buffer) as view:
                while count := stream.readinto(buffer):
                    hasher.update(view[:count])
            return hasher.hexdigest()
        return run

    def cp(self) -> Callable[[], Any]:
        return lambda: subprocess.run(["cp", str(self.src), str(self.dst)], check=True)

    def reset(self) -> None:
        """Before each timed copy: no destination file (a fresh file each time, as a transfer makes)."""
        try:
            self.dst.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        for stream in self.streams:
            stream.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def copy_cases(quick: bool, fixture: CopyFixture) -> list[Case]:
    for method in ("sha256", "xxh3_128"):  # same digest as the library alone
        if method == "sha256":
            assert fixture.copy_stream(method)() == fixture.hashlib_alone(method)()
        else:
            assert fixture.copy_stream(method)() == fixture.xxh3_alone()()
    size_label = f"{fixture.size // MiB} MiB"
    loops = 1
    cases = [
        Case("copy", f"copy {size_label}, no checksum", {
            "ours copy_stream": fixture.copy_stream(None), "cp": fixture.cp()}, loops=loops, unit="file",
            callgrind_loops=1, extra={"bytes": fixture.size}),
        Case("copy", f"copy {size_label} + xxh3_128", {
            "ours copy_stream+xxh3_128": fixture.copy_stream("xxh3_128"), "cp": fixture.cp()},
            loops=loops, unit="file", callgrind_loops=1, extra={"bytes": fixture.size}),
        Case("copy", f"copy {size_label} + sha256", {
            "ours copy_stream+sha256": fixture.copy_stream("sha256"),
            "hashlib sha256 alone": fixture.hashlib_alone("sha256")}, loops=loops, unit="file", callgrind_loops=1,
            extra={"bytes": fixture.size}),
        Case("copy", f"hash {size_label} sha256 (no copy)", {
            "ours hash_stream+sha256": fixture.hash_stream("sha256"),
            "hashlib sha256 alone": fixture.hashlib_alone("sha256")}, loops=loops, unit="file", callgrind_loops=1,
            extra={"bytes": fixture.size}),
    ]
    for case in cases:
        case.before = fixture.reset
    return cases


def _size_label(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB and size % MiB == 0 else f"{size // 1024} KiB"


def copy_callgrind_cases(fixture: CopyFixture) -> list[Case]:
    """Per-file instruction counts of the compiled copy/hash part and its twin (same case names as timed).

    Small files (4 KiB, 64 KiB: the usual satellite segment) show the per-call overhead; 8 MiB is
    mostly the hash itself, which both implementations run in the same C (OpenSSL, xxHash).
    """
    for method in ("sha256", "xxh3_128"):
        ours = fixture.per_file(method)()
        assert ours == (fixture.per_file_hashlib(method)() if method == "sha256" else fixture.per_file_xxh3()())
    label = _size_label(fixture.size)
    extra = {"bytes": fixture.size}
    return [
        Case("copy", f"copy {label}, no checksum", {"ours copy_stream": fixture.per_file(None)},
             loops=1, unit="file", callgrind_loops=200, extra=extra),
        Case("copy", f"copy {label} + xxh3_128", {
            "ours copy_stream+xxh3_128": fixture.per_file("xxh3_128"), "xxhash alone": fixture.per_file_xxh3()},
            loops=1, unit="file", callgrind_loops=200, extra=extra),
        Case("copy", f"copy {label} + sha256", {
            "ours copy_stream+sha256": fixture.per_file("sha256"),
            "hashlib sha256 alone": fixture.per_file_hashlib("sha256")}, loops=1, unit="file", callgrind_loops=200,
            extra=extra),
        Case("copy", f"hash {label} sha256 (no copy)", {
            "ours hash_stream+sha256": fixture.per_file("sha256", hash_only=True),
            "hashlib sha256 alone": fixture.per_file_hashlib("sha256")}, loops=1, unit="file", callgrind_loops=200,
            extra=extra),
    ]


def _parse_size(text: str) -> int:
    text = text.strip().lower()
    units = {"k": 1024, "m": MiB}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


# --------------------------------------------------------------------------------------------------
# Message codec
# --------------------------------------------------------------------------------------------------

def announcement(with_datetime: bool) -> dict[str, Any]:
    data = {
        "sensor": "avhrr", "stations": ["a", "b"], "platform_name": "NOAA19", "orbit_number": 76543,
        "uri": "/data/aapp/hrpt_noaa19_20240101_1200_76543.l1b", "uid": "hrpt_noaa19_20240101_1200_76543.l1b",
        "request_address": "10.1.2.3:9092",
        "checksum": {"method": "xxh3_128", "value": "5f2b9c0a4e1d7c3b8a6f0e9d2c1b4a37"},
        "size": 12_345_678, "mtime": 1704110400.123456,
    }
    if with_datetime:
        data["start_time"] = dt.datetime(2024, 1, 1, 12, 0)
    return data


def codec_cases(quick: bool) -> list[Case]:
    from posttroll.message import Message, datetime_decoder

    from trollmoves._accel import iso_object_hook

    from trollmoves import messaging

    cases = []
    for with_dt, label in ((False, "v1.01, no datetime"), (True, "v1.2, with datetime")):
        data = announcement(with_dt)
        subject = "/oper/polar/hrpt"
        raw = Message(subject, "file", data).encode()
        ours_raw = messaging.encode(subject, "file", data)
        # same wire text except the sender's timestamp
        assert ours_raw.split(" ", 3)[:2] == raw.split(" ", 3)[:2]
        assert ours_raw.split(" ", 5)[5] == raw.split(" ", 5)[5], "our encoding differs from posttroll's"
        decoded = messaging.decode(raw)
        assert decoded.data == Message.decode(raw).data
        cases.append(Case("codec", f"encode file message ({label})", {
            "ours messaging.encode": lambda d=data, s=subject: messaging.encode(s, "file", d),
            "posttroll Message(...).encode()": lambda d=data, s=subject: Message(s, "file", d).encode(),
        }, loops=500 if quick else 3000, callgrind_loops=200, extra={"bytes": len(raw)}))
        cases.append(Case("codec", f"decode file message ({label})", {
            "ours messaging.decode": lambda r=raw: messaging.decode(r),
            "posttroll Message.decode": lambda r=raw: Message.decode(r),
        }, loops=500 if quick else 3000, callgrind_loops=200, extra={"bytes": len(raw)}))
        # The compiled part alone (_speedups/codec.pxi): the hook json calls for every object of the
        # message, innermost first, on the same plain dicts; posttroll's datetime_decoder is the baseline.
        top = json.loads(raw.split(" application/json ", 1)[1])
        objects = [dict(v) for v in top.values() if isinstance(v, dict)] + [top]
        assert iso_object_hook(dict(top)) == datetime_decoder(dict(top)), "the hook differs from posttroll's"
        cases.append(Case("codec", f"object hook alone ({label})", {
            "ours iso_object_hook": lambda objs=objects: [iso_object_hook(dict(o)) for o in objs],
            "posttroll datetime_decoder": lambda objs=objects: [datetime_decoder(dict(o)) for o in objs],
        }, loops=2000 if quick else 10000, callgrind_loops=500, extra={"bytes": len(raw)}))
    return cases


# --------------------------------------------------------------------------------------------------
# The per-file path built from trollsift and posttroll calls (issue 10's baseline)
# --------------------------------------------------------------------------------------------------

def building_block_path() -> Callable[[], Any]:
    """One announced file, server match -> announce -> push request/reply -> client publish, as the
    original does it with trollsift and posttroll (no I/O). Our daemons' measured CPU per file (the
    throughput benchmark, /proc) is compared with this."""
    from posttroll.message import Message
    from trollsift import compose, globify, parse

    pattern = "/data/aapp/hrpt_{platform_name}_{start_time:%Y%m%d_%H%M}_{orbit_number:05d}.l1b"
    path = "/data/aapp/hrpt_noaa19_20240101_1200_76543.l1b"
    glob = globify(pattern)
    destination = "/archive/{platform_name}/{start_time:%Y/%m/%d}/"
    info = {"sensor": "avhrr"}

    def run():
        if not fnmatch.fnmatch(path, glob):                        # server: watchdog pre-check
            return None
        fields = parse(pattern, path)                               # server: origin pattern
        data = dict(info, **fields, uri=path, uid=os.path.basename(path), request_address="10.1.2.3:9092")
        announce = Message("/oper/polar/hrpt", "file", data)
        wire = str(announce)                                        # publisher.send
        str(announce)                                               # eager debug log of 0.19
        received = Message.decode(wire)                             # client: subscriber
        target = compose(destination, received.data)                # client: destination
        push = dict(received.data, destination=target)
        request = Message(received.subject, "push", push).encode()  # client: request
        served = Message.decode(request)                            # server: request port
        reply = Message(served.subject, "file", dict(served.data)).encode()
        answer = Message.decode(reply)                              # client: reply
        final = dict(answer.data, uri=target + answer.data["uid"])
        final.pop("destination", None)
        final.pop("request_address", None)
        return Message(answer.subject, "file", final).encode()      # client: final message
    run()
    return run


def path_cases(quick: bool) -> list[Case]:
    return [Case("path", "per-file CPU path, trollsift + posttroll building blocks", {
        "building blocks": building_block_path()}, loops=200 if quick else 1000, callgrind_loops=50)]


# --------------------------------------------------------------------------------------------------
# Timing and callgrind engines
# --------------------------------------------------------------------------------------------------

def calibrate(function: Callable[[], Any], target: float, most: int) -> int:
    """Calls per timed repeat so that one repeat takes about ``target`` seconds (1 .. most)."""
    started = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - started < target / 10:
        function()
        calls += 1
        if calls >= most:
            break
    each = (time.perf_counter() - started) / calls
    return max(1, min(most, int(target / max(each, 1e-9))))


def time_cases(cases: list[Case], repeats: dict[str, int], target: float) -> list[dict[str, Any]]:
    """Time every case, interleaved: round r runs repeat r of every variant of every case.

    Within a case the variants alternate (A, B, A, B, ...); across cases the repeats are
    spread over the whole run, so a disturbance of a fraction of a second (another
    process's burst) spoils one repeat of a case, not all of them.
    """
    loops_of = [{variant: calibrate(function, target, case.loops) for variant, function in case.variants.items()}
                for case in cases]
    samples: list[dict[str, list[float]]] = [{variant: [] for variant in case.variants} for case in cases]
    for round_number in range(max(repeats.values())):
        for index, case in enumerate(cases):
            if round_number >= repeats[case.group]:
                continue
            for variant, function in case.variants.items():
                loops = loops_of[index][variant]
                if case.before is not None:
                    case.before()
                started = time.perf_counter()
                for _ in range(loops):
                    function()
                samples[index][variant].append((time.perf_counter() - started) / (loops * case.per_call))
    return [{
        "group": case.group, "case": case.name, "unit": case.unit, "per_call": case.per_call,
        "loops": loops_of[index], "repeats": repeats[case.group], "extra": case.extra,
        "seconds": {variant: {"best": min(values), "median": statistics.median(values), "all": values}
                    for variant, values in samples[index].items()},
    } for index, case in enumerate(cases)]


def build_cases(groups: set[str], quick: bool, copy_sizes: list[int],
                callgrind: bool = False) -> tuple[list[Case], list[CopyFixture]]:
    cases: list[Case] = []
    fixtures = []
    if "match" in groups:
        cases += match_cases(quick)
    if "copy" in groups:
        for size in copy_sizes:
            fixtures.append(CopyFixture(size))
            cases += copy_callgrind_cases(fixtures[-1]) if callgrind else copy_cases(quick, fixtures[-1])
    if "codec" in groups:
        cases += codec_cases(quick)
    if "path" in groups:
        cases += path_cases(quick)
    return cases, fixtures


def run_callgrind_loops(cases: list[Case], scale: int, budget: float) -> list[dict[str, Any]]:
    """Each variant: mark, N calls, mark, mark, 2N calls, mark (each mark ends a callgrind dump).

    N is at most ``callgrind_loops * scale`` and is lowered for slow variants so that
    one variant takes about ``budget`` s under valgrind (measured in this process).
    Returns, in dump order, what was run.
    """
    listing = []
    for case in cases:
        if not case.callgrind_loops:
            continue
        loops_of = {}
        for variant, function in case.variants.items():
            if variant == "cp":
                continue  # another process: callgrind (without --trace-children) does not see its work
            function()  # warm (first-call costs stay out of both loops)
            started = time.perf_counter()
            function()
            each = time.perf_counter() - started
            loops = max(3, min(case.callgrind_loops * scale, int(budget / 3 / max(each, 1e-9))))
            loops_of[variant] = loops
            for factor in (1, 2):
                os.sched_yield()
                for _ in range(loops * factor):
                    function()
                os.sched_yield()
        listing.append({"group": case.group, "case": case.name, "variants": list(loops_of),
                        "loops": loops_of, "per_call": case.per_call, "unit": case.unit, "extra": case.extra})
    return listing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--groups", default="match,copy,codec,path")
    parser.add_argument("--copy-mib", type=int, default=None, help="copy/hash file size (default 512, quick 128)")
    parser.add_argument("--copy-sizes", default=None,
                        help="callgrind: comma-separated copy/hash file sizes such as 4k,64k,8m (default: --copy-mib, 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 11, quick 7)")
    parser.add_argument("--callgrind", action="store_true", help="run the loops for callgrind (see run.py)")
    parser.add_argument("--scale", type=int, default=1, help="callgrind: multiply the loop counts")
    parser.add_argument("--budget", type=float, default=2.0, help="callgrind: seconds per variant at most")
    parser.add_argument("--target", type=float, default=None,
                        help="seconds per timed repeat (default 0.03, quick 0.01)")
    parser.add_argument("--output", help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    groups = set(args.groups.split(","))
    copy_mib = args.copy_mib or (8 if args.callgrind else 128 if args.quick else 512)
    copy_sizes = [copy_mib * MiB]
    if args.copy_sizes and args.callgrind:
        copy_sizes = [_parse_size(size) for size in args.copy_sizes.split(",")]
    cases, fixtures = build_cases(groups, args.quick, copy_sizes, args.callgrind)
    try:
        if args.callgrind:
            listing = run_callgrind_loops(cases, args.scale, args.budget)
            text = json.dumps({"callgrind_cases": listing})
        else:
            from trollmoves._accel import IMPLEMENTATION

            repeats = args.repeats or (7 if args.quick else 11)
            target = args.target or (0.01 if args.quick else 0.03)
            per_group = {"match": repeats, "codec": repeats, "path": repeats, "copy": 9}
            results = time_cases(cases, per_group, target)
            for result in results:
                result["implementation"] = IMPLEMENTATION
                print(f"  [{IMPLEMENTATION}] {result['case']}: " + ", ".join(
                    f"{variant} {1e6 * t['best']:.3f} us" if t["best"] < 0.01 else f"{variant} {t['best']:.4f} s"
                    for variant, t in result["seconds"].items()), file=sys.stderr, flush=True)
            text = json.dumps({"implementation": IMPLEMENTATION, "results": results})
    finally:
        for fixture in fixtures:
            fixture.close()
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
