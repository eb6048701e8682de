"""sshd, the FTP server and moto_server killed (kill -9) mid-transfer, restarted on the same port.

A server process pushes a large file and a stream of small ones to the SFTP, FTP or
S3 destination of a client process. While the large file is on its way, the remote
server (with its per-connection processes) is killed and, two seconds later, started
again on the same port. Asserted: every file delivered byte-identical under its final
name and no temporary left, retries bounded (the movers' ``retries`` per push, the
client's ``max_fetch_attempts`` per file, nobody giving up), and both daemons stopping
within their drain timeout on SIGTERM.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tests import servers
from tests.daemons.helpers import wait_for
from tests.reliability.helpers import (
    FixedPortServer,
    children_of,
    client_chain,
    client_process,
    full_or_ci,
    kill_tree,
    log_events,
    ready,
    server_chain,
    server_process,
    stop_within,
    tracebacks,
    write_atomically,
    write_ini,
)
from tests.servers import free_port

DRAIN = 5
MOVER_RETRIES = 2
MAX_FETCH_ATTEMPTS = 6  # trollmoves.client.Client's default
SMALL = full_or_ci(40, 12)
MOVER_TIMEOUT = 5
HANG_LIMIT = DRAIN + 3 * MOVER_TIMEOUT + 5
"""A push blocked on a frozen remote is aborted at the drain timeout but returns only when its socket
operation times out: after ``timeout`` for FTP, after about three times ``timeout`` for SFTP (paramiko)."""
LARGE = full_or_ci(256, 64) << 20


class Remote:
    """One kind of remote server: how to start it, reach it, read from it, see a transfer running."""

    scheme = ""
    env: dict | None = None
    """The environment of the restarted server (None: this process's)."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.first = None
        self.again: FixedPortServer | None = None

    def start(self):
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The command line that starts the same server on the same port again."""
        raise NotImplementedError

    def restart(self) -> None:
        self.again = FixedPortServer(self.scheme, self.argv(), self.first.port, self.tmp_path / f"{self.scheme}-2.log",
                                     env=self.env, cwd=self.first.workdir).start()
        self.after_restart()

    def after_restart(self) -> None:
        pass

    def kill(self) -> None:
        kill_tree(self.first.pid)

    def stop(self) -> None:
        if self.again is not None:
            self.again.stop()
        if self.first is not None:
            self.first.stop()


class SftpRemote(Remote):
    scheme = "sftp"

    def start(self):
        self.first = servers.start_sshd(self.tmp_path / "sshd")
        self.root = Path(self.first.root) / "dst"
        self.root.mkdir()
        self.url = f"sftp://{self.first.user}@127.0.0.1:{self.first.port}{self.root}/"
        self.parameters = {"ssh_private_key_file": self.first.client_key, "known_hosts": self.first.known_hosts,
                           "ssh_allow_agent": "false"}
        self.client_keys = {}

    def argv(self):
        return [servers.SSHD_BINARY, "-D", "-e", "-f", str(self.first.workdir / "sshd_config")]

    def read(self, name):
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def names(self):
        return sorted(os.listdir(self.root))

    def in_transfer(self, name):
        path = self.root / f".{name}"
        return path.exists() and path.stat().st_size > (1 << 20)


class FtpRemote(SftpRemote):
    scheme = "ftp"

    def start(self):
        self.first = servers.start_ftp(self.tmp_path / "ftp")
        self.root = Path(self.first.root) / "incoming"
        self.root.mkdir()
        self.url = f"ftp://127.0.0.1:{self.first.port}/incoming/"
        self.parameters = {}
        self.client_keys = {"login": f"{self.first.user}:{self.first.password}", "create_target_directory": False}

    def argv(self):
        return [sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(self.first.port), "-w",
                "-d", str(self.first.root), "-u", self.first.user, f"--password={self.first.password}"]


class S3Remote(Remote):
    scheme = "s3"
    bucket = "reliability"

    def start(self):
        import boto3

        self.first = servers.start_s3(self.tmp_path / "s3")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update({"AWS_ACCESS_KEY_ID": self.first.key, "AWS_SECRET_ACCESS_KEY": self.first.secret,
                         "AWS_DEFAULT_REGION": self.first.region, "AWS_CONFIG_FILE": os.devnull,
                         "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
        self.s3 = boto3.client("s3", **self.first.boto3_kwargs())
        self.s3.create_bucket(Bucket=self.bucket)
        self.url = f"s3://{self.bucket}/incoming/"
        self.parameters = {"key": self.first.key, "secret": self.first.secret,
                           "client_kwargs__endpoint_url": self.first.endpoint_url,
                           "client_kwargs__region_name": self.first.region,
                           "s3_multipart_threshold": "8M", "s3_multipart_chunksize": "5M", "max_concurrency": 1}
        self.client_keys = {}

    def argv(self):
        moto = Path(sys.executable).parent / "moto_server"
        return [str(moto if moto.exists() else shutil.which("moto_server")), "-H", "127.0.0.1", "-p",
                str(self.first.port)]

    def after_restart(self):
        self.s3.create_bucket(Bucket=self.bucket)  # moto keeps everything in memory

    def read(self, name):
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=f"incoming/{name}")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def names(self):
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="incoming/")
        return sorted(item["Key"].split("/", 1)[1] for item in listing.get("Contents", []))

    def in_transfer(self, name):
        return "partNumber=2" in self.first.log_text()


REMOTES = {"sftp": SftpRemote, "ftp": FtpRemote, "s3": S3Remote}


def start_pair(kind: str, remote: Remote, tmp_path: Path, **parameters):
    """A server and a client process (started) pushing ``<tmp_path>/src/*.dat`` to the remote.

    ``parameters`` are the server chain's connection parameters beside the remote's own.
    """
    src = tmp_path / "src"
    src.mkdir()
    publish_port, topic = free_port(), f"/reliability/{kind}"
    keys = {f"connection_parameters__{k}": v for k, v in {**remote.parameters, **parameters}.items()}
    server_ini = write_ini(tmp_path / "server.ini", {"trollmoves": {"drain_timeout": DRAIN},
                                                     "chain": server_chain(src, topic, free_port(), **keys)})
    client_ini = write_ini(tmp_path / "client.ini", {
        "trollmoves": {"drain_timeout": DRAIN, "state_directory": tmp_path / "state"},
        "chain": client_chain(f"127.0.0.1:{publish_port}", remote.url, topic, transfer_req_timeout=10,
                              **remote.client_keys)})
    server = server_process(server_ini, publish_port, tmp_path / "server.log")
    return src, server, client_process(client_ini, tmp_path / "client.log")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", sorted(REMOTES))
def test_remote_server_killed_mid_transfer_and_restarted(kind, tmp_path):
    remote = REMOTES[kind](tmp_path)
    try:
        remote.start()
    except servers.ServerUnavailable as exc:
        servers.require_or_skip(str(exc))
    src, server, client = start_pair(kind, remote, tmp_path, retries=MOVER_RETRIES, retry_delay=0.5,
                                     retry_backoff=2, connect_timeout=5, timeout=10)
    contents: dict[str, bytes] = {}
    stopped = {}
    try:
        ready(server, client)
        time.sleep(0.5)
        contents["big.dat"] = os.urandom(LARGE)
        write_atomically(src / "big.dat", contents["big.dat"])
        wait_for(lambda: remote.in_transfer("big.dat"), timeout=60, interval=0.01, what="the large file in transfer")
        for index in range(SMALL // 2):
            name = f"small{index:03d}.dat"
            contents[name] = os.urandom(100_000)
            write_atomically(src / name, contents[name])
        remote.kill()
        killed_at = time.monotonic()
        for index in range(SMALL // 2, SMALL):
            name = f"small{index:03d}.dat"
            contents[name] = os.urandom(100_000)
            write_atomically(src / name, contents[name])
            time.sleep(0.1)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - killed_at)))
        remote.restart()
        wait_for(lambda: [n for n in remote.names() if not n.startswith(".")] == sorted(contents), timeout=150,
                 interval=0.5, what=f"all files at the {kind} destination")
        wait_for(lambda: not [n for n in remote.names() if n.startswith(".")], timeout=10, interval=0.2,
                 what="no temporaries at the destination")
        delivered = {name: hashlib.sha256(remote.read(name) or b"").hexdigest() for name in contents}
        stopped["client"] = stop_within(client, DRAIN + 3)
        stopped["server"] = stop_within(server, DRAIN + 3)
    finally:
        client.stop()
        server.stop()
        remote.stop()
    for name, data in contents.items():
        assert delivered[name] == hashlib.sha256(data).hexdigest(), f"{name} differs from its source"
    for who, (code, took) in stopped.items():
        assert code == 0, f"the {who} did not stop cleanly on SIGTERM (exit {code} after {took:.1f} s)"
    server_log, client_log = server.log(), client.log()
    assert "giving up" not in client_log
    mover_retries = collections.Counter(n for _, n in log_events(tmp_path / "server.log",
                                                                 r"Retrying transfer of \S+/(\S+) to"))
    fetch_retries = collections.Counter(n for _, n in log_events(tmp_path / "client.log",
                                                                 r"could not get a working source for (\S+); retrying"))
    requests = collections.Counter(n for _, n in log_events(tmp_path / "server.log", r"push of \S+/(\S+) to .* failed"))
    print(f"{kind}: mover retries {dict(mover_retries)}, client retries {dict(fetch_retries)}, "
          f"failed pushes {dict(requests)}, stopped {stopped}")
    assert mover_retries, "the kill was not noticed: no transfer was retried"
    for name, count in fetch_retries.items():
        assert count < MAX_FETCH_ATTEMPTS, f"{name}: {count} client retries"
    for name, count in mover_retries.items():
        assert count <= MOVER_RETRIES * (requests[name] + 1), f"{name}: {count} mover retries"
    assert tracebacks(server_log + client_log) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["sftp", "ftp"])
def test_daemons_stop_within_the_drain_timeout_while_a_transfer_hangs(kind, tmp_path):
    """The remote freezes (SIGSTOP) mid-transfer: a SIGTERM still stops the server and the client in
    bounded time (the drain timeout, then the aborted push's socket timeout: HANG_LIMIT), without the
    movers' retries, and nothing is left under the final name."""
    remote = REMOTES[kind](tmp_path)
    try:
        remote.start()
    except servers.ServerUnavailable as exc:
        servers.require_or_skip(str(exc))
    src, server, client = start_pair(kind, remote, tmp_path, timeout=MOVER_TIMEOUT, connect_timeout=MOVER_TIMEOUT)
    frozen: list[int] = []
    try:
        ready(server, client)
        time.sleep(0.5)
        write_atomically(src / "big.dat", os.urandom(LARGE))
        wait_for(lambda: remote.in_transfer("big.dat"), timeout=60, interval=0.01, what="the large file in transfer")
        frozen = [remote.first.pid] + children_of(remote.first.pid)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)  # the remote stops answering, its connections stay open
        time.sleep(1.0)
        server_stop = stop_within(server, HANG_LIMIT)
        client_stop = stop_within(client, HANG_LIMIT)
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)  # so that it can be stopped
            except ProcessLookupError:
                pass
        client.stop()
        server.stop()
        remote.stop()
    print(f"{kind}: server stopped {server_stop}, client stopped {client_stop}")
    assert server_stop[0] is not None, f"the server hung: killed after {server_stop[1]:.1f} s"
    assert client_stop[0] is not None, f"the client hung: killed after {client_stop[1]:.1f} s"
    assert "big.dat" not in remote.names()
