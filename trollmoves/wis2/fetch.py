"""Download the file a WIS2 notification points at, verify it, and put it in place atomically.

Why this module is strict: a WNM subscriber stores what a remote server sends, and that server may
answer with an error page, close the connection half-way, or serve a file that changed since it
was announced. So the bytes are streamed into a temporary ``<dir>/.<name>.part`` beside the target
(one file system, so the final ``os.replace`` is atomic), hashed while they are written, checked
against the announced ``length``, the ``Content-Length`` and the announced ``integrity`` digest,
fsynced, and only then renamed over the target. Any failure removes the temporary: a final name
never holds a partial or unverified file, and an older file there stays until a verified one
replaces it. A temporary left by a ``kill -9`` has a fixed name and is overwritten by the next
attempt for the same file, so none accumulate.

Callers fetch one target path from one thread at a time (the temporary's name is derived from it);
the bridge serialises work per ``data_id``.

Problems are raised as :class:`FetchError` whose ``reason`` is a short fixed word (a metric label)
and whose ``transient`` flag says whether trying again later may help. 429 and 5xx answers,
refused/reset connections, timeouts and short bodies are transient and retried here with an
exponential backoff (``Retry-After`` respected) that waits on the caller's ``cancel`` Event, so a
stopping daemon is not held up; a length or digest mismatch, any other non-2xx status and a bad
href are permanent. This module only raises and returns results: the bridge logs and counts.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import errno
import ftplib
import hashlib
import hmac
import http.client
import logging
import os
import posixpath
import socket
import ssl
import stat
import threading
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from trollmoves import __version__
from trollmoves.errors import TransferError, TransientTransferError, TrollmovesError
from trollmoves.redact import redact, strip_password

logger = logging.getLogger(__name__)

REASONS = frozenset({"http_status", "length", "integrity", "network", "href", "io", "cancelled", "timeout"})
"""Every ``FetchError.reason``: a fixed set, usable as a metric label."""
SCHEMES = ("http", "https", "ftp", "sftp")
TMP_PREFIX, TMP_SUFFIX = ".", ".part"
NAME_MAX = 255
MAX_NAME_BYTES = NAME_MAX - len(TMP_PREFIX) - len(TMP_SUFFIX)
"""A local name is at most this long (UTF-8 bytes), so that its temporary still fits in NAME_MAX."""
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
"""Control, format (bidi overrides), surrogate, private-use and line/paragraph separator characters."""
_UNUSABLE_METHODS = frozenset({"shake_128", "shake_256"})  # need a digest length: not in WNMs


class FetchError(TrollmovesError):
    """A download or store failed; nothing was left at the target path.

    ``reason`` is one of :data:`REASONS`; ``transient`` is True when another try later may
    succeed; ``status`` is the HTTP status (or FTP reply code) when the server answered one.
    """

    def __init__(self, reason: str, message: str, *, transient: bool = False, status: int | None = None,
                 retry_after: float | None = None):
        if reason not in REASONS:
            raise ValueError(f"FetchError reason must be one of {sorted(REASONS)}, got {reason!r}")
        super().__init__(redact(message))
        self.reason, self.transient, self.status, self.retry_after = reason, transient, status, retry_after


@dataclass(frozen=True)
class FetchResult:
    """A verified file in place: its path, size, digest (``method`` is a hashlib name) and timing."""

    path: str
    size: int
    method: str | None
    digest: bytes | None
    duration: float
    attempts: int = 1


def integrity_method(method: str) -> str:
    """The hashlib name for a WNM ``integrity.method`` (``sha512``, ``SHA-512``, ``sha3-256``, ...).

    Raises FetchError("integrity") for a name hashlib cannot compute here.
    """
    name = str(method).strip().lower().replace("-", "_")
    if name.startswith("sha_"):
        name = "sha" + name[4:]
    if name not in hashlib.algorithms_available or name in _UNUSABLE_METHODS:
        raise FetchError("integrity", f"unsupported integrity method {method!r}")
    return name


def safe_local_name(href: str, data_id: str) -> str:
    """A file name for the download: the href path's basename, else the data_id's last level.

    The basename is the last segment of the URL path as the server sees it, URL-unquoted; any
    ``/`` or ``\\`` that unquoting reveals, and control/format characters, become ``_``; leading
    dots and spaces are dropped (``..`` and ``.hidden`` included: our temporaries start with a
    dot), and the name is cut to :data:`MAX_NAME_BYTES` keeping a short extension.
    Raises FetchError("href") when neither gives a usable name.
    """
    try:
        url_path = urlsplit(str(href)).path
    except ValueError:
        url_path = ""
    candidates = (unquote(posixpath.basename(url_path)),
                  str(data_id or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1])
    for candidate in candidates:
        name = _sanitise(candidate)
        if name:
            return name
    raise FetchError("href", f"no usable local file name in href {strip_password(str(href))} "
                             f"nor in data_id {data_id!r}")


def _sanitise(name: str) -> str:
    name = name.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    name = "".join("_" if char in "/\\" or unicodedata.category(char) in _UNSAFE_CATEGORIES else char
                   for char in name)
    name = name.lstrip(". ").rstrip(" ")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, ext = posixpath.splitext(name)
        if len(ext.encode("utf-8")) > 32:
            stem, ext = name, ""
        budget = MAX_NAME_BYTES - len(ext.encode("utf-8"))
        name = stem.encode("utf-8")[:budget].decode("utf-8", "ignore") + ext
    return name


class _Expected:
    """What the verified file must be: length and digest, both optional, checked before any I/O."""

    def __init__(self, shown: str, path: str, length, method, digest):
        self.shown, self.path = shown, path
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
            raise FetchError("length", f"{shown}: announced length {length!r} is not a size; nothing stored at {path}")
        self.length = length
        self.method = integrity_method(method) if method else None
        if digest is not None and self.method is None:
            raise FetchError("integrity", f"{shown}: an integrity digest without a method; nothing stored at {path}")
        if isinstance(digest, str):
            try:
                digest = base64.b64decode(digest, validate=True)
            except (binascii.Error, ValueError):
                raise FetchError("integrity", f"{shown}: integrity value is not base64; nothing stored at {path}") \
                    from None
        self.digest = digest

    def hasher(self):
        return hashlib.new(self.method) if self.method else None

    def verify(self, size: int, hasher) -> bytes | None:
        if self.length is not None and size != self.length:
            raise FetchError("length", f"{self.shown}: got {size} bytes, announced length {self.length}; "
                                       f"nothing stored at {self.path}")
        digest = hasher.digest() if hasher is not None else None
        if self.digest is not None and not hmac.compare_digest(digest, self.digest):
            raise FetchError("integrity", f"{self.shown}: {self.method} digest does not match the announced "
                                          f"integrity; nothing stored at {self.path}")
        return digest


class _Sink:
    """The temporary beside the target: written and hashed chunk by chunk, committed or removed."""

    def __init__(self, path: str, shown: str, expected: _Expected):
        self.path, self.shown, self.expected = os.path.abspath(path), shown, expected
        directory, name = os.path.split(self.path)
        tmp_name = f"{TMP_PREFIX}{name}{TMP_SUFFIX}"
        if len(tmp_name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            tmp_name = f"{TMP_PREFIX}{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}{TMP_SUFFIX}"
        self.directory, self.tmp = directory, os.path.join(directory, tmp_name)
        self.size, self.hasher, self._file = 0, expected.hasher(), None

    def __enter__(self) -> _Sink:
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/__exit__
        except OSError as err:
            raise FetchError("io", f"{self.shown}: cannot write {self.tmp}: {_describe(err)}") from None
        return self

    def write(self, chunk) -> None:
        self.size += len(chunk)
        if self.expected.length is not None and self.size > self.expected.length:
            raise FetchError("length", f"{self.shown}: more than the announced length {self.expected.length} "
                                       f"bytes; nothing stored at {self.path}")
        try:
            self._file.write(chunk)
        except OSError as err:
            raise FetchError("io", f"{self.shown}: cannot write {self.tmp}: {_describe(err)}") from None
        if self.hasher is not None:
            self.hasher.update(chunk)

    def commit(self) -> bytes | None:
        """Verify, fsync, rename over the target, fsync the directory; return the digest."""
        digest = self.expected.verify(self.size, self.hasher)
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise FetchError("io", f"{self.shown}: cannot store {self.path}: {_describe(err)}") from None
        _fsync_directory(self.directory)
        return digest

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        if exc_type is not None:
            try:
                os.unlink(self.tmp)
            except OSError as err:
                if err.errno != errno.ENOENT:
                    logger.warning("Cannot remove temporary %s: %s", self.tmp, _describe(err))


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory: the rename still happened
        logger.debug("fsync of directory %s failed: %s", directory, _describe(err))
    finally:
        os.close(fd)


def _describe(err: BaseException) -> str:
    text = redact(str(err)).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def store_content(content: bytes, path: str, *, length: int | None = None, integrity_method: str | None = None,
                  integrity_digest: bytes | str | None = None) -> FetchResult:
    """Verify inline ``content`` (already decoded) like a download and write it atomically to ``path``."""
    started = time.monotonic()
    shown = "inline content"
    expected = _Expected(shown, os.path.abspath(path), length, integrity_method, integrity_digest)
    with _Sink(path, shown, expected) as sink:
        sink.write(content)
        digest = sink.commit()
    return FetchResult(sink.path, sink.size, expected.method, digest, time.monotonic() - started)


def remove_file(path: str) -> bool:
    """Remove the regular file at ``path`` (a deletion notification); False when there is none.

    Anything else there (a directory, a symlink, a fifo) is refused with FetchError("io"): we only
    ever store regular files. The caller confines ``path`` to its destination.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as err:
        raise FetchError("io", f"cannot remove {path}: {_describe(err)}") from None
    if not stat.S_ISREG(mode):
        raise FetchError("io", f"refusing to remove {path}: not a regular file")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise FetchError("io", f"cannot remove {path}: {_describe(err)}") from None
    _fsync_directory(os.path.dirname(os.path.abspath(path)))
    return True


