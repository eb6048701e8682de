"""Start and stop a real Debian ``mosquitto`` broker on 127.0.0.1 for the WIS2 tests.

Why a real broker: the conventions forbid mocking servers, and what the WIS2 bridge must get right
(PUBACK reason codes for an ACL-refused publish, CONNACK codes for a wrong password, persistent
sessions that survive a broker restart, QoS 1 redelivery) is exactly what a fake would get wrong.

Written like ``tests/servers.py`` (and reusing its process helpers): a free port, the broker in
the foreground in its own session with its log in the work dir, "ready" when our PID owns the
listening socket and it accepts a connection, stopped by PID (SIGTERM, SIGKILL after a timeout).
Unlike the frozen handles there, :class:`Mosquitto` is mutable: :meth:`Mosquitto.restart` replaces
the process and keeps the port and the persistence directory, so sessions and queued QoS 1
messages survive (mosquitto writes its database on SIGTERM).

Plain code (no pytest import at module level) so that ``perf/`` scripts can reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from tests.servers import (
    LOCALHOST,
    STOP_TIMEOUT,
    ServerStartError,
    ServerUnavailable,
    _AddressInUse,
    _launch,
    _Process,
    _session_ports,
    _tail,
    _wait_ready,
    _workdir,
    pid_exists,
)

__all__ = ["DEFAULT_ACL", "MOSQUITTO_BINARY", "Mosquitto", "start_mosquitto"]

MOSQUITTO_BINARY = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "mosquitto_passwd"
START_ATTEMPTS = 3

DEFAULT_ACL = """\
# publisher announces on origin/ and may read it back
user publisher
topic readwrite origin/a/wis2/#

# subscriber reads what a Global Broker would relay
user subscriber
topic read origin/a/wis2/#
topic read cache/a/wis2/#

