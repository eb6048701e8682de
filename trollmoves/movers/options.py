"""Transfer options: the ``connection_parameters`` of a chain, typed once.

Values from INI files arrive as strings (``"30"``, ``"true"``, ``"8M"``); they are
coerced here so that no mover parses strings. The keys are those of trollmoves
0.19 plus ours (checksum, verify, retries, timeouts, ...); see ``COMMON_KEYS``,
``SSH_KEYS``, ``FTP_KEYS`` and ``S3_ALLOWED_SETTINGS``. A key known to no mover is
ignored by the file, FTP and SSH movers (0.19 configs carry keys for other
movers) but rejected by the S3 mover, which used to pass them on blindly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trollmoves.errors import PermanentTransferError
from trollmoves.movers.checksum import DEFAULT_METHOD, normalise_method
from trollmoves.values import Invalid
from trollmoves.values import to_bool as parse_bool

logger = logging.getLogger(__name__)

MiB = 1 << 20

S3_BACKEND_SETTINGS = frozenset({
    "anon", "endpoint_url", "key", "secret", "token", "use_ssl", "s3_additional_kwargs", "client_kwargs",
    "requester_pays", "default_block_size", "default_fill_cache", "default_cache_type", "version_aware",
    "cache_regions", "asynchronous", "config_kwargs", "kwargs", "session", "max_concurrency",
    "fixed_upload_size", "profile",
})
"""The s3fs settings trollmoves 0.19 accepted (its ``S3_ALLOWED_SETTINGS`` minus its own keys)."""
S3_OWN_SETTINGS = frozenset({
    "use_tmp_on_transfer", "s3_use_multipart", "s3_use_copy", "tmp_prefix", "s3_multipart_chunksize",
    "s3_multipart_threshold",
})
S3_ALLOWED_SETTINGS = S3_BACKEND_SETTINGS | S3_OWN_SETTINGS

COMMON_KEYS = frozenset({
    "checksum", "verify", "use_tmp_on_transfer", "tmp_prefix", "tmp_suffix", "connection_uptime",
    "retries", "num_retries", "retry_delay", "retry_backoff", "retry_delay_max", "connect_timeout",
    "timeout", "buffer_size", "hardlink", "fsync", "username", "password",
})
SSH_KEYS = frozenset({
    "ssh_key_filename", "ssh_private_key_file", "ssh_connection_timeout", "num_ssh_retries",
    "scpclient_timeout_seconds", "known_hosts", "ssh_allow_agent", "openssh_threshold", "ssh_port",
})
FTP_KEYS = frozenset({"ftp_passive", "netrc_file"})
KNOWN_KEYS = COMMON_KEYS | SSH_KEYS | FTP_KEYS | S3_ALLOWED_SETTINGS

_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

TEXT_KEYS = frozenset({
    "tmp_prefix", "tmp_suffix", "username", "password", "known_hosts", "netrc_file", "ssh_key_filename",
    "ssh_private_key_file",
})
"""Keys whose values are text: a config reader hands them over as written (0.19's INI reader turned
``1``/``true`` into booleans, which would make a password ``1`` the text ``True``)."""


class InvalidSettingError(PermanentTransferError, ValueError):
    """A connection parameter is unknown or has a value of the wrong kind."""


@dataclass(frozen=True)
class SettingProblem:
    """One bad connection parameter: its key, what was expected and the value found.

    The config loader turns these into ``file [section] connection_parameters__key: ...``
    lines (all of them at once); the 0.19 Python API raises the first as InvalidSettingError.
    """

    key: str
    expected: str
    value: Any = field(default=None, repr=False)
    show_value: bool = True

    def __str__(self) -> str:
        shown = f", got {self.value!r}" if self.show_value else ""
        return f"connection_parameters {self.key}: {self.expected}{shown}"


class _Bad(ValueError):
    """A converter's complaint: the text says what was expected."""


def to_bool(key: str, value: Any) -> bool:
    """The package's one boolean parser (configparser's words: 1/yes/true/on, 0/no/false/off)."""
    try:
        return parse_bool(value)
    except Invalid as exc:
        raise InvalidSettingError(f"connection_parameters {key}: {exc}, got {value!r}") from None


def _boolean(value: Any) -> bool:
    try:
        return parse_bool(value)
    except Invalid as exc:
        raise _Bad(str(exc)) from None