def fetch(href: str, path: str, *, length: int | None = None, integrity_method: str | None = None,
          integrity_digest: bytes | str | None = None, timeout: float = 60.0, retries: int = 5,
          backoff: float = 1.0, max_backoff: float = 30.0, cancel: threading.Event | None = None,
          chunk_size: int = 1 << 20, headers: Mapping[str, str] | None = None, ssh_options=None,
          on_retry: Callable[[FetchError, float], None] | None = None) -> FetchResult:
    """Download ``href`` into ``path``, verified, atomically; retry transient failures.

    ``integrity_digest`` is the raw digest (bytes) or its base64 text, as in a WNM. ``timeout``
    bounds the connection and each read. ``retries`` more attempts follow a transient failure,
    after ``backoff * 2**n`` seconds (or the server's ``Retry-After``), at most ``max_backoff``,
    waiting on ``cancel``. ``ssh_options`` (a ``trollmoves.movers.options.TransferOptions``)
    gives keys and known_hosts for ``sftp://``. ``on_retry(error, delay)`` is called before each
    wait (the bridge counts retries with it). Raises FetchError.
    """
    started = time.monotonic()
    shown = strip_password(str(href))
    target = os.path.abspath(path)
    scheme = _check_href(str(href), shown, target)
    expected = _Expected(shown, target, length, integrity_method, integrity_digest)
    wait = cancel if cancel is not None else threading.Event()
    attempts = 0
    while True:
        if wait.is_set():
            raise FetchError("cancelled", f"{shown}: cancelled; nothing stored at {target}", transient=True)
        attempts += 1
        try:
            with _Sink(target, shown, expected) as sink:
                if scheme == "sftp":
                    _read_sftp(str(href), sink, timeout, wait, chunk_size, ssh_options)
                else:
                    _read_url(str(href), scheme, sink, timeout, wait, chunk_size, headers)
                digest = sink.commit()
            return FetchResult(target, sink.size, expected.method, digest, time.monotonic() - started, attempts)
        except FetchError as err:
            if not err.transient or err.reason == "cancelled" or attempts > retries:
                raise
            delay = max(0.0, min(max_backoff, err.retry_after if err.retry_after is not None
                                 else backoff * 2 ** (attempts - 1)))
            logger.debug("Retrying %s in %.1f s after attempt %d: %s", shown, delay, attempts, err)
            if on_retry is not None:
                on_retry(err, delay)
            if wait.wait(delay):
                raise FetchError("cancelled", f"{shown}: cancelled while waiting to retry ({err}); "
                                              f"nothing stored at {target}", transient=True) from err


