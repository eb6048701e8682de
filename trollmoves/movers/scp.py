"""SCP: the classic ``scp -t`` sink protocol over a paramiko channel.

The protocol is spoken here (a dozen lines) instead of through the ``scp``
package so that the bytes sent come from the same buffer as the checksum,
with one read of the source. The sink needs the size before the data: a
source that changes size while it is sent is an error, never a corrupt
stream. Rename, directories and size checks use SFTP on the same session, as
trollmoves 0.19 did. Files above ``openssh_threshold`` go to the OpenSSH
binary like for SFTP.
"""

from __future__ import annotations

import posixpath
import shlex

from trollmoves.errors import PermanentTransferError, TransientTransferError
from trollmoves.movers.source import Source
from trollmoves.movers.ssh import SshConnection, SshMover

SEND_PIECE = 256 * 1024
"""Bytes per ``sendall``: the stall watchdog sees progress at least this often."""


class ScpConnection(SshConnection):
    """An SSH session uploading with ``scp -t``."""

    def _upload(self, source: Source, remote: str) -> int:
        where = self.endpoint.safe_url(remote)
        name = posixpath.basename(remote)
        if "\n" in name:
            raise PermanentTransferError("scp cannot send a file name containing a newline", where)
        progress = self.progress
        channel = self.transport.open_session(timeout=self.options.connect_timeout)
        try:
            channel.settimeout(self.options.timeout)
            channel.exec_command(f"scp -t {shlex.quote(remote)}")
            _ack(channel, where)
            size = source.size
            channel.sendall(f"C{source.mode & 0o777:04o} {size} {name}\n".encode("utf-8", "surrogateescape"))
            _ack(channel, where)
            sent = 0
            for chunk in source.chunks():
                if sent + len(chunk) > size:
                    raise TransientTransferError(f"source {source.path} grew while being sent", where)
                for start in range(0, len(chunk), SEND_PIECE):
                    channel.sendall(chunk[start:start + SEND_PIECE])
                    progress()
                sent += len(chunk)
            if sent != size:
                raise TransientTransferError(f"source {source.path} shrank while being sent", where)
            channel.sendall(b"\0")
            _ack(channel, where)
            channel.shutdown_write()
        except BaseException as exc:
            self.failed(exc)  # a stalled session is closed now: closing the channel then returns at once
            raise
        finally:
            channel.close()
        return sent


def _ack(channel, where: str) -> None:
    """Read the sink's one-byte answer: 0 OK, 1 warning, 2 fatal (followed by a message line)."""
    code = channel.recv(1)
    if code == b"\0":
        return
    if not code:
        raise TransientTransferError("scp: the server closed the channel", where)
    message = b""
    while not message.endswith(b"\n"):
        more = channel.recv(512)
        if not more:
            break
        message += more
    text = message.decode("utf-8", "replace").strip() or repr(code)
    raise PermanentTransferError(f"scp: {text}", where)


class ScpMover(SshMover):
    """``scp://[user@]host[:port]/path``; ``backup_targets`` and 0.19's ssh options."""

    schemes = ("scp",)
    connection_class = ScpConnection
