"""trollmoves perf suite: run the benchmarks, compare each ratio with its floor, record everything.

    perf/run                 full run (about 20-25 minutes on 2 cores)
    perf/run --quick         the CI gate (under 5 minutes on 2 cores)
    perf/run --only micro,callgrind,macro,rss,movers
    perf/run --profile       also profile our daemons under load with py-spy (if installed)

Every ratio is "higher is better": baseline time / our time, or our rate /
baseline rate. ``perf/floors.toml`` holds one minimum per benchmark id; the run
exits 1 when a ratio is below its floor or a benchmark could not run. Results go
to ``perf/results/`` (gitignored): ``<stamp>-<mode>.json`` (machine, versions,
raw figures, ratios), ``.md`` (the table) and ``.png`` (ratios against floors),
and copies named ``latest-<mode>.*``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))

import chart
from common import RESULTS, log, machine_info, original_installed, versions, workdir

FLOORS = PERF / "floors.toml"
GROUPS = ("micro", "callgrind", "macro", "rss", "movers")
IMPLEMENTATIONS = ("c", "py")


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def impl_env(impl: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TROLLMOVES_NO_EXTENSIONS", None)
    env.pop("TROLLMOVES_REQUIRE_EXTENSIONS", None)
    if impl == "py":
        env["TROLLMOVES_NO_EXTENSIONS"] = "1"
    else:
        env["TROLLMOVES_REQUIRE_EXTENSIONS"] = "1"
    return env


def compiled_available() -> bool:
    code = "from trollmoves._accel import IMPLEMENTATION; print(IMPLEMENTATION)"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=impl_env("c"),
                           check=False)
    return probe.returncode == 0 and probe.stdout.strip() == "c"


# --------------------------------------------------------------------------------------------------
# Rows: one per benchmark id
# --------------------------------------------------------------------------------------------------

class Rows:
    def __init__(self):
        self.rows: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        self.path_baseline: float | None = None      # s per file, building blocks (micro, c leg)
        self.path_baseline_ir: float | None = None   # instructions per file, same
        self.ir_only: dict[str, dict] = {}            # instruction counts without a baseline (compiled vs twin only)

    def add(self, bench_id: str, group: str, title: str, ours: float, baseline: float | None, unit: str,
            ratio: float, goal: float | None = None, goal_text: str = "", ours_label: str = "ours",
            baseline_label: str = "", details: dict | None = None) -> None:
        self.rows.append({"id": bench_id, "group": group, "title": title, "ours": ours, "baseline": baseline,
                          "unit": unit, "ratio": ratio, "goal": goal, "goal_text": goal_text,
                          "ours_label": ours_label, "baseline_label": baseline_label, "details": details or {}})

    def error(self, group: str, exc: BaseException) -> None:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log(f"!! {group} failed: {text}")
        traceback.print_exc()
        self.errors.append({"group": group, "error": text})


def fmt_time(seconds: float) -> tuple[float, str]:
    if seconds < 1e-3:
        return seconds * 1e6, "us"
    if seconds < 1:
        return seconds * 1e3, "ms"
    return seconds, "s"


# --------------------------------------------------------------------------------------------------
# Micro benchmarks (wall clock), per implementation
# --------------------------------------------------------------------------------------------------

def run_micro(quick: bool, impls: list[str], raw: dict, rows: Rows) -> None:
    for impl in impls:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = Path(handle.name)
        try:
            command = [sys.executable, str(PERF / "micro" / "bench.py"), "--output", str(out)]
            if quick:
                command.append("--quick")
            log(f"== micro [{impl}]: {' '.join(command[1:])}")
            subprocess.run(command, check=True, env=impl_env(impl), timeout=1800)
            data = json.loads(out.read_text())
        finally:
            out.unlink(missing_ok=True)
        raw.setdefault("micro", {})[impl] = data
        micro_rows(impl, data["results"], rows)
        run_per_file_path(quick, impl, raw, rows)


def run_per_file_path(quick: bool, impl: str, raw: dict, rows: Rows) -> None:
    """perf/micro/per_file_path.py: our announce -> request -> publish path against the same path built
    from trollsift + posttroll calls, in one process, no I/O (issue 10's per-file CPU goal)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        command = [sys.executable, str(PERF / "micro" / "per_file_path.py"), "--json", str(out),
                   "--files", "2000" if quick else "5000", "--rounds", "3" if quick else "5"]
        subprocess.run(command, check=True, env=impl_env(impl), timeout=900, stdout=subprocess.DEVNULL)
        data = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    raw.setdefault("per_file_path", {})[impl] = data
    rows.add(f"path.cpu_per_file_inprocess.{impl}", "micro", f"per-file CPU of the announce -> request -> publish "
             f"path, in one process without I/O [{impl}]", data["ours"], data["baseline"], "us/file", data["ratio"],
             3.0 if impl == "c" else None, ">= 3 x lower than the same path from trollsift + posttroll (issue 10)"
             if impl == "c" else "", "trollmoves.matching + messaging", "trollsift + posttroll")


def _best(result: dict, variant: str) -> float:
    return result["seconds"][variant]["best"]


def codec_kind(case: str) -> str:
    """encode, decode, or object_hook (the JSON object hook alone, _speedups/codec.pxi's own work)."""
    if case.startswith("encode"):
        return "encode"
    return "object_hook" if case.startswith("object hook") else "decode"


