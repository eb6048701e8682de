"""The INI kinds (server, client, mirror, move_it): sections into chain objects.

One section is one chain. ``connection_parameters__<key>`` lines nest into a
mapping, 0.19's deprecated top-level connection keys are folded in with a warning,
and the rules that involve several keys are checked once every key is typed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from trollmoves.config.convert import (
    _convert_fields,
    _daemon_settings,
    _finish,
    _known_keys,
    _schemes,
    _transfer_options,
)
from trollmoves.config.formats import _ini_like
from trollmoves.config.model import CHAIN_CLASSES, DAEMON_SECTION, Config, _freeze, _refuse, _warn_ignored
from trollmoves.config.report import _Report


_DEPRECATED_CONNECTION_KEYS = ("connection_uptime", "ssh_key_filename", "ssh_connection_timeout",
                               "ssh_private_key_file")


def _nested(raw: Mapping[str, Any], section: str, report: _Report) -> dict[str, Any]:
    """Fold ``a__b__c = v`` keys into nested dicts, values as written (see ``_ini_scalars``)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if "__" not in name:
            continue
        parts = name.split("__")
        if any(not part for part in parts):
            report.error(section, name, "expected name__key, got an empty part")
            continue
        target = out
        for part in parts[:-1]:
            existing = target.setdefault(part, {})
            if not isinstance(existing, dict):
                report.error(section, name, f"conflicts with the plain key {part}")
                break
            target = existing
        else:
            target[parts[-1]] = value
    return out


def _ini_scalars(value: Any) -> Any:
    """Nested values with true/false/0/1 turned into booleans, as the original's INI reader does."""
    if isinstance(value, Mapping):
        return {k: _ini_scalars(v) for k, v in value.items()}
    return _ini_scalar(value)


