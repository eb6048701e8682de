"""FTP with ftplib: binary STOR streamed from the checksum buffer, RNFR/RNTO into place.

Credentials come from the URL, then ``username``/``password`` in the
connection parameters, then ``~/.netrc`` (or ``netrc_file``) for the host,
else anonymous, as in trollmoves 0.19. Reply codes decide the error kind: 5xx
(and 452, insufficient storage) are permanent, other 4xx and broken
connections transient. The control and data sockets carry the stall
``timeout``.
"""

from __future__ import annotations

import ftplib
import logging
import netrc

from trollmoves.errors import PermanentTransferError, TransferError, TransientTransferError
from trollmoves.movers.base import REMOTE_SIZE, RENAME, Connection, DriverCache
from trollmoves.movers.destination import Destination
from trollmoves.movers.options import TransferOptions
from trollmoves.movers.per_file import PerFileMover
from trollmoves.movers.retry import classify, describe
from trollmoves.movers.source import Source

logger = logging.getLogger(__name__)

_PERMANENT_TEMP_CODES = ("452",)


def translate_ftp_error(exc: BaseException, where: str, what: str) -> TransferError:
    """ftplib's exceptions as Transient/PermanentTransferError."""
    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, ftplib.error_perm):
        return PermanentTransferError(f"{what}: {describe(exc)}", where, exc)
    if isinstance(exc, ftplib.error_temp):
        kind = PermanentTransferError if str(exc)[:3] in _PERMANENT_TEMP_CODES else TransientTransferError
        return kind(f"{what}: {describe(exc)}", where, exc)
    if isinstance(exc, (ftplib.error_reply, ftplib.error_proto)):
        return TransientTransferError(f"{what}: {describe(exc)}", where, exc)
    return classify(exc, where, what)


def credentials(endpoint: Destination, options: TransferOptions) -> tuple[str, str]:
    """(user, password): URL, connection parameters, netrc, anonymous."""
    user = endpoint.user or options.username
    password = endpoint.password or options.password
    if user and password:
        return user, password
    try:
        entry = netrc.netrc(options.netrc_file).authenticators(endpoint.host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError) as err:
        logger.debug("No usable netrc file for %s: %s", endpoint.host, type(err).__name__)
        entry = None
    if entry and (not user or entry[0] == user):
        return entry[0], entry[2] or ""
    return user or "anonymous", password or ""


class FtpConnection(Connection):
    """A logged-in FTP control connection in binary mode."""

    capabilities = frozenset({RENAME, REMOTE_SIZE})

    def __init__(self, endpoint: Destination, options: TransferOptions, ftp: ftplib.FTP):
        super().__init__(endpoint, options)
        self.ftp = ftp

    def translate(self, exc: BaseException, what: str, path: str | None = None) -> TransferError:
        return translate_ftp_error(exc, self.endpoint.safe_url(path), what)

    def upload(self, source: Source, remote: str) -> int:
        return self.call("upload failed", remote, self._upload, source, remote)

    def _upload(self, source: Source, remote: str) -> int:
        sent = 0
        with self.ftp.transfercmd(f"STOR {remote}") as data:
            data.settimeout(self.options.timeout)
            for chunk in source.chunks():
                data.sendall(chunk)
                sent += len(chunk)
        self.ftp.voidresp()
        return sent

    def rename(self, old: str, new: str) -> None:
        try:
            self.call("rename failed", new, self.ftp.rename, old, new)
        except PermanentTransferError:
            # Some servers refuse to rename onto an existing file: remove it, then rename.
            if self.size(new) is None:
                raise
            self.remove(new)
            self.call("rename failed", new, self.ftp.rename, old, new)

    def remove(self, path: str) -> None:
        self.call("remove failed", path, self.ftp.delete, path)

    def size(self, path: str) -> int | None:
        try:
            return self.call("size failed", path, self.ftp.size, path)
        except PermanentTransferError:
            return None

    def _mkdirs(self, path: str) -> None:
        self.call("cannot create directory", path, self.walk_mkdirs, path, self._exists, self.ftp.mkd)

    def _exists(self, path: str) -> bool:
        try:
            self.ftp.cwd(path)
        except ftplib.error_perm:
            return False
        self.ftp.cwd("/")
        return True

    def alive(self) -> bool:
        return self.ftp.sock is not None

    def close(self) -> None:
        try:
            self.ftp.quit()
        except Exception:  # noqa: BLE001 - closing is best effort
            self.ftp.close()


class FtpMover(PerFileMover):
    """``ftp://[user[:password]@]host[:port]/path``."""

    schemes = ("ftp",)
    default_port = 21

    @classmethod
    def connect(cls, endpoint: Destination, options: TransferOptions,
                cache: DriverCache | None = None) -> Connection:
        where = endpoint.safe_url("")
        user, password = credentials(endpoint, options)
        ftp = ftplib.FTP(timeout=options.connect_timeout)
        try:
            ftp.connect(endpoint.host, endpoint.port or 21)
            ftp.login(user, password)
            ftp.sock.settimeout(options.timeout)
            ftp.timeout = options.timeout
            ftp.set_pasv(options.ftp_passive)
            ftp.voidcmd("TYPE I")
        except Exception as exc:
            ftp.close()
            raise translate_ftp_error(exc, where, "FTP connection failed") from exc
        logger.debug("Connected to %s", where)
        return FtpConnection(endpoint, options, ftp)

    @classmethod
    def connection_settings(cls, options: TransferOptions) -> tuple:
        return (options.connect_timeout, options.timeout, options.ftp_passive, options.netrc_file)
