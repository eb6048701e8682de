"""Test hosts in network namespaces, each with a real sshd: a pair on a veth, or N on L2 segments.

Used by the end-to-end deployment tests. ``HostPair`` joins two namespaces (server, client) by a
veth pair on a /30; ``HostNetwork`` puts any number of hosts on named segments (a bridge each, in
a "switch" namespace of its own): a host on two segments stands between them, as a mirror in a
DMZ does, and nothing routes between segments (a new namespace does not forward).

Everything created here is ours and removed by ``close``: the namespaces (and with them the veth
pairs, bridges and addresses), the processes started in them (stopped by the PID we got, never by
name); their log files' directory is the caller's. Nothing is added to this machine's own network
namespace: the veth ends are created directly inside the namespaces.

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
"""The /30 (or the segments' /24s) of a run are picked at random in here; they only ever exist inside
our namespaces."""

_SSHD_CONFIG = """\
# sshd of the end-to-end test host {name}; written by tests/ansible/netns.py.
{listen}
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
    addresses: dict[str, str] = field(default_factory=dict)
    """Address per segment (``HostNetwork``); ``address`` is the one on the host's first segment."""

    def all_addresses(self) -> list[str]:
        return list(dict.fromkeys([self.address, *self.addresses.values()]))

    def known_host(self, address: str | None = None) -> str:
        """The known_hosts line of this host's key at ``address`` (default: its first address)."""
        return f"{address or self.address} {' '.join(self.host_key_line.split()[:2])}"

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


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise NamespaceUnavailable("network namespaces need root")
    if shutil.which("ip") is None:
        raise servers.ServerUnavailable("ip(8) not found: apt-get install iproute2")
    if not os.access(SSHD, os.X_OK):
        raise servers.ServerUnavailable(f"{SSHD} not found: apt-get install openssh-server")


def _run_tag() -> str:
    """Distinguishes this run's namespaces and links from another run's (pid + random)."""
    return f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"


class _Namespaces:
    """What both layouts share: the hosts, their sshd, the keys they trust, the teardown."""

    workdir: Path
    keys_dir: Path
    hosts: dict[str, Host]
    _extra_namespaces: list[str]

    def _add_namespace(self, namespace: str) -> None:
        try:
            _run(["ip", "netns", "add", namespace])
        except (subprocess.CalledProcessError, OSError) as err:
            detail = err.stderr if isinstance(err, subprocess.CalledProcessError) else err
            raise NamespaceUnavailable(f"cannot create a network namespace: {detail}") from err

    def _start_sshd(self, host: Host, users: list[str]) -> None:
        key = self.keys_dir / f"ssh_host_{host.name}"
        host.host_key_line = ssh_keygen(key, f"tm-e2e-{host.name}")
        config = self.keys_dir / f"sshd_{host.name}.conf"
        listen = "\n".join(f"ListenAddress {address}" for address in host.all_addresses())
        config.write_text(_SSHD_CONFIG.format(name=host.name, listen=listen, host_key=key,
                                              pid_file=self.keys_dir / f"sshd_{host.name}.pid",
                                              keys_dir=self.keys_dir, users=" ".join(users)))
        handle = host.start("sshd", [str(SSHD), "-D", "-e", "-f", str(config)])
        host.wait_listening(22, handle)

    def authorize(self, user: str, public_key: str) -> None:
        """Let ``user`` log in to every host's sshd with ``public_key``."""
        path = self.keys_dir / f"authorized_keys.{user}"
        path.write_text(public_key + "\n")
        path.chmod(0o600)

    def known_hosts(self) -> str:
        """known_hosts lines of every host, one per address it has."""
        return "".join(h.known_host(address) + "\n" for h in self.hosts.values() for address in h.all_addresses())

    def close(self) -> None:
        """Stop the processes, then delete the namespaces (which deletes their links and bridges)."""
        for host in self.hosts.values():
            host.stop_processes()
        for namespace in [h.namespace for h in self.hosts.values()] + self._extra_namespaces:
            subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)
        self.hosts = {}
        self._extra_namespaces = []


class HostPair(_Namespaces):
    """Server and client hosts: two namespaces joined by a veth pair on a random /30."""

    def __init__(self, workdir: Path, users: dict[str, list[str]]):
        _check_machine()
        tag = _run_tag()
        subnet = random.choice(list(SUBNET_POOL.subnets(new_prefix=30)))
        first, second = list(subnet.hosts())
        self.workdir = workdir
        self.keys_dir = workdir / "ssh"
        self.keys_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.subnet = subnet
        self.hosts: dict[str, Host] = {}
        self._extra_namespaces = []
        self._links = (f"tmv{tag}s", f"tmv{tag}c")
        names = ("server", "client")
        try:
            for name, address in zip(names, (first, second)):
                namespace = f"tm-e2e-{name}-{tag}"
                self._add_namespace(namespace)
                self.hosts[name] = Host(name, namespace, str(address), workdir)
        except NamespaceUnavailable:
            self.close()
            raise
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

    def close(self) -> None:
        """Stop the processes, then delete the namespaces (which deletes the veth pair)."""
        super().close()
        with contextlib.suppress(OSError):
            subprocess.run(["ip", "link", "delete", self._links[0]], check=False, capture_output=True)


