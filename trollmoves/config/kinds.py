"""Which daemon a config file is for, from its content (``check-config`` without ``--kind``).

A file of another pytroll program (a remove_it or fetcher config) is named as such
instead of being reported as a broken trollmoves config.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trollmoves.config.formats import _load_structured, _read_ini, _read_toml_sections, is_toml
from trollmoves.config.model import DAEMON_SECTION
from trollmoves.config.report import _Report
from trollmoves.errors import ConfigError


class NotADaemonConfig(ConfigError):
    """The file is readable but is no trollmoves daemon config (a remove_it or fetcher config...)."""


_SERVER_KEYS = frozenset({"origin", "listen", "request_port", "topic"})
_CLIENT_KEYS = frozenset({"providers", "destination", "client_topic"})
_FOREIGN_INI = (({"base_dir", "templates"}, "a remove_it config"),)
_FOREIGN_YAML = (({"subscriber_config", "publisher_config"}, "a pytroll-fetcher config"),)
_WIS2_KEYS = frozenset({"broker", "direction"})
_S3_KEYS = frozenset({"bucket", "download_destination", "subscribe_topic", "s3_kwargs"})


def detect_kind(path: str) -> tuple[str | None, str]:
    """(kind, what the file looks like) from the file's content; kind None when it is no daemon config.

    The format comes from the extension when it says one (``.toml``; ``.yaml``/``.yml``, also
    inside ``*.yaml-template`` or ``*.yml.j2``), else from the content: INI, or YAML when it is
    no INI. A file that cannot be parsed keeps the kind of its format, so that its syntax
    error is reported.
    """
    report = _Report(path)
    if is_toml(path):
        data = _load_structured(path, report)
        if _yaml_kind_of(data, _TARGET_MARKS_TOML) is not None:
            return _yaml_kind_of(data, _TARGET_MARKS_TOML), "toml"
        parsed = _read_toml_sections(data, report) if data is not None else None
        return _ini_kind_of(parsed[0] if parsed else None)
    if not _names_yaml(path):
        parsed = _read_ini(path, report)
        if parsed is not None or not _parses_as_yaml_mapping(path):
            return _ini_kind_of(parsed[0] if parsed else None)
    data = _load_structured(path, report)
    if data is None or not isinstance(data, Mapping):
        return "dispatcher", "yaml"
    kind = _yaml_kind_of(data, _TARGET_MARKS_YAML)
    if kind is not None:
        return kind, "yaml"
    keys = {str(k).replace("-", "_") for k in data}
    for marks, looks_like in _FOREIGN_YAML:
        if keys & marks:
            return None, looks_like
    return None, "a YAML file with no dispatcher targets (dispatch_configs) nor s3downloader keys (bucket)"


def _names_yaml(path: str) -> bool:
    """``x.yaml``, ``x.yml``, ``x.yaml-template``, ``x.yml.j2``: the name says YAML."""
    return any(part.lower().startswith(("yaml", "yml")) for part in Path(path).name.split(".")[1:])


def _parses_as_yaml_mapping(path: str) -> bool:
    data = _load_structured(path, _Report(path))
    return isinstance(data, Mapping)


_TARGET_MARKS_YAML = frozenset({"dispatch_configs", "host", "directory", "filepattern"})
_TARGET_MARKS_TOML = frozenset({"dispatch_configs"})
"""Keys that make a top-level table a dispatcher target; in TOML, where the INI kinds' sections are
tables too, only ``dispatch_configs``."""


def _yaml_kind_of(data: Any, target_marks: frozenset[str]) -> str | None:
    """dispatcher or s3downloader from a mapping's keys, None for anything else."""
    if not isinstance(data, Mapping):
        return None
    keys = {str(k).replace("-", "_") for k in data}
    if keys & _S3_KEYS:
        return "s3downloader"
    if "posttroll_subscriber" in keys:
        return "dispatcher"
    if any(isinstance(v, Mapping) and set(v) & target_marks for v in data.values()):
        return "dispatcher"
    return None


def _ini_kind_of(sections: Mapping[str, Mapping[str, Any]] | None) -> tuple[str | None, str]:
    """server, client, mirror or move_it from the keys of the sections; None for another program's INI."""
    if not sections:
        return "server", "ini"  # unreadable or empty: the server loader reports why
    keys = set().union(*(set(s) for n, s in sections.items() if n != DAEMON_SECTION))
    if keys & _WIS2_KEYS:
        return "wis2", "ini"
    if "destinations" in keys:
        return "move_it", "ini"
    client_side = keys & _CLIENT_KEYS
    if client_side and (keys & {"origin", "listen", "request_port", "client_topic"}):
        return "mirror", "ini"
    if client_side:
        return "client", "ini"
    if keys & _SERVER_KEYS:
        return "server", "ini"
    for marks, looks_like in _FOREIGN_INI:
        if keys & marks:
            return None, looks_like
    return None, ("an INI file whose sections have none of the keys of a server (origin, topic), a client "
                  "(providers, destination) or a move_it (destinations)")


def guess_kind(path: str) -> str:
    """Guess which daemon a config file is for, from its content (check-config without --kind).

    Raises NotADaemonConfig for a file of another program.
    """
    kind, looks_like = detect_kind(path)
    if kind is None:
        raise NotADaemonConfig(f"{path}: not a trollmoves daemon config (looks like {looks_like})")
    return kind
