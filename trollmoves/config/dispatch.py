"""The dispatcher's YAML/TOML: targets, their dispatch configs, the subscriber and the retry queue.

Each top-level mapping is a target (a customer); ``posttroll_subscriber``, ``retry``
and ``trollmoves`` are reserved. Conditions are checked at load, so that a typo in a
numeric comparison is not found when the first file is dispatched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
from trollmoves.config.converters import (
    Invalid,
    to_list,
    to_nameserver,
    to_nonempty_str,
    to_nonneg_float,
    to_template,
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
)
from trollmoves.config.report import _Report, _show


@dataclass(frozen=True)
class DispatchConfig:
    """One item of a target's ``dispatch_configs``: topics, conditions, optional overrides."""

    topics: tuple[str, ...]
    conditions: tuple[Mapping[str, Any], ...] = ()
    host: str | None = None
    directory: str | None = None
    filepattern: str | None = None


@dataclass(frozen=True)
class DispatchTarget:
    """A dispatcher target (a customer): where and how files matching its dispatch configs go."""

    __repr__ = _redacted_repr

    name: str
    host: str = ""
    directory: str = ""
    filepattern: str | None = None
    connection_parameters: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)
    transfer_options: Any = derived("connection_parameters typed: what the movers receive")
    aliases: Any = None
    publish_topic: str | None = None
    dispatch_configs: tuple[DispatchConfig, ...] = ()

    def __post_init__(self) -> None:
        """A target built in code, not loaded from a file, gets its typed transfer options here."""
        if self.transfer_options is None:
            object.__setattr__(self, "transfer_options", _options_of(self.connection_parameters, None))


@dataclass(frozen=True)
class SubscriberSettings:
    """The dispatcher's ``posttroll_subscriber`` mapping."""

    subscribe_addresses: tuple[str, ...] = ()
    nameserver: str | bool = "localhost"
    subscribe_services: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrySettings:
    """Our dispatcher's on-disk retry queue."""

    max_age: float = key(to_nonneg_float, 86400.0, doc="give up on a failed dispatch after this many seconds")
    initial_delay: float = key(to_nonneg_float, 5.0)
    max_delay: float = key(to_nonneg_float, 600.0)
    state_directory: str | None = key(to_nonempty_str)


_TARGET_KEYS = {"host", "directory", "filepattern", "connection_parameters", "aliases", "publish_topic",
                "dispatch_configs"}
_DISPATCH_CONFIG_KEYS = {"topics", "conditions", "host", "directory", "filepattern"}
_CONDITION_OPERATORS = ("<=", ">=", "!=", "==", "<", ">", "=", "!")


def _check_condition_value(value: Any) -> None:
    if isinstance(value, str) and value[:1] in "<>=!":
        for operator in _CONDITION_OPERATORS:
            if value.startswith(operator):
                rest = value[len(operator):].strip()
                try:
                    float(rest)
                except ValueError:
                    raise Invalid(f"expected a numeric comparison such as '<30', got {value!r}") from None
                return


def _check_conditions(target: str, index: int, conditions: Any, report: _Report) -> tuple[Mapping, ...] | None:
    where = f"{target}.dispatch_configs[{index}]"
    if conditions is None:
        return ()
    if isinstance(conditions, Mapping):
        conditions = [conditions]
    if not isinstance(conditions, list):
        report.error(where, "conditions", "expected a list of condition mappings")
        return None
    out = []
    for cond in conditions:
        if not isinstance(cond, Mapping):
            report.error(where, "conditions", f"expected a mapping of key: value, got {_show(cond)}")
            return None
        to_check = dict(cond)
        excepted = to_check.pop("except", None)
        if excepted is not None and not isinstance(excepted, Mapping):
            report.error(where, "conditions.except", "expected a mapping of key: value")
            return None
        for cond_key, value in list(to_check.items()) + list((excepted or {}).items()):
            for item in value if isinstance(value, list) else [value]:
                try:
                    _check_condition_value(item)
                except Invalid as exc:
                    report.error(where, f"conditions.{cond_key}", str(exc))
                    return None
        out.append(_freeze(dict(cond)))
    return tuple(out)


