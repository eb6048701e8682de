"""Opt-in accelerator: hand big files to the OpenSSH ``sftp`` binary.

paramiko encrypts and frames every packet in Python; OpenSSH's C client moves
large files several times faster. Above ``openssh_threshold`` bytes the upload
to the temporary name runs ``sftp -b -`` in batch mode (no prompts, key or
agent authentication only, strict host-key checking against the same known
hosts), while this thread computes the checksum from a separate read of the
source (the only case where the checksum does not come from the sent buffer).
Directory creation, verification and the rename stay on the paramiko session.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from trollmoves.errors import PermanentTransferError, TransferError, TransientTransferError
from trollmoves.movers.destination import Destination
from trollmoves.movers.options import TransferOptions
from trollmoves.movers.source import Source

logger = logging.getLogger(__name__)

_PERMANENT_MARKERS = ("permission denied", "host key verification failed", "no such file",
                      "no space left", "quota", "failure")


class OpenSshUploader:
    """One ``sftp -b -`` run putting one file."""

    def __init__(self, endpoint: Destination, options: TransferOptions):
        self.endpoint = endpoint
        self.options = options

    @staticmethod
    def usable(options: TransferOptions, endpoint: Destination) -> bool:
        """Only without passwords (BatchMode cannot type one) and when ``sftp`` is installed."""
        return not (endpoint.password or options.password) and shutil.which("sftp") is not None

    def command(self) -> list[str]:
        options = self.options
        timeout = max(1, int(options.timeout))
        argv = [shutil.which("sftp") or "sftp", "-q", "-b", "-", "-F", "/dev/null",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={max(1, int(options.connect_timeout))}",
                "-o", f"ServerAliveInterval={max(1, timeout // 3)}", "-o", "ServerAliveCountMax=3",
                "-o", f"Port={self.endpoint.port or 22}"]
        if options.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={options.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        for key in options.ssh_key_files:
            argv += ["-i", key]
        if options.ssh_key_files:
            argv += ["-o", "IdentitiesOnly=yes"]
        if not options.ssh_allow_agent:
            argv += ["-o", "IdentityAgent=none"]
        user = self.endpoint.user or options.username
        if user:
            argv += ["-o", f"User={user}"]
        return argv + [self.endpoint.host]

    def upload(self, source: Source, remote: str) -> int:
        where = self.endpoint.safe_url(remote)
        batch = f"put {_quote(source.path)} {_quote(remote)}\n"
        logger.debug("Handing %s (%d bytes) to OpenSSH sftp for %s", source.path, source.size, where)
        try:
            process = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, start_new_session=True)
        except OSError as err:
            raise PermanentTransferError(f"cannot run OpenSSH sftp: {err}", where, err) from err
        try:
            process.stdin.write(batch.encode("utf-8", "surrogateescape"))
            process.stdin.close()
            source.hash_all()
            stderr = process.stderr.read().decode("utf-8", "replace")
            code = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stderr.close()
        if code != 0:
            raise _error(code, stderr, where)
        return source.bytes_read


def _quote(path: str) -> str:
    """sftp batch quoting: double quotes, with backslash and quote escaped."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _error(code: int, stderr: str, where: str) -> TransferError:
    text = " ".join(stderr.split())[-300:]
    lowered = text.lower()
    kind = PermanentTransferError if any(marker in lowered for marker in _PERMANENT_MARKERS) \
        else TransientTransferError
    if code == 255 and "permission denied" not in lowered and "host key" not in lowered:
        kind = TransientTransferError
    return kind(f"OpenSSH sftp exited with {code}: {text}", where)
