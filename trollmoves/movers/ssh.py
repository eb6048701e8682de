"""What SCP and SFTP share: opening an SSH session, and file operations over SFTP.

Host keys are checked as trollmoves 0.19 did (paramiko ``RejectPolicy``): against
``known_hosts`` when given, else the system's and the user's known hosts. Keys
come from ``ssh_key_filename``/``ssh_private_key_file``, the agent, or the
user's default keys. Rename, remove, stat and mkdir go over SFTP for both
protocols (0.19's SCP mover did the same).

A server that stops answering (its process frozen, the network silently
dropping packets) fails the operation after ``timeout`` seconds without progress:

* every channel gets ``timeout``, so paramiko's own waits for the send window
  and for replies raise ``socket.timeout``;
* on such a timeout the session's ``Transport`` is closed at once, so that the
  clean-up that follows (closing the remote file, removing the temporary) fails
  at once instead of waiting ``timeout`` again, and the pool drops the session;
* the waits paramiko does not time out (a full TCP send buffer, the replies to
  the ``exec`` and ``subsystem`` requests) are covered by one ``StallWatchdog``
  thread per transfer service, which closes the ``Transport`` of an operation
  without progress for ``timeout`` (+ ``STALL_MARGIN``) from its own thread;
* ``abort()`` does the same for the pool when the service is closed, so a
  transfer in progress ends at once.

A keepalive notices dead peers of idle pooled sessions.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time

from trollmoves.errors import PermanentTransferError, TransferError, TransientTransferError
from trollmoves.movers.base import Connection, DriverCache
from trollmoves.movers.destination import Destination
from trollmoves.movers.openssh import OpenSshUploader
from trollmoves.movers.options import InvalidSettingError, TransferOptions
from trollmoves.movers.per_file import PerFileMover
from trollmoves.movers.registry import missing_dependency
from trollmoves.movers.retry import classify, describe
from trollmoves.movers.source import Source

try:
    import paramiko
except ModuleNotFoundError:  # pragma: no cover - paramiko is a hard dependency
    paramiko = None

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15
STALL_MARGIN = 1.0
"""Seconds the watchdog allows beyond ``timeout``: paramiko's own channel timeout should fire first."""
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Tried first: one AEAD call per packet instead of CTR plus a separate HMAC (about 25 % faster here)."""


def _transport(*args, **kwargs) -> paramiko.Transport:
    """A paramiko Transport preferring AES-GCM when both sides offer it."""
    transport = paramiko.Transport(*args, **kwargs)
    security = transport.get_security_options()
    available = security.ciphers
    security.ciphers = tuple(c for c in FAST_CIPHERS if c in available) + tuple(
        c for c in available if c not in FAST_CIPHERS)
    return transport


def open_client(endpoint: Destination, options: TransferOptions) -> paramiko.SSHClient:
    """Connect and authenticate; raise Transient/PermanentTransferError."""
    if paramiko is None:  # pragma: no cover
        raise missing_dependency("paramiko", "SSH transfers")
    where = endpoint.safe_url("")
    client = paramiko.SSHClient()
    try:
        if options.known_hosts:
            client.get_host_keys().load(options.known_hosts)
        else:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            endpoint.host, port=endpoint.port or 22, username=endpoint.user or options.username,
            password=endpoint.password or options.password, key_filename=list(options.ssh_key_files) or None,
            timeout=options.connect_timeout, banner_timeout=options.connect_timeout,
            auth_timeout=options.connect_timeout, channel_timeout=options.connect_timeout,
            allow_agent=options.ssh_allow_agent, look_for_keys=not options.ssh_key_files,
            transport_factory=_transport,
        )
        transport = client.get_transport()
        transport.set_keepalive(KEEPALIVE_SECONDS)
        # Small requests (SFTP stat/rename, the scp acknowledgements) must not wait for delayed ACKs.
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception as exc:
        client.close()
        raise translate_ssh_error(exc, where, "SSH connection failed") from exc
    logger.debug("Connected to %s", where)
    return client


def translate_ssh_error(exc: BaseException, where: str, what: str) -> TransferError:
    """paramiko's exceptions as Transient/PermanentTransferError."""
    if isinstance(exc, TransferError):
        return exc
    if paramiko is not None:
        if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
            return PermanentTransferError(f"{what}: {describe(exc)}", where, exc)
        if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
            return PermanentTransferError(f"{what}: host key not trusted ({describe(exc)})", where, exc)
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return TransientTransferError(f"{what}: {describe(exc)}", where, exc)
        if isinstance(exc, paramiko.SSHException):
            return TransientTransferError(f"{what}: {describe(exc)}", where, exc)
    if isinstance(exc, OSError) and exc.errno is None and not isinstance(exc, (socket.timeout, TimeoutError)):
        # paramiko's SFTP status "Failure" (disk full, quota, ...): no errno, not worth retrying
        return PermanentTransferError(f"{what}: {describe(exc)}", where, exc)
    return classify(exc, where, what)


