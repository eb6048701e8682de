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

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class InvalidSettingError(PermanentTransferError, ValueError):
    """A connection parameter is unknown or has a value of the wrong kind."""


def to_bool(key: str, value: Any) -> bool:
    """INI-friendly boolean: true/false/yes/no/on/off/1/0 (never ``bool('False')``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidSettingError(f"connection_parameters {key}: expected a boolean (true/false), got {value!r}")


def to_float(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidSettingError(f"connection_parameters {key}: expected a number, got {value!r}") from None
    if number < 0:
        raise InvalidSettingError(f"connection_parameters {key}: expected a number >= 0, got {value!r}")
    return number


def to_int(key: str, value: Any) -> int:
    return int(to_float(key, value))


def to_size(key: str, value: Any) -> int:
    """Bytes from ``1048576``, ``"64K"``, ``"8M"``, ``"1G"`` or ``"8MiB"``."""
    if isinstance(value, (int, float)):
        return to_int(key, value)
    text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
    factor = 1
    if text and text[-1] in _SIZE_UNITS:
        factor, text = _SIZE_UNITS[text[-1]], text[:-1]
    return int(to_float(key, text) * factor)


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
    def from_attrs(cls, attrs: Mapping[str, Any] | None) -> TransferOptions:
        """Build options from a ``connection_parameters`` mapping (never mutated)."""
        attrs = {key: value for key, value in (attrs or {}).items() if value is not None}
        kwargs: dict[str, Any] = {}
        if "checksum" in attrs:
            try:
                kwargs["checksum"] = normalise_method(attrs["checksum"])
            except ValueError as err:
                raise InvalidSettingError(f"connection_parameters {err}") from None
        for key, option in (("verify", "verify"), ("use_tmp_on_transfer", "use_tmp"), ("hardlink", "hardlink"),
                            ("fsync", "fsync"), ("ssh_allow_agent", "ssh_allow_agent"),
                            ("ftp_passive", "ftp_passive")):
            if key in attrs:
                kwargs[option] = to_bool(key, attrs[key])
        for key in ("connection_uptime", "retry_delay", "retry_backoff", "retry_delay_max", "connect_timeout",
                    "timeout"):
            if key in attrs:
                kwargs[key] = to_float(key, attrs[key])
        if "ssh_connection_timeout" in attrs:
            kwargs["connect_timeout"] = to_float("ssh_connection_timeout", attrs["ssh_connection_timeout"])
        if "scpclient_timeout_seconds" in attrs:
            kwargs["timeout"] = to_float("scpclient_timeout_seconds", attrs["scpclient_timeout_seconds"])
        for key in ("retries", "num_retries"):
            if key in attrs:
                kwargs["retries"] = to_int(key, attrs[key])
        if "num_ssh_retries" in attrs:  # 0.19: total attempts
            kwargs["retries"] = max(0, to_int("num_ssh_retries", attrs["num_ssh_retries"]) - 1)
        if "buffer_size" in attrs:
            kwargs["buffer_size"] = max(64 << 10, to_size("buffer_size", attrs["buffer_size"]))
        if "openssh_threshold" in attrs:
            kwargs["openssh_threshold"] = to_size("openssh_threshold", attrs["openssh_threshold"])
        for key in ("tmp_prefix", "tmp_suffix", "username", "password"):
            if key in attrs:
                kwargs[key] = str(attrs[key])
        for key in ("known_hosts", "netrc_file"):
            if key in attrs:
                kwargs[key] = os.path.expanduser(str(attrs[key]))
        kwargs["ssh_key_files"] = _paths(attrs.get("ssh_key_filename")) + _paths(attrs.get("ssh_private_key_file"))
        kwargs["s3"] = {key: value for key, value in attrs.items() if key in S3_ALLOWED_SETTINGS}
        kwargs["unknown"] = tuple(sorted(key for key in attrs if key not in KNOWN_KEYS))
        if kwargs.get("use_tmp") is not False and not (kwargs.get("tmp_prefix", ".") or kwargs.get("tmp_suffix")):
            raise InvalidSettingError("connection_parameters tmp_prefix/tmp_suffix: both empty would upload "
                                      "straight to the final name; set use_tmp_on_transfer = false instead")
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


_FINGERPRINT_KEY = os.urandom(16)
"""Per-process key so that pool-key digests of secrets cannot be looked up offline."""