def _check_href(href: str, shown: str, target: str) -> str:
    try:
        parts = urlsplit(href)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as err:
        raise FetchError("href", f"malformed href {shown} ({_describe(err)}); nothing stored at {target}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise FetchError("href", f"href {shown}: scheme {scheme or '(none)'!r} is not one of "
                                 f"{', '.join(SCHEMES)}; nothing stored at {target}")
    if not parts.hostname:
        raise FetchError("href", f"href {shown} has no host; nothing stored at {target}")
    return scheme


def _read_url(href: str, scheme: str, sink: _Sink, timeout: float, cancel: threading.Event, chunk_size: int,
              headers: Mapping[str, str] | None) -> None:
    """One attempt over urllib (http, https, ftp): stream the body into ``sink``."""
    shown = sink.shown
    request_headers = {"User-Agent": f"trollmoves/{__version__} (WIS2 subscriber)", **(headers or {})}
    url = href
    parts = urlsplit(href)
    if scheme in ("http", "https") and (parts.username or parts.password):
        # urllib does not take credentials from an http URL: send them as Basic auth instead
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request_headers.setdefault("Authorization", f"Basic {token}")
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    request = urllib.request.Request(url, headers=request_headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as err:
        err.close()
        raise _status_error(err.code, err.reason, err.headers, shown, sink.path) from None
    except urllib.error.URLError as err:
        raise _network_error(_cause(err), shown, sink.path) from None
    except (OSError, http.client.HTTPException) as err:
        raise _network_error(err, shown, sink.path) from None
    with response:
        status = getattr(response, "status", None)
        if status is not None and not 200 <= status < 300:
            raise _status_error(status, getattr(response, "reason", ""), response.headers, shown, sink.path)
        declared = _content_length(response.headers)
        expected = sink.expected.length
        if declared is not None and expected is not None and declared != expected:
            raise FetchError("length", f"{shown}: server sends {declared} bytes, announced length {expected}; "
                                       f"nothing stored at {sink.path}", status=status)
        while True:
            if cancel.is_set():
                raise FetchError("cancelled", f"{shown}: cancelled; nothing stored at {sink.path}", transient=True)
            try:
                chunk = response.read(chunk_size)
            except (OSError, http.client.HTTPException, ValueError) as err:
                raise _network_error(err, shown, sink.path) from None
            if not chunk:
                break
            sink.write(chunk)
        if declared is not None and sink.size < declared:
            raise FetchError("network", f"{shown}: connection closed after {sink.size} of {declared} bytes; "
                                        f"nothing stored at {sink.path}", transient=True, status=status)


def _content_length(headers) -> int | None:
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _status_error(status: int, reason, headers, shown: str, target: str) -> FetchError:
    transient = status == 429 or status >= 500
    text = f"{shown}: HTTP {status} {reason or ''}".rstrip()
    return FetchError("http_status", f"{text}; nothing stored at {target}", transient=transient, status=status,
                      retry_after=_retry_after(headers) if transient else None)


def _retry_after(headers) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), None when absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when.tzinfo else None


