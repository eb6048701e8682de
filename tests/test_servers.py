"""The real-server harness works: one real round trip per server, and stop() leaves no process.

These guard the fixtures every mover and daemon test builds on: if one of these fails, fix the
harness before reading any other failure.
"""

from __future__ import annotations

import ftplib
import io
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests import servers

PAYLOAD = os.urandom(300_000) + b"\x00\r\n\xff end"
"""Binary, larger than one SFTP/FTP chunk, with bytes a text-mode transfer would mangle."""


def test_sshd_sftp_round_trip_with_paramiko(sshd_server, tmp_path):
    paramiko = pytest.importorskip("paramiko")
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd_server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(sshd_server.host, port=sshd_server.port, username=sshd_server.user,
                   key_filename=str(sshd_server.client_key), look_for_keys=False,
                   allow_agent=False, timeout=10)
    try:
        remote = f"{sshd_server.root}/paramiko-{uuid.uuid4().hex}.bin"
        local = tmp_path / "payload.bin"
        local.write_bytes(PAYLOAD)
        with client.open_sftp() as sftp:
            sftp.put(str(local), remote)
            with sftp.open(remote, "rb") as handle:
                assert handle.read() == PAYLOAD
    finally:
        client.close()
    assert (sshd_server.root / os.path.basename(remote)).read_bytes() == PAYLOAD


def test_sshd_rejects_unknown_host_key(sshd_server, tmp_path):
    """The known_hosts file is what makes the connection trusted (RejectPolicy otherwise)."""
    paramiko = pytest.importorskip("paramiko")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(sshd_server.host, port=sshd_server.port, username=sshd_server.user,
                       key_filename=str(sshd_server.client_key), look_for_keys=False,
                       allow_agent=False, timeout=10)
    client.close()


def test_sshd_openssh_clients(sshd_server, tmp_path):
    ssh = subprocess.run(["ssh", *sshd_server.openssh_options(), sshd_server.host, "true"],
                         check=False, capture_output=True, text=True, timeout=30)
    assert ssh.returncode == 0, ssh.stderr

    local = tmp_path / "openssh.bin"
    local.write_bytes(PAYLOAD)
    remote = sshd_server.root / f"openssh-{uuid.uuid4().hex}.bin"
    batch = tmp_path / "batch"
    batch.write_text(f'put "{local}" "{remote}"\n')
    sftp = subprocess.run(["sftp", *sshd_server.openssh_options(), "-b", str(batch),
                           sshd_server.host], check=False, capture_output=True, text=True, timeout=30)
    assert sftp.returncode == 0, sftp.stderr
    assert remote.read_bytes() == PAYLOAD


def test_ftp_round_trip(ftp_server):
    name = f"ftp-{uuid.uuid4().hex}.bin"
    received = bytearray()
    with ftplib.FTP() as ftp:
        ftp.connect(ftp_server.host, ftp_server.port, timeout=10)
        ftp.login(ftp_server.user, ftp_server.password)
        ftp.set_pasv(True)
        ftp.storbinary(f"STOR {name}", io.BytesIO(PAYLOAD))
        ftp.retrbinary(f"RETR {name}", received.extend)
    assert bytes(received) == PAYLOAD
    assert (ftp_server.root / name).read_bytes() == PAYLOAD


def test_s3_round_trip(s3_server):
    boto3 = pytest.importorskip("boto3")
    client = boto3.client("s3", **s3_server.boto3_kwargs())
    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="dir/object.bin", Body=PAYLOAD)
    body = client.get_object(Bucket=bucket, Key="dir/object.bin")["Body"].read()
    assert body == PAYLOAD


