"""The entry points: ``load`` (never raises for content problems), ``load_strict`` and ``describe_keys``.

``load`` picks the reader for the kind (given, or guessed from the content) and
raises ConfigError only when the file cannot be read at all.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from trollmoves.config.dispatch import _load_dispatcher
from trollmoves.config.kinds import guess_kind
from trollmoves.config.model import CHAIN_CLASSES, KINDS, Config, _is_key
from trollmoves.config.report import _Report
from trollmoves.config.s3 import S3DownloaderSettings, _load_s3downloader
from trollmoves.config.sections import _load_chains
from trollmoves.config.wis2 import CHAIN_CLASSES as WIS2_CHAIN_CLASSES
from trollmoves.config.wis2 import _load_wis2
from trollmoves.errors import ConfigError


def load(path: str | os.PathLike, kind: str | None = None) -> Config:
    """Load and validate a config file; never raises for content problems (see ``Config.errors``).

    Raises ConfigError only when the file cannot be read at all.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory, expected a config file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{path}: permission denied")
    kind = kind or guess_kind(path)
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}, expected one of {', '.join(KINDS)}")
    report = _Report(path)
    try:
        if kind in CHAIN_CLASSES:
            return _load_chains(path, kind, report)
        if kind == "dispatcher":
            return _load_dispatcher(path, report)
        if kind == "wis2":
            return _load_wis2(path, report)
        return _load_s3downloader(path, report)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load_strict(path: str | os.PathLike, kind: str | None = None) -> Config:
    """Load a config and raise ConfigError listing every error, if there is any."""
    config = load(path, kind)
    if config.errors:
        raise ConfigError(list(config.errors))
    return config


def describe_keys(kind: str) -> list[tuple[str, str, Any, str]]:
    """(key, required/optional, default, doc) for every key of a kind: for --help texts and docs."""
    classes = [CHAIN_CLASSES.get(kind) or {"s3downloader": S3DownloaderSettings}.get(kind)]
    if kind == "wis2":
        classes = list(WIS2_CHAIN_CLASSES.values())
    rows = []
    names: set[str] = set()
    for fld in (fld for cls in classes if cls is not None for fld in dataclasses.fields(cls)):
        if fld.name == "name" or not _is_key(fld) or fld.name in names:
            continue
        names.add(fld.name)
        rows.append((fld.name, "required" if fld.metadata.get("required") else "optional", fld.default,
                     fld.metadata.get("doc", "")))
    return rows
