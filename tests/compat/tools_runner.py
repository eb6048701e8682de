"""Runner of the move_it, dispatcher and s3downloader differential scenarios (``tools_scenarios.py``).

Each tool's scenarios run in one batch per implementation, both implementations at the same time, so that
daemons are shared: one ``move_it.py -p`` process per implementation whose INI holds one section per
scenario, one ``dispatcher.py -p`` process whose YAML holds one target per scenario (plus a ``probe`` target
used to know when it is subscribed), one ``s3downloader.py`` process fed by one test publisher. Scenarios
where 0.19 crashes (``ours_only``) are left out of 0.19's config, or fed last, so that they cannot take
the shared 0.19 process down. Start-up scenarios (``kind="exit"``) run one process each.

Why the environment matters: 0.19's move_it calls its movers without any connection parameters, so the
S3 endpoint comes from ``AWS_ENDPOINT_URL`` and the SSH key from ``~/.ssh/id_ed25519`` (paramiko's default
key look-up); each implementation gets its own ``HOME`` with that key and the test sshd's known_hosts.

The outcomes of a scenario (per implementation) are: ``files`` (``local/…``, ``ftp/…``, ``ssh/…``, ``s3/…``
relative path → sha256, every file under the scenario's destination roots, hidden ones included),
``messages`` (type, subject, uid, uri, sorted metadata keys, without our additions size/mtime/checksum),
``uris_resolve`` (does each published uri name a delivered file), ``source`` (files left in the source
directory), ``status``/``exit`` for start-up scenarios, and ``log``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import string
import subprocess
import time
from typing import Any

from tests.compat import harness
from tests.controller import DaemonProcess
from tests.daemons.helpers import Collector
from tests.servers import free_port

RUNNING = "running"
FAILED = "failed"
EXITED_0 = "exit 0"


# --------------------------------------------------------------------------------------------------
# Scenario data
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Feed:
    """A message the test publishes to the dispatcher or s3downloader (strings are ``${…}`` templates)."""

    atype: str
    data: Any
    subject: str = "${topic}"


@dataclasses.dataclass(frozen=True)
class ToolScenario:
    """One differential scenario for move_it, the dispatcher or the s3downloader (data only).

    ``kind``: ``move_it`` (``config`` = INI section body), ``dispatcher`` (``config`` = YAML target body),
    ``s3downloader`` (``feed`` only; the config is shared) or ``exit`` (``config`` = a whole file, ``argv``
    = the command line after the script name, ``script`` = console script).
    Templates (``string.Template``): ``${src}`` source dir, ``${out}`` local destination root (exists),
    ``${work}``, ``${topic}``/``${ptopic}`` the scenario's input/output subjects, ``${ftp}`` (ftp URL of the
    scenario's FTP dir, with credentials), ``${ftp_host}``/``${ftp_dir}``, ``${sftp}``/``${scp}`` (URLs of
    the scenario's SSH dir), ``${sftp_host}``/``${scp_host}``/``${ssh_dir}``/``${ssh_key}``, ``${bucket}``
    (a bucket of the scenario's own), ``${s3_endpoint}``/``${s3_key}``/``${s3_secret}``, ``${s3_src}`` (the
    s3downloader's source bucket).
    ``drop``: source files written after start (name, or (name, size or bytes)); ``present``: before start;
    ``mkdirs``: directories (templates) made before start. ``expect``: messages to wait for (both
    implementations; ``expect_019`` overrides for 0.19). ``objects``: s3downloader source objects
    (key, content name). ``ours_only``: why 0.19 is not run (it crashes or hangs, reference §7); then
    ``expected`` (aspect → ours' outcome) is asserted on ours alone. ``differences``: deliberate differences
    (``harness.Difference``). ``xfail``: a divergence not fixed yet (the reason says who fixes it).
    ``checks``: extra ours-only assertions (names of functions in ``test_tools.py``). ``names``: further
    base names an s3downloader scenario may produce (besides those of its ``objects``).
    """

    id: str
    kind: str
    config: str = ""
    doc: str = ""
    drop: tuple = ()
    present: tuple = ()
    mkdirs: tuple = ()
    feed: tuple = ()
    objects: tuple = ()
    expect: int = 0
    expect_019: int | None = None
    aspects: tuple = ("files", "messages", "uris_resolve")
    differences: tuple = ()
    ours_only: str = ""
    expected: dict = dataclasses.field(default_factory=dict)
    xfail: str = ""
    script: str = ""
    argv: tuple = ()
    wait: float = 6.0
    checks: tuple = ()
    names: tuple = ()

    def expected_messages(self, impl: str) -> int:
        if impl == "019" and self.expect_019 is not None:
            return self.expect_019
        return self.expect


# --------------------------------------------------------------------------------------------------
# Per-implementation places
# --------------------------------------------------------------------------------------------------


def bucket_name(scenario_id: str, impl: str) -> str:
    """A valid S3 bucket name of the scenario's own (no underscores, lower case, <= 63 characters)."""
    return f"c-{scenario_id.replace('_', '-').lower()}-{impl}"[:63].rstrip("-")


class Places:
    """Where one implementation's run of one scenario reads and writes, and how to normalise its outcome."""

    def __init__(self, impl: str, scenario: ToolScenario, root: str, servers: dict, shared_src: bool = False):
        self.impl = impl
        self.scenario = scenario
        self.root = os.path.join(root, f"local-{impl}")
        self.base = os.path.join(self.root, scenario.id)
        self.src = (
            os.path.join(root, "shared", scenario.id, "src") if shared_src else os.path.join(self.base, "src")
        )
        self.shared_root = os.path.join(root, "shared")
        self.out = os.path.join(self.base, "out")
        self.work = os.path.join(self.base, "work")
        for path in (self.src, self.out, self.work):
            os.makedirs(path, exist_ok=True)
        self.servers = servers
        self.bucket = bucket_name(scenario.id, impl)
        ftp, sshd, s3 = servers.get("ftp"), servers.get("sshd"), servers.get("s3")
        self.values = {
            "src": self.src,
            "out": self.out,
            "work": self.work,
            "sid": scenario.id,
            "impl": impl,
            "topic": f"/compat/{scenario.id}/in",
            "ptopic": f"/compat/{scenario.id}/out",
            "bucket": self.bucket,
            "s3_src": S3_SOURCE_BUCKET,
            "xrit": xrit_standin(root),
        }
        self.ftp_local = self.ssh_local = None
        if ftp is not None:
            self.ftp_dir = f"/ftp-{impl}/{scenario.id}"
            self.ftp_local = os.path.join(str(ftp.root), self.ftp_dir.lstrip("/"))
            os.makedirs(self.ftp_local, exist_ok=True)
            host = f"ftp://{ftp.user}:{ftp.password}@127.0.0.1:{ftp.port}"
            self.values.update(ftp_host=host, ftp_dir=self.ftp_dir, ftp=host + self.ftp_dir)
        if sshd is not None:
            self.ssh_local = os.path.join(str(sshd.root), f"ssh-{impl}", scenario.id)
            os.makedirs(self.ssh_local, exist_ok=True)
            sftp_host = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}"
            scp_host = f"scp://{sshd.user}@127.0.0.1:{sshd.port}"
            self.values.update(
                sftp_host=sftp_host,
                scp_host=scp_host,
                ssh_dir=self.ssh_local,
                sftp=sftp_host + self.ssh_local,
                scp=scp_host + self.ssh_local,
                ssh_key=str(sshd.client_key),
            )
        if s3 is not None:
            self.values.update(s3_endpoint=s3.endpoint_url, s3_key=s3.key, s3_secret=s3.secret)
        replacements = {
            self.root: "<root>",
            self.shared_root: "<shared>",
            self.bucket: "<bucket>",
            f"ftp-{impl}": "<ftp>",
        }
        if self.ssh_local:
            replacements[os.path.dirname(self.ssh_local)] = "<ssh>"
        self.norm = harness.Normaliser(replacements)

    def fill(self, text: str) -> str:
        return string.Template(text).substitute(self.values)

    def fill_data(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.fill(obj)
        if isinstance(obj, dict):
            return {k: self.fill_data(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.fill_data(v) for v in obj]
        return obj

    def prepare(self) -> None:
        for directory in self.scenario.mkdirs:
            os.makedirs(self.fill(directory), exist_ok=True)
        if self.uses_bucket():
            try:
                harness.s3_client(self.servers["s3"]).create_bucket(Bucket=self.bucket)
            except Exception as err:  # already there (re-run in the same session)
                if "BucketAlready" not in type(err).__name__ and "BucketAlready" not in str(err):
                    raise
        for item in self.scenario.present:
            write_source(self.src, item)

    def uses_bucket(self) -> bool:
        return "${bucket}" in self.scenario.config

    def drop(self) -> None:
        for item in self.scenario.drop:
            write_source(self.src, item)

    # outcomes ---------------------------------------------------------------------------------------
    def files(self) -> dict[str, str]:
        found = {f"local/{k}": v for k, v in harness.tree(self.out).items()}
        if self.ftp_local:
            found.update({f"ftp/{k}": v for k, v in harness.tree(self.ftp_local).items()})
        if self.ssh_local:
            found.update({f"ssh/{k}": v for k, v in harness.tree(self.ssh_local).items()})
        if self.uses_bucket():
            found.update({f"s3/{k}": v for k, v in _bucket_tree(self.servers["s3"], self.bucket).items()})
        return found

    def message(self, msg) -> tuple:
        """What is compared of a message: type, subject, uid, uri and the sorted metadata keys."""
        data = msg.data if isinstance(msg.data, dict) else {}
        keys = tuple(sorted(k for k in data if k not in harness.IGNORED_KEYS))
        return (
            msg.type,
            self.norm.text(msg.subject),
            self.norm.value(data.get("uid")),
            self.norm.value(data.get("uri")),
            keys,
        )

    def resolves(self, msg, files: dict[str, str]) -> bool:
        """Does the message's uri name a delivered file (local path, or the path on a remote root)?"""
        uri = msg.data.get("uri") if isinstance(msg.data, dict) else None
        if not isinstance(uri, str):
            return False
        if uri.startswith(self.out + "/"):
            return f"local/{os.path.relpath(uri, self.out)}" in files
        if self.ssh_local and uri.startswith(self.ssh_local + "/"):
            return f"ssh/{os.path.relpath(uri, self.ssh_local)}" in files
        if self.ftp_local and uri.startswith(self.ftp_dir + "/"):
            return f"ftp/{uri[len(self.ftp_dir) + 1 :]}" in files
        return f"s3/{uri.lstrip('/')}" in files

    def outcomes(self, messages: list, log: str) -> dict:
        files = self.files()
        return {
            "files": files,
            "messages": harness.canonical([self.message(m) for m in messages]),
            "uris_resolve": sorted(self.resolves(m, files) for m in messages),
            "source": sorted(harness.tree(self.src)),
            "work": sorted(harness.tree(self.work)),
            "raw_messages": [(m.type, m.subject, m.data) for m in messages],
            "debug": DEBUG_RECORD.search(log) is not None,
            "log": log,
        }


S3_SOURCE_BUCKET = "compat-s3dl-source"
DEBUG_RECORD = re.compile(r"^\[(DEBUG:|\S+ \S+ DEBUG\s)", re.MULTILINE)
"""A DEBUG-level log record in 0.19's s3downloader format or in ours (not the word in a message)."""


XRIT_STANDIN = """#!/bin/sh
# Stand-in for EUMETSAT's xRITDecompress: writes <name with C_ -> __> into the current directory.
name=$(basename "$1")
{ printf 'decompressed:'; cat "$1"; } > "${name%C_}__"
"""


def xrit_standin(root: str) -> str:
    """A stand-in xRIT decompressor (same call convention: ``prog <file>``, output in the cwd)."""
    path = os.path.join(root, "bin", "xRITDecompress")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(XRIT_STANDIN)
        os.chmod(path, 0o755)
    return path


def write_source(directory: str, item) -> str:
    """Write one source file: a name (2000 deterministic bytes), or (name, size), or (name, bytes)."""
    name, size = (item, 2000) if isinstance(item, str) else item
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(harness.content(name, size) if isinstance(size, int) else size)
    return path


def _bucket_tree(s3_server, bucket: str) -> dict[str, str]:
    client = harness.s3_client(s3_server)
    found = {}
    try:
        pages = list(client.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    except Exception:  # noqa: BLE001 - no such bucket: nothing delivered
        return found
    for page in pages:
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"]] = harness.sha256_bytes(body)
    return found


def tool_env(impl: str, home: str, servers: dict) -> dict[str, str]:
    """The daemon's environment: own HOME (ssh key, known_hosts for paramiko), S3 endpoint and credentials."""
    env = harness.impl_env(impl, home)
    sshd = servers.get("sshd")
    if sshd is not None:
        harness.install_known_hosts(home, str(sshd.known_hosts))
        key = os.path.join(home, ".ssh", "id_ed25519")
        shutil.copy(str(sshd.client_key), key)
        os.chmod(key, 0o600)
    s3 = servers.get("s3")
    if s3 is not None:
        env.update(
            {
                "AWS_ACCESS_KEY_ID": s3.key,
                "AWS_SECRET_ACCESS_KEY": s3.secret,
                "AWS_DEFAULT_REGION": s3.region,
                "AWS_ENDPOINT_URL": s3.endpoint_url,
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            }
        )
    return env


def _impls(scenario: ToolScenario) -> tuple[str, ...]:
    return ("ours",) if scenario.ours_only else harness.IMPLS


def _wait(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _stop(process: DaemonProcess, impl: str) -> int | None:
    """0.19's dispatcher and s3downloader do not exit on SIGTERM (non-daemon threads): kill after 3 s."""
    return process.stop(3.0 if impl == "019" else 15.0)


# --------------------------------------------------------------------------------------------------
# move_it
# --------------------------------------------------------------------------------------------------


def _move_it_ini(places: list[Places]) -> str:
    parts = []
    for place in places:
        body = string.Template(_dedent(place.scenario.config)).substitute(place.values)
        lines = [f"[{place.scenario.id}]"]
        if "origin" not in _keys(body):
            lines.append(f"origin = {place.src}/{{name}}.dat")
        if "topic" not in _keys(body):
            lines.append(f"topic = {place.values['topic']}")
        parts.append("\n".join(lines + [body]) + "\n")
    return "\n".join(parts)


def run_move_it(scenarios, servers: dict, root: str) -> dict:
    """All move_it scenarios: one ``move_it.py -p PORT --disable-backlog`` per implementation."""
    runs = {}
    for impl in harness.IMPLS:
        chosen = [s for s in scenarios if impl in _impls(s)]
        places = [Places(impl, s, root, servers) for s in chosen]
        for place in places:
            place.prepare()
        impl_root = os.path.join(root, f"local-{impl}")
        ini = os.path.join(impl_root, "move_it.ini")
        with open(ini, "w", encoding="utf-8") as stream:
            stream.write(_move_it_ini(places))
        port = free_port()
        env = tool_env(impl, os.path.join(impl_root, "home"), servers)
        process = DaemonProcess(
            [*harness.command(impl, "move_it.py"), "-p", str(port), "--disable-backlog", ini],
            os.path.join(impl_root, "move_it.log"),
            env,
        ).start()
        runs[impl] = (places, process, port)
    collector = Collector([f"tcp://127.0.0.1:{port}" for _, _, port in runs.values()], "/compat/").__enter__()
    try:
        time.sleep(3.0)  # both watch their directories well within this (0.19 ~1.5 s)

        def messages(impl: str, scenario: ToolScenario) -> list:
            address = f"tcp://127.0.0.1:{runs[impl][2]}"
            prefix = f"/compat/{scenario.id}/"
            with collector._lock:
                return [m for a, m in collector.messages if a == address and m.subject.startswith(prefix)]

        def done(places_by_impl) -> bool:
            return all(
                len(messages(impl, p.scenario)) >= p.scenario.expected_messages(impl)
                for impl, places in places_by_impl
                for p in places
            )

        # Local scenarios all at once; remote ones one after the other: 0.19 shares one cached FTP/SCP
        # connection between its chains' threads without a lock (reference §7.21), so concurrent chains
        # to one server break each other's transfers ("550 No such file or directory") -- not what these
        # scenarios are about.
        for local in (True, False):
            for scenario in [s for s in scenarios if _is_remote(s) != local]:
                chosen = [(impl, [p for p in runs[impl][0] if p.scenario.id == scenario.id]) for impl in runs]
                for _, places in chosen:
                    for place in places:
                        place.drop()
                if not local:
                    _wait(lambda chosen=chosen: done(chosen), 8.0, 0.05)

        _wait(
            lambda: all(
                len(messages(impl, p.scenario)) >= p.scenario.expected_messages(impl)
                for impl, (places, _, _) in runs.items()
                for p in places
            ),
            25.0,
        )
        time.sleep(1.5)  # late or duplicate messages, a late copy, the removal of decompressed files
        results: dict = {}
        for impl, (places, process, _) in runs.items():
            log = process.log()
            for place in places:
                results.setdefault(place.scenario.id, {})[impl] = place.outcomes(
                    messages(impl, place.scenario), log
                )
    finally:
        collector.__exit__(None, None, None)
        for impl, (_, process, _) in runs.items():
            _stop(process, impl)
    return results


# --------------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------------

PROBE_TOPIC = "/compat/probe/in"


def _dispatcher_yaml(impl_root: str, feed_port: int, places: list[Places]) -> str:
    parts = [
        "posttroll_subscriber:",
        "  subscribe_addresses:",
        f"    - tcp://127.0.0.1:{feed_port}",
        "  nameserver: false",
        "probe:",
        '  host: ""',
        f"  directory: {impl_root}/probe",
        "  dispatch_configs:",
        f"    - topics: [{PROBE_TOPIC}]",
    ]
    for place in places:
        body = string.Template(_dedent(place.scenario.config)).substitute(place.values)
        parts.append(f"{place.scenario.id}:")
        parts.extend("  " + line for line in body.splitlines())
    return "\n".join(parts) + "\n"


def run_dispatcher(scenarios, servers: dict, root: str) -> dict:
    """All dispatcher scenarios: one ``dispatcher.py CONFIG -p PORT -n localhost`` per implementation."""
    from trollmoves import messaging

    feeder = messaging.Publisher("compat-feeder", 0, "127.0.0.1", nameservers=False).start()
    runs = {}
    try:
        for impl in harness.IMPLS:
            chosen = [s for s in scenarios if impl in _impls(s)]
            places = [Places(impl, s, root, servers, shared_src=True) for s in chosen]
            for place in places:
                place.prepare()
                place.drop()  # sources exist before the messages naming them are sent
            impl_root = os.path.join(root, f"local-{impl}")
            config = os.path.join(impl_root, "dispatch.yaml")
            with open(config, "w", encoding="utf-8") as stream:
                stream.write(_dispatcher_yaml(impl_root, feeder.port, places))
            port = free_port()
            env = tool_env(impl, os.path.join(impl_root, "home"), servers)
            process = DaemonProcess(
                [*harness.command(impl, "dispatcher.py"), config, "-p", str(port), "-n", "localhost"],
                os.path.join(impl_root, "dispatcher.log"),
                env,
            ).start()
            runs[impl] = (places, process, port, impl_root)
        collector = Collector(
            [f"tcp://127.0.0.1:{port}" for _, _, port, _ in runs.values()], "/compat/"
        ).__enter__()
        try:
            probe = write_source(os.path.join(root, "shared", "probe"), "probe.dat")
            probe_data = {"uri": probe, "uid": "probe.dat"}

            def subscribed() -> bool:
                feeder.send(messaging.make_message(PROBE_TOPIC, "file", probe_data))
                return all(
                    os.path.exists(os.path.join(r, "probe", "probe.dat")) for _, _, _, r in runs.values()
                )

            if not _wait(subscribed, 30.0, 0.3):
                raise AssertionError(
                    "the dispatchers did not receive the probe message within 30 s:\n"
                    + "\n".join(run[1].log()[-2000:] for run in runs.values())
                )
            sent = set()
            for impl, (places, _, _, _) in runs.items():  # one feed for both: same subjects and data
                for place in places:
                    if place.scenario.id in sent:
                        continue
                    sent.add(place.scenario.id)
                    for item in place.scenario.feed:
                        feeder.send(
                            messaging.make_message(
                                place.fill(item.subject), item.atype, place.fill_data(item.data)
                            )
                        )

            def messages(impl: str, scenario: ToolScenario) -> list:
                address = f"tcp://127.0.0.1:{runs[impl][2]}"
                prefix = f"/compat/{scenario.id}/"
                with collector._lock:
                    return [m for a, m in collector.messages if a == address and m.subject.startswith(prefix)]

            _wait(
                lambda: all(
                    len(messages(impl, p.scenario)) >= p.scenario.expected_messages(impl)
                    for impl, (places, _, _, _) in runs.items()
                    for p in places
                ),
                20.0,
            )
            time.sleep(1.5)
            results: dict = {}
            for impl, (places, process, _, _) in runs.items():
                log = process.log()
                for place in places:
                    results.setdefault(place.scenario.id, {})[impl] = place.outcomes(
                        messages(impl, place.scenario), log
                    )
        finally:
            collector.__exit__(None, None, None)
    finally:
        for impl, (_, process, _, _) in runs.items():
            _stop(process, impl)
        feeder.stop()
    return results


# --------------------------------------------------------------------------------------------------
# s3downloader
# --------------------------------------------------------------------------------------------------

S3DL_CONFIG = """\
logging:
  log_rotation_days: 1
  log_rotation_backup: 30
  logging_mode: DEBUG
subscribe-topic:
  - /compat/s3dl/in
publish-topic: /compat/s3dl/out
bucket: {bucket}
download_destination: {destination}
s3_kwargs:
  anon: false
  key: {key}
  secret: {secret}
  client_kwargs:
    endpoint_url: {endpoint}
subscriber_addresses: tcp://127.0.0.1:{feed_port}
"""
"""The s3downloader config, shaped as 0.19's ``examples/s3downloader-config.yaml-template``."""


class _S3Places(Places):
    """The s3downloader writes every scenario's files into one download directory: keep a scenario's own."""

    def __init__(self, impl, scenario, root, servers, download: str):
        super().__init__(impl, scenario, root, servers)
        self.download = download
        self.names = {os.path.basename(key) for key, _ in scenario.objects} | set(scenario.names)
        self.norm = harness.Normaliser({download: "<download>", self.shared_root: "<shared>"})

    def uses_bucket(self) -> bool:
        return False

    def files(self) -> dict[str, str]:
        return {
            f"local/{k}": v
            for k, v in harness.tree(self.download).items()
            if any(name in os.path.basename(k) for name in self.names)
        }

    def resolves(self, msg, files) -> bool:
        uri = msg.data.get("uri") if isinstance(msg.data, dict) else None
        return isinstance(uri, str) and f"local/{os.path.relpath(uri, self.download)}" in files


def run_s3downloader(scenarios, servers: dict, root: str) -> dict:
    """All s3downloader scenarios: one ``s3downloader.py -c CONFIG -n localhost`` per implementation.

    The scenarios compared with 0.19 are fed first; the ``ours_only`` ones (0.19 crashes on them: dataset and
    collection messages, missing objects) afterwards, so they cannot spoil the shared 0.19 process.
    """
    from trollmoves import messaging

    s3 = servers["s3"]
    client = harness.s3_client(s3)
    if S3_SOURCE_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=S3_SOURCE_BUCKET)
    for scenario in scenarios:
        for key, name in scenario.objects:
            client.put_object(Bucket=S3_SOURCE_BUCKET, Key=key, Body=harness.content(name, 1500))
    feeder = messaging.Publisher("compat-s3-feeder", 0, "127.0.0.1", nameservers=False).start()
    runs = {}
    try:
        for impl in harness.IMPLS:
            impl_root = os.path.join(root, f"local-{impl}")
            download = os.path.join(impl_root, "download")
            os.makedirs(download, exist_ok=True)
            places = [_S3Places(impl, s, root, servers, download) for s in scenarios if impl in _impls(s)]
            config = os.path.join(impl_root, "s3downloader.yaml")
            with open(config, "w", encoding="utf-8") as stream:
                stream.write(
                    S3DL_CONFIG.format(
                        bucket=S3_SOURCE_BUCKET,
                        destination=download,
                        key=s3.key,
                        secret=s3.secret,
                        endpoint=s3.endpoint_url,
                        feed_port=feeder.port,
                    )
                )
            env = tool_env(impl, os.path.join(impl_root, "home"), servers)
            process = DaemonProcess(
                [*harness.command(impl, "s3downloader.py"), "-c", config, "-n", "localhost"],
                os.path.join(impl_root, "s3downloader.log"),
                env,
            ).start()
            runs[impl] = (places, process, download)
        addresses = _publisher_addresses(runs)
        collector = Collector(addresses, "/compat/s3dl/out").__enter__()
        try:
            probe_key = "probe.dat"  # at the root: 0.19 fetches <bucket>/<basename(uri)>
            client.put_object(Bucket=S3_SOURCE_BUCKET, Key=probe_key, Body=b"probe")

            def subscribed() -> bool:
                feeder.send(
                    messaging.make_message(
                        "/compat/s3dl/in",
                        "file",
                        {"uri": f"s3://{S3_SOURCE_BUCKET}/{probe_key}", "uid": "probe.dat"},
                    )
                )
                return all(os.path.exists(os.path.join(d, "probe.dat")) for _, _, d in runs.values())

            if not _wait(subscribed, 30.0, 0.3):
                raise AssertionError(
                    "the s3downloaders did not download the probe within 30 s:\n"
                    + "\n".join(run[1].log()[-2000:] for run in runs.values())
                )
            time.sleep(0.5)  # the probe's own republication

            def messages(impl: str, place: _S3Places) -> list:
                download = runs[impl][2]
                with collector._lock:
                    found = [m for _, m in collector.messages if isinstance(m.data, dict)]
                return [
                    m
                    for m in found
                    if str(m.data.get("uri", "")).startswith(download + "/")
                    and os.path.basename(str(m.data["uri"])) in place.names
                ]

            for phase in (False, True):
                batch = [s for s in scenarios if bool(s.ours_only) == phase]
                for scenario in batch:
                    place = runs["ours"][0][[p.scenario.id for p in runs["ours"][0]].index(scenario.id)]
                    for item in scenario.feed:
                        feeder.send(
                            messaging.make_message(
                                item.subject.replace("${topic}", "/compat/s3dl/in"),
                                item.atype,
                                place.fill_data(item.data),
                            )
                        )
                ids = {s.id for s in batch}
                _wait(
                    lambda ids=ids: all(
                        len(messages(impl, p)) >= p.scenario.expected_messages(impl)
                        for impl, (places, _, _) in runs.items()
                        for p in places
                        if p.scenario.id in ids
                    ),
                    15.0,
                )
            time.sleep(1.5)
            results: dict = {}
            for impl, (places, process, _) in runs.items():
                log = process.log()
                for place in places:
                    results.setdefault(place.scenario.id, {})[impl] = place.outcomes(
                        messages(impl, place), log
                    )
        finally:
            collector.__exit__(None, None, None)
    finally:
        for impl, (_, process, _) in runs.items():
            _stop(process, impl)
        feeder.stop()
    return results


def _publisher_addresses(runs: dict) -> list[str]:
    """The s3downloaders' publishers (random ports, registered as ``s3downloader``), reached on 127.0.0.1."""
    from trollmoves import messaging

    found: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for address in messaging.lookup_addresses("s3downloader", "localhost", timeout=2.0):
            found.add("tcp://127.0.0.1:" + address.rsplit(":", 1)[1])
        alive = [run[1] for run in runs.values() if run[1].proc.poll() is None]
        if len(found) >= len(runs) or not alive:
            break
        time.sleep(0.5)
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# Start-up scenarios
# --------------------------------------------------------------------------------------------------


def run_exit(scenario: ToolScenario, impl: str, servers: dict, root: str) -> dict:
    """Start one process with the scenario's config; its status after ``wait`` s (or when it exited)."""
    place = Places(impl, scenario, root, servers)
    place.prepare()
    config = os.path.join(place.base, "config" + (".yaml" if scenario.script != "move_it.py" else ".ini"))
    with open(config, "w", encoding="utf-8") as stream:
        stream.write(place.fill(_dedent(scenario.config)))
    argv = [a.replace("{config}", config) for a in scenario.argv]
    env = tool_env(impl, os.path.join(place.base, "home"), servers)
    process = DaemonProcess(
        [*harness.command(impl, scenario.script), *argv], os.path.join(place.base, "process.log"), env
    ).start()
    try:
        process.proc.wait(scenario.wait)
    except subprocess.TimeoutExpired:
        pass
    code = process.proc.poll()
    if code is None:
        place.drop()
        time.sleep(2.0)
    log = process.log()
    _stop(process, impl)
    status = RUNNING if code is None else (EXITED_0 if code == 0 else FAILED)
    return {"status": status, "exit": code, "files": place.files(), "log": log}


def run_exits(scenarios, servers: dict, root: str) -> dict:
    """Every start-up scenario on each implementation, three processes at a time."""
    results: dict = {}
    jobs = [(s, impl) for s in scenarios for impl in _impls(s)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {pool.submit(run_exit, s, impl, servers, root): (s.id, impl) for s, impl in jobs}
        for future, (sid, impl) in futures.items():
            results.setdefault(sid, {})[impl] = future.result()
    return results


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _is_remote(scenario: ToolScenario) -> bool:
    return any(marker in scenario.config for marker in ("${ftp", "${sftp", "${scp", "s3://"))


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip("\n")


def _keys(body: str) -> set[str]:
    return {line.split("=", 1)[0].strip().lower() for line in body.splitlines() if "=" in line}


def dump(outcome: dict) -> str:
    """An outcome without its log, for assertion messages."""
    return json.dumps({k: v for k, v in outcome.items() if k != "log"}, indent=1, default=str)[:6000]