def test_nameserver_round_trip(nameserver):
    """A publisher registered on the nameserver is found by name and its messages arrive."""
    assert os.environ["POSTTROLL_NAMESERVER_PORT"] == str(nameserver.nameserver_port)
    from posttroll.message import Message
    from posttroll.ns import get_pub_address
    from posttroll.publisher import create_publisher_from_dict_config
    from posttroll.subscriber import Subscriber

    name = f"harness-{uuid.uuid4().hex[:8]}"
    publisher = create_publisher_from_dict_config(
        {"name": name, "port": 0, "nameservers": [nameserver.host]})
    publisher.start()
    subscriber = None
    try:
        addresses = _wait_for_address(get_pub_address, name, nameserver.host, timeout=10)
        assert addresses, f"{name} never registered; nameserver log:\n{nameserver.log_text()}"
        assert name in addresses[0]["service"]
        uri = addresses[0]["URI"]

        subscriber = Subscriber([uri], topics="/harness")
        sent = Message("/harness/test", "info", {"uid": "file.bin", "size": 3})
        received = None
        deadline = time.monotonic() + 10
        # A SUB socket drops what was published before it connected: publish until one arrives.
        while received is None and time.monotonic() < deadline:
            publisher.send(sent.encode())
            for msg in subscriber.recv(timeout=0.2):
                if msg is not None and msg.subject == sent.subject:
                    received = msg
                break
        assert received is not None, f"nothing received from {uri} within 10 s"
        assert received.type == "info"
        assert received.data == {"uid": "file.bin", "size": 3}
    finally:
        if subscriber is not None:
            subscriber.close()
        publisher.stop()


def _wait_for_address(get_pub_address, name, host, timeout):
    """Poll the nameserver: a fresh publisher registers within one broadcast interval (2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        addresses = get_pub_address(name, timeout=timeout, nameserver=host)
        if addresses:
            return addresses
        time.sleep(0.1)
    return []


@pytest.mark.parametrize("starter", [
    pytest.param(servers.start_sshd, marks=pytest.mark.sshd, id="sshd"),
    pytest.param(servers.start_ftp, marks=pytest.mark.ftp, id="ftp"),
    pytest.param(servers.start_s3, marks=pytest.mark.s3, id="s3"),
    pytest.param(lambda base: servers.start_nameserver(base, servers.PosttrollPorts.pick()),
                 marks=pytest.mark.nameserver, id="nameserver"),
])
def test_stop_leaves_no_process(starter, tmp_path):
    """A separate instance (the session one stays up) is gone, reaped, after stop()."""
    try:
        server = starter(tmp_path)
    except servers.ServerUnavailable as err:
        servers.require_or_skip(str(err))
    assert server.running
    assert servers.pid_exists(server.pid)
    server.stop()
    assert not server.running
    assert not servers.pid_exists(server.pid)
    server.stop()  # idempotent
    assert server.log.exists()  # a caller-supplied dir is kept for post-mortem


def test_private_workdir_is_removed_on_stop():
    with servers.start_ftp() as ftp:
        assert ftp.root.is_dir()
    assert not ftp.workdir.exists()
    assert not servers.pid_exists(ftp.pid)


def test_posttroll_port_env_is_stable_and_exported():
    first = servers.posttroll_port_env()
    assert first == servers.posttroll_port_env()
    assert set(first) == set(servers.POSTTROLL_PORT_VARIABLES)
    for name, value in first.items():
        assert os.environ[name] == value


# --------------------------------------------------------------------------------------------
# TROLLMOVES_REQUIRE_SERVERS=1: a missing server fails the run instead of skipping it

_MISSING_SSHD_TEST = '''
from tests import servers

servers.SSHD_BINARY = "/nonexistent/sshd"  # what a machine without OpenSSH's server looks like


def test_needs_sshd(sshd_server):
    pass
'''


def _run_with_missing_sshd(tmp_path, require: str | None) -> subprocess.CompletedProcess:
    """pytest in a subprocess, with this suite's fixtures (tests/conftest.py as a plugin), on a test
    that needs the ``sshd_server`` fixture while sshd "is not installed"."""
    (tmp_path / "test_missing.py").write_text(_MISSING_SSHD_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {key: value for key, value in os.environ.items() if key != servers.REQUIRE_SERVERS_VARIABLE}
    if require is not None:
        env[servers.REQUIRE_SERVERS_VARIABLE] = require
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_missing.py")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_missing_server_is_a_skip_by_default(tmp_path):
    result = _run_with_missing_sshd(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "/nonexistent/sshd not found: apt-get install openssh-server" in result.stdout


def test_a_missing_server_fails_under_trollmoves_require_servers(tmp_path):
    result = _run_with_missing_sshd(tmp_path, "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout and "skipped" not in result.stdout
    assert ("TROLLMOVES_REQUIRE_SERVERS=1 but /nonexistent/sshd not found: apt-get install openssh-server"
            in result.stdout)