class StallWatchdog:
    """Closes the session of an SSH operation that made no progress for its time limit.

    One per transfer service (kept in its ``DriverCache``, stopped by ``close()``);
    its thread starts with the first watched operation and sleeps on a Condition
    until the earliest deadline. Connections push their own deadline on progress
    (a float store, no lock); the thread is woken only when an operation starts
    with a deadline earlier than the one it sleeps towards.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watched: dict[SshConnection, int] = {}
        self._wake_at: float | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, connection: SshConnection, serial: int) -> None:
        with self._cond:
            if self._closed:
                return
            self._watched[connection] = serial
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="trollmoves-ssh-watchdog", daemon=True)
                self._thread.start()
            if self._wake_at is None or connection.deadline < self._wake_at:
                self._cond.notify()

    def unwatch(self, connection: SshConnection) -> None:
        with self._cond:
            self._watched.pop(connection, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._watched.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [(c, serial) for c, serial in self._watched.items() if c.deadline <= now]
                for connection, _ in due:
                    del self._watched[connection]
                if not due:
                    self._wake_at = min((c.deadline for c in self._watched), default=None)
                    self._cond.wait(None if self._wake_at is None else self._wake_at - now)
                    self._wake_at = None
                    continue
            for connection, serial in due:
                connection.stalled(serial)


class SshConnection(Connection):
    """An SSH session; file operations over one lazily opened SFTP channel."""

    def __init__(self, endpoint: Destination, options: TransferOptions, client: paramiko.SSHClient,
                 watchdog: StallWatchdog | None = None):
        super().__init__(endpoint, options)
        self.client = client
        self.transport = client.get_transport()
        self._sftp: paramiko.SFTPClient | None = None
        self._watchdog = watchdog if options.timeout > 0 else None
        self._limit = max(options.timeout, options.connect_timeout) + STALL_MARGIN
        self.deadline = float("inf")
        self._serial = 0
        self._depth = 0
        self._broken: str | None = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.call("cannot open SFTP channel", None, self.client.open_sftp)
            self._sftp.get_channel().settimeout(self.options.timeout)
        return self._sftp

    def translate(self, exc: BaseException, what: str, path: str | None = None) -> TransferError:
        if self._broken is not None:
            return TransientTransferError(f"{what}: {self._broken}", self.endpoint.safe_url(path), exc)
        return translate_ssh_error(exc, self.endpoint.safe_url(path), what)

    # stalls --------------------------------------------------------------------------------
    def call(self, what: str, path: str | None, function, *args):
        """Run one operation under the watchdog; a session closed after a stall fails at once."""
        if self._broken is not None:
            raise TransientTransferError(f"{what}: {self._broken}", self.endpoint.safe_url(path))
        self._watch()
        try:
            return function(*args)
        except TransferError:
            raise
        except Exception as exc:
            self.failed(exc)
            raise self.translate(exc, what, path) from exc
        finally:
            self._unwatch()

    def progress(self) -> None:
        """Some bytes went out or a reply came in: push the watchdog's deadline."""
        self.deadline = time.monotonic() + self._limit

    def failed(self, exc: BaseException) -> None:
        """After an error in an operation: a timed-out (stalled) session is closed at once.

        Uploads call this before their own clean-up, so that closing the remote file
        does not wait ``timeout`` again on a server that stopped answering.
        """
        if self._broken is not None:
            return
        if isinstance(exc, (socket.timeout, TimeoutError)):
            self.abort(self._stall_reason(self.options.timeout))
        elif paramiko is not None and isinstance(exc, paramiko.SSHException) and "timeout" in str(exc).lower():
            # "Timeout opening channel.": the server did not answer a channel request
            self.abort(self._stall_reason(self.options.connect_timeout))

    def stalled(self, serial: int) -> None:
        """The watchdog's verdict (its thread): close the session if that operation still runs."""
        if serial == self._serial and self._depth:
            logger.debug("No progress from %s for %g s: closing the session", self.endpoint.safe_url(""),
                         self._limit)
            self.abort(self._stall_reason(self._limit))

    def abort(self, reason: str = "transfer interrupted") -> None:
        """Close the Transport (safe from any thread): every paramiko wait on it ends at once."""
        if self._broken is None:
            self._broken = reason
        try:
            self.transport.close()
        except Exception as err:  # noqa: BLE001 - best effort
            logger.debug("Error aborting the SSH session to %s: %s", self.endpoint.safe_url(""), err)

    @staticmethod
    def _stall_reason(seconds: float) -> str:
        return f"the server stopped responding (no progress for {seconds:g} s); session closed"

    def _watch(self) -> None:
        self._depth += 1
        if self._depth == 1 and self._watchdog is not None:
            self._serial += 1
            self.progress()
            self._watchdog.watch(self, self._serial)

    def _unwatch(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._watchdog is not None:
            self._watchdog.unwatch(self)

    def upload(self, source: Source, remote: str) -> int:
        """Big files (``openssh_threshold``, opt-in) go to the OpenSSH binary, the rest to ``_upload``."""
        threshold = self.options.openssh_threshold
        if threshold is not None and source.size >= threshold and OpenSshUploader.usable(self.options,
                                                                                          self.endpoint):
            return OpenSshUploader(self.endpoint, self.options).upload(source, remote)
        return self.call("upload failed", remote, self._upload, source, remote)

    def _upload(self, source: Source, remote: str) -> int:
        raise NotImplementedError

    def rename(self, old: str, new: str) -> None:
        self.call("rename failed", new, self.sftp.posix_rename, old, new)

    def remove(self, path: str) -> None:
        self.call("remove failed", path, self.sftp.remove, path)

    def size(self, path: str) -> int | None:
        return self.call("stat failed", path, lambda: self.sftp.stat(path).st_size)

    def _mkdirs(self, path: str) -> None:
        self.call("cannot create directory", path, self.walk_mkdirs, path, self._exists, self.sftp.mkdir)

    def _exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def alive(self) -> bool:
        return self._broken is None and self.transport is not None and self.transport.is_active()

    def close(self) -> None:
        try:
            self.client.close()
        except Exception as err:  # noqa: BLE001 - closing is best effort
            logger.debug("Error closing SSH session to %s: %s", self.endpoint.safe_url(""), err)


class SshMover(PerFileMover):
    """Shared driver code of the SCP and SFTP movers."""

    default_port = 22
    connection_class: type[SshConnection] = SshConnection

    @classmethod
    def connect(cls, endpoint: Destination, options: TransferOptions,
                cache: DriverCache | None = None) -> Connection:
        watchdog = cache.get(StallWatchdog, StallWatchdog) if cache is not None else None
        return cls.connection_class(endpoint, options, open_client(endpoint, options), watchdog)

    @classmethod
    def connection_settings(cls, options: TransferOptions) -> tuple:
        return (options.connect_timeout, options.timeout, options.ssh_key_files, options.known_hosts,
                options.ssh_allow_agent)

    @classmethod
    def check_options(cls, options: TransferOptions) -> None:
        for path in options.ssh_key_files + ((options.known_hosts,) if options.known_hosts else ()):
            try:
                open(path, "rb").close()
            except OSError as err:
                raise InvalidSettingError(f"connection_parameters: cannot read {path}: "
                                          f"{errno.errorcode.get(err.errno, err.errno)}") from None
