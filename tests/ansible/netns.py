"""Two test hosts in network namespaces, each with a real sshd, joined by a veth pair on a /30.

Used by the end-to-end deployment test. Everything created here is ours and removed by ``close``:
the namespaces (and with them the veth pair and the addresses), the processes started in them
(stopped by the PID we got, never by name) and their log files' directory is the caller's.

Processes run in a namespace through ``ip netns exec NS CMD``, which ``exec``s CMD: the PID from
``Popen`` is the PID of CMD itself, so stopping it by PID stops the real process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import servers

SSHD = Path(servers.SSHD_BINARY)
SUBNET_POOL = ipaddress.ip_network("10.231.0.0/16")
"""The /30 of a run is picked at random in here; it only ever exists inside our namespaces."""

_SSHD_CONFIG = """\
# sshd of the end-to-end test host {name}; written by tests/ansible/netns.py.
ListenAddress {address}
Port 22
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {keys_dir}/authorized_keys.%u .ssh/authorized_keys
AllowUsers {users}
UsePAM no
StrictModes yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
UseDNS no
PrintMotd no
X11Forwarding no
LogLevel VERBOSE
MaxStartups 100
MaxSessions 100
"""


class NamespaceUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no kernel support).

    A missing program (ip(8), sshd) raises :class:`servers.ServerUnavailable` instead: that is a
    missing piece of the machine, a failure under ``TROLLMOVES_REQUIRE_SERVERS=1``.
    """


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def ssh_keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path``; returns the public key line."""
    servers._ssh_keygen(path, comment)
    return path.with_name(path.name + ".pub").read_text().strip()


@dataclass
class Host:
    """One test host: a namespace with an address and an sshd on port 22."""

    name: str
    namespace: str
    address: str
    workdir: Path
    host_key_line: str = ""
    processes: list = field(default_factory=list)

    def argv(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *command]

    def run(self, command: list[str], timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout, check=check,
                              stdin=subprocess.DEVNULL)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None):
        """Start ``command`` in this namespace, logging to ``<workdir>/<name>.log``."""
        handle = servers._launch(f"{self.name}:{name}", self.argv(command), self.workdir,
                                 f"{name}.log", env, False)
        self.processes.append(handle)
        return handle

    def can_connect(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """True if a TCP connection from inside this namespace to address:port succeeds."""
        probe = ("import socket, sys\n"
                 "socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()")
        try:
            return self.run([sys.executable, "-c", probe, address, str(port), str(timeout)],
                            timeout=timeout + 10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def http_get(self, url: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``url`` from inside this namespace: (status, body); status 0 when unreachable."""
        probe = ("import sys, urllib.request, urllib.error\n"
                 "try:\n"
                 "    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n"
                 "    print(r.status); sys.stdout.write(r.read().decode())\n"
                 "except urllib.error.HTTPError as e:\n"
                 "    print(e.code); sys.stdout.write(e.read().decode())\n"
                 "except OSError as e:\n"
                 "    print(0); sys.stdout.write(str(e))\n")
        try:
            done = self.run([sys.executable, "-c", probe, url, str(timeout)], timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            return 0, "timed out"
        status, _, body = done.stdout.partition("\n")
        return (int(status) if status.strip().isdigit() else 0), body or done.stderr

    def wait_listening(self, port: int, handle, timeout: float = 30.0) -> None:
        """Wait until this host's address accepts TCP on ``port``; fail early if ``handle`` died."""
        deadline = time.monotonic() + timeout
        while not self.can_connect(self.address, port):
            if handle.proc.poll() is not None:
                raise RuntimeError(f"{handle.name} exited with {handle.proc.returncode}:\n"
                                   f"{servers._tail(handle.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{handle.name} not listening on {self.address}:{port} after {timeout:.0f} s:\n"
                                   f"{servers._tail(handle.log)}")
            time.sleep(0.2)

    def stop_processes(self) -> None:
        """Stop every process started here, newest first, by its PID."""
        while self.processes:
            self.processes.pop().stop()


class HostPair:
    """Server and client hosts: two namespaces joined by a veth pair on a random /30."""

    def __init__(self, workdir: Path, users: dict[str, list[str]]):
        if os.geteuid() != 0:
            raise NamespaceUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise servers.ServerUnavailable("ip(8) not found: apt-get install iproute2")
        if not os.access(SSHD, os.X_OK):
            raise servers.ServerUnavailable(f"{SSHD} not found: apt-get install openssh-server")
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        subnet = random.choice(list(SUBNET_POOL.subnets(new_prefix=30)))
        first, second = list(subnet.hosts())
        self.workdir = workdir
        self.keys_dir = workdir / "ssh"
        self.keys_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.subnet = subnet
        self.hosts: dict[str, Host] = {}
        self._links = (f"tmv{tag}s", f"tmv{tag}c")
        names = ("server", "client")
        try:
            for name, address in zip(names, (first, second)):
                namespace = f"tm-e2e-{name}-{tag}"
                _run(["ip", "netns", "add", namespace])
                self.hosts[name] = Host(name, namespace, str(address), workdir)
        except (subprocess.CalledProcessError, OSError) as err:
            self.close()
            detail = err.stderr if isinstance(err, subprocess.CalledProcessError) else err
            raise NamespaceUnavailable(f"cannot create a network namespace: {detail}") from err
        server, client = self.hosts["server"], self.hosts["client"]
        try:
            _run(["ip", "link", "add", self._links[0], "type", "veth", "peer", "name", self._links[1]])
            for host, link in ((server, self._links[0]), (client, self._links[1])):
                _run(["ip", "link", "set", link, "netns", host.namespace])
                _run(host.argv(["ip", "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", link]))
                _run(host.argv(["ip", "link", "set", link, "up"]))
                _run(host.argv(["ip", "link", "set", "lo", "up"]))
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            for name, host in self.hosts.items():
                self._start_sshd(host, users[name])
        except BaseException:
            self.close()
            raise

    def _start_sshd(self, host: Host, users: list[str]) -> None:
        key = self.keys_dir / f"ssh_host_{host.name}"
        host.host_key_line = ssh_keygen(key, f"tm-e2e-{host.name}")
        config = self.keys_dir / f"sshd_{host.name}.conf"
        config.write_text(_SSHD_CONFIG.format(name=host.name, address=host.address, host_key=key,
                                              pid_file=self.keys_dir / f"sshd_{host.name}.pid",
                                              keys_dir=self.keys_dir, users=" ".join(users)))
        handle = host.start("sshd", [str(SSHD), "-D", "-e", "-f", str(config)])
        host.wait_listening(22, handle)

    def authorize(self, user: str, public_key: str) -> None:
        """Let ``user`` log in to both hosts' sshd with ``public_key``."""
        path = self.keys_dir / f"authorized_keys.{user}"
        path.write_text(public_key + "\n")
        path.chmod(0o600)

    def known_hosts(self) -> str:
        """known_hosts lines of both hosts (by address)."""
        return "".join(f"{h.address} {' '.join(h.host_key_line.split()[:2])}\n" for h in self.hosts.values())

    def close(self) -> None:
        """Stop the processes, then delete the namespaces (which deletes the veth pair)."""
        for host in self.hosts.values():
            host.stop_processes()
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "delete", host.namespace], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            subprocess.run(["ip", "link", "delete", self._links[0]], check=False, capture_output=True)
        self.hosts = {}
