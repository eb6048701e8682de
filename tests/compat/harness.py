"""Differential harness: run the same scenario on trollmoves 0.19.0 and on ours, compare outcomes.

Public API (stable; ``tests/compat/test_tools.py`` imports it):

- ``VENV``, ``ORIGINAL_BIN``, ``HAVE_ORIGINAL``, ``SKIP_REASON``: where trollmoves 0.19.0 lives
  (``TROLLMOVES_019_VENV`` overrides ``/opt/trollmoves-0.19-venv``) and whether it is there.
- ``IMPLS = ("019", "ours")``; ``command(impl, script_name)`` → argv prefix of a daemon's console script
  (``move_it_server.py``, ``move_it_client.py``, ``move_it.py``, ``dispatcher.py``, ``s3downloader.py``).
- ``impl_env(impl, home)`` → environment for a daemon: ``HOME`` (0.19's paramiko reads
  ``~/.ssh/known_hosts``) and ``XDG_STATE_HOME`` (our state files) inside the test's tmp root.
- ``Normaliser(replacements, ports)``: turns tmp roots into ``<root>``, impl directory names into ``<impl>``,
  host names into ``<host>``, known ports into ``<port>``; ``.value(obj)`` walks dicts/lists/strings,
  ``.message(msg)`` gives ``(type, subject, data)`` without ``IGNORED_KEYS`` (our additions ``size``, ``mtime``,
  ``checksum``).
- ``tree(path)`` → ``{relative path: sha256}`` of every file (hidden ones included) under ``path``;
  ``s3_tree(s3_server, bucket, prefix)`` the same for S3 objects.
- ``content(name, size)``: deterministic bytes for a dropped file (identical for both implementations).
- ``raw_request(address, payload, timeout)`` → ``("reply", Message)`` / ``("raw", text)`` / ``("timeout", None)``:
  a zmq REQ exchange with a daemon's request port, the reply decoded if it is a posttroll message.
- ``Difference(aspect, reason, ours=...)``: a deliberate difference of ours from 0.19 for one aspect of a
  scenario (``ours`` = ours' expected normalised outcome, or ``ANY``). ``compare(scenario_id, outcomes_019,
  outcomes_ours, aspects, differences)`` asserts equality aspect by aspect, except where a Difference says
  otherwise, with a readable failure.
- The server/client runner: ``Scenario``, ``Request``, ``Group``, ``run_groups(groups, scenarios, servers, root)``
  → ``{scenario_id: {impl: outcomes}}`` (outcomes: ``files``, ``client``, ``server``, ``replies``, ``finals``
  (count of the client's final messages), ``source``, ``beats``, ``log``, ``exit``); see their docstrings.
  Push messages' ``destination`` is compared without its trailing slash (deliberate, docs/compatibility.md).

Everything runs on 127.0.0.1 free ports with real processes; nothing is mocked.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import string
import sys
import textwrap
import threading
import time
from datetime import datetime
from typing import Any

from tests.controller import DaemonProcess, console_script
from tests.daemons.helpers import Collector

logger = logging.getLogger(__name__)

VENV = os.environ.get("TROLLMOVES_019_VENV", "/opt/trollmoves-0.19-venv")
ORIGINAL_BIN = os.path.join(VENV, "bin")
HAVE_ORIGINAL = os.path.exists(os.path.join(ORIGINAL_BIN, "move_it_server.py"))
SKIP_REASON = (f"trollmoves 0.19.0 is not installed in {VENV} (set TROLLMOVES_019_VENV; "
               "tests/run_all.sh makes it)")
IMPLS = ("019", "ours")
IGNORED_KEYS = frozenset({"size", "mtime", "checksum"})
"""Fields our messages add (documented in docs/compatibility.md): never compared."""
ANY = object()
"""``Difference(ours=ANY)``: ours is not compared with anything for that aspect (the reason says why)."""

_SUBCOMMANDS = {"move_it_server.py": "server", "move_it_client.py": "client", "move_it.py": "move-it",
                "dispatcher.py": "dispatcher", "s3downloader.py": "s3downloader", "move_it_mirror.py": "mirror"}


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------

def command(impl: str, name: str) -> list[str]:
    """argv prefix running the console script ``name`` of ``impl`` (0.19 from its venv, ours from PATH)."""
    if impl == "019":
        return [os.path.join(ORIGINAL_BIN, name)]
    try:
        return [console_script(name)]  # beside this interpreter, else on PATH
    except FileNotFoundError:
        return [sys.executable, "-m", "trollmoves.cli", _SUBCOMMANDS[name]]


def impl_env(impl: str, home: str) -> dict[str, str]:
    """Environment of a daemon: its own HOME (known_hosts for 0.19's paramiko) and state directory."""
    os.makedirs(home, exist_ok=True)
    return {"HOME": home, "XDG_STATE_HOME": os.path.join(home, ".state"), "PYTHONUNBUFFERED": "1"}


def install_known_hosts(home: str, known_hosts: str) -> None:
    """Copy the test sshd's host key line into ``home/.ssh/known_hosts`` (0.19 calls load_system_host_keys)."""
    ssh_dir = os.path.join(home, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    shutil.copy(known_hosts, os.path.join(ssh_dir, "known_hosts"))


def install_ssh_key(home: str, key: str) -> None:
    """The test sshd's client key as ``~/.ssh/id_ed25519``: 0.19 overwrites ``connection_parameters__ssh_key_filename``
    with its own default (None), so its scp logins rely on paramiko's default key files, as in production."""
    ssh_dir = os.path.join(home, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    shutil.copy(key, os.path.join(ssh_dir, "id_ed25519"))
    os.chmod(os.path.join(ssh_dir, "id_ed25519"), 0o600)


# --------------------------------------------------------------------------------------------------
# Outcomes and normalisation
# --------------------------------------------------------------------------------------------------

def content(name: str, size: int = 2000) -> bytes:
    """Deterministic file bytes: both implementations receive byte-identical sources."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(path: str) -> dict[str, str]:
    """Every file under ``path`` (hidden ones too: temporary names must not remain) → sha256."""
    found = {}
    if not os.path.isdir(path):
        return found
    for directory, _, files in os.walk(path):
        for name in files:
            full = os.path.join(directory, name)
            with open(full, "rb") as stream:
                found[os.path.relpath(full, path)] = sha256_bytes(stream.read())
    return found


def s3_client(s3_server):
    import boto3

    return boto3.client("s3", **s3_server.boto3_kwargs())


def s3_tree(s3_server, bucket: str, prefix: str) -> dict[str, str]:
    """Every object under ``bucket/prefix/`` → sha256, keyed by the path relative to the prefix."""
    client = s3_client(s3_server)
    found = {}
    prefix = prefix.strip("/") + "/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix):]] = sha256_bytes(body)
    return found


class Normaliser:
    """Replaces run-specific strings by stable tokens so the outcomes of both implementations compare."""

    def __init__(self, replacements: dict[str, str], ports=()):
        self._replacements = sorted(replacements.items(), key=lambda item: -len(item[0]))
        self._ports = re.compile(r"(?<!\d)(" + "|".join(str(p) for p in sorted(set(ports), reverse=True))
                                 + r")(?!\d)") if ports else None

    def text(self, value: str) -> str:
        for old, new in self._replacements:
            if old:
                value = value.replace(old, new)
        if self._ports:
            value = self._ports.sub("<port>", value)
        return value

    def value(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, datetime):
            return obj.isoformat()
        if isinstance(obj, dict):
            return {self.text(str(k)): self.value(v) for k, v in obj.items() if k not in IGNORED_KEYS}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj

    def message(self, msg) -> tuple:
        data = self.value(msg.data)
        if msg.type == "push" and isinstance(data, dict) and isinstance(data.get("destination"), str):
            # deliberate: our client sends (and publishes) the destination directory with its trailing slash
            data["destination"] = data["destination"].rstrip("/")
        return (msg.type, self.text(msg.subject), data)


def canonical(items) -> list:
    """Order-free form of a list of normalised messages (files arrive in any order)."""
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------

def raw_request(address: str, payload: str, timeout: float = 5.0):
    """One REQ exchange: ``("reply", Message)``, ``("raw", text)`` (not a posttroll message) or ``("timeout", None)``."""
    import zmq

    from trollmoves import messaging

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send_string(payload)
        if not sock.poll(int(timeout * 1000)):
            return ("timeout", None)
        raw = sock.recv()
    finally:
        sock.close()
    try:
        return ("reply", messaging.decode(raw))
    except Exception:  # noqa: BLE001 - 0.19 may answer with a bare string (reference §7.9)
        return ("raw", raw.decode("utf-8", "replace"))


def normal_reply(result, norm: Normaliser) -> tuple:
    """A reply as compared: its type and data, and for ``err`` only the type (wording may differ)."""
    kind, reply = result
    if kind != "reply":
        return (kind, norm.text(reply) if isinstance(reply, str) else None)
    if reply.type == "err":
        return ("err",)
    data = norm.value(reply.data)
    if reply.type == "info" and isinstance(data, dict):  # uptime differs; the order of files is timing
        data = dict(data, uptime="<uptime>", files=sorted(data.get("files", [])))
    return (reply.type, data)


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Difference:
    """A deliberate difference of ours from 0.19 in one aspect (documented in docs/compatibility.md)."""

    aspect: str
    reason: str
    ours: Any = ANY


def compare(scenario_id: str, original: dict, ours: dict, aspects, differences=()) -> None:
    """Assert that ours' outcomes equal 0.19's for every aspect, except the documented differences."""
    deliberate = {d.aspect: d for d in differences}
    failures = []
    for aspect in aspects:
        if aspect in deliberate:
            expected = deliberate[aspect].ours
            if expected is not ANY and ours.get(aspect) != expected:
                failures.append(f"{aspect} (deliberate difference: {deliberate[aspect].reason}):\n"
                                f"  expected ours: {expected!r}\n  ours:          {ours.get(aspect)!r}\n"
                                f"  0.19:          {original.get(aspect)!r}")
        elif original.get(aspect) != ours.get(aspect):
            failures.append(f"{aspect}:\n" + _difference_text(original.get(aspect), ours.get(aspect)))
    if failures:
        raise AssertionError(f"scenario {scenario_id}: ours differs from 0.19\n" + "\n".join(failures))


def _difference_text(original, ours) -> str:
    """Only what differs: items of one list (or dict entries) missing from the other."""
    if isinstance(original, list) and isinstance(ours, list):
        only_019 = [item for item in original if item not in ours]
        only_ours = [item for item in ours if item not in original]
        if only_019 or only_ours:
            return (f"  only in 0.19: {only_019!r}\n  only in ours: {only_ours!r}"
                    f"\n  (0.19 has {len(original)} items, ours {len(ours)})")
    if isinstance(original, dict) and isinstance(ours, dict):
        return (f"  only in 0.19: {({k: v for k, v in original.items() if ours.get(k) != v})!r}\n"
                f"  only in ours: {({k: v for k, v in ours.items() if original.get(k) != v})!r}")
    return f"  0.19: {original!r}\n  ours: {ours!r}"


# --------------------------------------------------------------------------------------------------
# Server/client scenarios
# --------------------------------------------------------------------------------------------------

DEFAULT_ORIGIN = "${src}/{platform_name}_{number:03d}.dat"


@dataclasses.dataclass(frozen=True)
class Request:
    """A raw request sent to the scenario's server chain once ``after`` announcements were seen.

    ``data`` is a dict whose strings are templates (``${src}``, ``${dst}``…), or a raw string payload sent as is
    when ``atype`` is None. ``subject`` defaults to the scenario topic.
    """

    atype: str | None
    data: Any = None
    subject: str | None = None
    after: int = 1
    delay: float = 0.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One differential scenario (data only).

    ``server``/``client``: INI section bodies (``string.Template``: ``${src}``, ``${dst}``, ``${work}``,
    ``${request_port}``, ``${publish_port}``, ``${client_port}``, ``${topic}``, ``${host}``, ``${ftp_*}``, ``${ssh_*}``,
    ``${s3_*}``, ``${sftp_params}``, ``${scp_params}``, ``${s3_params}``, ``${bin}``…). Standard keys
    (``origin``, ``topic``, ``request_port``, ``request_address`` for the server; ``providers``, ``topic``,
    ``publish_port``, ``nameservers``, ``destination`` for the client) are added unless the body sets them or
    ``omit`` lists them. No ``client`` → the group's client gets no chain for it.
    ``drop``: files written after start: a count (``<TAG>_100.dat``…) or names / (name, size or bytes) with
    ``${tag}`` (the scenario's upper-case id); ``present``: written before start (backlog), counted from 000.
    ``dest``: where delivered files are collected: ``local`` (``${dst}``), ``ftp`` (``${ftp_dst}`` in the FTP
    root) or ``s3`` (``${s3_dst}`` in the bucket). ``expect``: final client messages to wait for;
    ``announce``: server announcements to wait for (default: len(drop + present) when there is no client).
    ``mkdirs``: directories made under ``${dst}`` (or the FTP destination) before start; ``extra``: (path under
    the scenario's base dir, size) files made before start (outside the watched directory); ``scripts``: (name,
    shell text) executables written to ``${bin}``. ``ours_only``: 0.19 crashes or misbehaves here (reference §7): only ``expected`` is asserted, on ours.
    """

    id: str
    server: str | None = ""
    client: str | None = None
    group: str = "main"
    drop: tuple = ()
    present: tuple = ()
    requests: tuple = ()
    dest: str = "local"
    expect: int | None = None
    announce: int | None = None
    aspects: tuple = ("files", "client", "server", "replies")
    differences: tuple = ()
    omit: tuple = ()
    mkdirs: tuple = ()
    extra: tuple = ()
    scripts: tuple = ()
    settle: float = 0.0
    ours_only: str = ""
    expected: dict = dataclasses.field(default_factory=dict)
    xfail: str = ""
    doc: str = ""

    @property
    def tag(self) -> str:
        """The scenario's platform name: file names unique across scenarios (0.19's uid caches are global)."""
        return re.sub(r"[^A-Za-z0-9]", "", self.id).upper()

    def _files(self, spec, start: int) -> list:
        if isinstance(spec, int):
            return [f"{self.tag}_{start + i:03d}.dat" for i in range(spec)]
        return [string.Template(item).substitute(tag=self.tag) if isinstance(item, str)
                else (string.Template(item[0]).substitute(tag=self.tag), item[1]) for item in spec]

    def drop_files(self) -> list:
        return self._files(self.drop, 100)

    def present_files(self) -> list:
        return self._files(self.present, 0)

    @property
    def topic(self) -> str:
        return f"/compat/{self.id}/files"

    def expected_finals(self) -> int:
        if self.expect is not None:
            return self.expect
        return len(self.drop_files()) + len(self.present_files()) if self.client is not None else 0

    def expected_announcements(self) -> int:
        if self.announce is not None:
            return self.announce
        return len(self.drop_files()) + len(self.present_files())


@dataclasses.dataclass(frozen=True)
class Group:
    """Daemons shared by scenarios: one server (``server_args``) and one client per implementation.

    ``server_default``/``client_default``: ``[DEFAULT]`` bodies (templates). ``startup``: seconds to wait after the
    daemons are up before dropping files (0.19's server waits ~3 s before its backlog).
    """

    id: str
    server_args: tuple = ("--disable-backlog",)
    server_default: str = ""
    client_default: str = ""
    startup: float = 4.0
    deadline: float = 40.0
    stagger: float = 0.0
    """Seconds between two scenarios' drops (0.19 shares one FTP connection between concurrent pushes, §7.21)."""


def _has_key(body: str, key: str) -> bool:
    return re.search(rf"^\s*{re.escape(key)}\s*=", body, re.MULTILINE) is not None


def _section(name: str, body: str, standard: dict[str, str], omit, values: dict[str, str]) -> str:
    body = textwrap.dedent(body or "").strip("\n")
    lines = [f"{k} = {v}" for k, v in standard.items() if k not in omit and not _has_key(body, k)]
    text = "\n".join([f"[{name}]", *lines, body]) + "\n\n"
    return string.Template(text).substitute(values)


class _ImplRun:
    """One implementation's daemons, dirs and collected messages for one group."""

    def __init__(self, impl: str, group: Group, scenarios, servers: dict, root: str, taken: set):
        self.impl, self.group, self.scenarios, self.servers = impl, group, scenarios, servers
        self._taken = taken
        self.root = os.path.join(root, f"impl-{impl}")
        self.home = os.path.join(self.root, "home")
        self.ports: set[int] = set()
        self.publish_port = self._port()
        self.values = {s.id: self._values(s) for s in scenarios}
        self.replies: dict[str, list] = {s.id: [] for s in scenarios}
        self.processes: list[DaemonProcess] = []
        self.collector: Collector | None = None
        self.started_requests_at: float | None = None

    def _port(self) -> int:
        """A port below the ephemeral range (no random bind takes it meanwhile), unique in the whole run."""
        from tests.servers import _session_ports

        while True:
            port = _session_ports(1)[0]
            with _PORT_LOCK:
                if port not in self._taken:
                    self._taken.add(port)
                    self.ports.add(port)
                    return port

    def _values(self, scenario: Scenario) -> dict[str, str]:
        base = os.path.join(self.root, scenario.id)
        values = {"src": os.path.join(base, "src"), "dst": os.path.join(base, "dst"),
                  "work": os.path.join(base, "work"), "base": base, "topic": scenario.topic, "sid": scenario.id,
                  "request_port": str(self._port()), "client_port": str(self._port()),
                  "publish_port": str(self.publish_port), "host": socket.gethostname(), "impl": self.impl,
                  "bin": os.path.join(self.root, "bin"), "tag": scenario.tag}
        for name in ("src", "dst", "work", "bin"):
            os.makedirs(values[name], exist_ok=True)
        ftp, sshd, s3 = (self.servers.get(k) for k in ("ftp", "sshd", "s3"))
        values["ftp_dst"] = f"impl-{self.impl}/{scenario.id}"
        if ftp:
            values.update(ftp_port=str(ftp.port), ftp_user=ftp.user, ftp_password=ftp.password,
                          ftp_root=str(ftp.root))
            os.makedirs(os.path.join(str(ftp.root), values["ftp_dst"]), exist_ok=True)
        if sshd:
            values.update(ssh_port=str(sshd.port), ssh_user=sshd.user, ssh_key=str(sshd.client_key),
                          sftp_params=f"connection_parameters__ssh_private_key_file = {sshd.client_key}",
                          scp_params=f"connection_parameters__ssh_key_filename = {sshd.client_key}")
        values["s3_dst"] = f"impl-{self.impl}/{scenario.id}"
        dest_root = os.path.join(values.get("ftp_root", ""), values["ftp_dst"]) if scenario.dest == "ftp" \
            else values["dst"]
        for directory in scenario.mkdirs:
            os.makedirs(os.path.join(dest_root, directory), exist_ok=True)
        for relative, size in scenario.extra:
            _write_source(base, (relative, size))
        for name, text in scenario.scripts:
            path = os.path.join(values["bin"], name)
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(textwrap.dedent(text).lstrip())
            os.chmod(path, 0o755)
        if s3:
            values.update(s3_endpoint=s3.endpoint_url, s3_key=s3.key, s3_secret=s3.secret, bucket=S3_BUCKET,
                          s3_params="\n".join([
                              f"connection_parameters__client_kwargs__endpoint_url = {s3.endpoint_url}",
                              f"connection_parameters__key = {s3.key}",
                              f"connection_parameters__secret = {s3.secret}"]))
        return values

    # -- configs ------------------------------------------------------------------------------------

    def server_ini(self) -> str:
        parts = []
        if self.group.server_default:
            first = self.values[self.scenarios[0].id]
            parts.append(string.Template("[DEFAULT]\n" + textwrap.dedent(self.group.server_default).strip()
                                         + "\n\n").substitute(first))
        for s in self.scenarios:
            if s.server is None:
                continue
            values = self.values[s.id]
            standard = {"origin": DEFAULT_ORIGIN, "topic": "${topic}", "request_port": "${request_port}",
                        "request_address": "127.0.0.1"}
            parts.append(_section(s.id, s.server, standard, s.omit, values))
        return "".join(parts)

    def client_ini(self) -> str:
        parts = []
        if self.group.client_default:
            first = self.values[self.scenarios[0].id]
            parts.append(string.Template("[DEFAULT]\n" + textwrap.dedent(self.group.client_default).strip()
                                         + "\n\n").substitute(first))
        for s in self.scenarios:
            if s.client is None:
                continue
            standard = {"providers": "127.0.0.1:${publish_port}", "destination": "file://${dst}/",
                        "topic": "${topic}", "publish_port": "${client_port}", "nameservers": "False"}
            parts.append(_section(s.id, s.client, standard, s.omit, self.values[s.id]))
        return "".join(parts)

    # -- life cycle ---------------------------------------------------------------------------------

    def write_present(self) -> None:
        for s in self.scenarios:
            for item in s.present_files():
                _write_source(self.values[s.id]["src"], item)

    def start(self) -> None:
        env = impl_env(self.impl, self.home)
        sshd = self.servers.get("sshd")
        if sshd:
            install_known_hosts(self.home, str(sshd.known_hosts))
            install_ssh_key(self.home, str(sshd.client_key))
        server_ini = os.path.join(self.root, "server.ini")
        with open(server_ini, "w", encoding="utf-8") as stream:
            stream.write(self.server_ini())
        server = DaemonProcess([*command(self.impl, "move_it_server.py"), "-p", str(self.publish_port), "-v",
                                *self.group.server_args, server_ini], os.path.join(self.root, "server.log"), env)
        self.processes.append(server.start())
        if any(s.client is not None for s in self.scenarios):
            client_ini = os.path.join(self.root, "client.ini")
            with open(client_ini, "w", encoding="utf-8") as stream:
                stream.write(self.client_ini())
            client = DaemonProcess([*command(self.impl, "move_it_client.py"), "-v", client_ini],
                                   os.path.join(self.root, "client.log"), env)
            self.processes.append(client.start())
        addresses = [f"tcp://127.0.0.1:{self.publish_port}"] + [
            f"tcp://127.0.0.1:{self.values[s.id]['client_port']}" for s in self.scenarios if s.client is not None]
        self.collector = Collector(addresses, "/").__enter__()

    def drop(self, scenario: Scenario) -> None:
        for item in scenario.drop_files():
            _write_source(self.values[scenario.id]["src"], item)

    def messages(self, scenario: Scenario, port: str) -> list:
        prefix = f"/compat/{scenario.id}/"
        address = f"tcp://127.0.0.1:{port}"
        with self.collector._lock:
            return [m for a, m in self.collector.messages if a == address and m.subject.startswith(prefix)]

    def beats(self, scenario: Scenario) -> list:
        address = f"tcp://127.0.0.1:{self.values[scenario.id]['client_port']}"
        with self.collector._lock:
            return [m for a, m in self.collector.messages if a == address and m.type == "beat"]

    def finals(self, scenario: Scenario) -> list:
        return [m for m in self.messages(scenario, self.values[scenario.id]["client_port"])
                if m.type in ("file", "dataset", "collection")]

    def announcements(self, scenario: Scenario) -> list:
        return [m for m in self.messages(scenario, str(self.publish_port)) if m.type != "beat"]

    def done(self, scenario: Scenario) -> bool:
        if len(self.announcements(scenario)) < scenario.expected_announcements():
            return False
        return scenario.client is None or len(self.finals(scenario)) >= scenario.expected_finals()

    def send_requests(self, scenario: Scenario) -> None:
        values = self.values[scenario.id]
        from trollmoves import messaging

        for request in scenario.requests:
            time.sleep(request.delay)
            if request.atype is None:
                payload = string.Template(request.data or "").substitute(values)
            else:
                data = _substitute(request.data, values) if request.data is not None else ""
                payload = messaging.encode(request.subject or scenario.topic, request.atype, data)
            result = raw_request(f"tcp://127.0.0.1:{values['request_port']}", payload)
            self.replies[scenario.id].append(result)

    def stop(self) -> dict[str, int | None]:
        if self.collector:
            self.collector.__exit__(None, None, None)
        codes = {}
        for process in reversed(self.processes):
            codes[os.path.basename(process.log_path)] = process.stop()
        return codes

    def outcomes(self, scenario: Scenario) -> dict:
        values = self.values[scenario.id]
        norm = Normaliser({self.root: "<root>", f"impl-{self.impl}": "<impl>", socket.getfqdn(): "<host>",
                           socket.gethostname(): "<host>", S3_BUCKET: "<bucket>"}, self.ports)
        if scenario.dest == "ftp":
            files = tree(os.path.join(values["ftp_root"], values["ftp_dst"]))
        elif scenario.dest == "s3":
            files = s3_tree(self.servers["s3"], S3_BUCKET, values["s3_dst"])
        else:
            files = tree(values["dst"])
        client = [norm.message(m) for m in self.messages(scenario, values["client_port"]) if m.type != "beat"]
        return {
            "files": files,
            "client": canonical(client),
            "server": canonical([norm.message(m) for m in self.announcements(scenario)]),
            "replies": [normal_reply(r, norm) for r in self.replies[scenario.id]],
            "replies_raw": [(k, str(r)) for k, r in self.replies[scenario.id]],
            "finals": len(self.finals(scenario)),
            "source": sorted(tree(values["src"])),
            "beats": sorted({(m.type, norm.text(m.subject)) for m in self.beats(scenario)}),
            "log": "".join(p.log() for p in self.processes),
        }


S3_BUCKET = "tm-compat-bucket"
_PORT_LOCK = threading.Lock()
MAX_CONCURRENT_GROUPS = 2
"""Both implementations use one inotify instance per chain and Linux allows 128 per user by default
(fs.inotify.max_user_instances): keep groups under ~25 chains and run at most two at a time."""


def _write_source(directory: str, item) -> None:
    name, size = (item, 2000) if isinstance(item, str) else item
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(content(name, size) if isinstance(size, int) else size)


def _substitute(obj, values):
    if isinstance(obj, str):
        return string.Template(obj).substitute(values)
    if isinstance(obj, dict):
        return {k: _substitute(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, values) for v in obj]
    return obj


def _run_group(group: Group, scenarios, servers: dict, root: str, taken: set) -> dict:
    """Run one group on both implementations at the same time; return ``{sid: {impl: outcomes}}``."""
    runs = [_ImplRun(impl, group, scenarios, servers, os.path.join(root, group.id), taken) for impl in IMPLS]
    try:
        for run in runs:
            run.write_present()
            run.start()
        time.sleep(group.startup)
        for s in scenarios:
            for run in runs:
                run.drop(s)
            if s.drop and group.stagger:
                time.sleep(group.stagger)
        for run in runs:
            run.started_requests_at = time.monotonic()
        pending_requests = {(run.impl, s.id) for run in runs for s in scenarios if s.requests}
        deadline = time.monotonic() + group.deadline
        while time.monotonic() < deadline:
            for run in runs:
                for s in scenarios:
                    key = (run.impl, s.id)
                    if key in pending_requests and len(run.announcements(s)) >= min(r.after for r in s.requests) \
                            and run.started_requests_at is not None:
                        pending_requests.discard(key)
                        threading.Thread(target=run.send_requests, args=(s,), daemon=True).start()
            if not pending_requests and all(run.done(s) for run in runs for s in scenarios if not s.ours_only
                                            or run.impl == "ours"):
                break
            time.sleep(0.1)
        time.sleep(1.0 + max((s.settle for s in scenarios), default=0.0))
        for run in runs:  # replies of requests still in flight
            for s in scenarios:
                wait_until = time.monotonic() + 6
                while len(run.replies[s.id]) < len(s.requests) and time.monotonic() < wait_until:
                    time.sleep(0.1)
        results = {s.id: {run.impl: run.outcomes(s) for run in runs} for s in scenarios}
    finally:
        codes = {run.impl: run.stop() for run in runs}
    for s in scenarios:
        for run in runs:
            results[s.id][run.impl]["exit"] = codes[run.impl]
    for run in runs:
        log = "".join(p.log() for p in run.processes)
        if "Too many open files" in log:
            raise RuntimeError(f"group {group.id}: {run.impl} ran out of inotify instances or file descriptors "
                               f"(fs.inotify.max_user_instances is {_inotify_limit()}): make the group smaller")
    return results


def _inotify_limit() -> str:
    try:
        with open("/proc/sys/fs/inotify/max_user_instances", encoding="ascii") as stream:
            return stream.read().strip()
    except OSError:
        return "unknown"


def run_groups(groups, scenarios, servers: dict, root: str) -> dict:
    """Run every group (concurrently) and return ``{scenario_id: {impl: outcomes}}``."""
    if "s3" in servers and servers["s3"] is not None:
        client = s3_client(servers["s3"])
        try:
            client.create_bucket(Bucket=S3_BUCKET)
        except Exception as err:  # noqa: BLE001 - already there on a second run
            logger.debug("bucket: %s", err)
    by_group = {g.id: [s for s in scenarios if s.group == g.id] for g in groups}
    results: dict = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_GROUPS) as pool:
        taken: set[int] = set()
        futures = [pool.submit(_run_group, g, by_group[g.id], servers, root, taken) for g in groups
                   if by_group[g.id]]
        for future in futures:
            results.update(future.result())
    return results