def _number(value: Any) -> float:
    """A number >= 0; 0.19's INI reader turned ``0``/``1`` into booleans, so those count as 0 and 1."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise _Bad("expected a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _Bad("expected a finite number")
    if number < 0:
        raise _Bad("expected a number >= 0")
    return number


def _integer(value: Any) -> int:
    """An integer >= 0 (``3``, ``"3"``, ``3.0``; not ``"lots"`` nor ``2.5``)."""
    if isinstance(value, bool):
        return int(value)
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
        if not isinstance(value, str) and number != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise _Bad("expected an integer") from None
    if number < 0:
        raise _Bad("expected an integer >= 0")
    return number


def _size(value: Any) -> int:
    """Bytes from ``1048576``, ``"64K"``, ``"8M"``, ``"1G"`` or ``"8MiB"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(_number(value))
    text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
    factor = 1
    if text and text[-1] in _SIZE_UNITS:
        factor, text = _SIZE_UNITS[text[-1]], text[:-1]
    try:
        return int(_number(text) * factor)
    except _Bad:
        raise _Bad("expected a size in bytes (e.g. 1048576, 64K, 8M)") from None


def _checksum(value: Any) -> str | None:
    try:
        return normalise_method(value)
    except ValueError as err:
        raise _Bad(str(err).split(": ", 1)[-1].rsplit(", got ", 1)[0]) from None