# limited may only read: its publishes are refused (PUBACK 135 on MQTT 5)
user limited
topic read origin/a/wis2/#
"""
"""The ACL the WIS2 tests use with users ``publisher``, ``subscriber`` and ``limited``."""

_CONFIG = """\
# Throwaway mosquitto for the trollmoves WIS2 tests; written by tests/wis2/mosquitto.py.
per_listener_settings false
listener {port} {host}
allow_anonymous false
password_file {password_file}
{acl_line}
persistence true
persistence_location {persistence}/
autosave_interval 0
{tls_lines}
log_dest stderr
log_type all
connection_messages true
set_tcp_nodelay true
{user_line}
"""


class Mosquitto:
    """One mosquitto broker process (replaced by :meth:`restart`) and its files.

    ``users`` maps user name to password (kept out of ``repr``); ``url`` is what
    ``BrokerSettings(url=...)`` takes. ``stop()`` is idempotent; the handle is a context manager.
    """

    def __init__(self, host: str, port: int, workdir: Path, config: Path, users: Mapping[str, str],
                 process: _Process, remove_workdir: bool, ca_file: Path | None = None):
        self.host = host
        self.port = port
        self.ca_file = ca_file
        self.workdir = workdir
        self.config = config
        self.users = dict(users)
        self._process = process
        self._remove_workdir = remove_workdir
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Mosquitto(url={self.url!r}, pid={self.pid}, workdir={str(self.workdir)!r})"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.ca_file else 'mqtt'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def log(self) -> Path:
        return self._process.log

    @property
    def running(self) -> bool:
        return self._process.proc.poll() is None and pid_exists(self.pid)

    def log_text(self) -> str:
        """The broker's log so far, across restarts (useful in assertion messages)."""
        return _tail(self.log, limit=1 << 22)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the broker's PID (it saves its persistence database), SIGKILL after *timeout*."""
        with self._lock:
            self._process.stop(timeout)

    def restart(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the broker and start it again on the same port with the same persistence.

        Persistent sessions, their subscriptions and queued QoS 1 messages survive, as with a
        real broker's service restart.
        """
        with self._lock:
            self._process.stop(timeout)
            for attempt in range(START_ATTEMPTS):  # a port held for a moment (a closing socket) frees soon
                try:
                    self._process = _start_process(self.config, self.workdir, self.host, self.port)
                    return
                except _AddressInUse as err:
                    last = str(err)
                    time.sleep(0.5 * (attempt + 1))
            raise ServerStartError(f"mosquitto: port {self.port} taken by another process on restart:\n{last}")

    def close(self) -> None:
        """Stop for good and remove the work dir when it was a private temporary one."""
        self.stop()
        if self._remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _start_process(config: Path, workdir: Path, host: str, port: int) -> _Process:
    handle = _launch("mosquitto", [MOSQUITTO_BINARY, "-c", str(config)], workdir, "mosquitto.log",
                     None, False)
    _wait_ready(handle, host, [port])
    return handle


def _write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Hash the passwords with ``mosquitto_passwd -b`` (``-c`` for the first: creates the file)."""
    tool = shutil.which(MOSQUITTO_PASSWD) or f"/usr/bin/{MOSQUITTO_PASSWD}"
    path.unlink(missing_ok=True)
    for index, (user, password) in enumerate(users.items()):
        argv = [tool, *(["-c"] if index == 0 else []), "-b", str(path), user, password]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServerStartError(f"{MOSQUITTO_PASSWD} failed for user {user!r} in {path}: "
                                   f"{done.stderr.strip() or done.stdout.strip()}")
    path.chmod(0o600)


def _make_certificates(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI.

    The extensions are spelt out (CA basic constraints and key usage, key identifiers, SAN, serverAuth)
    so that strict verifiers (Python >= 3.13 sets VERIFY_X509_STRICT) accept the chain too.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerUnavailable("openssl not found: apt-get install openssl")
    ca_key, ca_crt = workdir / "ca.key", workdir / "ca.crt"
    key, csr, crt, ext = workdir / "server.key", workdir / "server.csr", workdir / "server.crt", workdir / "server.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        [openssl, "req", "-x509", *ec, "-days", "2", "-subj", "/CN=trollmoves test CA", "-keyout", ca_key,
         "-out", ca_crt, "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
         "-extfile", ext, "-out", crt],
    ):
        done = subprocess.run([str(arg) for arg in argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise ServerStartError(f"{' '.join(map(str, argv[:3]))} failed: {done.stderr.strip()}")
    return ca_crt, crt, key


def start_mosquitto(base_dir: Path | str | None = None, *, users: Mapping[str, str],
                    acl: str | None = None, port: int | None = None, tls: bool = False) -> Mosquitto:
    """Start ``/usr/sbin/mosquitto -c <conf>`` on 127.0.0.1 with a password file and an ACL.

    ``users``: name -> password (at least one: anonymous clients are refused). ``acl``: the text
    of an ACL file (:data:`DEFAULT_ACL` for the tests), or None for none (every user may do
    anything). ``port``: a fixed port, else a free one below the kernel's ephemeral range, so that
    no outgoing connection's source port takes it while :meth:`Mosquitto.restart` has it released.
    ``tls``: the listener speaks TLS with a throwaway CA (``.ca_file``) and ``.url`` is ``mqtts://``.
    As root the config says ``user root``: mosquitto would otherwise drop to the ``mosquitto``
    user, which cannot read the work dir.
    """
    if not os.access(MOSQUITTO_BINARY, os.X_OK):
        raise ServerUnavailable(f"{MOSQUITTO_BINARY} not found: apt-get install mosquitto")
    if not (shutil.which(MOSQUITTO_PASSWD) or os.access(f"/usr/bin/{MOSQUITTO_PASSWD}", os.X_OK)):
        raise ServerUnavailable(f"{MOSQUITTO_PASSWD} not found: apt-get install mosquitto")
    if not users:
        raise ValueError("start_mosquitto: at least one user is needed (anonymous access is off)")

    workdir, remove = _workdir(base_dir, "mosquitto")
    try:
        password_file = workdir / "passwd"
        _write_password_file(password_file, users)
        acl_line = ""
        if acl is not None:
            acl_file = workdir / "acl"
            acl_file.write_text(acl)
            acl_line = f"acl_file {acl_file}"
        persistence = workdir / "persistence"
        persistence.mkdir(exist_ok=True)
        config = workdir / "mosquitto.conf"
        user_line = "user root" if os.geteuid() == 0 else ""
        ca_file, tls_lines = None, ""
        if tls:
            ca_file, certificate, key = _make_certificates(workdir)
            tls_lines = f"cafile {ca_file}\ncertfile {certificate}\nkeyfile {key}"

        last = ""
        for _ in range(1 if port is not None else START_ATTEMPTS):
            chosen = port if port is not None else _session_ports(1)[0]
            config.write_text(_CONFIG.format(
                port=chosen, host=LOCALHOST, password_file=password_file, acl_line=acl_line,
                persistence=persistence, user_line=user_line, tls_lines=tls_lines))
            try:
                handle = _start_process(config, workdir, LOCALHOST, chosen)
            except _AddressInUse as err:
                last = str(err)
                continue
            return Mosquitto(LOCALHOST, chosen, workdir, config, users, handle, remove, ca_file)
        raise ServerStartError(f"mosquitto: port taken on every attempt; last log:\n{last}")
    except BaseException:
        if remove:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
