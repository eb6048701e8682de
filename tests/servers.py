"""Start and stop real servers on 127.0.0.1 for the test suite.

Why real servers: the conventions (docs/conventions.md section 9) forbid mocking sockets, servers,
file systems or posttroll.  Every mover and daemon test therefore talks to a real OpenSSH ``sshd``,
a real ``pyftpdlib`` FTP server, a real ``moto_server`` (S3) and a real posttroll ``nameserver``.

This module is plain code (it imports neither pytest nor posttroll) so that ``perf/`` scripts and
interop runners can reuse it.  ``tests/conftest.py`` wraps it in session fixtures.

Rules every server here follows:

* It listens on 127.0.0.1 on a free high port; a lost race for the port is retried on a new one.
* It runs in the foreground (no daemonising: PID 1 is not systemd and there is no Docker), in its
  own session (``start_new_session=True``), with stdout and stderr in a log file in its work dir.
* "Ready" means the process we started owns a listening socket on the port *and* the port accepts
  a TCP connection.  Checking ownership matters: a bare ``connect()`` also succeeds when somebody
  else holds the port and our server died or is still failing to bind.
* It is stopped by the PID we got from ``Popen`` - never by name: SIGTERM, SIGKILL after a
  timeout, ``wait()``, then SIGKILL to whatever is left in its own process group, and the log
  file is closed.  (sshd's per-connection children call ``setsid()`` and so escape that group;
  they exit when their client disconnects, which every test does.)

Each ``start_*`` function returns a small frozen dataclass with the connection facts and a
``stop()`` method (also usable as a context manager).  A missing binary or package raises
:class:`ServerUnavailable` (fixtures turn that into a skip, or a failure under
``TROLLMOVES_REQUIRE_SERVERS=1``: see :func:`require_or_skip`); a server that does not come up
raises :class:`ServerStartError` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = [
    "LOCALHOST",
    "POSTTROLL_PORT_VARIABLES",
    "FtpServer",
    "PosttrollNameserver",
    "PosttrollPorts",
    "S3Server",
    "ServerStartError",
    "ServerUnavailable",
    "SshdServer",
    "free_port",
    "pid_exists",
    "posttroll_port_env",
    "require_or_skip",
    "servers_required",
    "start_ftp",
    "start_nameserver",
    "start_s3",
    "start_sshd",
]

LOCALHOST = "127.0.0.1"
SSHD_BINARY = "/usr/sbin/sshd"

READY_TIMEOUT = 30.0
"""Seconds a server gets to start listening (moto_server needs ~1-2 s, the others far less)."""
POLL_INTERVAL = 0.05
STOP_TIMEOUT = 10.0
START_ATTEMPTS = 3
"""Attempts per server: a free port can be taken between picking it and the server binding it."""
MIN_PORT = 20000

POSTTROLL_PORT_VARIABLES = (
    "POSTTROLL_NAMESERVER_PORT",
    "POSTTROLL_BROADCAST_PORT",
    "POSTTROLL_ADDRESS_PUBLISH_PORT",
)
"""posttroll reads these (through donfig) once, when it is first imported."""

_ADDRESS_IN_USE_MARKERS = ("address already in use", "eaddrinuse", "errno 98")


class ServerUnavailable(RuntimeError):
    """The server software is not installed: tests needing it are skipped (see :func:`require_or_skip`)."""


class ServerStartError(RuntimeError):
    """The server was installed but did not come up; the message carries its log tail."""


REQUIRE_SERVERS_VARIABLE = "TROLLMOVES_REQUIRE_SERVERS"


def servers_required() -> bool:
    """True when ``TROLLMOVES_REQUIRE_SERVERS`` is set to 1 (true, yes, on), as CI does."""
    return os.environ.get(REQUIRE_SERVERS_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


def require_or_skip(reason: str) -> None:
    """Skip the current test because ``reason`` (a missing server or tool, and how to install it).

    Why: a machine without sshd (or moto_server, prometheus, trollmoves 0.19, ...) would otherwise
    turn whole suites into skips and the run would still pass. Under
    ``TROLLMOVES_REQUIRE_SERVERS=1`` the missing piece is a failure instead, naming what is missing.
    Only for things CI's machine must have; "needs root" or platform limits stay plain skips.
    """
    import pytest  # here, not at module level: perf/ imports this module without pytest

    if servers_required():
        pytest.fail(f"{REQUIRE_SERVERS_VARIABLE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# Ports and processes


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on *host* that was free a moment ago.

    The kernel picks it (bind to port 0) from the ephemeral range, so it is high; ports below
    ``MIN_PORT`` are refused in case the range was configured low.  The socket is closed before
    returning, so a caller must be ready to retry on a collision (every ``start_*`` does).
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port >= MIN_PORT:
            return port
    raise RuntimeError(f"no free TCP port >= {MIN_PORT} on {host}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port: int) -> bool:
    # Bind on all interfaces: the posttroll nameserver binds "*", not only 127.0.0.1.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def _session_ports(count: int) -> list[int]:
    """Pick *count* distinct free ports meant to stay reserved for a whole test session.

    They are drawn from between ``MIN_PORT`` and the kernel's ephemeral range, so no outgoing
    connection (source ports are ephemeral), no ``bind(0)`` and no posttroll publisher (which
    binds in 49152-65535) can take them later in the session.  Falls back to :func:`free_port`
    when that gap does not exist.
    """
    low, high = MIN_PORT, _ephemeral_low() - 1
    rng = random.SystemRandom()
    ports: list[int] = []
    if high - low > 100:
        for _ in range(1000):
            port = rng.randint(low, high)
            if port not in ports and _port_is_free(port):
                ports.append(port)
                if len(ports) == count:
                    return ports
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def pid_exists(pid: int) -> bool:
    """True if a process (not yet reaped) with this PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state on *port* (IPv4 and IPv6), read from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # cols: sl local_address rem_address st ... uid timeout inode
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _owns_listener(pid: int, port: int) -> bool:
    """True if process *pid* has a listening socket on *port*.

    Falls back to True when /proc cannot tell (no /proc, other OS), leaving the TCP connect
    as the only readiness check.
    """
    if not Path("/proc/net/tcp").exists():
        return True
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
    return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError as err:
        return f"<cannot read log {path}: {err}>"
    return data.decode("utf-8", "replace")