def micro_rows(impl: str, results: list[dict], rows: Rows) -> None:
    by_group: dict[str, list[dict]] = {}
    for result in results:
        by_group.setdefault(result["group"], []).append(result)
    matching = [r for r in by_group.get("match", []) if r["case"].endswith(" matching")]
    rejecting = [r for r in by_group.get("match", []) if r["case"].endswith("non-matching")]
    if matching:
        ratios = {r["case"]: _best(r, "trollsift Parser.parse") / _best(r, "ours PatternMatcher.parse")
                  for r in matching}
        ours = geomean([_best(r, "ours PatternMatcher.parse") for r in matching])
        theirs = geomean([_best(r, "trollsift Parser.parse") for r in matching])
        rows.add(f"match.matching.{impl}", "micro", f"pattern match, matching names [{impl}] "
                 f"(geomean of {len(matching)} patterns)", ours * 1e6, theirs * 1e6, "us/name", geomean(list(
                     ratios.values())), 5.0 if impl == "c" else None, ">= 5 x warm trollsift.Parser (issue 10)",
                 "PatternMatcher.parse", "trollsift Parser.parse",
                 {"per_pattern_ratio": ratios, "min_ratio": min(ratios.values())})
    if rejecting:
        ratios = {r["case"]: _best(r, "trollsift Parser.validate") / _best(r, "ours PatternMatcher.parse")
                  for r in rejecting}
        ours_each = {r["case"]: _best(r, "ours PatternMatcher.parse") for r in rejecting}
        rows.add(f"match.nonmatching.{impl}", "micro", f"pattern reject, non-matching names [{impl}] (geomean)",
                 geomean(list(ours_each.values())) * 1e6,
                 geomean([_best(r, "trollsift Parser.validate") for r in rejecting]) * 1e6, "us/name",
                 geomean(list(ratios.values())), None, "", "PatternMatcher.parse", "trollsift Parser.validate",
                 {"per_pattern_ratio": ratios})
        worst_case = max(ours_each, key=ours_each.get)
        worst = ours_each[worst_case]
        rows.add(f"match.reject_0.3us.{impl}", "micro", f"slowest reject vs the 0.3 us goal [{impl}] "
                 f"({worst_case.replace(' non-matching', '')})", worst * 1e6, 0.3, "us/name", 0.3e-6 / worst,
                 1.0 if impl == "c" else None, "every non-matching name rejected in <= 0.3 us (issue 10)",
                 "PatternMatcher.parse", "goal 0.3 us", {"per_pattern_us": {k: v * 1e6 for k, v in ours_each.items()}})
    for result in by_group.get("copy", []):
        case = result["case"]
        variants = list(result["seconds"])
        ours_variant = next(v for v in variants if v.startswith("ours"))
        base_variant = next(v for v in variants if not v.startswith("ours"))
        ours, base = _best(result, ours_variant), _best(result, base_variant)
        size = result["extra"]["bytes"]
        if "no checksum" in case:
            bench_id, goal, goal_text = "copy.none", 0.9, ">= 0.9 x cp (issues 3, 10)"
        elif "xxh3" in case:
            bench_id, goal, goal_text = "copy.xxh3_128", 0.8, "with xxh3 >= 0.8 x cp (issues 3, 10)"
        elif case.startswith("copy") and "sha256" in case:
            bench_id, goal, goal_text = "copy.sha256", 0.9, "with sha256 >= 0.9 x hashlib alone (issues 3, 10)"
        else:
            bench_id, goal, goal_text = "hash.sha256", None, ""
        rows.add(f"{bench_id}.{impl}", "micro", f"{case} [{impl}]", size / ours / 1e6, size / base / 1e6, "MB/s",
                 base / ours, goal, goal_text, ours_variant, base_variant,
                 {"ours_s": result["seconds"][ours_variant], "baseline_s": result["seconds"][base_variant]})
    for result in by_group.get("codec", []):
        case = result["case"]
        ours_variant = next(v for v in result["seconds"] if v.startswith("ours"))
        base_variant = next(v for v in result["seconds"] if not v.startswith("ours"))
        ours, base = _best(result, ours_variant), _best(result, base_variant)
        kind = codec_kind(case)
        version = "v1.2" if "v1.2" in case else "v1.01"
        rows.add(f"codec.{kind}.{version}.{impl}", "micro", f"{case} [{impl}]", ours * 1e6, base * 1e6, "us/msg",
                 base / ours, None, "", ours_variant, base_variant)
    for result in by_group.get("path", []):
        if rows.path_baseline is None or impl == "c":  # the building blocks do not use our speedups
            rows.path_baseline = result["seconds"]["building blocks"]["best"]


# --------------------------------------------------------------------------------------------------
# Instruction counts under callgrind
# --------------------------------------------------------------------------------------------------

def ensure_valgrind() -> bool:
    if shutil.which("valgrind"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("== valgrind is missing: apt-get install valgrind")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "valgrind"], env=env,
                       check=False, timeout=900, stdout=subprocess.DEVNULL)
    return shutil.which("valgrind") is not None


def _dump_totals(prefix: Path) -> dict[int, int]:
    """part number -> instructions, from callgrind's dump files ``prefix``, ``prefix.1``, ..."""
    totals = {}
    for path in prefix.parent.glob(prefix.name + "*"):
        part = total = None
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith("part:"):
                    part = int(line.split()[1])
                elif line.startswith(("totals:", "summary:")):
                    total = int(line.split()[1])
                    break
        if part is not None and total is not None:
            totals[part] = total
    return totals


