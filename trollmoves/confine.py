"""Confinement: one place that normalises and checks every path a peer can influence.

A peer (a requester, a provider, a server's reply, an archive) can put ``..``, an
absolute path, percent-escapes, another spelling of this host or a port into a
destination, a push's ``path``, a uid or a template field. Every daemon checks such
values here, on the *final* path (destination joined with what the peer added), never
with a plain string prefix: ``file:///allowed/../outside/`` starts with
``file:///allowed/`` and still writes outside it.
"""

from __future__ import annotations

import logging
import posixpath
import re
import socket
import string
from typing import Iterable, NamedTuple
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"ftp": 21, "sftp": 22, "scp": 22, "ssh": 22, "http": 80, "https": 443}


class ConfinementError(ValueError):
    """A peer-supplied path would leave the place it must stay in."""


class Location(NamedTuple):
    """A URL reduced to what decides where bytes land: scheme, host, port and a normalised path."""

    scheme: str
    host: str
    port: int | None
    path: str


def local_names() -> frozenset[str]:
    """Names this host answers to without a DNS look-up (a request must not wait for a resolver)."""
    names = {"", "localhost", "localhost.localdomain", "::1", "0.0.0.0"}
    for getter in (socket.gethostname, socket.getfqdn):
        try:
            names.add(getter().lower())
        except OSError:
            pass
    return frozenset(names)


def normal_host(host: str | None, local: frozenset[str]) -> str:
    """``""`` for every spelling of this host (127.x included), else the lower-cased host."""
    host = (host or "").lower().strip("[]")
    if host in local or host.startswith("127."):
        return ""
    return host


def normal_path(path: str) -> str:
    """An absolute, ``.``/``..``-free path; ``..`` at the root stays at the root, as the kernel does."""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + normal.lstrip("/")


def has_escape(path: str) -> bool:
    """Does ``path`` (raw or percent-decoded) hold a ``..`` component?"""
    return any(".." in p.split("/") for p in {path, unquote(path)})


def location(url: str, rel_path: str | None = None, local: frozenset[str] | None = None) -> Location:
    """Where ``url`` (joined with ``rel_path`` as the movers join it) really points.

    The path is percent-decoded and normalised; the raw path, normalised then decoded, must
    read the same, or the location gets a path no allow-list holds (``/%2e%2e/`` is refused).
    Raises ConfinementError for a URL without a usable port.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfinementError("destination has an invalid port") from None
    scheme = (parts.scheme or "file").lower()
    port = port or DEFAULT_PORTS.get(scheme)
    host = normal_host(parts.hostname, local if local is not None else local_names())
    raw = posixpath.join(parts.path, rel_path) if rel_path else parts.path
    decoded = posixpath.join(unquote(parts.path), unquote(rel_path)) if rel_path else unquote(parts.path)
    path = normal_path(decoded)
    if unquote(normal_path(raw)) != path:  # an escape hid a "/" or ".." from one of the readings
        path = "\0ambiguous"
    return Location(scheme, host, port, path)


def within_path(path: str, base: str) -> bool:
    """Is normalised ``path`` equal to or below ``base`` on a path-component boundary?"""
    base = base.rstrip("/")
    return path == base or path.startswith(base + "/") or base == ""


def allowed(destination: str, rel_path: str | None, prefixes: Iterable[str]) -> bool:
    """Does the final target of a push (destination joined with ``path``) lie under one of ``prefixes``?"""
    local = local_names()
    try:
        target = location(destination, rel_path, local)
    except ConfinementError:
        return False
    for prefix in prefixes:
        try:
            allowed_at = location(prefix, None, local)
        except ConfinementError:
            continue
        if target[:3] == allowed_at[:3] and within_path(target.path, allowed_at.path):
            return True
    return False


def check_relative(value: str, what: str) -> str:
    """``value`` if it is a plain relative path that stays where it is joined, else ConfinementError.

    Refused: empty, absolute (``/x``, ``\\x``), a ``..`` component (raw or percent-decoded), NUL.
    """
    if not isinstance(value, str) or not value:
        raise ConfinementError(f"{what} {value!r} is empty or not a string")
    if value.startswith(("/", "\\")) or "\0" in value:
        raise ConfinementError(f"{what} {value!r} is not a relative path")
    if has_escape(value) or ".." in value.replace("\\", "/").split("/"):
        raise ConfinementError(f"{what} {value!r} leaves its directory")
    return value


def check_field(value: object, what: str) -> None:
    """A template field must not move a composed path: no ``..`` component, no leading ``/``."""
    if isinstance(value, str) and value and (value.startswith(("/", "\\")) or has_escape(value)
                                             or ".." in value.replace("\\", "/").split("/")):
        raise ConfinementError(f"{what} {value!r} would leave the destination")


def confined_join(directory: str, relative: str, what: str = "path") -> str:
    """``directory/relative`` after checking ``relative`` stays inside ``directory``."""
    check_relative(relative, what)
    joined = posixpath.normpath(posixpath.join(directory, relative))
    if not within_path(joined, posixpath.normpath(directory) if directory else ""):
        raise ConfinementError(f"{what} {relative!r} leaves {directory}")
    return joined


def template_fields(template: str) -> tuple[str, ...]:
    """The message keys a destination template composes (``{a.b[0]:%Y}`` reads key ``a``)."""
    names = []
    try:
        for _literal, field, _spec, _conversion in string.Formatter().parse(template):
            if field:
                names.append(re.split(r"[.\[]", field, maxsplit=1)[0])
    except ValueError:
        return ()
    return tuple(dict.fromkeys(n for n in names if n))


def check_announcement(uids: Iterable[str], data: dict, fields: Iterable[str]) -> None:
    """Raise ConfinementError (naming the field) if an announcement's uids or template fields escape.

    The uids are joined to a destination, the fields composed into it, by every receiver.
    """
    for uid in uids:
        check_relative(str(uid), "uid")
    for name in fields:
        check_field(data.get(name), f"field {name!r}")
