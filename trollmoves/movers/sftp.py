"""SFTP over paramiko, with pipelined large write requests.

paramiko's ``SFTPFile.put`` waits for each 32 KiB write to be acknowledged, and
its pipelined mode forgets write errors (they are read with no file attached).
Here writes of ``REQUEST_SIZE`` bytes are sent back to back with up to
``MAX_OUTSTANDING`` unacknowledged, and every acknowledgement is read and
checked, so a full disk on the server is an error, not a short file.

Files of at least ``openssh_threshold`` bytes (opt-in) are handed to the
OpenSSH ``sftp`` binary (see ``openssh``); the session is still used for the
directory, verify and rename steps.
"""

from __future__ import annotations

from collections import deque

from trollmoves.movers.source import Source
from trollmoves.movers.ssh import SshConnection, SshMover

REQUEST_SIZE = 255 * 1024
"""Below OpenSSH's 256 KiB message limit: 8x fewer requests than paramiko's default 32 KiB."""
MAX_OUTSTANDING = 64


class SftpConnection(SshConnection):
    """An SSH session uploading over SFTP."""

    def _upload(self, source: Source, remote: str) -> int:
        from paramiko.sftp import CMD_WRITE, int64

        sftp = self.sftp
        progress = self.progress
        handle_file = sftp.open(remote, "wb")
        try:
            handle = handle_file.handle
            pending: deque[int] = deque()
            offset = 0
            for chunk in source.chunks():
                for start in range(0, len(chunk), REQUEST_SIZE):
                    piece = chunk[start:start + REQUEST_SIZE]
                    pending.append(sftp._async_request(type(None), CMD_WRITE, handle, int64(offset), piece))
                    offset += len(piece)
                    progress()
                    while len(pending) > MAX_OUTSTANDING:
                        sftp._read_response(pending.popleft())
            while pending:
                sftp._read_response(pending.popleft())
                progress()
        except BaseException as exc:
            self.failed(exc)  # a stalled session is closed now: the close below then returns at once
            raise
        finally:
            handle_file.close()
        return offset


class SftpMover(SshMover):
    """``sftp://[user[:password]@]host[:port]/path``: SSH keys, agent or password."""

    schemes = ("sftp",)
    connection_class = SftpConnection
