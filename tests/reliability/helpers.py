"""Helpers of the fault, secrecy and soak tests: fixed-port servers, process samples, namespaces.

``tests/servers.py`` starts each server on a fresh port; a fault test needs to kill a
server and start it again on the *same* port (the daemons keep its address), so
``FixedPortServer`` runs the same binary with the same arguments again. Every process
is stopped by the PID we got from ``Popen`` (and its own process group or its
descendants found through /proc), never by name.

``TROLLMOVES_FULL_FAULTS=1`` selects the full form of the long tests (the soak's
100,000 files, ...); without it they run a reduced form fit for CI.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.controller import DaemonProcess, console_script, terminate

FULL = os.environ.get("TROLLMOVES_FULL_FAULTS", "").strip().lower() in {"1", "true", "yes", "on"}


def full_or_ci(full, ci):
    """The value of the full form when TROLLMOVES_FULL_FAULTS=1, else the CI one."""
    return full if FULL else ci


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (read from /proc; sshd's session processes call setsid())."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (collected first: they are re-parented once it dies)."""
    for victim in [pid] + children_of(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class FixedPortServer:
    """A server program (re)started on one fixed port, in its own session, stopped by PID."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path, env: dict | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.port = port
        self.log = Path(log)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> FixedPortServer:
        self._log_file = open(self.log, "ab", buffering=0)  # noqa: SIM115 - closed by stop/kill
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"{self.name} did not come back on port {self.port}:\n{tail}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """kill -9 the server and every process it started."""
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc.pid)
            self.proc.wait(10)
        self._close_log()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        terminate(self.proc, timeout, kill_wait=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def stop_within(daemon, timeout: float) -> tuple[int | None, float]:
    """SIGTERM a DaemonProcess; (exit code or None if it had to be killed, seconds it took)."""
    started = time.monotonic()
    if daemon.proc is None:
        return None, 0.0
    if daemon.proc.poll() is None:
        daemon.proc.terminate()
        try:
            daemon.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            daemon.stop(1.0)
            return None, time.monotonic() - started
    code = daemon.stop(1.0)
    return code, time.monotonic() - started


# --------------------------------------------------------------------------------------------------
# Resource samples
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    rss_kib: int
    fds: int
    threads: int


def sample(pid: int) -> Sample:
    """RSS, open file descriptors and threads of a live process, from /proc."""
    rss = threads = 0
    with open(f"/proc/{pid}/status", encoding="utf-8") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return Sample(rss, len(os.listdir(f"/proc/{pid}/fd")), threads)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

def write_atomically(path: Path, data: bytes) -> None:
    """Write as a producer should: a hidden temporary, then a rename (announced once, complete)."""
    tmp = path.with_name("." + path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def final_names(directory: Path) -> list[str]:
    """Names a reader would take for delivered files (temporaries start with a dot)."""
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


# --------------------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------------------

def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


class NamespacePair:
    """Two network namespaces joined by a veth pair on a private /30 (only inside the namespaces)."""

    def __init__(self, tag: str, subnet: str = "10.231.77"):
        self.server_ns, self.client_ns = f"tm{tag}s", f"tm{tag}c"
        self.server_if, self.client_if = f"tm{tag}a", f"tm{tag}b"
        self.server_ip, self.client_ip = f"{subnet}.1", f"{subnet}.2"
        self._made: list[str] = []

    def create(self) -> NamespacePair:
        for ns in (self.server_ns, self.client_ns):
            self._check(run("ip", "netns", "add", ns))
            self._made.append(ns)
            self._check(run("ip", "-n", ns, "link", "set", "lo", "up"))
        self._check(run("ip", "link", "add", self.server_if, "netns", self.server_ns, "type", "veth",
                        "peer", "name", self.client_if, "netns", self.client_ns))
        self._check(run("ip", "-n", self.server_ns, "addr", "add", f"{self.server_ip}/30", "dev", self.server_if))
        self._check(run("ip", "-n", self.client_ns, "addr", "add", f"{self.client_ip}/30", "dev", self.client_if))
        self.link(True)
        return self

    def link(self, up: bool) -> None:
        state = "up" if up else "down"
        self._check(run("ip", "-n", self.server_ns, "link", "set", self.server_if, state))
        self._check(run("ip", "-n", self.client_ns, "link", "set", self.client_if, state))

    @staticmethod
    def prefix(ns: str) -> list[str]:
        """What runs a program inside ``ns`` (``ip netns exec`` execs it: the PID stays the program's)."""
        return ["ip", "netns", "exec", ns]

    def delete(self) -> None:
        for ns in reversed(self._made):
            run("ip", "netns", "del", ns)
        self._made.clear()

    @staticmethod
    def _check(result: subprocess.CompletedProcess) -> None:
        if result.returncode != 0:
            raise OSError(f"{' '.join(result.args)}: {result.stderr.strip()}")


# --------------------------------------------------------------------------------------------------
# Daemon logs
# --------------------------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_events(path, pattern: str) -> list[tuple[float, str]]:
    """(epoch seconds, first group) of each line of a daemon log matching ``pattern``."""
    wanted = re.compile(pattern)
    found = []
    with open(path, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            stamp, match = _LOG_LINE.match(line), wanted.search(line)
            if stamp and match:
                when = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.append((when, match.group(1)))
    return found


def last_log_time(path) -> float:
    """Epoch seconds of the last time-stamped line of a daemon log."""
    events = log_events(path, r"(.)")
    return events[-1][0] if events else 0.0


def tracebacks(log_text: str) -> list[str]:
    """Tracebacks of the daemon itself: uncaught, or logged with exc_info (lines starting "Traceback").

    Third-party libraries that log each traceback line as a record of their own (paramiko's
    transport thread does, at ERROR, for a connection reset during the SSH banner) have the
    log prefix on those lines and are not counted.
    """
    return [line for line in log_text.splitlines() if line.startswith("Traceback")]


# --------------------------------------------------------------------------------------------------
# Configs and daemons
# --------------------------------------------------------------------------------------------------

def write_ini(path: Path, sections: dict[str, dict]) -> str:
    """An INI file from ``{section: {key: value}}`` (None values left out); returns its path."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in keys.items() if value is not None]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def server_chain(src: Path, topic: str, request_port: int, host: str = "127.0.0.1", **keys) -> dict:
    """A server section announcing ``<src>/<name>.dat`` files, its request port on ``host``."""
    return {"origin": f"{src}/{{name}}.dat", "topic": topic, "request_port": request_port,
            "request_address": host, "request_bind_address": host, **keys}


def client_chain(providers: str, destination: str, topic: str, **keys) -> dict:
    """A client section without nameserver, publishing on a random (or given) loopback port."""
    return {"providers": providers, "destination": destination, "topic": topic, "publish_port": 0,
            "publish_address": "127.0.0.1", "nameservers": False, **keys}


def server_process(ini: str, publish_port: int, log: Path, address: str = "127.0.0.1",
                   prefix: list[str] | None = None, verbose: bool = True):
    """move_it_server.py as a process (started), publishing on ``address:publish_port``."""
    argv = [console_script("move_it_server.py"), "-p", str(publish_port), "--publish-address", address,
            *(["-v"] if verbose else []), ini]
    return DaemonProcess([*(prefix or []), *argv], log).start()


def client_process(ini: str, log: Path, prefix: list[str] | None = None, verbose: bool = True):
    """move_it_client.py as a process (started)."""
    argv = [console_script("move_it_client.py"), *(["-v"] if verbose else []), ini]
    return DaemonProcess([*(prefix or []), *argv], log).start()


def ready(server, client, client_chains=("chain",), server_chains=None) -> None:
    """Wait until a server process watches and a client process follows their chains."""
    for chain in server_chains or client_chains:
        server.wait_log(f"Chain {chain} watching")
    for chain in client_chains:
        client.wait_log(f"Chain {chain} following")


# --------------------------------------------------------------------------------------------------
# Mounts
# --------------------------------------------------------------------------------------------------

def mount_tmpfs(mount_point: Path, options: str) -> Path:
    """Mount a tmpfs (needs root) on ``mount_point``; OSError if it cannot be mounted."""
    mount_point.mkdir(exist_ok=True)
    result = run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point))
    if result.returncode != 0:
        raise OSError(f"cannot mount a tmpfs on {mount_point}: {result.stderr.strip()}")
    return mount_point


def unmount(mount_point: Path) -> None:
    run("umount", "-l", str(mount_point))


def in_process_server(ini: str, publish_port: int = 0):
    """A Server service (not started) on a loopback publisher."""
    from tests.daemons.helpers import load
    from trollmoves.server import Server, ServerOptions

    return Server(load(ini, "server"), ServerOptions(publish_port=publish_port, publish_address="127.0.0.1"))


def in_process_client(ini: str, state_path: str | None = None):
    """A Client service (not started) with its state in ``state_path`` (None: in memory)."""
    from tests.daemons.helpers import load
    from trollmoves.client import Client
    from trollmoves.state import StateStore

    return Client(load(ini, "client"), state=StateStore(state_path))
