"""Keep secrets out of logs, errors, messages and metrics.

One function, ``redact``, removes passwords from URLs and from free text that may
contain URLs (exception texts often do). ``clean_url`` is the original
trollmoves' rule for URLs sent back to clients: scheme, host and path only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*)(?::[^@/\s]*)?@")
SECRET_KEYS = frozenset(
    {"password", "passwd", "secret", "key", "token", "aws_secret_access_key", "aws_session_token",
     "ssh_key_passphrase", "passphrase", "login"}
)


def redact(text: object) -> str:
    """Return ``str(text)`` with every ``scheme://user:password@`` reduced to ``scheme://user@``."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}@" if m["user"] else m["scheme"], str(text))


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
    """Scheme + host + path, no user, password, port or query (the original's ``clean_url``)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def strip_password(url: str) -> str:
    """Keep ``user@host:port`` but drop the password: what clients may publish."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