def _dispatch_target(name: str, raw: Any, report: _Report) -> DispatchTarget | None:
    if not isinstance(raw, Mapping):
        report.error(name, None, f"expected a target mapping (host, directory, dispatch_configs...), got {_show(raw)}")
        return None
    for unknown_key in set(raw) - _TARGET_KEYS:
        report.warn(name, unknown_key, "unknown key for a dispatcher target, ignored")
    ok = True
    values: dict[str, Any] = {"name": name}
    for text_key in ("host", "directory", "filepattern", "publish_topic"):
        if text_key in raw and raw[text_key] is not None:
            try:
                values[text_key] = to_template(raw[text_key]) if text_key != "host" or raw[text_key] else ""
            except Invalid as exc:
                report.error(name, text_key, f"{exc}, got {_show(raw[text_key])}")
                ok = False
    params = raw.get("connection_parameters")
    if params is not None and not isinstance(params, Mapping):
        report.error(name, "connection_parameters", "expected a mapping")
        ok = False
    aliases = raw.get("aliases")
    if aliases is not None and not isinstance(aliases, (Mapping, list)):
        report.error(name, "aliases", "expected a mapping {field: {value: alias}} or a list of such mappings")
        ok = False
    configs = raw.get("dispatch_configs")
    if not isinstance(configs, list) or not configs:
        report.error(name, "dispatch_configs", "missing required key (a list of {topics: [...], conditions: ...})")
        return None
    dispatch_configs = []
    for index, item in enumerate(configs):
        where = f"{name}.dispatch_configs[{index}]"
        if not isinstance(item, Mapping):
            report.error(where, None, "expected a mapping with topics")
            ok = False
            continue
        for unknown_key in set(item) - _DISPATCH_CONFIG_KEYS:
            report.warn(where, unknown_key, "unknown key in dispatch_configs, ignored")
        topics = item.get("topics")
        if isinstance(topics, str):
            topics = [topics]
        if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t for t in topics):
            report.error(where, "topics", f"expected a list of topic prefixes, got {_show(topics)}")
            ok = False
            continue
        conditions = _check_conditions(name, index, item.get("conditions"), report)
        if conditions is None:
            ok = False
            continue
        overrides = {}
        for text_key in ("host", "directory", "filepattern"):
            if item.get(text_key) is not None:
                try:
                    overrides[text_key] = to_template(item[text_key]) if item[text_key] else ""
                except Invalid as exc:
                    report.error(where, text_key, f"{exc}, got {_show(item[text_key])}")
                    ok = False
        dispatch_configs.append(DispatchConfig(topics=tuple(topics), conditions=conditions, **overrides))
    options = None
    if isinstance(params, Mapping) or params is None:
        params = dict(params or {})
        schemes = _schemes([values.get("host"), *(dc.host for dc in dispatch_configs)])
        options = _transfer_options(params, {k: f"connection_parameters.{k}" for k in params}, None, name,
                                    report, schemes)
    if not ok or options is None:
        return None
    if not values.get("host") and not any(dc.host for dc in dispatch_configs):
        values["host"] = ""
    return DispatchTarget(connection_parameters=_freeze(params), aliases=_freeze(aliases),
                          dispatch_configs=tuple(dispatch_configs), transfer_options=options, **values)


def _subscriber_settings(raw: Any, report: _Report) -> SubscriberSettings:
    section = "posttroll_subscriber"
    if raw is None:
        return SubscriberSettings()
    if not isinstance(raw, Mapping):
        report.error(section, None, "expected a mapping")
        return SubscriberSettings()
    for unknown_key in set(raw) - {"subscribe_addresses", "nameserver", "subscribe_services"}:
        report.warn(section, unknown_key, "unknown key, ignored")
    values: dict[str, Any] = {}
    try:
        if "subscribe_addresses" in raw:
            values["subscribe_addresses"] = to_list(raw["subscribe_addresses"] or [])
    except Invalid as exc:
        report.error(section, "subscribe_addresses", f"{exc}")
    if "nameserver" in raw:
        try:
            values["nameserver"] = to_nameserver(raw["nameserver"])
        except Invalid as exc:
            report.error(section, "nameserver", f"{exc}, got {_show(raw['nameserver'])}")
    if raw.get("subscribe_services"):
        try:
            values["subscribe_services"] = to_list(raw["subscribe_services"])
        except Invalid as exc:
            report.error(section, "subscribe_services", str(exc))
    return SubscriberSettings(**values)


def _load_dispatcher(path: str, report: _Report) -> Config:
    data = _load_structured(path, report)
    if data is None:
        return _finish(path, "dispatcher", report)
    if not isinstance(data, Mapping):
        report.error(None, None, "expected a mapping of target names at the top level")
        return _finish(path, "dispatcher", report)
    data = dict(data)
    subscriber = _subscriber_settings(data.pop("posttroll_subscriber", None), report)
    retry_raw = data.pop("retry", None)
    retry = RetrySettings()
    if retry_raw is not None:
        if not isinstance(retry_raw, Mapping):
            report.error("retry", None, "expected a mapping (max_age, initial_delay, max_delay, state_directory)")
        else:
            for unknown_key in set(retry_raw) - _known_keys(RetrySettings):
                report.warn("retry", unknown_key, "unknown key, ignored")
            values = _convert_fields(RetrySettings, "retry",
                                     {k: v for k, v in retry_raw.items() if k in _known_keys(RetrySettings)}, report)
            retry = RetrySettings(**(values or {}))
    daemon = _daemon_settings(data.pop(DAEMON_SECTION, None), report)
    targets = []
    for name, raw in data.items():
        target = _dispatch_target(str(name), raw, report)
        if target is not None:
            targets.append(target)
    if not data:
        report.error(None, None, "no targets: a dispatcher config needs at least one target")
    return _finish(path, "dispatcher", report, chains=tuple(targets), daemon=daemon,
                   extra=MappingProxyType({"subscriber": subscriber, "retry": retry}))