def _text(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        raise _Bad("expected a string")
    return str(value)


def _path(value: Any) -> str:
    return os.path.expanduser(_text(value))


def _convert(key: str, value: Any, converter: Any) -> Any:
    try:
        return converter(value)
    except _Bad as exc:
        raise InvalidSettingError(f"connection_parameters {key}: {exc}, got {value!r}") from None


def to_float(key: str, value: Any) -> float:
    return _convert(key, value, _number)


def to_int(key: str, value: Any) -> int:
    return _convert(key, value, _integer)


def to_size(key: str, value: Any) -> int:
    return _convert(key, value, _size)


# key -> (TransferOptions field, converter): the order matters where two keys set one field
# (the 0.19 spelling last, as before: num_ssh_retries wins over retries).
_TYPED_KEYS: tuple[tuple[str, str, Any], ...] = (
    ("checksum", "checksum", _checksum),
    ("verify", "verify", _boolean),
    ("use_tmp_on_transfer", "use_tmp", _boolean),
    ("hardlink", "hardlink", _boolean),
    ("fsync", "fsync", _boolean),
    ("ssh_allow_agent", "ssh_allow_agent", _boolean),
    ("ftp_passive", "ftp_passive", _boolean),
    ("connection_uptime", "connection_uptime", _number),
    ("retry_delay", "retry_delay", _number),
    ("retry_backoff", "retry_backoff", _number),
    ("retry_delay_max", "retry_delay_max", _number),
    ("connect_timeout", "connect_timeout", _number),
    ("timeout", "timeout", _number),
    ("ssh_connection_timeout", "connect_timeout", _number),
    ("scpclient_timeout_seconds", "timeout", _number),
    ("retries", "retries", _integer),
    ("num_retries", "retries", _integer),
    ("num_ssh_retries", "retries", lambda value: max(0, _integer(value) - 1)),  # 0.19: total attempts
    ("buffer_size", "buffer_size", lambda value: max(64 << 10, _size(value))),
    ("openssh_threshold", "openssh_threshold", _size),
    ("tmp_prefix", "tmp_prefix", _text),
    ("tmp_suffix", "tmp_suffix", _text),
    ("username", "username", _text),
    ("password", "password", _text),
    ("known_hosts", "known_hosts", _path),
    ("netrc_file", "netrc_file", _path),
)
_S3_TYPED_KEYS: tuple[tuple[str, Any], ...] = (
    ("anon", _boolean), ("use_ssl", _boolean), ("requester_pays", _boolean), ("s3_use_multipart", _boolean),
    ("max_concurrency", _integer), ("s3_multipart_chunksize", _size), ("s3_multipart_threshold", _size),
    ("default_block_size", _size),
)
"""S3 settings the S3 mover reads as booleans, counts or sizes: typed here too, so that a bad value is
found when the config is loaded instead of at the first upload."""
_S3_MAPPING_KEYS = ("client_kwargs", "config_kwargs", "s3_additional_kwargs")


def _paths(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(os.path.expanduser(str(item)) for item in value if item)
    return tuple(os.path.expanduser(part) for part in str(value).split())


@dataclass(frozen=True)
class TransferOptions:
    """Everything a transfer needs to know besides source and destination.

    Secrets (``password``, S3 ``secret``/``token``) are kept out of ``repr``.
    """

    checksum: str | None = DEFAULT_METHOD
    verify: bool = True
    use_tmp: bool = True
    tmp_prefix: str = "."
    tmp_suffix: str = ""
    connection_uptime: float = 30.0
    retries: int = 2
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    retry_delay_max: float = 30.0
    connect_timeout: float = 10.0
    timeout: float = 30.0
    buffer_size: int = MiB
    hardlink: bool = True
    fsync: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_key_files: tuple[str, ...] = ()
    known_hosts: str | None = None
    ssh_allow_agent: bool = True
    openssh_threshold: int | None = None
    ftp_passive: bool = True
    netrc_file: str | None = None
    s3: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False, compare=False)
    unknown: tuple[str, ...] = ()

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any] | None,
                   problems: list[SettingProblem] | None = None) -> TransferOptions:
        """Build options from a ``connection_parameters`` mapping (never mutated).

        Without ``problems``, the first bad value raises InvalidSettingError (the 0.19
        Python API); with a list, every bad value is appended to it and left at its
        default, so that a config loader reports them all at once.
        """
        attrs = {key: value for key, value in (attrs or {}).items() if value is not None}
        found: list[SettingProblem] = []
        kwargs: dict[str, Any] = {}
        for key, option, converter in _TYPED_KEYS:
            if key in attrs:
                try:
                    kwargs[option] = converter(attrs[key])
                except _Bad as exc:
                    found.append(SettingProblem(key, str(exc), attrs[key], show_value=key != "password"))
        kwargs["ssh_key_files"] = _paths(attrs.get("ssh_key_filename")) + _paths(attrs.get("ssh_private_key_file"))
        kwargs["s3"] = _s3_settings(attrs, found)
        kwargs["unknown"] = tuple(sorted(key for key in attrs if key not in KNOWN_KEYS))
        if kwargs.get("use_tmp") is not False and not (kwargs.get("tmp_prefix", ".") or kwargs.get("tmp_suffix")):
            found.append(SettingProblem("tmp_prefix", "tmp_prefix and tmp_suffix both empty would upload "
                                        "straight to the final name; set use_tmp_on_transfer = false instead",
                                        show_value=False))
            kwargs.pop("tmp_prefix", None)
        if found:
            if problems is None:
                raise InvalidSettingError(str(found[0]))
            problems.extend(found)
        options = cls(**kwargs)
        if options.unknown:
            logger.debug("Ignoring unknown connection parameters: %s", ", ".join(options.unknown))
        return options

    def replace(self, **changes: Any) -> TransferOptions:
        return dataclasses.replace(self, **changes)

    def fingerprint(self, *values: Any) -> str:
        """A short digest of connection-affecting values, for pool keys without secrets in clear."""
        digest = hashlib.blake2b(digest_size=8, key=_FINGERPRINT_KEY)
        for value in values:
            digest.update(repr(value).encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
        return digest.hexdigest()


def _s3_settings(attrs: Mapping[str, Any], problems: list[SettingProblem]) -> dict[str, Any]:
    """The S3 settings among ``attrs``, with the typed ones converted (bad ones reported and left out)."""
    settings = {key: value for key, value in attrs.items() if key in S3_ALLOWED_SETTINGS}
    for key, converter in _S3_TYPED_KEYS:
        if key in settings:
            try:
                settings[key] = converter(settings[key])
            except _Bad as exc:
                problems.append(SettingProblem(key, str(exc), settings.pop(key)))
    for key in _S3_MAPPING_KEYS:
        if key in settings and not isinstance(settings[key], Mapping):
            problems.append(SettingProblem(key, "expected a mapping of keyword arguments", settings.pop(key)))
    return settings


_FINGERPRINT_KEY = os.urandom(16)
"""Per-process key so that pool-key digests of secrets cannot be looked up offline."""