def _console_script(name: str) -> str | None:
    """Path of an installed console script, preferring the running interpreter's bin dir.

    The bin dir beside ``sys.executable`` is this environment's own script (and not e.g. a
    pyenv shim that adds a bash and a pyenv process in front of it).
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


class _Process:
    """Owns one server process: its Popen, its open log file and (optionally) its work dir.

    Not part of the public API; the public dataclasses hold one in a hidden field and delegate
    ``stop()`` to it.  ``stop()`` is idempotent and thread-safe.
    """

    def __init__(self, name: str, proc: subprocess.Popen, log: Path, log_file: IO[bytes],
                 workdir: Path, remove_workdir: bool):
        self.name = name
        self.proc = proc
        self.log = log
        self._log_file = log_file
        self.workdir = workdir
        self._remove_workdir = remove_workdir
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._terminate(timeout)
            finally:
                self._log_file.close()
                if self._remove_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def _terminate(self, timeout: float) -> None:
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        # The leader is reaped; kill what is left of *its own* process group (start_new_session
        # made the group id equal to the PID we started).  The kernel keeps that id allocated
        # while any member lives, so this cannot hit an unrelated process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _launch(name: str, argv: list[str], workdir: Path, log_name: str,
            env: dict[str, str] | None, remove_workdir: bool) -> _Process:
    log = workdir / log_name
    log_file = open(log, "ab", buffering=0)  # noqa: SIM115 - closed by _Process.stop
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        log_file.close()
        raise
    return _Process(name, proc, log, log_file, workdir, remove_workdir)


def _wait_ready(handle: _Process, host: str, ports: Iterable[int],
                timeout: float = READY_TIMEOUT) -> None:
    """Poll until *handle*'s process listens on every port; raise ServerStartError otherwise.

    Raises ``_AddressInUse`` when the process died complaining about a taken port, so the
    caller can retry on another port.
    """
    ports = list(ports)
    deadline = time.monotonic() + timeout
    while True:
        code = handle.proc.poll()
        if code is not None:
            tail = _tail(handle.log)
            handle.stop()
            if any(marker in tail.lower() for marker in _ADDRESS_IN_USE_MARKERS):
                raise _AddressInUse(tail)
            raise ServerStartError(
                f"{handle.name} exited with code {code} before listening on "
                f"{host}:{ports}; log {handle.log}:\n{tail}")
        if all(_owns_listener(handle.pid, p) and _accepts(host, p) for p in ports):
            return
        if time.monotonic() > deadline:
            tail = _tail(handle.log)
            holders = [p for p in ports if _listening_inodes(p) and not _owns_listener(handle.pid, p)]
            handle.stop()
            if holders:
                raise _AddressInUse(f"ports {holders} held by another process\n{tail}")
            raise ServerStartError(
                f"{handle.name} (pid {handle.pid}) not listening on {host}:{ports} after "
                f"{timeout:.0f} s; log {handle.log}:\n{tail}")
        time.sleep(POLL_INTERVAL)


class _AddressInUse(Exception):
    """Internal: the chosen port was taken; retry on a fresh one."""


def _workdir(base_dir: Path | str | None, prefix: str) -> tuple[Path, bool]:
    """Return (work dir, whether stop() should delete it).

    A caller-supplied *base_dir* (e.g. pytest's ``tmp_path_factory``) is kept so logs survive
    for post-mortem; a private temp dir is removed on stop.
    """
    if base_dir is None:
        return Path(tempfile.mkdtemp(prefix=f"trollmoves-{prefix}-")), True
    path = Path(base_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve(), False


def _start_with_retries(name: str, start_once) -> object:
    last = ""
    for _ in range(START_ATTEMPTS):
        try:
            return start_once()
        except _AddressInUse as err:
            last = str(err)
    raise ServerStartError(f"{name}: port taken on {START_ATTEMPTS} attempts; last log:\n{last}")


@dataclass(frozen=True)
class _Server:
    """Fields and behaviour shared by every server handle."""

    host: str
    port: int
    pid: int
    log: Path
    workdir: Path
    _process: _Process = field(repr=False, compare=False)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the server's PID, SIGKILL after *timeout*, reap it, close its log."""
        self._process.stop(timeout)

    @property
    def running(self) -> bool:
        return self._process.proc.poll() is None

    def log_text(self) -> str:
        """The server's log so far (useful in assertion messages)."""
        return _tail(self.log, limit=1 << 20)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# OpenSSH sshd


@dataclass(frozen=True)
class SshdServer(_Server):
    """A real OpenSSH sshd accepting one throwaway ed25519 client key for ``user``.

    ``known_hosts`` holds ``[127.0.0.1]:port <host key>`` so clients can verify the host
    (paramiko ``RejectPolicy``, OpenSSH ``StrictHostKeyChecking=yes``).  ``root`` is an empty
    directory the tests may use as upload target (SFTP paths are absolute: no chroot).
    """

    user: str = ""
    client_key: Path = Path()
    known_hosts: Path = Path()
    root: Path = Path()

    def openssh_options(self) -> list[str]:
        """Arguments making ``ssh``/``sftp``/``scp`` use only this server's key and host key.

        ``-o Port=`` instead of ``-p``/``-P`` because ssh and sftp/scp spell that flag
        differently; ``-F /dev/null`` keeps the user's ssh config out.
        """
        return [
            "-F", "/dev/null",
            "-i", str(self.client_key),
            "-o", f"Port={self.port}",
            "-o", f"User={self.user}",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
        ]


def _ssh_keygen(path: Path, comment: str) -> None:
    keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )


