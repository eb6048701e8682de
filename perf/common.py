"""Shared helpers of the perf suite: machine facts, versions, statistics, processes, ports.

Every benchmark module returns plain dicts ("rows"); ``perf/run.py`` adds the
machine and version facts, compares ratios with ``perf/floors.toml`` and writes
the JSON, markdown and PNG. Ratios are always "higher is better" (baseline /
ours for times, ours / baseline for rates), so that one floor (a minimum) fits
every benchmark.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
RESULTS = PERF / "results"
ORIGINAL_VENV = Path(os.environ.get("TROLLMOVES_019_VENV", "/opt/trollmoves-0.19-venv"))


# --------------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="utf-8") as stream:
        mem_kib = int(stream.readline().split()[1])
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "hostname": socket.gethostname(),
        "loadavg_at_start": os.getloadavg(),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def original_versions() -> dict[str, Any]:
    """Versions inside trollmoves 0.19's own venv (its posttroll may differ from ours)."""
    python = ORIGINAL_VENV / "bin" / "python"
    if not python.exists():
        return {"venv": str(ORIGINAL_VENV), "installed": False}
    code = ("import importlib.metadata as m, json, platform\n"
            "v = {}\n"
            "for d in ('trollmoves', 'posttroll', 'pyzmq', 'trollsift', 'watchdog'):\n"
            "    try: v[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: v[d] = None\n"
            "v['python'] = platform.python_version()\n"
            "print(json.dumps(v))")
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True,
                             cwd="/")  # not beside an .egg-info of ours
        import json

        return {"venv": str(ORIGINAL_VENV), "installed": True, **json.loads(out.stdout)}
    except (subprocess.SubprocessError, ValueError) as exc:
        return {"venv": str(ORIGINAL_VENV), "installed": False, "error": str(exc)}


def versions() -> dict[str, Any]:
    from trollmoves._accel import IMPLEMENTATION

    found = {"python": platform.python_version(), "speedups": IMPLEMENTATION}
    for dist in ("trollmoves", "posttroll", "pyzmq", "trollsift", "xxhash", "watchdog", "pyinotify", "Cython"):
        found[dist] = _version(dist)
    found["valgrind"] = valgrind_version()
    found["original"] = original_versions()
    return found


def valgrind_version() -> str | None:
    if shutil.which("valgrind") is None:
        return None
    try:
        return subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "min": min(values) if values else math.nan,
            "max": max(values) if values else math.nan}


# --------------------------------------------------------------------------------------------------
# Processes and ports
# --------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A daemon run as a real process in its own session, logged to a file, stopped by its PID."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.args = [str(arg) for arg in args]
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the life of the process, closed by stop()
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.cwd, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.args[0]} exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if text in self.log():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{text!r} not in the log of {self.args[0]} after {timeout} s: {self.log()[-2000:]}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process by PID (then SIGKILL its process group if it does not go)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only its children
                self.proc.wait(10)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def cpu_seconds(self) -> float:
        """utime + stime of the process (and of its waited-for children) from /proc."""
        return proc_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17
    return sum(int(value) for value in fields[11:15]) / _TICKS


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards, whatever happens."""
    base = "/work/tmp" if os.path.isdir("/work/tmp") and os.access("/work/tmp", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def python_of_original() -> Path:
    return ORIGINAL_VENV / "bin" / "python"


def original_installed() -> bool:
    return (ORIGINAL_VENV / "bin" / "move_it_server.py").exists()


def our_script(name: str) -> str:
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found beside {sys.executable} nor on PATH: pip install -e .")
    return found


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
