"""The s3downloader's YAML/TOML: one settings object (0.19's dashed key spelling accepted).

Its ``s3_kwargs`` are typed as the S3 mover's options at load, and the ``logging``
mapping 0.19 read is checked, so that a bad value is a load error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trollmoves.config.convert import _convert_fields, _daemon_settings, _finish, _known_keys, _transfer_options
from trollmoves.config.converters import (
    Invalid,
    to_checksum,
    to_comma_list,
    to_int,
    to_list,
    to_nameserver,
    to_nameservers,
    to_nonempty_str,
    to_port,
)
from trollmoves.config.formats import _load_structured
from trollmoves.config.model import (
    DAEMON_SECTION,
    EMPTY_MAPPING,
    Config,
    _freeze,
    _options_of,
    _redacted_repr,
    derived,
    key,
    thaw,
)
from trollmoves.config.report import _Report, _show


@dataclass(frozen=True)
class S3DownloaderSettings:
    """The s3downloader YAML (original keys; dashes as the original spells them)."""

    __repr__ = _redacted_repr

    name: str = "s3downloader"
    bucket: str = key(to_nonempty_str, required=True, doc="bucket to download from")
    download_destination: str = key(to_nonempty_str, ".", doc="local directory")
    subscribe_topic: tuple[str, ...] = key(to_list, (), doc="topics of new-object announcements")
    publish_topic: str | None = key(to_nonempty_str, doc="subject of republished messages")
    s3_kwargs: Mapping[str, Any] = key(lambda v: v, EMPTY_MAPPING, doc="s3fs.S3FileSystem arguments")
    services: tuple[str, ...] = key(to_list, ())
    subscriber_addresses: tuple[str, ...] = key(to_comma_list, ())
    nameserver: str | bool | None = key(to_nameserver)
    publish_port: int = key(to_port, 0)
    nameservers: tuple[str, ...] | bool | None = key(to_nameservers)
    logging: Mapping[str, Any] = key(lambda v: v, EMPTY_MAPPING)
    checksum: str = key(to_checksum, "xxh3_128")
    transfer_options: Any = derived("s3_kwargs typed (S3 mover spelling): what the S3 client is built from")

    def __post_init__(self) -> None:
        """Settings built in code, not loaded from a file, get their typed S3 options here."""
        if self.transfer_options is None:
            object.__setattr__(self, "transfer_options", _options_of(self.s3_kwargs, None))


S3DOWNLOADER_LOGGING_KEYS = {"log_rotation_days": 1, "log_rotation_backup": 30, "logging_mode": "INFO"}


def _check_s3downloader_logging(section: Any, report: _Report) -> None:
    """The ``logging`` mapping 0.19's s3downloader read (used by trollmoves.s3downloader.apply_logging)."""
    if not isinstance(section, Mapping):
        return
    for name, value in section.items():
        where = f"logging.{name}"
        if name not in S3DOWNLOADER_LOGGING_KEYS:
            report.warn(None, where, "unknown logging key, ignored (known: "
                        f"{', '.join(S3DOWNLOADER_LOGGING_KEYS)})")
        elif name == "logging_mode":
            if not isinstance(value, str):
                report.error(None, where, f"expected DEBUG or INFO, got {_show(value)}")
        else:
            try:
                number = to_int(value)
            except Invalid as exc:
                report.error(None, where, f"{exc}, got {_show(value)}")
                continue
            if number < (1 if name == "log_rotation_days" else 0):
                report.error(None, where, f"expected an integer >= {1 if name == 'log_rotation_days' else 0}, "
                                          f"got {_show(value)}")


def _load_s3downloader(path: str, report: _Report) -> Config:
    data = _load_structured(path, report)
    if data is None:
        return _finish(path, "s3downloader", report)
    if not isinstance(data, Mapping):
        report.error(None, None, "expected a mapping at the top level")
        return _finish(path, "s3downloader", report)
    raw = {str(k).replace("-", "_"): v for k, v in data.items()}
    daemon = _daemon_settings(raw.pop(DAEMON_SECTION, None), report)
    known = _known_keys(S3DownloaderSettings)
    for unknown_key in set(raw) - known:
        report.warn(None, unknown_key, "unknown key for an s3downloader config, ignored")
    for mapping_key in ("s3_kwargs", "logging"):
        if mapping_key in raw and not isinstance(raw[mapping_key], Mapping):
            report.error(None, mapping_key.replace("_", "-") if mapping_key == "logging" else mapping_key,
                         f"expected a mapping, got {_show(raw[mapping_key])}")
            raw.pop(mapping_key)
    _check_s3downloader_logging(raw.get("logging"), report)
    values = _convert_fields(S3DownloaderSettings, None, {k: v for k, v in raw.items() if k in known}, report)
    chains: tuple[Any, ...] = ()
    if values is not None and not report.errors:
        for mapping_key in ("s3_kwargs", "logging"):
            if mapping_key in values:
                values[mapping_key] = _freeze(dict(values[mapping_key]))
        kwargs = thaw(values.get("s3_kwargs", {}))
        options = _transfer_options(kwargs, {k: f"s3_kwargs.{k}" for k in kwargs}, None, None, report,
                                    ignored="not an S3 setting, ignored")
        if options is not None:
            chains = (S3DownloaderSettings(transfer_options=options, **values),)
    return _finish(path, "s3downloader", report, chains=chains, daemon=daemon)