def _cause(err: BaseException) -> BaseException | str:
    """What is behind urllib's URLError (wrapped once or twice for FTP): an exception or a text."""
    while isinstance(err, urllib.error.URLError):
        reason = err.reason
        if isinstance(reason, BaseException):
            err = reason
        elif isinstance(err.__cause__, BaseException):
            err = err.__cause__
        else:
            return str(reason)
    return err


def _network_error(err, shown: str, target: str) -> FetchError:
    """A connection-level failure: transient, except untrusted certificates, FTP 5xx, missing remote
    files and urllib's own complaints (a text: "unknown url type", "no host given")."""
    if isinstance(err, str):
        return FetchError("network", f"{shown}: {redact(err)}; nothing stored at {target}")
    if isinstance(err, (socket.timeout, TimeoutError)):
        return FetchError("timeout", f"{shown}: timed out ({_describe(err)}); nothing stored at {target}",
                          transient=True)
    if isinstance(err, ssl.SSLCertVerificationError):
        return FetchError("network", f"{shown}: TLS certificate not trusted ({_describe(err)}); "
                                     f"nothing stored at {target}")
    if isinstance(err, ftplib.Error):  # 5xx (error_perm) is final, 4xx and odd replies may pass
        code = str(err)[:3]
        return FetchError("network", f"{shown}: FTP {_describe(err)}; nothing stored at {target}",
                          transient=not isinstance(err, ftplib.error_perm),
                          status=int(code) if code.isdigit() else None)
    if isinstance(err, OSError) and err.errno in (errno.ENOENT, errno.EACCES) and not isinstance(err, ConnectionError):
        return FetchError("network", f"{shown}: {_describe(err)}; nothing stored at {target}")
    return FetchError("network", f"{shown}: {_describe(err)}; nothing stored at {target}", transient=True)


def _read_sftp(href: str, sink: _Sink, timeout: float, cancel: threading.Event, chunk_size: int,
               ssh_options) -> None:
    """One attempt over SFTP (paramiko, host keys checked as the SFTP mover does)."""
    from trollmoves.movers.destination import parse_destination
    from trollmoves.movers.options import TransferOptions
    from trollmoves.movers.ssh import open_client

    shown = sink.shown
    options = (ssh_options or TransferOptions()).replace(connect_timeout=timeout, timeout=timeout)
    try:
        destination = parse_destination(href)
        client = open_client(destination, options)
    except TransferError as err:
        raise FetchError("network", f"{shown}: {redact(err)}; nothing stored at {sink.path}",
                         transient=isinstance(err, TransientTransferError)) from None
    try:
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(timeout)
        with sftp.open(unquote(destination.path), "rb") as remote:
            declared = remote.stat().st_size
            expected = sink.expected.length
            if declared is not None and expected is not None and declared != expected:
                raise FetchError("length", f"{shown}: server has {declared} bytes, announced length {expected}; "
                                           f"nothing stored at {sink.path}")
            remote.prefetch(declared)
            while True:
                if cancel.is_set():
                    raise FetchError("cancelled", f"{shown}: cancelled; nothing stored at {sink.path}",
                                     transient=True)
                chunk = remote.read(chunk_size)
                if not chunk:
                    break
                sink.write(chunk)
    except FetchError:
        raise
    except Exception as err:  # noqa: BLE001 - paramiko raises many types; classified here
        raise _network_error(err, shown, sink.path) from None
    finally:
        client.close()