class HostNetwork(_Namespaces):
    """Hosts on named L2 segments: each segment a bridge with a random /24, in a switch namespace.

    ``segments`` maps a segment name to the hosts on it, in order (the first gets the subnet's
    first address); ``users`` maps every host to the users its sshd lets in. A host's ``address``
    is its address on the first segment that lists it, ``addresses`` has one per segment. Hosts
    on no common segment cannot reach each other at all.
    """

    def __init__(self, workdir: Path, segments: dict[str, list[str]], users: dict[str, list[str]]):
        _check_machine()
        placed = {name for names in segments.values() for name in names}
        if placed != set(users) or not 0 < len(segments) <= 16 or len(users) > 16:
            raise ValueError(f"1-16 segments and hosts, each host on a segment and with its sshd users "
                             f"(segments: {sorted(placed)}, users: {sorted(users)})")
        tag = _run_tag()
        self.workdir = workdir
        self.keys_dir = workdir / "ssh"
        self.keys_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.subnets = dict(zip(segments, random.sample(list(SUBNET_POOL.subnets(new_prefix=24)), len(segments))))
        self.hosts: dict[str, Host] = {}
        self._extra_namespaces = []
        switch = f"tm-e2e-switch-{tag}"
        try:
            self._add_namespace(switch)
            self._extra_namespaces.append(switch)
            for name in users:
                namespace = f"tm-e2e-{name}-{tag}"
                self._add_namespace(namespace)
                self.hosts[name] = Host(name, namespace, "", workdir)
                _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            for s_index, (segment, names) in enumerate(segments.items()):
                bridge = f"br{s_index:x}"
                _run(["ip", "-n", switch, "link", "add", bridge, "type", "bridge"])
                _run(["ip", "-n", switch, "link", "set", bridge, "up"])
                addresses = self.subnets[segment].hosts()
                for name in names:
                    host = self.hosts[name]
                    address = str(next(addresses))
                    host.addresses[segment] = address
                    host.address = host.address or address
                    # Both ends are born inside the namespaces: nothing appears in ours.
                    link, port = f"{segment[:8]}0", f"p{s_index:x}-{name[:10]}"
                    _run(["ip", "link", "add", link, "netns", host.namespace, "type", "veth",
                          "peer", "name", port, "netns", switch])
                    _run(["ip", "-n", switch, "link", "set", port, "master", bridge, "up"])
                    _run(["ip", "-n", host.namespace, "addr", "add",
                          f"{address}/{self.subnets[segment].prefixlen}", "dev", link])
                    _run(["ip", "-n", host.namespace, "link", "set", link, "up"])
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            for name, host in self.hosts.items():
                self._start_sshd(host, users[name])
        except BaseException:
            self.close()
            raise


@contextlib.contextmanager
def hosts_under(prefix: str, build, users, what: str, ssh_alias: str):
    """A fresh ``/srv/<prefix>-<pid>`` tree and the hosts ``build(base)`` makes in it, for one test.

    Skips (or fails under TROLLMOVES_REQUIRE_SERVERS) when sshd or network namespaces are missing.
    At the end: ansible's persistent SSH connections closed (so the sshd sessions end), the
    namespaces deleted, the service ``users`` and their groups removed, the tree deleted.
    """
    import pytest

    base = Path(f"/srv/{prefix}-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755, parents=True)
    base.chmod(0o755)
    try:
        network = build(base)
    except servers.ServerUnavailable as err:
        shutil.rmtree(base, ignore_errors=True)
        servers.require_or_skip(f"{what}: {err}")
    except NamespaceUnavailable as err:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"{what} needs network namespaces: {err}")
    try:
        yield base, network
    finally:
        control_dir = base / "ssh" / "cp"
        for socket_path in control_dir.glob("*") if control_dir.is_dir() else []:
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={socket_path}", ssh_alias],
                           check=False, capture_output=True, timeout=30)
        network.close()
        for user in users:
            subprocess.run(["userdel", user], check=False, capture_output=True)
            subprocess.run(["groupdel", user], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def common_inventory_vars(keys: dict[str, Path], wheelhouse, firewall: bool) -> dict[str, object]:
    """The ``all`` variables of a namespace site: root over SSH with the test's keys and known hosts,
    trollmoves installed from the shared file system's wheelhouse (the namespaces have no route to
    an index; trollmoves_common_wheelhouse would copy it over SSH instead), DEBUG logs."""
    return {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(keys["controller"]),
        "ansible_ssh_common_args": (f"-o UserKnownHostsFile={keys['known_hosts']} -o StrictHostKeyChecking=yes "
                                    "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes"),
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_become": False,
        "trollmoves_common_wheel": str(wheelhouse.wheel),
        "trollmoves_common_pip_extra_args": f"--no-index --find-links {wheelhouse.directory}",
        "trollmoves_common_firewall": "nftables" if firewall else "none",
        "trollmoves_common_nftables_include": False,
        "trollmoves_common_log_level": "DEBUG",
    }
