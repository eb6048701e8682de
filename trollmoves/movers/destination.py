"""Destination URLs: parse once, keep the password out of every printed form.

Accepted forms (as in trollmoves 0.19): bare paths and ``file://``,
``ftp://user:pass@host:port/dir/``, ``scp://``, ``sftp://``, ``s3://bucket/prefix``.
A path ending in ``/`` keeps the source's base name; for S3 the same rule holds
for the key (a prefix without trailing slash names the object).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field, replace
from urllib.parse import ParseResult, SplitResult, unquote, urlparse, urlunparse

from trollmoves.errors import PermanentTransferError
from trollmoves.redact import redact


@dataclass(frozen=True)
class Destination:
    """A parsed destination. ``str()`` and ``repr()`` never show the password."""

    scheme: str
    host: str = ""
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    path: str = ""

    @property
    def netloc(self) -> str:
        """``user@host:port`` without password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = f"{host}:{self.port}" if self.port else host
        return f"{self.user}@{netloc}" if self.user else netloc

    def safe_url(self, path: str | None = None) -> str:
        """The URL without password (user, host, port and path kept)."""
        path = self.path if path is None else path
        if self.scheme == "file":
            return urlunparse(("file", "", path, "", "", ""))
        return urlunparse((self.scheme, self.netloc, path, "", "", ""))

    def parse_result(self, path: str | None = None) -> ParseResult:
        """A ``urllib.parse.ParseResult`` without password: what ``move_it`` returns."""
        return urlparse(self.safe_url(path))

    def with_target(self, target: str) -> Destination:
        """The same destination on a backup host (``host`` or ``host:port``)."""
        parsed = urlparse(f"//{target}")
        try:
            port = parsed.port
        except ValueError:
            raise PermanentTransferError(f"backup target {target!r}: expected host or host:port") from None
        return replace(self, host=parsed.hostname or target, port=port or self.port,
                       user=unquote(parsed.username) if parsed.username else self.user)

    def __str__(self) -> str:
        return self.safe_url()


def parse_destination(destination: str | ParseResult | SplitResult | Destination,
                      rel_path: str | None = None) -> Destination:
    """Parse a destination URL (or a bare path) and append ``rel_path`` like 0.19 did.

    Raises PermanentTransferError for a malformed URL (bad port); the message
    never contains the password.
    """
    if isinstance(destination, Destination):
        dest = destination
    else:
        if isinstance(destination, (ParseResult, SplitResult)):
            parsed = destination
        else:
            parsed = urlparse(str(destination))
        try:
            port = parsed.port
        except ValueError:
            # redacted first: a password with an unencoded "/" would otherwise show as the path
            shown = _without_netloc(urlparse(redact(parsed.geturl())))
            raise PermanentTransferError("destination has an invalid port", destination=shown) from None
        scheme = (parsed.scheme or "file").lower()
        path = parsed.path
        if scheme == "file":
            host = ""
            if not parsed.scheme:  # bare path: keep it as given (relative paths allowed)
                path = str(destination) if isinstance(destination, str) else parsed.path
        else:
            host = parsed.hostname or ""
        dest = Destination(scheme=scheme, host=host, port=port,
                           user=unquote(parsed.username) if parsed.username else None,
                           password=unquote(parsed.password) if parsed.password else None,
                           path=path)
    if rel_path:
        dest = replace(dest, path=os.path.join(dest.path, rel_path))
    return dest


def _without_netloc(parsed: ParseResult | SplitResult) -> str:
    return f"{parsed.scheme}://{parsed.hostname or ''}{parsed.path}"


def target_path(path: str, source: str) -> str:
    """Remote file path: a directory-like path (empty or ending in ``/``) keeps the source name."""
    if not path or path.endswith("/"):
        return path + os.path.basename(source)
    return path


def s3_bucket_key(dest: Destination, source: str) -> tuple[str, str]:
    """Bucket and key under 0.19's trailing-slash rule.

    ``s3://bucket/dir/`` and ``s3://bucket/`` keep the source base name; ``s3://bucket/dir/name``
    stores the object as ``dir/name``. A bare ``s3://bucket`` is treated like ``s3://bucket/``.
    """
    if not dest.host:
        raise PermanentTransferError("S3 destination has no bucket", destination=dest.safe_url())
    key = dest.path.strip("/")
    if not dest.path or dest.path.endswith("/"):
        key = posixpath.join(key, os.path.basename(source)) if key else os.path.basename(source)
    return dest.host, key


def temporary_path(final: str, prefix: str, suffix: str) -> str:
    """``dir/<prefix><name><suffix>`` beside the final name, so the rename stays on one file system."""
    directory, name = posixpath.split(final)
    return posixpath.join(directory, f"{prefix}{name}{suffix}")
