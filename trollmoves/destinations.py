"""Client destinations: composing them from announcements, and where received files end up.

A client (or a mirror pulling from upstream) composes its ``destination`` template
with an announcement's fields, sends it to the server with credentials, publishes
it without a password, and publishes each received file's URI at that destination
(``make_uri``), as trollmoves 0.19 does. A client destination always names a
directory (``as_directory``).
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from trollsift import compose

from trollmoves.matching import Composer
from trollmoves.redact import strip_password


def compose_destination(template: str | Composer, data: dict, login: str | None) -> tuple[str, str]:
    """(destination sent to the server, with credentials; destination published, without password).

    Host defaults to this host's name when the template has none, as the original does.
    """
    composed = template.compose(data) if isinstance(template, Composer) else compose(template, data)
    parts = urlsplit(composed)
    scheme = parts.scheme or "file"
    host = parts.netloc.rsplit("@", 1)[-1] if parts.netloc else ""
    if not host and scheme != "s3":
        host = socket.gethostname()
    user_info = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    if login:
        user_info = quote_login(login)
    netloc = f"{user_info}@{host}" if user_info else host
    path = as_directory(parts.path)
    with_login = urlunsplit((scheme, netloc, path, parts.query, parts.fragment))
    return with_login, strip_password(with_login)


def quote_login(login: str) -> str:
    """``user[:password]`` percent-encoded for a URL's user-info.

    A password holding ``@``, ``/``, ``#``, ``?`` or ``%`` would otherwise end the user-info
    early: the server would log in with part of it and take the rest for the host or path
    (and a log line would show it). The movers' ``parse_destination`` unquotes both parts.
    ``:`` and RFC 3986's other user-info characters stay as written, so that a trollmoves 0.19
    server, which does not unquote, still gets such passwords right.
    """
    user, colon, password = login.partition(":")
    quoted = quote(user, safe="!$&'()*+,;=")
    return quoted + colon + quote(password, safe="!$&'()*+,;=:") if colon else quoted


def without_userinfo(url: str) -> str:
    """The destination as 0.19 publishes it in ``push`` messages: no user, no password (host and port kept)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def as_directory(path: str) -> str:
    """A client destination always names a directory, as in 0.19: ``/data/in/sub`` is ``/data/in/sub/``.

    0.19's client creates the whole path and publishes ``join(path, uid)``; a server told
    ``/data/in/sub`` without the slash would write every file *as* ``sub``. The slash makes every
    server, ours or 0.19's, and every scheme (S3 included) deliver ``sub/<uid>``.
    """
    return path if not path or path.endswith("/") else path + "/"


def is_local_host(host: str | None) -> bool:
    if not host or host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        address = socket.gethostbyname(host)
    except OSError:
        return False
    if address.startswith("127."):
        return True
    try:
        local = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        local = set()
    return address in local


def make_uri(destination: str, uid: str) -> str:
    """URI of a received file, as the original's ``make_uris``: a plain path if local, else a URL."""
    parts = urlsplit(destination)
    path = os.path.join(parts.path, uid)
    if parts.scheme == "s3":
        return f"s3://{parts.netloc}{path if path.startswith('/') else '/' + path}"
    if parts.scheme in ("", "file") or is_local_host(parts.hostname):
        return path
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def local_directory(destination: str, ftp_root: str) -> str | None:
    """The local directory a destination lands in (``ftp_root`` + the whole path), or None for S3.

    The whole path, as 0.19's ``create_local_dir``: the destination names a directory.
    """
    parts = urlsplit(destination)
    if parts.scheme == "s3":
        return None
    return os.path.join(ftp_root, parts.path.lstrip("/"))


def local_path(uri: Any) -> str | None:
    """The local path of a ``uri`` (a plain path, ``file://`` or a URL naming this host), else None."""
    if not isinstance(uri, str) or not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return parts.path or None
    return parts.path if is_local_host(parts.hostname) and parts.path else None