_SSHD_CONFIG = """\
# Throwaway sshd for the trollmoves tests; written by tests/servers.py.
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
Subsystem sftp internal-sftp
UseDNS no
PrintMotd no
X11Forwarding no
AllowAgentForwarding no
LogLevel VERBOSE
LoginGraceTime 30
MaxStartups 100
MaxSessions 100
"""


def start_sshd(base_dir: Path | str | None = None) -> SshdServer:
    """Start ``/usr/sbin/sshd -D -e -f <abs cfg>`` with its own host key and client key.

    The login user is the current user: when not root, sshd can only log in the user it runs
    as.  As root, sshd needs its privilege-separation directory ``/run/sshd``.
    """
    if not os.access(SSHD_BINARY, os.X_OK):
        raise ServerUnavailable(f"{SSHD_BINARY} not found: apt-get install openssh-server")
    if not shutil.which("ssh-keygen"):
        raise ServerUnavailable("ssh-keygen not found: apt-get install openssh-client")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    workdir, remove = _workdir(base_dir, "sshd")
    user = pwd.getpwuid(os.getuid()).pw_name
    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "client_ed25519"
    authorized_keys = workdir / "authorized_keys"
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    _ssh_keygen(host_key, "trollmoves-test-host")
    _ssh_keygen(client_key, "trollmoves-test-client")
    authorized_keys.write_bytes(client_key.with_suffix(".pub").read_bytes())
    authorized_keys.chmod(0o600)
    host_pub = host_key.with_name(host_key.name + ".pub").read_text().split()
    config = workdir / "sshd_config"
    known_hosts = workdir / "known_hosts"

    def start_once() -> SshdServer:
        port = free_port()
        config.write_text(_SSHD_CONFIG.format(
            host=LOCALHOST, port=port, host_key=host_key, pid_file=workdir / "sshd.pid",
            authorized_keys=authorized_keys, user=user))
        known_hosts.write_text(f"[{LOCALHOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
        handle = _launch("sshd", [SSHD_BINARY, "-D", "-e", "-f", str(config)],
                         workdir, "sshd.log", None, False)
        _wait_ready(handle, LOCALHOST, [port])
        handle._remove_workdir = remove
        return SshdServer(host=LOCALHOST, port=port, pid=handle.pid, log=handle.log,
                          workdir=workdir, _process=handle, user=user, client_key=client_key,
                          known_hosts=known_hosts, root=root)

    return _start_or_clean(start_once, "sshd", workdir, remove)


def _start_or_clean(start_once, name: str, workdir: Path, remove: bool):
    try:
        return _start_with_retries(name, start_once)
    except BaseException:
        if remove:
            shutil.rmtree(workdir, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------
# FTP (pyftpdlib)


@dataclass(frozen=True)
class FtpServer(_Server):
    """A real pyftpdlib FTP server with one read-write user whose home is ``root``."""

    user: str = ""
    password: str = field(default="", repr=False)
    root: Path = Path()


def start_ftp(base_dir: Path | str | None = None) -> FtpServer:
    """Start ``python -m pyftpdlib -i 127.0.0.1 -p P -w -d DIR -u U -P PW``.

    User and password are random per server.  Passive data ports are left to the kernel
    (pyftpdlib binds port 0 on the control connection's address) which works on loopback, so
    neither ``-r`` (port range) nor ``-n`` (NAT address) is passed.
    """
    if importlib.util.find_spec("pyftpdlib") is None:
        raise ServerUnavailable("pyftpdlib is not installed: pip install pyftpdlib")
    workdir, remove = _workdir(base_dir, "ftp")
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    user = "u" + secrets.token_hex(4)
    password = secrets.token_urlsafe(12)

    def start_once() -> FtpServer:
        port = free_port()
        argv = [sys.executable, "-m", "pyftpdlib", "-i", LOCALHOST, "-p", str(port), "-w",
                "-d", str(root), "-u", user, f"--password={password}"]  # "=": a password may start with "-"
        handle = _launch("pyftpdlib", argv, workdir, "ftp.log", None, False)
        _wait_ready(handle, LOCALHOST, [port])
        handle._remove_workdir = remove
        return FtpServer(host=LOCALHOST, port=port, pid=handle.pid, log=handle.log,
                         workdir=workdir, _process=handle, user=user, password=password,
                         root=root)

    return _start_or_clean(start_once, "pyftpdlib", workdir, remove)


# --------------------------------------------------------------------------------------------
# S3 (moto_server)


@dataclass(frozen=True)
class S3Server(_Server):
    """A real moto_server speaking the S3 API at ``endpoint_url`` (region us-east-1)."""

    endpoint_url: str = ""
    key: str = ""
    secret: str = field(default="", repr=False)
    region: str = "us-east-1"

    def boto3_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", **kwargs)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.key,
            "aws_secret_access_key": self.secret,
            "region_name": self.region,
        }


def start_s3(base_dir: Path | str | None = None) -> S3Server:
    """Start ``moto_server -H 127.0.0.1 -p P`` with throwaway AWS credentials in its env.

    The credentials are set explicitly so that moto never sees (or needs) real ones from the
    caller's environment or ``~/.aws``.
    """
    script = _console_script("moto_server")
    if script is None or importlib.util.find_spec("moto") is None:
        raise ServerUnavailable('moto_server not found: pip install ".[test]" (moto[s3] and flask)')
    workdir, remove = _workdir(base_dir, "s3")
    key, secret, region = "testing-key", "testing-secret", "us-east-1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    })

    def start_once() -> S3Server:
        port = free_port()
        handle = _launch("moto_server", [script, "-H", LOCALHOST, "-p", str(port)],
                         workdir, "moto.log", env, False)
        _wait_ready(handle, LOCALHOST, [port])
        handle._remove_workdir = remove
        return S3Server(host=LOCALHOST, port=port, pid=handle.pid, log=handle.log,
                        workdir=workdir, _process=handle,
                        endpoint_url=f"http://{LOCALHOST}:{port}", key=key, secret=secret,
                        region=region)

    return _start_or_clean(start_once, "moto_server", workdir, remove)


# --------------------------------------------------------------------------------------------
# posttroll nameserver


@dataclass(frozen=True)
class PosttrollPorts:
    """The three fixed posttroll ports (nameserver REQ/REP, address broadcast, address publish)."""

    nameserver: int
    broadcast: int
    address_publish: int

    def env(self) -> dict[str, str]:
        """These ports as the POSTTROLL_* environment variables posttroll reads at import."""
        return dict(zip(POSTTROLL_PORT_VARIABLES,
                        (str(self.nameserver), str(self.broadcast), str(self.address_publish)),
                        strict=True))

    @classmethod
    def from_env(cls, env: dict[str, str]) -> PosttrollPorts:
        return cls(*(int(env[name]) for name in POSTTROLL_PORT_VARIABLES))

    @classmethod
    def pick(cls) -> PosttrollPorts:
        """Three fresh free ports (see :func:`_session_ports` for where they come from)."""
        return cls(*_session_ports(3))


def posttroll_port_env() -> dict[str, str]:
    """The POSTTROLL_* port variables for this test session, chosen once per process.

    posttroll's ports are not options but configuration read from the environment when
    posttroll is first imported, so they must be identical in the nameserver process, in every
    daemon subprocess and in the test process, and set *before* anything imports posttroll.
    ``tests/conftest.py`` therefore does ``os.environ.update(posttroll_port_env())`` at import
    time.  Variables already set in the environment are kept (so a parent process or a CI job
    can pin them); the missing ones are picked from free ports outside the ephemeral range so
    that nothing else grabs them during the session.

    Returns a new dict each call; the values stay the same for the life of the process.
    """
    return dict(_posttroll_port_env())


@functools.cache
def _posttroll_port_env() -> tuple[tuple[str, str], ...]:
    picked = iter(_session_ports(len(POSTTROLL_PORT_VARIABLES)))
    values = []
    for name in POSTTROLL_PORT_VARIABLES:
        port = next(picked)
        values.append((name, os.environ.get(name) or str(port)))
    return tuple(values)


@dataclass(frozen=True)
class PosttrollNameserver(_Server):
    """A real posttroll ``nameserver --no-multicast`` process.

    ``port`` equals ``nameserver_port``.  Clients must reach it through posttroll configured
    with the same ports (``env``) and use ``nameservers=[host]``; ``host`` is ``"localhost"``
    because that is what posttroll's own address receiver registers with.
    """

    nameserver_port: int = 0
    broadcast_port: int = 0
    address_publish_port: int = 0
    env: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ports(self) -> PosttrollPorts:
        return PosttrollPorts(self.nameserver_port, self.broadcast_port, self.address_publish_port)


def start_nameserver(base_dir: Path | str | None = None,
                     ports: PosttrollPorts | None = None) -> PosttrollNameserver:
    """Start posttroll's ``nameserver --no-multicast`` on the session's POSTTROLL_* ports.

    *ports* defaults to :func:`posttroll_port_env` (the ports the test process itself uses);
    pass other ports only for a nameserver nobody in this process will talk to.  Unlike the
    other servers it cannot move to another port on a collision: the test process's posttroll
    has already read its ports.  Ready means the process listens on all three ports (the
    REQ/REP port is bound in the main thread, the other two by its address-receiver thread).
    """
    script = _console_script("nameserver")
    if script is None or importlib.util.find_spec("posttroll") is None:
        raise ServerUnavailable("posttroll's nameserver script not found: pip install posttroll")
    ports = ports or PosttrollPorts.from_env(posttroll_port_env())
    port_env = ports.env()
    env = dict(os.environ)
    env.update(port_env)
    workdir, remove = _workdir(base_dir, "nameserver")
    handle = _launch("nameserver", [script, "--no-multicast"], workdir, "nameserver.log",
                     env, remove)
    try:
        _wait_ready(handle, LOCALHOST,
                    [ports.nameserver, ports.broadcast, ports.address_publish])
    except _AddressInUse as err:
        raise ServerStartError(
            f"posttroll nameserver: one of the ports {dataclasses.astuple(ports)} is taken "
            f"(set {', '.join(POSTTROLL_PORT_VARIABLES)} to free ports); log:\n{err}") from None
    return PosttrollNameserver(
        host="localhost", port=ports.nameserver, pid=handle.pid, log=handle.log,
        workdir=workdir, _process=handle, nameserver_port=ports.nameserver,
        broadcast_port=ports.broadcast, address_publish_port=ports.address_publish,
        env=port_env)

