"""Secrets never appear: not in logs at any level, not in published messages, not in metrics.

Planted: an FTP password in a client's ``login`` (and a wrong one in another chain's,
so that a login fails), the passphrase and the body of an encrypted SFTP key, and an
S3 access key and secret in a server chain's ``connection_parameters``. Files flow
through all of them, then everything the run produced is searched: every log line
(the daemons run with ``-v``; in-process, caplog takes every logger at DEBUG,
paramiko, botocore and urllib3 included), every message on the server's and clients'
publishers, the /metrics and /healthz pages, and the client's state store.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests import servers
from tests.daemons.helpers import Collector, running, wait_for
from tests.reliability.helpers import (
    client_chain,
    client_process,
    in_process_client,
    in_process_server,
    ready,
    server_chain,
    server_process,
    stop_within,
    write_ini,
)
from tests.servers import free_port

BUCKET = "secrets"
THIRD_PARTY_LOGGERS = ("paramiko", "botocore", "boto3", "s3transfer", "urllib3", "posttroll", "watchdog",
                       "pyinotify", "pyftpdlib", "trollmoves")


@pytest.fixture
def remotes(tmp_path):
    """Own FTP, sshd and moto servers (stopped by PID), and the planted secrets."""
    started = []
    try:
        ftp = servers.start_ftp(tmp_path / "ftp")
        started.append(ftp)
        sshd = servers.start_sshd(tmp_path / "sshd")
        started.append(sshd)
        s3 = servers.start_s3(tmp_path / "s3")
        started.append(s3)
    except servers.ServerUnavailable as exc:
        for server in started:
            server.stop()
        servers.require_or_skip(str(exc))
    passphrase = "Passphrase-" + secrets.token_hex(8)
    key = tmp_path / "encrypted_key"
    shutil.copy(sshd.client_key, key)
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-f", str(key), "-N", passphrase], check=True, capture_output=True)
    body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    import boto3

    access_key, secret_key = "AKIA" + secrets.token_hex(8).upper(), "S3secret-" + secrets.token_hex(12)
    boto3.client("s3", **s3.boto3_kwargs()).create_bucket(Bucket=BUCKET)
    (Path(ftp.root) / "incoming").mkdir()
    (Path(sshd.root) / "sftp").mkdir()
    wrong = "Wrong-" + secrets.token_hex(8)
    planted = {"ftp password": ftp.password, "wrong ftp password": wrong, "ssh key passphrase": passphrase,
               "s3 access key": access_key, "s3 secret": secret_key}
    planted.update({f"ssh key line {i}": line for i, line in enumerate(body)})
    try:
        yield {"ftp": ftp, "sshd": sshd, "s3": s3, "key": key, "passphrase": passphrase, "access_key": access_key,
               "secret_key": secret_key, "wrong": wrong, "planted": planted}
    finally:
        for server in reversed(started):
            server.stop()


def configs(tmp_path: Path, r: dict, publish_port: int, client_ports: dict, metrics: tuple[int, int] | None):
    ftp, sshd, s3 = r["ftp"], r["sshd"], r["s3"]
    for name in ("ftp", "sftp", "s3"):
        (tmp_path / f"src-{name}").mkdir()

    def parameters(**keys):
        return {f"connection_parameters__{key}": value for key, value in keys.items()}

    server_ini = write_ini(tmp_path / "server.ini", {
        "trollmoves": {"drain_timeout": 5, "metrics_port": metrics[0] if metrics else None},
        "ftp": server_chain(tmp_path / "src-ftp", "/secrets/ftp", free_port(), **parameters(retries=0)),
        "sftp": server_chain(tmp_path / "src-sftp", "/secrets/sftp", free_port(), **parameters(
            ssh_private_key_file=r["key"], password=r["passphrase"], known_hosts=sshd.known_hosts,
            ssh_allow_agent="false")),
        "s3": server_chain(tmp_path / "src-s3", "/secrets/s3", free_port(), **parameters(
            key=r["access_key"], secret=r["secret_key"], client_kwargs__endpoint_url=s3.endpoint_url,
            client_kwargs__region_name=s3.region)),
    })
    provider = f"127.0.0.1:{publish_port}"

    def chain(name, topic, destination, **keys):
        return client_chain(provider, destination, topic, publish_port=client_ports[name], transfer_req_timeout=5,
                            **keys)

    client_ini = write_ini(tmp_path / "client.ini", {
        "trollmoves": {"state_directory": tmp_path / "state", "drain_timeout": 5,
                       "metrics_port": metrics[1] if metrics else None},
        "ftp": chain("ftp", "/secrets/ftp", f"ftp://127.0.0.1:{ftp.port}/incoming/",
                     login=f"{ftp.user}:{ftp.password}", create_target_directory=False),
        "ftpbad": chain("ftpbad", "/secrets/ftp", f"ftp://127.0.0.1:{ftp.port}/elsewhere/",
                        login=f"{ftp.user}:{r['wrong']}", create_target_directory=False),
        "sftp": chain("sftp", "/secrets/sftp", f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{sshd.root}/sftp/"),
        "s3": chain("s3", "/secrets/s3", f"s3://{BUCKET}/incoming/"),
    })
    return server_ini, client_ini


def drop_files(tmp_path: Path) -> None:
    for name in ("ftp", "sftp", "s3"):
        (tmp_path / f"src-{name}" / f"{name}-one.dat").write_bytes(os.urandom(5000))


def delivered(r: dict) -> bool:
    import boto3

    s3 = boto3.client("s3", **r["s3"].boto3_kwargs())  # not the planted credentials: moto takes any
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="incoming/").get("Contents", [])
    return ((Path(r["ftp"].root) / "incoming" / "ftp-one.dat").exists()
            and (Path(r["sshd"].root) / "sftp" / "sftp-one.dat").exists()
            and [o["Key"] for o in listing] == ["incoming/s3-one.dat"])


def leaks(planted: dict, texts: dict[str, str]) -> list[str]:
    return [f"{what} in {where}" for where, text in texts.items() for what, secret in planted.items()
            if secret in text]


def scrape(port: int) -> str:
    pages = []
    for page in ("metrics", "healthz"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=5) as response:
                pages.append(response.read().decode())
        except urllib.error.HTTPError as exc:  # /healthz answers 503 when a chain is unhealthy
            pages.append(exc.read().decode())
    return "\n".join(pages)


def metrics_available() -> bool:
    try:
        from trollmoves.metrics import MetricsHTTPServer  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.timeout(180)
def test_no_secret_in_the_output_of_the_daemons(tmp_path, remotes):
    r = remotes
    publish_port = free_port()
    client_ports = {name: free_port() for name in ("ftp", "ftpbad", "sftp", "s3")}
    metrics = (free_port(), free_port()) if metrics_available() else None
    server_ini, client_ini = configs(tmp_path, r, publish_port, client_ports, metrics)
    server = server_process(server_ini, publish_port, tmp_path / "server.log")
    client = client_process(client_ini, tmp_path / "client.log")
    pages = {}
    try:
        ready(server, client, tuple(client_ports), ("ftp", "sftp", "s3"))
        with Collector([f"tcp://127.0.0.1:{publish_port}"] + [f"tcp://127.0.0.1:{p}" for p in client_ports.values()],
                       "/") as seen:
            drop_files(tmp_path)
            wait_for(lambda: delivered(r), timeout=60, interval=0.3, what="the files at FTP, SFTP and S3")
            wait_for(lambda: len(seen.finals()) >= 3, timeout=20, what="three final messages")
            wait_for(lambda: "could not push" in client.log(), timeout=30, what="the failing FTP login reported")
        if metrics:
            pages = {"server /metrics and /healthz": scrape(metrics[0]),
                     "client /metrics and /healthz": scrape(metrics[1])}
        stopped = {"server": stop_within(server, 8), "client": stop_within(client, 8)}
    finally:
        client.stop()
        server.stop()
    assert all(code == 0 for code, _ in stopped.values()), stopped
    texts = {"server log": server.log(), "client log": client.log(),
             "published messages": "\n".join(m.encode() for _, m in seen.messages), **pages}
    for path in sorted((tmp_path / "state").iterdir()):
        texts[f"state file {path.name}"] = path.read_bytes().decode("latin-1")
    assert "530" in texts["client log"] or "login" in texts["client log"].lower()
    assert texts["published messages"] and "ftp-one.dat" in texts["published messages"]
    if metrics:
        assert "trollmoves_transfers_failed_total" in texts["client /metrics and /healthz"]
    # botocore's DEBUG dump of a request shows its SigV4 Authorization header, which names the access key
    # id (an identifier; the secret never leaves the process): allowed there and nowhere else.
    texts = {where: text.replace(f"Credential={r['access_key']}/", "Credential=<id>/") for where, text in texts.items()}
    assert leaks(r["planted"], texts) == []


@pytest.mark.timeout(180)
def test_no_secret_in_the_output_of_in_process_services(tmp_path, remotes, caplog):
    from prometheus_client import generate_latest

    caplog.set_level(logging.DEBUG)
    for name in THIRD_PARTY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    r = remotes
    publish_port = free_port()
    client_ports = {name: free_port() for name in ("ftp", "ftpbad", "sftp", "s3")}
    server_ini, client_ini = configs(tmp_path, r, publish_port, client_ports, None)
    server = in_process_server(server_ini, publish_port)
    with running(server):
        client = in_process_client(client_ini, str(tmp_path / "state" / "client.db"))
        with running(client), Collector([f"tcp://127.0.0.1:{publish_port}"] +
                                        [f"tcp://127.0.0.1:{p}" for p in client_ports.values()], "/") as seen:
            drop_files(tmp_path)
            wait_for(lambda: delivered(r), timeout=60, interval=0.3, what="the files at FTP, SFTP and S3")
            wait_for(lambda: len(seen.finals()) >= 3, timeout=20, what="three final messages")
            wait_for(lambda: any("could not push" in rec.getMessage() for rec in caplog.records), timeout=30,
                     what="the failing FTP login reported")
            metrics = {"server metrics": generate_latest(server.metrics.registry).decode(),
                       "client metrics": generate_latest(client.metrics.registry).decode(),
                       "server health": repr(server.health()), "client health": repr(client.health())}
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(record.args))
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    assert len(lines) > 100
    texts = {"log records (DEBUG, every logger)": "\n".join(lines), **metrics,
             "published messages": "\n".join(m.encode() for _, m in seen.messages)}
    # botocore's DEBUG dump of a request shows its SigV4 Authorization header, which names the access key
    # id (an identifier; the secret never leaves the process): allowed there and nowhere else.
    texts = {where: text.replace(f"Credential={r['access_key']}/", "Credential=<id>/") for where, text in texts.items()}
    assert leaks(r["planted"], texts) == []