def callgrind_counts(impl: str, groups: str, budget: float, copy_sizes: str = "8m") -> list[dict]:
    """Run bench.py --callgrind under valgrind; return per case and variant the instructions per call."""
    # sys.executable as it is, not its realpath: in a virtual environment it is <venv>/bin/python, a
    # symlink whose location tells Python where the venv (its site-packages) is; the realpath is the
    # base interpreter, which does not see the packages installed in the venv.
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="perf-callgrind-") as tmp:
        prefix = Path(tmp) / "callgrind.out"
        listing_path = Path(tmp) / "listing.json"
        command = ["valgrind", "--tool=callgrind", "--dump-before=sched_yield", f"--callgrind-out-file={prefix}",
                   python, str(PERF / "micro" / "bench.py"), "--callgrind", "--groups", groups,
                   "--budget", str(budget), "--copy-sizes", copy_sizes, "--output", str(listing_path)]
        log(f"== callgrind [{impl}] {groups}")
        started = time.monotonic()
        subprocess.run(command, check=True, env=impl_env(impl), timeout=3600, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        listing = json.loads(listing_path.read_text())["callgrind_cases"]
        totals = _dump_totals(prefix)
        log(f"   {time.monotonic() - started:.0f} s, {len(totals)} dumps")
    results = []
    part = 0
    for case in listing:
        counts = {}
        for variant in case["variants"]:
            loops = case["loops"][variant]
            one, two = totals.get(part + 2), totals.get(part + 4)
            part += 4
            if one is None or two is None:
                raise RuntimeError(f"callgrind: missing dump for {case['case']} / {variant}")
            counts[variant] = (two - one) / loops / case["per_call"]
        results.append({**case, "instructions": counts})
    expected = part + 1
    if max(totals) != expected:
        raise RuntimeError(f"callgrind: {max(totals)} dumps, expected {expected} (another sched_yield caller?)")
    return results


def run_callgrind(quick: bool, impls: list[str], raw: dict, rows: Rows) -> None:
    if not ensure_valgrind():
        raise RuntimeError("valgrind is not installed and could not be installed (apt-get install valgrind)")
    # copy: 4 KiB, 64 KiB and 8 MiB files (quick 4 KiB and 2 MiB, two 1 MiB chunks): in --quick too, their
    # instruction counts are the non-drifting gate of the copy/hash part (the copy timings swing too much
    # for a 30 % floor); the small files are where the compiled loop itself, not the hash, is the cost
    groups = "match,codec,path,copy"
    budget = 0.25 if quick else 2.0
    for impl in impls:
        # the building-block path is the same Python code for both: measured once, with the compiled leg
        impl_groups = groups.replace(",path", "") if impl == "py" and "c" in impls else groups
        results = callgrind_counts(impl, impl_groups, budget, "4k,2m" if quick else "4k,64k,8m")
        raw.setdefault("callgrind", {})[impl] = results
        callgrind_rows(impl, results, rows)
    compiled_vs_twin_rows(rows)


# The compiled part each instruction-count case exercises (issue 17 goal 3: each earns >= 1.5 x its
# pure twin, or goes). A case with no compiled part in it gets a row without a goal, as context.
COMPILED_PARTS = (("ir.match.", "the matcher (_speedups/matching.pxi)"),
                  ("ir.copy.", "chunked copy and hash (_speedups/copy.pxi)"),
                  ("ir.codec.object_hook.", "the JSON object hook alone (_speedups/codec.pxi)"),
                  ("ir.codec.decode.", "the JSON object hook (_speedups/codec.pxi) inside the whole decode"))
COMPILED_GOAL = 1.5


def compiled_vs_twin_rows(rows: Rows) -> None:
    """``ir.<case>.c_vs_py`` = Ir(py) / Ir(c) for every case measured with both implementations in this run."""
    by_id = {**rows.ir_only, **{row["id"]: row for row in rows.rows if row["group"] == "callgrind"}}
    hook_alone = any(bench_id.startswith("ir.codec.object_hook.") for bench_id in by_id)
    for bench_id, compiled in list(by_id.items()):
        if not bench_id.endswith(".c") or bench_id[:-2] + ".py" not in by_id:
            continue
        case = bench_id[:-2]
        twin = by_id[case + ".py"]
        part = next((name for prefix, name in COMPILED_PARTS if bench_id.startswith(prefix)), None)
        if hook_alone and bench_id.startswith("ir.codec.decode."):
            part = None  # the hook's own row carries the goal; the whole decode is mostly the stdlib's json scanner
        hash_bound = bench_id.startswith(("ir.copy.sha256", "ir.copy.hash_sha256")) or (
            bench_id.startswith("ir.copy.xxh3_128.") and not bench_id.startswith(("ir.copy.xxh3_128.4k.",)))
        if hash_bound:
            part = None  # > 99 % of it is the hash: the same OpenSSL / xxHash C code in both implementations
        title = compiled["title"].replace(" [c]", "")
        goal_text = (f"{part}: >= {COMPILED_GOAL} x fewer instructions than its pure twin (issue 17)" if part else
                     "hash-bound: the same C hash in both, the loop around it < 1 %: context (a regression guard)"
                     if hash_bound else "no compiled part in this path: context only")
        rows.add(f"{case}.c_vs_py", "callgrind", f"{title}: compiled vs pure twin", compiled["ours"], twin["ours"],
                 compiled["unit"], twin["ours"] / compiled["ours"], COMPILED_GOAL if part else None, goal_text,
                 "trollmoves._speedups", "trollmoves._native", {"compiled_part": part})


def callgrind_rows(impl: str, results: list[dict], rows: Rows) -> None:
    def pair(result: dict) -> tuple[str, str]:
        variants = list(result["instructions"])
        ours = next(v for v in variants if v.startswith("ours"))
        base = next((v for v in variants if not v.startswith("ours")), ours)
        return ours, base

    matching = [r for r in results if r["group"] == "match" and r["case"].endswith(" matching")]
    rejecting = [r for r in results if r["group"] == "match" and r["case"].endswith("non-matching")]
    for bench_id, items, title in (("matching", matching, "pattern match, matching names"),
                                   ("nonmatching", rejecting, "pattern reject, non-matching names")):
        if not items:
            continue
        ratios = {}
        for result in items:
            ours, base = pair(result)
            ratios[result["case"]] = result["instructions"][base] / result["instructions"][ours]
        ours_ir = geomean([r["instructions"][pair(r)[0]] for r in items])
        base_ir = geomean([r["instructions"][pair(r)[1]] for r in items])
        rows.add(f"ir.match.{bench_id}.{impl}", "callgrind", f"{title} [{impl}], instructions (geomean)", ours_ir,
                 base_ir, "Ir/name", geomean(list(ratios.values())), None, "", "PatternMatcher.parse",
                 "trollsift", {"per_pattern_ratio": ratios})
    for result in results:
        if result["group"] == "codec":
            ours, base = pair(result)
            kind = codec_kind(result["case"])
            version = "v1.2" if "v1.2" in result["case"] else "v1.01"
            rows.add(f"ir.codec.{kind}.{version}.{impl}", "callgrind", f"{result['case']} [{impl}], instructions",
                     result["instructions"][ours], result["instructions"][base], "Ir/msg",
                     result["instructions"][base] / result["instructions"][ours], None, "", ours, base)
        elif result["group"] == "copy":
            ours, base = pair(result)
            size = result["extra"]["bytes"]
            case = result["case"]
            key = ("none" if "no checksum" in case else "xxh3_128" if "xxh3" in case else
                   "sha256" if case.startswith("copy") else "hash_sha256")
            # files of 1 MiB and more: per MiB, under the long-standing ids; smaller files: per file, by size
            if size >= 2**20:  # by size too: quick runs 2 MiB, full 8 MiB, and the per-file costs differ
                bench_id, unit, scale = f"ir.copy.{key}.{size // 2**20}m", "Ir/MiB", size / 2**20
            else:
                bench_id, unit, scale = f"ir.copy.{key}.{size // 1024}k", "Ir/file", 1
            if base == ours:  # no baseline in this process (cp is another one): kept for compiled vs twin
                rows.ir_only[f"{bench_id}.{impl}"] = {"ours": result["instructions"][ours] / scale, "unit": unit,
                                                      "title": f"{case} [{impl}], instructions"}
                continue
            rows.add(f"{bench_id}.{impl}", "callgrind", f"{case} [{impl}], instructions per "
                     f"{'MiB' if unit == 'Ir/MiB' else 'file'}", result["instructions"][ours] / scale,
                     result["instructions"][base] / scale, unit,
                     result["instructions"][base] / result["instructions"][ours], None, "", ours, base)
        elif result["group"] == "path" and (rows.path_baseline_ir is None or impl == "c"):
            rows.path_baseline_ir = result["instructions"]["building blocks"]


# --------------------------------------------------------------------------------------------------
# Macro: daemons, RSS, movers
# --------------------------------------------------------------------------------------------------

THROUGHPUT_GOAL = 2000.0    # files/s, 4 KiB files (issue 17 goal 1)
CPU_PER_FILE_GOAL = 600.0   # us of server + client CPU per file (issue 17 goal 1)
BURST_P99_GOAL = 6.0        # s from drop to arrival, p99 of the burst (issue 17 goal 1)


def run_macro(quick: bool, raw: dict, rows: Rows) -> None:
    from macro import daemons, hops

    if not original_installed():
        raise RuntimeError("trollmoves 0.19.0 is not installed (TROLLMOVES_019_VENV; tests/run_all.sh makes it)")
    hop_count = 30 if quick else 100
    log(f"== macro: the bare hops a file needs ({hop_count} samples each; perf/macro/hops.py)")
    raw["hops"] = hop_data = hops.measure(hop_count)
    for hop in hop_data["hops"].values():
        log(f"   {hop['title']}: p50 {hop['p50_s'] * 1e3:.3f} ms, p90 {hop['p90_s'] * 1e3:.3f} ms")
    log("== macro: server -> client, ours and 0.19 (interleaved)")
    with workdir("perf-daemons-") as base:
        data = daemons.run(quick, base)
    raw["macro"] = data
    latency = data["latency"]
    for name, record in latency.items():
        if record["timeouts"] > data["latency_files"] // 10 or not record["arrival_raw_s"]:
            raise RuntimeError(f"latency: {record['timeouts']} of {data['latency_files']} files of {name} "
                               "timed out (10 s)")
    for kind, goal_for_p50, goal_text in (
            ("arrival", 1 / 0.3, "p50 <= 0.3 x the original (issue 4)"),
            ("publication", 1 / 0.05, "p50 <= 0.05 x the original (issue 4)")):
        for q in ("p50", "p90", "p99"):
            ours = latency["ours"][f"{kind}_s"][q]
            base = latency["0.19"][f"{kind}_s"][q]
            title = ("file arrival latency (closed at the server -> complete at the destination)" if kind == "arrival"
                     else "client publication latency (closed at the server -> client's file message)")
            rows.add(f"macro.{kind}_latency.{q}", "macro", f"{title} {q}", ours * 1e3, base * 1e3, "ms",
                     base / ours, goal_for_p50 if q == "p50" else None, goal_text if q == "p50" else "",
                     "ours", "trollmoves 0.19.0",
                     {"samples": latency["ours"][f"{kind}_s"]["n"], "timeouts_ours": latency["ours"]["timeouts"],
                      "timeouts_original": latency["0.19"]["timeouts"]})
    arrival_p50 = latency["ours"]["arrival_s"]["p50"]
    hops_sum = hop_data["arrival_hops_p50_s"]
    log(f"   arrival p50 {arrival_p50 * 1e3:.3f} ms; sum of the bare hops {hops_sum * 1e3:.3f} ms "
        f"({' + '.join(hop_data['arrival_hops'])}); 1.5 x hops / arrival = {1.5 * hops_sum / arrival_p50:.3g}")
    rows.add("macro.arrival_vs_hops.p50", "macro", "file arrival p50 (ours) vs 1.5 x the sum of the bare hops "
             "(inotify + PUB->SUB + DEALER->ROUTER + 4 KiB copy, perf/macro/hops.py, same run)", arrival_p50 * 1e3,
             1.5 * hops_sum * 1e3, "ms", 1.5 * hops_sum / arrival_p50, 1.0,
             "arrival p50 <= 1.5 x the sum of the bare hops (issue 17)", "arrival p50", "1.5 x hops",
             {"hops_p50_ms": {name: hop["p50_s"] * 1e3 for name, hop in hop_data["hops"].items()},
              "hops_sum_ms": hops_sum * 1e3})
    throughput = data["throughput"]
    ours = throughput["ours"]["best"]
    base = throughput["0.19"]["best"]
    count = data["throughput_files"]
    rows.add("macro.throughput", "macro", f"{count} x 4 KiB server -> client throughput", ours["files_per_s"],
             base["files_per_s"], "files/s", ours["files_per_s"] / base["files_per_s"] if base["files_per_s"] else 0,
             200.0, ">= 200 x the original (issue 17; issue 4 asked 10 x)", "ours", "trollmoves 0.19.0",
             {"ours_delivered": ours["delivered"], "original_delivered": base["delivered"]})
    rows.add("macro.throughput_2000_files_per_s", "macro", f"{count} x 4 KiB server -> client throughput vs the "
             f"{THROUGHPUT_GOAL:.0f} files/s goal", ours["files_per_s"], THROUGHPUT_GOAL, "files/s",
             ours["files_per_s"] / THROUGHPUT_GOAL, 1.0, f">= {THROUGHPUT_GOAL:.0f} files/s (issue 17)", "ours",
             "goal")
    if ours["delivered"] < count or ours["published"] < count:
        raise RuntimeError(f"our daemons delivered {ours['delivered']} and published {ours['published']} "
                           f"of {count} files")
    rows.add("macro.cpu_per_file", "macro", "CPU per file, server + client processes over the burst "
             "(/proc utime+stime; 0.19's includes its idle loops over its longer burst)",
             ours["cpu_us_per_file"], base["cpu_us_per_file"], "us/file",
             base["cpu_us_per_file"] / ours["cpu_us_per_file"], None, "", "ours", "trollmoves 0.19.0",
             {"ours_cpu_s": ours["cpu_s"], "original_cpu_s": base["cpu_s"]})
    burst_rows(data, rows)
    baseline = rows.path_baseline
    if baseline is not None:
        rows.add("path.cpu_per_file", "macro", "per-file CPU: our daemons as processes (/proc, all threads, I/O "
                 "included) vs the building-block path without I/O (context for issue 10; its goal is the "
                 "in-process row)", ours["cpu_us_per_file"], baseline * 1e6, "us/file",
                 baseline * 1e6 / ours["cpu_us_per_file"], None, "", "our daemons", "building blocks")


def burst_rows(data: dict, rows: Rows) -> None:
    """The N-file burst (ours only): exactly once or the run fails; files/s, p99 and CPU per file against goals."""
    from macro import daemons

    burst, count = data["burst"], data["burst_files"]
    problems = daemons.exactly_once_failures(burst)
    if problems:
        raise RuntimeError(f"burst of {count} files: not exactly once: {'; '.join(problems)}")
    rows.add("macro.burst_files_per_s", "macro", f"{count:,} x 4 KiB dropped at once: files/s vs the "
             f"{THROUGHPUT_GOAL:.0f} files/s goal", burst["files_per_s"], THROUGHPUT_GOAL, "files/s",
             burst["files_per_s"] / THROUGHPUT_GOAL, 1.0, f">= {THROUGHPUT_GOAL:.0f} files/s (issue 17)", "ours",
             "goal", {"to_last_arrival_s": burst["to_last_arrival_s"], "write_s": burst["write_s"]})
    p99 = burst["arrival_s"]["p99"]
    rows.add("macro.burst_arrival_p99_6s", "macro", f"{count:,} x 4 KiB dropped at once: drop -> arrival p99 vs "
             f"the {BURST_P99_GOAL:g} s goal", p99, BURST_P99_GOAL, "s", BURST_P99_GOAL / p99, 1.0,
             f"p99 drop -> arrival < {BURST_P99_GOAL:g} s (issue 17)", "ours", "goal",
             {"arrival_s": burst["arrival_s"]})
    # CPU per file from /proc: the gate's measure for the daemons (it does not drift like the wall clock);
    # the lowest over the throughput rounds and the burst, all of them bursts of 4 KiB files
    runs = [*data["throughput"]["ours"]["runs"], burst]
    best = min(runs, key=lambda run: run["cpu_us_per_file"])
    rows.add("macro.cpu_per_file_0.6ms", "macro", "CPU per file of our server + client (/proc utime+stime, all "
             f"threads, 4 KiB files; lowest of {len(runs)} bursts) vs the {CPU_PER_FILE_GOAL:.0f} us goal",
             best["cpu_us_per_file"], CPU_PER_FILE_GOAL, "us/file", CPU_PER_FILE_GOAL / best["cpu_us_per_file"], 1.0,
             f"<= {CPU_PER_FILE_GOAL / 1000:g} ms per file (issue 17)", "ours", "goal",
             {"per_burst_us": [round(run["cpu_us_per_file"], 1) for run in runs],
              "files": [run["files"] for run in runs]})


def run_rss(quick: bool, raw: dict, rows: Rows) -> None:
    from macro import rss

    first, last = (10_000, 20_000) if quick else (10_000, 100_000)
    log(f"== rss: our server + client after {first} and {last} files")
    with workdir("perf-rss-") as base:
        data = rss.run(base, first, last, every=None if quick else 10_000)
    raw["rss"] = data
    goal = None if quick else 1 / 1.1  # the goal is about 100,000 files; quick is a reduced form
    rows.add(f"rss.{first // 1000}k_vs_{last // 1000}k", "macro",
             f"RSS of our server + client after {last:,} files vs after {first:,}", data["rss_last_bytes"] / 2**20,
             data["rss_first_bytes"] / 2**20, "MiB", data["ratio"], goal,
             "within 10 % (ratio >= 0.909; issue 4)" if goal else "", f"after {last:,}", f"after {first:,}",
             {"growth": data["growth"], "lost": data["lost"], "samples": data["samples"]})
    if data["lost"]:
        raise RuntimeError(f"{data['lost']} files were not delivered during the RSS run")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def run_movers(quick: bool, raw: dict, rows: Rows, results_dir: Path, stamp: str) -> None:
    script = PERF / "movers_bench.py"
    if not script.exists():
        raise RuntimeError("perf/movers_bench.py is missing")
    output = results_dir / f"{stamp}-movers.json"
    command = [sys.executable, str(script), "--output", str(output)]
    if quick:
        command.append("--quick")
    log(f"== movers: {' '.join(command[1:])}")
    subprocess.run(command, check=True, timeout=3600, stdout=subprocess.DEVNULL)
    data = json.loads(output.read_text())
    raw["movers"] = data
    for row in data["rows"]:
        case = re.sub(r"^\d+ x ", "", row["case"])
        case = re.sub(r"\s*\d+ MiB", "", case)
        bench_id = f"movers.{_slug(case)}.{_slug(row['ours'])}"
        unit = row["unit"]
        goal = row.get("goal")
        rows.add(bench_id, "movers", f"{row['case']}: {row['ours']} vs {row['baseline']}", row["ours_rate"],
                 row["baseline_rate"], unit, row["ratio"], goal, f">= {goal} x {row['baseline']} (issue 3)"
                 if goal else "", row["ours"], row["baseline"], {"ours_best_s": row["ours_best_s"],
                                                                 "baseline_best_s": row["baseline_best_s"]})


# --------------------------------------------------------------------------------------------------
# Floors, report
# --------------------------------------------------------------------------------------------------

def _load_toml() -> dict[str, Any]:
    if not FLOORS.exists():
        return {}
    with open(FLOORS, "rb") as stream:
        return tomllib.load(stream)


def load_floors() -> dict[str, dict]:
    return _load_toml().get("floor", {})


def load_report_only() -> dict[str, str]:
    """id -> why it is reported without a floor (a wall-clock figure too noisy here for a 30 % floor)."""
    return _load_toml().get("report_only", {})


# How far below its measured value a floor may sit, per kind of measure (issue 17 goal 6: a gate that
# catches a 25 % regression). Instruction counts do not drift (< 1 % between runs): 10 %. CPU time from
# /proc or process_time drifts little: 15 %. RSS: 5 %. Any wall-clock timing: 30 %; a timing whose runs
# spread more than that gets no floor (report_only), and a non-drifting measure guards what it covers.
MARGINS = {"instructions": 0.10, "cpu": 0.15, "rss": 0.05, "timing": 0.30}
CPU_IDS = ("macro.cpu_per_file", "path.cpu_per_file_inprocess.")


def measure_kind(bench_id: str, group: str) -> str:
    if group == "callgrind" or bench_id.startswith("ir."):
        return "instructions"
    if bench_id.startswith("rss."):
        return "rss"
    if bench_id.startswith(CPU_IDS):
        return "cpu"
    return "timing"


def loose_floors(floors: dict[str, dict], rows: list[dict]) -> list[str]:
    """Floors further below their ``measured`` value than their kind's margin allows (the gate would miss a
    25 % regression there): to be re-proposed from fresh runs."""
    groups = {row["id"]: row["group"] for row in rows}
    found = []
    for bench_id, entry in floors.items():
        measured, floor = entry.get("measured"), entry.get("min_ratio")
        if measured is None or floor is None or bench_id not in groups:
            continue
        margin = MARGINS[measure_kind(bench_id, groups[bench_id])]
        if floor < measured * (1 - margin) * 0.995:  # 0.5 %: the rounding down of proposed floors
            found.append(f"{bench_id} ({floor} is {100 * (1 - floor / measured):.0f} % below {measured}; "
                         f"allowed {100 * margin:.0f} %)")
    return found


def judge(rows: list[dict], floors: dict[str, dict], report_only: dict[str, str] | None = None) -> None:
    report_only = report_only or {}
    for row in rows:
        floor = floors.get(row["id"], {}).get("min_ratio")
        row["floor"] = floor
        row["met"] = None if row["goal"] is None else row["ratio"] >= row["goal"]
        if not math.isfinite(row["ratio"]):
            row["status"] = "below floor"  # nothing measured is never a pass
        elif floor is None and row["id"] in report_only:
            row["status"] = "reported (no floor)"
        elif floor is None:
            row["status"] = "no floor"
        elif row["ratio"] < floor:
            row["status"] = "below floor"
        elif row["met"] is False:
            row["status"] = "goal missed"
        else:
            row["status"] = "ok"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def markdown(report: dict) -> str:
    machine, found, original = report["machine"], report["versions"], report["versions"]["original"]
    facts = (f"Machine: {machine['cpu_model']}, {machine['cores']} cores, kernel {machine['kernel']}; "
             f"Python {found['python']}, trollmoves {found['trollmoves']} (speedups {found['speedups']}), "
             f"posttroll {found['posttroll']}, pyzmq {found['pyzmq']}, trollsift {found['trollsift']}; "
             f"original: trollmoves {original.get('trollmoves')} (posttroll {original.get('posttroll')}). "
             f"Duration {report['seconds']:.0f} s.")
    lines = [f"# perf {report['mode']} run, {report['date']}", "", facts, "",
             "Ratios: higher is better (baseline time / ours, or our rate / baseline rate).", "",
             "| benchmark | id | ours | baseline | unit | ratio | floor | goal | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        goal = "-" if row["goal"] is None else f"{_num(row['goal'])}: {'met' if row['met'] else '**missed**'}"
        status = row["status"] if row["status"] != "below floor" else "**BELOW FLOOR**"
        lines.append(f"| {row['title']} | `{row['id']}` | {_num(row['ours'])} | {_num(row['baseline'])} | "
                     f"{row['unit']} | {row['ratio']:.3g} | {_num(row['floor'])} | {goal} | {status} |")
    for error in report["errors"]:
        lines.append(f"| **{error['group']} did not run** | | | | | | | | {error['error'][:200]} |")
    lines += ["", f"Gate: **{'PASS' if report['passed'] else 'FAIL'}**"]
    return "\n".join(lines) + "\n"


def propose_floors(paths: list[str]) -> str:
    """TOML floors from result files: the rule of perf/README.md, applied to the lowest ratio seen.

    floor = lowest measured x (1 - margin of its kind, MARGINS); raised to the goal when every run
    met the goal, the room would take the floor below it, and the goal is at least half a margin
    below the lowest run (closer, the noise alone would fail the gate). A wall-clock timing whose runs spread
    more than its margin (lowest < (1 - margin) x highest), or that floors.toml lists in
    ``report_only``, gets no floor: it is proposed for ``report_only`` instead.
    Existing floors are not consulted: a maintainer compares and never lowers one to pass.
    """
    report_only = load_report_only()
    seen: dict[str, list[tuple[float, dict, str]]] = {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        for row in report["rows"]:
            seen.setdefault(row["id"], []).append((row["ratio"], row, report["command"]))
    today = dt.date.today().isoformat()
    lines, unfloored = [], []
    for bench_id, items in seen.items():
        lowest, row, _ = min(items, key=lambda item: item[0])
        highest = max(ratio for ratio, _, _ in items)
        commands = sorted({command for _, _, command in items})
        kind = measure_kind(bench_id, row["group"])
        margin = MARGINS[kind]
        if bench_id in report_only:
            unfloored.append(f'"{bench_id}" = "{report_only[bench_id]}"')
            continue
        if kind == "timing" and not lowest >= (1 - margin) * highest:
            unfloored.append(f'"{bench_id}" = "wall clock, runs spread {lowest:.4g}..{highest:.4g} (more than '
                             f'{100 * margin:.0f} %): reported without a floor"')
            continue
        floor = lowest * (1 - margin)
        goal = row["goal"]
        met_everywhere = goal is not None and all(ratio >= goal for ratio, _, _ in items)
        note = "goal not met: guards against regression from the measured value"
        if goal is None:
            note = "no goal in the issues: guards against regression"
        elif met_everywhere and floor < goal and goal <= lowest * (1 - margin / 2):
            floor, note = goal, "goal met in every run: the floor is the goal"
        elif met_everywhere and floor < goal:
            note = ("goal met in every run, but the lowest within half a margin of it: the floor guards "
                    "against regression, so that noise alone does not fail the gate")
        elif met_everywhere:
            note = "goal met with room: guards against regression, above the goal"
        digits = 3 if floor < 10 else 1
        floor = math.floor(floor * 10 ** digits) / 10 ** digits
        lines += [f'[floor."{bench_id}"]', f"min_ratio = {floor}",
                  f"measured = {lowest:.4g}  # lowest of {', '.join(f'{r:.4g}' for r, _, _ in items)}",
                  f'date = "{today}"', f'command = "{" + ".join(commands)}"',
                  f'note = "{note} ({kind}: {100 * margin:.0f} % below the lowest run)"', ""]
    if unfloored:
        lines += ["# no floor: too noisy for a floor within 30 % (merge into [report_only])", "[report_only]",
                  *unfloored, ""]
    return "\n".join(lines)


README = PERF / "README.md"


def goals_markdown(report: dict) -> str:
    lines = ["| goal | benchmark | ours | baseline | ratio (goal) | met |", "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if row["goal"] is None:
            continue
        lines.append(f"| {row['goal_text']} | `{row['id']}` | {_num(row['ours'])} {row['unit']} "
                     f"({row['ours_label']}) | {_num(row['baseline'])} {row['unit']} ({row['baseline_label']}) | "
                     f"{row['ratio']:.3g} (>= {_num(row['goal'])}) | {'met' if row['met'] else '**missed**'} |")
    return "\n".join(lines)


def update_readme(path: str) -> None:
    """Put a full run's goals table and full table into perf/README.md, between the marker comments."""
    report = json.loads(Path(path).read_text())
    judge(report["rows"], load_floors(), load_report_only())  # against today's floors
    report["passed"] = not report["errors"] and all(row["status"] != "below floor" for row in report["rows"])
    text = README.read_text()
    table = markdown(report).split("\n", 2)[2].strip()  # without the title line
    for name, body in (("goals", goals_markdown(report)), ("full-table", table)):
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        if not rest:
            raise SystemExit(f"{README}: marker {start} missing")
        text = f"{head}{start}\n{body}\n{end}{tail}"
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="trollmoves perf suite (see perf/README.md)")
    parser.add_argument("--quick", action="store_true", help="the CI gate: smaller samples, under 5 minutes")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {', '.join(GROUPS)}")
    parser.add_argument("--callgrind-impls", default=None,
                        help="implementations measured under callgrind (default: c,py)")
    parser.add_argument("--profile", action="store_true", help="also py-spy our daemons under load")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON/markdown/PNG go")
    parser.add_argument("--propose-floors", nargs="+", metavar="RESULT_JSON",
                        help="print floors.toml entries computed from result files, then exit")
    parser.add_argument("--update-readme", metavar="RESULT_JSON",
                        help="write a full run's tables into perf/README.md, then exit")
    args = parser.parse_args(argv)
    if args.update_readme:
        update_readme(args.update_readme)
        return 0
    if args.propose_floors:
        print(propose_floors(args.propose_floors))
        return 0
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    only = [group.strip() for group in args.only.split(",") if group.strip()]
    unknown = set(only) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    impls = list(IMPLEMENTATIONS) if compiled_available() else ["py"]
    if impls == ["py"]:
        log("!! the compiled speedups do not import: measuring the pure-Python twin only")
    cg_impls = (args.callgrind_impls.split(",") if args.callgrind_impls else
                list(IMPLEMENTATIONS))  # both: the c_vs_py rows (issue 17 goal 3) need the twin's counts
    cg_impls = [impl for impl in cg_impls if impl in impls]
    raw: dict[str, Any] = {}
    rows = Rows()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("micro", lambda: run_micro(args.quick, impls, raw, rows)),
        ("callgrind", lambda: run_callgrind(args.quick, cg_impls, raw, rows)),
        ("macro", lambda: run_macro(args.quick, raw, rows)),
        ("rss", lambda: run_rss(args.quick, raw, rows)),
        ("movers", lambda: run_movers(args.quick, raw, rows, results_dir, stamp)),
    ]
    timings = {}
    for group, step in steps:
        if group not in only:
            continue
        step_started = time.monotonic()
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - recorded, reported, and the gate fails
            rows.error(group, exc)
        timings[group] = round(time.monotonic() - step_started, 1)
        log(f"   {group}: {timings[group]:.0f} s")
    if args.profile:
        try:
            from macro import profile_daemons

            raw["profile"] = profile_daemons.profile(3000 if args.quick else 20000, 500, 250, 30)
            profile_daemons.print_report(raw["profile"])
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - optional
            log(f"!! profile failed: {exc}")
    floors = load_floors()
    report_only = load_report_only()
    judge(rows.rows, floors, report_only)
    below = [row for row in rows.rows if row["status"] == "below floor"]
    report = {
        "mode": mode, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "perf/run" + (" --quick" if args.quick else "") +
                   ("" if args.only == ",".join(GROUPS) else f" --only {args.only}"),
        "machine": machine_info(), "versions": versions(), "seconds": time.monotonic() - started,
        "step_seconds": timings, "rows": rows.rows, "errors": rows.errors, "raw": raw,
        "passed": not below and not rows.errors,
    }
    base = results_dir / f"{stamp}-{mode}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    text = markdown(report)
    base.with_suffix(".md").write_text(text)
    chart_rows = [{"label": row["id"], "ratio": row["ratio"], "floor": row["floor"], "goal": row["goal"],
                   "status": row["status"]} for row in rows.rows]
    chart.bar_chart(chart_rows, base.with_suffix(".png"), f"trollmoves perf {mode} run {stamp}")
    for suffix in (".json", ".md", ".png"):
        shutil.copyfile(base.with_suffix(suffix), results_dir / f"latest-{mode}{suffix}")
    print(text)
    log(f"results: {base}.json / .md / .png ({report['seconds']:.0f} s)")
    no_floor = [row["id"] for row in rows.rows if row["floor"] is None and row["id"] not in report_only]
    if no_floor:
        log(f"note: no floor in perf/floors.toml for {', '.join(no_floor)}")
    loose = loose_floors(floors, rows.rows)
    if loose:
        log(f"note: floors too far below their measured value to catch a 25 % regression: {'; '.join(loose)}")
    for row in below:
        log(f"FAIL {row['id']}: ratio {row['ratio']:.3g} below its floor {row['floor']}")
    for error in rows.errors:
        log(f"FAIL {error['group']} did not run: {error['error']}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
