"""The ``Target`` of each protocol: URLs on the real test servers and how to read them back."""

from __future__ import annotations

import os
from pathlib import Path

from tests import servers
from tests.movers.conformance import FAST_RETRIES, PLANTED, Target


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _names(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else []


class LocalTarget(Target):
    scheme = "file"
    has_hosts = False

    def __init__(self, prefix: str, base: Path):
        super().__init__(prefix)
        self.base = base / prefix

    def url(self, rel: str) -> str:
        return f"file://{self.base}/{rel}"

    def read(self, rel: str) -> bytes | None:
        return _read(self.base / rel)

    def names(self, rel_dir: str) -> list[str]:
        return _names(self.base / rel_dir)


class SshTarget(Target):
    """Both ``scp://`` and ``sftp://`` against the session's OpenSSH sshd."""

    def __init__(self, prefix: str, sshd: servers.SshdServer, scheme: str):
        super().__init__(prefix)
        self.sshd = sshd
        self.scheme = scheme
        self.base = Path(sshd.root) / prefix

    def attrs(self) -> dict:
        return {**FAST_RETRIES, "ssh_key_filename": str(self.sshd.client_key),
                "known_hosts": str(self.sshd.known_hosts), "ssh_allow_agent": "false"}

    def _url(self, rel: str, userinfo: str, hostport: str) -> str:
        return f"{self.scheme}://{userinfo}@{hostport}{self.base}/{rel}"

    def url(self, rel: str) -> str:
        return self._url(rel, self.sshd.user, f"{self.sshd.host}:{self.sshd.port}")

    def read(self, rel: str) -> bytes | None:
        return _read(self.base / rel)

    def names(self, rel_dir: str) -> list[str]:
        return _names(self.base / rel_dir)

    def bad_login(self, rel: str) -> tuple[str, dict]:
        return self._url(rel, "nosuchuser", f"{self.sshd.host}:{self.sshd.port}"), self.attrs()

    def down(self, rel: str, port: int | None = None) -> tuple[str, dict]:
        return self._url(rel, self.sshd.user, f"127.0.0.1:{port or servers.free_port()}"), self.attrs()

    def backup(self, rel: str) -> tuple[str, dict, list[str], str]:
        return (self._url(rel, self.sshd.user, f"127.0.0.1:{servers.free_port()}"), self.attrs(),
                [f"{self.sshd.host}:{self.sshd.port}"], f":{self.sshd.port}/")

    def planted(self, rel: str, works: bool) -> tuple[str, dict]:
        user = self.sshd.user if works else "nosuchuser"
        return self._url(rel, f"{user}:{PLANTED}", f"{self.sshd.host}:{self.sshd.port}"), self.attrs()


class FtpTarget(Target):
    scheme = "ftp"

    def __init__(self, prefix: str, ftp: servers.FtpServer):
        super().__init__(prefix)
        self.ftp = ftp
        self.base = Path(ftp.root) / prefix

    def _url(self, rel: str, password: str, port: int | None = None) -> str:
        return f"ftp://{self.ftp.user}:{password}@{self.ftp.host}:{port or self.ftp.port}/{self.prefix}/{rel}"

    def url(self, rel: str) -> str:
        return self._url(rel, self.ftp.password)

    def read(self, rel: str) -> bytes | None:
        return _read(self.base / rel)

    def names(self, rel_dir: str) -> list[str]:
        return _names(self.base / rel_dir)

    def bad_login(self, rel: str) -> tuple[str, dict]:
        return self._url(rel, "wrong-password"), self.attrs()

    def down(self, rel: str, port: int | None = None) -> tuple[str, dict]:
        return self._url(rel, self.ftp.password, port or servers.free_port()), self.attrs()

    def backup(self, rel: str) -> tuple[str, dict, list[str], str]:
        return (self._url(rel, self.ftp.password, servers.free_port()), self.attrs(),
                [f"{self.ftp.host}:{self.ftp.port}"], f":{self.ftp.port}/")

    def planted(self, rel: str, works: bool) -> tuple[str, dict]:
        if works:
            return self.url(rel), {**self.attrs(), "password": PLANTED}
        return self._url(rel, PLANTED), self.attrs()


class S3Target(Target):
    scheme = "s3"

    def __init__(self, prefix: str, s3: servers.S3Server, client, bucket: str):
        super().__init__(prefix)
        self.s3 = s3
        self.client = client
        self.bucket = bucket

    def attrs(self, secret: str | None = None, endpoint: str | None = None) -> dict:
        return {**FAST_RETRIES, "endpoint_url": endpoint or self.s3.endpoint_url, "key": self.s3.key,
                "secret": secret or self.s3.secret, "client_kwargs": {"region_name": self.s3.region}}

    def url(self, rel: str, bucket: str | None = None) -> str:
        return f"s3://{bucket or self.bucket}/{self.prefix}/{rel}"

    def read(self, rel: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{rel}")["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def names(self, rel_dir: str) -> list[str]:
        prefix = f"{self.prefix}/{rel_dir}/"
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"][len(prefix):] for item in listing.get("Contents", []))

    def bad_login(self, rel: str) -> tuple[str, dict]:
        # moto accepts any credentials; a missing bucket is the permanent failure it can show.
        return self.url(rel, bucket="no-such-bucket-here"), self.attrs()

    def down(self, rel: str, port: int | None = None) -> tuple[str, dict]:
        return self.url(rel), self.attrs(endpoint=f"http://127.0.0.1:{port or servers.free_port()}")

    def backup(self, rel: str) -> tuple[str, dict, list[str], str]:
        return self.url(rel, bucket="no-such-bucket-here"), self.attrs(), [self.bucket], f"s3://{self.bucket}/"

    def planted(self, rel: str, works: bool) -> tuple[str, dict]:
        return self.url(rel, bucket=None if works else "no-such-bucket-here"), self.attrs(secret=PLANTED)
