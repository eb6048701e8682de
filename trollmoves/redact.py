"""Keep secrets out of logs, errors, messages and metrics.

One function, ``redact``, removes passwords from URLs and from free text that may
contain URLs (exception texts often do). ``clean_url`` is the original
trollmoves' rule for URLs sent back to clients: scheme, host and path only.
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit, urlunsplit

_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+.-")
_SCHEME_START = frozenset(string.ascii_letters)
# The first character that ends a URL's user-info: a regex over one character class, so linear.
_USERINFO_END = re.compile(r"[/@\s]")
# Where a password that holds a ``/`` ends: its ``@``, or whitespace / the next URL (then it was no password).
_SLASHED_PASSWORD_END = re.compile(r"[@\s]|://")
SECRET_KEYS = frozenset(
    {"password", "passwd", "secret", "key", "token", "aws_secret_access_key", "aws_session_token",
     "ssh_key_passphrase", "passphrase", "login"}
)


def redact(text: object) -> str:
    """Return ``str(text)`` with every ``scheme://user:password@`` reduced to ``scheme://user@``.

    A linear scan, not a regex: the former pattern ``[a-zA-Z][a-zA-Z0-9+.-]*://...`` backtracked
    quadratically on long runs of letters, and a peer controls much of what is redacted (request
    fields end up in exception texts), so 100 KB blocked a daemon for seconds. Each ``://`` is
    looked at once: its scheme is found walking back, its user-info walking forward; neither walk
    can pass the neighbouring ``://`` (``:`` and ``/`` end both), so the whole is O(len(text)).
    """
    text = str(text)
    marker = text.find("://")
    if marker < 0:
        return text
    pieces: list[str] = []
    done = 0  # text[:done] is already in pieces
    while marker >= 0:
        match = _userinfo_at(text, marker, done)
        if match is None:
            marker = text.find("://", marker + 3)
            continue
        scheme_start, user_end, at = match
        user_start = marker + 3
        pieces.append(text[done:user_start])
        if user_end > user_start:
            pieces.append(text[user_start:user_end] + "@")
        done = at + 1
        marker = text.find("://", done)
    pieces.append(text[done:])
    return "".join(pieces)


def _userinfo_at(text: str, marker: int, floor: int) -> tuple[int, int, int] | None:
    """(scheme start, user end, index of ``@``) of a ``scheme://user[:password]@`` whose ``://`` is at
    ``marker``, or None when there is no scheme or no user-info there.

    The scheme is RFC 3986's (a letter, then letters, digits, ``+.-``), found no further back than
    ``floor`` (the end of the previous redaction); the user-info ends at the first ``/``, ``@`` or
    whitespace after ``://`` and counts only if that is an ``@``; the user is the part before a ``:``.
    """
    start = marker
    while start > floor and text[start - 1] in _SCHEME_CHARS:
        start -= 1
    while start < marker and text[start] not in _SCHEME_START:
        start += 1
    if start == marker:
        return None
    end = _USERINFO_END.search(text, marker + 3)
    if end is None:
        return None
    at = end.start()
    if text[at] == "/":
        at = _slashed_password_end(text, marker + 3, at)
        if at is None:
            return None
    elif text[at] != "@":
        return None
    colon = text.find(":", marker + 3, at)
    return start, (colon if colon >= 0 else at), at


def _slashed_password_end(text: str, userinfo: int, slash: int) -> int | None:
    """Index of the ``@`` ending a password written with a ``/`` in it (``user:pa/ss@host``), else None.

    Such a URL is malformed (``urlsplit`` takes ``pa`` for a port and ``/ss@host`` for the path),
    but a peer or a config can send it, and then the part after the ``/`` used to reach logs and
    replies. It counts as a password only if what follows the ``:`` is no port (not all digits)
    and an ``@`` comes before whitespace or the next ``://``; IPv6 hosts (``[``) are left alone.
    """
    colon = text.find(":", userinfo, slash)
    if colon < 0 or text.startswith("[", userinfo) or text.startswith("://", slash - 1):
        return None
    port = text[colon + 1:slash]
    if port and port.isascii() and port.isdigit():
        return None
    end = _SLASHED_PASSWORD_END.search(text, slash)
    if end is None or text[end.start()] != "@":
        return None
    return end.start()


def redact_mapping(mapping: dict) -> dict:
    """Copy a (nested) dict with the values of secret-looking keys replaced by ``'***'``."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out[key] = redact_mapping(value)
        elif str(key).lower() in SECRET_KEYS or "secret" in str(key).lower() or "password" in str(key).lower():
            out[key] = "***"
        elif isinstance(value, str):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


def clean_url(url: str) -> str:
    """Scheme + host + path, no user, password, port or query (the original's ``clean_url``).

    Redacted first: a password holding ``#``, ``?`` or ``/`` ends ``urlsplit``'s netloc early,
    and its tail would otherwise come back as the path.
    """
    parts = urlsplit(redact(url))
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def strip_password(url: str) -> str:
    """Keep ``user@host:port`` but drop the password: what clients may publish.

    Redacted first, for the same reason as ``clean_url``: ``ftp://alice:pa#ss@host/`` has no
    password for ``urlsplit`` (``pa`` is its port, ``ss@host/`` the fragment) and was published whole.
    """
    url = redact(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
