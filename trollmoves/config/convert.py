"""Raw mappings into typed values with the dataclasses' field converters, every bad value reported.

Shared by all the readers: field conversion, the typing of ``connection_parameters``
into transfer options (so that a bad value is a load error naming file, section and
key, not a failure at the first transfer), the ``[trollmoves]`` daemon settings, and
the resulting ``Config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from trollmoves.config.model import DAEMON_SECTION, Config, DaemonSettings, _is_key, thaw
from trollmoves.config.report import _Report, _show
from trollmoves.values import WHOLE_VALUE, Invalid


def _convert_fields(cls: type, section: str | None, raw: Mapping[str, Any], report: _Report,
                    secret_keys: frozenset[str] = frozenset(),
                    inherited: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """Convert raw values with the field converters of ``cls``; report and return None on error.

    ``inherited`` names keys that come from ``[DEFAULT]``: their messages say so,
    or the reader would look for the key in the section named and not find it.
    """
    values: dict[str, Any] = {}
    ok = True
    for fld in dataclasses.fields(cls):
        if fld.name in ("name",) or not _is_key(fld):
            continue
        if fld.name in raw:
            value = raw[fld.name]
            try:
                values[fld.name] = fld.metadata["conv"](value)
            except Invalid as exc:
                found = value if exc.got is WHOLE_VALUE else exc.got
                shown = "'***'" if fld.name in secret_keys else _show(found)
                origin = " (inherited from [DEFAULT])" if fld.name in inherited else ""
                report.error(section, fld.name, f"{exc}, got {shown}{origin}")
                ok = False
        elif fld.metadata.get("required"):
            doc = fld.metadata.get("doc")
            report.error(section, fld.name, "missing required key" + (f" ({doc})" if doc else ""))
            ok = False
    return values if ok else None


def _known_keys(cls: type) -> set[str]:
    return {fld.name for fld in dataclasses.fields(cls) if _is_key(fld)}


def _transfer_options(to_type: Mapping[str, Any], spelled: Mapping[str, str], checksum: str | None,
                      section: str | None, report: _Report, schemes: tuple[str, ...] = (),
                      ignored: str = "no mover uses it, ignored (the S3 mover refuses it)") -> Any | None:
    """Type connection parameters now, so that a bad value is a load error naming file, section and key.

    ``checksum`` is the chain's own key, the default of ``connection_parameters__checksum``.
    ``schemes`` are the destination schemes known at load (move_it, dispatcher): the S3 mover
    refuses keys it does not know, so an S3 destination makes unknown keys an error.
    None (reported) when a value is bad.
    """
    from trollmoves.movers.options import TransferOptions

    attrs = dict(to_type)
    if checksum is not None:
        attrs.setdefault("checksum", checksum)
    problems: list = []
    options = TransferOptions.from_attrs(thaw(attrs), problems)
    for problem in problems:
        shown = f", got {_show(problem.value)}" if problem.show_value else ""
        report.error(section, spelled.get(problem.key, f"connection_parameters__{problem.key}"),
                     f"{problem.expected}{shown}")
    for unknown in options.unknown:
        where = spelled.get(unknown, unknown)
        if "s3" in schemes:
            report.error(section, where, "unknown setting: the S3 mover refuses it")
            problems.append(unknown)
        else:
            report.warn(section, where, f"unknown setting: {ignored}")
    return None if problems else options


def _schemes(urls: Any) -> tuple[str, ...]:
    """The schemes of destination URLs (templates included), lower case; ``file`` for plain paths."""
    return tuple(urlsplit(str(url).split("{", 1)[0]).scheme.lower() or "file" for url in urls if url)


def _daemon_settings(raw: Mapping[str, Any] | None, report: _Report, section: str = DAEMON_SECTION
                     ) -> DaemonSettings:
    if raw is None:
        return DaemonSettings()
    if not isinstance(raw, Mapping):
        report.error(section, None, f"expected a table/mapping of daemon settings (metrics_port, ...), "
                                    f"got {_show(raw)}")
        return DaemonSettings()
    known = _known_keys(DaemonSettings)
    for name in raw:
        if name not in known:
            report.warn(section, name, "unknown daemon setting, ignored")
    values = _convert_fields(DaemonSettings, section, {k: v for k, v in raw.items() if k in known}, report)
    return DaemonSettings(**(values or {}))


def _check_interval_chains(daemon: DaemonSettings | None, chains: Any, report: _Report) -> None:
    """``expected_intervals`` naming no chain of the file: a warning (a typo would silently set nothing)."""
    if daemon is None or not daemon.expected_intervals:
        return
    names = [chain.name for chain in chains or ()]
    for name, _seconds in daemon.expected_intervals:
        if name not in names:
            report.warn(DAEMON_SECTION, "expected_intervals", f"no chain named {name!r} in this file "
                                                               f"(chains: {', '.join(names) or 'none'})")


def _finish(path: str, kind: str, report: _Report, **kwargs: Any) -> Config:
    _check_interval_chains(kwargs.get("daemon"), kwargs.get("chains"), report)
    return Config(path=path, kind=kind, errors=tuple(report.errors), warnings=tuple(report.warnings), **kwargs)