def _ini_scalar(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("0", "false"):
            return False
        if lowered in ("1", "true"):
            return True
        return value.strip()
    return value


def _connection_parameters(raw: Mapping[str, Any], nested: dict[str, Any], section: str,
                           report: _Report) -> tuple[Mapping[str, Any], dict[str, Any], dict[str, str]]:
    """(the mapping as 0.19 builds it, the values to type, how each key is spelled in the file).

    The values to type are those written, except that S3 settings keep 0.19's booleans
    (s3fs/boto3 get them as they always did); text keys stay text (a password ``1``).
    """
    params: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    to_type: dict[str, Any] = {}
    direct = raw.get("connection_parameters")
    if direct is not None:
        if isinstance(direct, Mapping):
            params.update(direct)
            to_type.update(direct)
            spelled.update({k: f"connection_parameters.{k}" for k in direct})
        else:
            report.error(section, "connection_parameters",
                         "expected a table/mapping (or connection_parameters__<key> = value lines)")
    for name, value in nested.get("connection_parameters", {}).items():
        params[name] = _ini_scalars(value)
        to_type[name] = value
        spelled[name] = f"connection_parameters__{name}"
    for old in _DEPRECATED_CONNECTION_KEYS:
        if old in raw:
            report.warn(section, old, f"deprecated; use connection_parameters__{old} instead (applied)")
            if old not in params:
                params[old] = _ini_scalar(raw[old])
                to_type[old] = raw[old]
                spelled[old] = old
    from trollmoves.movers.options import TEXT_KEYS

    to_type = {k: (v if k in TEXT_KEYS else params[k]) for k, v in to_type.items()}
    return _freeze(params), to_type, spelled


def _build_chain(kind: str, name: str, raw: Mapping[str, Any], default_keys: set[str],
                 report: _Report, inherited: frozenset[str] = frozenset()) -> Any | None:
    cls = CHAIN_CLASSES[kind]
    known = _known_keys(cls) | set(_DEPRECATED_CONNECTION_KEYS)
    nested = _nested(raw, name, report)
    plain = {k: v for k, v in raw.items() if "__" not in k}
    unknown = [k for k in plain if k not in known]
    replace_mda: dict[str, str] = {}
    for unknown_key in unknown:
        if kind == "client":
            replace_mda[unknown_key] = str(plain[unknown_key])
            if unknown_key not in default_keys:
                report.warn(name, unknown_key, "not a client key; used as metadata replacement (replace_mda)")
        elif unknown_key not in default_keys:
            report.warn(name, unknown_key, f"unknown key for a {kind} section, ignored")
    for group in nested:
        if group == "connection_parameters" and "connection_parameters" not in known:
            report.warn(name, "connection_parameters__...", f"a {kind} does no transfer (the server does), "
                        "ignored")
        elif group != "connection_parameters" and group not in known:
            report.warn(name, f"{group}__...", f"unknown nested key group for a {kind} section, ignored")
    plain = _empty_means_unset(plain, name, report)
    refused_ok = _refuse(kind, name, plain, report)
    _warn_ignored(kind, name, [k for k in plain if k not in default_keys], report)
    values = _convert_fields(cls, name, plain, report, secret_keys=frozenset({"login"}), inherited=inherited)
    options = None
    if "connection_parameters" in known:
        params, to_type, spelled = _connection_parameters(plain, nested, name, report)
        checksum = values.get("checksum", "xxh3_128") if values is not None else None
        schemes = _schemes(values.get("destinations", ())) if values is not None else ()
        options = _transfer_options(to_type, spelled, checksum, name, report, schemes)
        if values is not None:
            values["connection_parameters"] = params
            values["transfer_options"] = options
        if options is None:
            return None
    if values is None or not refused_ok:
        return None
    if kind == "client":
        values["replace_mda"] = MappingProxyType(replace_mda)
    if not _check_chain(kind, name, values, report):
        return None
    return cls(name=name, **values)


_EMPTY_MEANS_UNSET = ("publish_port", "publisher_port")
"""Keys that 0.19 read as unset when empty (``publish_port =`` is in its own move_it example)."""


def _empty_means_unset(plain: Mapping[str, Any], section: str, report: _Report) -> dict[str, Any]:
    """Drop an empty ``publish_port =`` with a warning instead of refusing the section."""
    kept = dict(plain)
    for name in _EMPTY_MEANS_UNSET:
        if isinstance(kept.get(name), str) and not kept[name].strip():
            report.warn(section, name, "empty value, treated as unset (default applies)")
            del kept[name]
    return kept


def _check_chain(kind: str, name: str, values: dict[str, Any], report: _Report) -> bool:
    """Rules that involve several keys."""
    ok = True
    if kind in ("server", "mirror"):
        if not values.get("origin") and not values.get("listen"):
            report.error(name, "origin", "missing required key (a server chain needs origin or listen)")
            ok = False
        skip = values.get("origin_inotify_base_dir_skip_levels")
        origin = values.get("origin")
        if origin and "{" in os.path.dirname(origin) and skip is None:
            report.warn(name, "origin", "has {fields} in its directory part; set "
                        "origin_inotify_base_dir_skip_levels to watch the directories that appear later")
    if kind in ("server", "move_it") and values.get("compression") == "xrit" and not values.get("prog"):
        report.error(name, "prog", "missing decompressor for compression = xrit")
        ok = False
    pairs = (("curve_secret_key_file", "curve_clients_directory") if kind in ("server", "mirror")
             else ("curve_secret_key_file", "curve_server_public_key_file") if kind == "client" else ())
    if pairs and bool(values.get(pairs[0])) != bool(values.get(pairs[1])):
        missing = pairs[1] if values.get(pairs[0]) else pairs[0]
        report.error(name, missing, f"missing: CURVE needs both {pairs[0]} and {pairs[1]}")
        ok = False
    if kind == "client":
        if values.get("compression") == "xrit" and not values.get("xritdecompressor"):
            report.warn(name, "xritdecompressor", "missing for compression = xrit: the client runs, but each "
                        "compressed file it receives fails to decompress (logged with its name)")
        if not values.get("topic") and not all(p.topic for p in values.get("providers", ())):
            report.error(name, "topic", "missing required key (or give every provider a /topic)")
            ok = False
    return ok


def _load_chains(path: str, kind: str, report: _Report) -> Config:
    parsed = _ini_like(path, report)
    if parsed is None:
        return _finish(path, kind, report)
    sections, defaults, own_keys = parsed
    daemon_raw = sections.pop(DAEMON_SECTION, None)
    daemon = _daemon_settings(daemon_raw, report)
    default_keys = set(defaults)
    known = _known_keys(CHAIN_CLASSES[kind]) | set(_DEPRECATED_CONNECTION_KEYS)
    for default_key in defaults:
        if "__" not in default_key and default_key not in known and kind != "client":
            report.warn("DEFAULT", default_key, f"unknown key for a {kind} config, ignored")
    _warn_ignored(kind, "DEFAULT", defaults, report)
    if not sections:
        report.error(None, None, f"no sections: a {kind} config needs at least one [chain] section")
    chains = []
    for name, raw in sections.items():
        inherited = frozenset(default_keys - own_keys.get(name, frozenset()))
        chain = _build_chain(kind, name, raw, default_keys, report, inherited)
        if chain is not None:
            chains.append(chain)
    _check_unique_ports(kind, chains, report)
    return _finish(path, kind, report, chains=tuple(chains), daemon=daemon)


def _check_unique_ports(kind: str, chains: list, report: _Report) -> None:
    """Two chains on one request port is a start-up error, caught here (the original hangs, §7.7)."""
    seen: dict[int, str] = {}
    for chain in list(chains):
        port = getattr(chain, "request_port", None)
        if port is None or kind == "move_it":
            continue
        if port in seen:
            report.error(chain.name, "request_port", f"port {port} is already used by section [{seen[port]}]")
            chains.remove(chain)
        else:
            seen[port] = chain.name
