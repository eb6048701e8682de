"""The WIS2 bridge's config (INI, or TOML with the same tables): publish and subscribe chains.

One section is one chain; ``direction`` says which. A *publish* chain turns the posttroll
``file``/``dataset``/``collection`` messages of its ``topics`` into WIS2 Notification
Messages on an MQTT broker; a *subscribe* chain downloads what WIS2 notifications
announce and announces the stored files on posttroll. ``[trollmoves]`` holds the daemon
settings as for every daemon. Everything that can be checked without the network is
checked here: the WIS2 topic template (levels, no wildcards, lowercase), the MQTT
topic filters, the broker URL, the base URL that maps local paths to downloadable
links, so that a typo is found by ``check-config``, not by the first file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from trollmoves.config.convert import _convert_fields, _daemon_settings, _finish, _known_keys
from trollmoves.config.converters import (
    Invalid,
    _check_userinfo,
    _choice,
    to_bool,
    to_comma_list,
    to_existing_file,
    to_list,
    to_nameserver,
    to_nonempty_str,
    to_nonneg_float,
    to_nonneg_int,
    to_str,
)
from trollmoves.config.formats import _ini_like
from trollmoves.config.model import DAEMON_SECTION, EMPTY_MAPPING, Config, _redacted_repr, key
from trollmoves.config.report import _Report
from trollmoves.wis2.notification import DEFAULT_PROPERTIES, NotificationError, check_property_names, load_validator

DIRECTIONS = ("publish", "subscribe")
MQTT_VERSIONS = ("auto", "5", "3.1.1")
DEFAULT_DATA_ID = "wis2/{centre_id}/data/{policy}/{leaf}/{uid}"
LINK_SCHEMES = ("http", "https", "ftp", "sftp")


def to_broker_url(value: Any) -> str:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` (credentials belong in username/password)."""
    text = to_nonempty_str(value)
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("mqtt", "mqtts") or not parts.hostname:
        raise Invalid("expected mqtt://host[:port] or mqtts://host[:port]")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise Invalid("expected mqtt://host[:port] with a port in 1..65535") from None
    _check_userinfo(text)
    return text


def to_link_base(value: Any) -> str:
    """The base URL that local paths are mapped to: what WIS2 consumers download from."""
    text = to_nonempty_str(value)
    parts = urlsplit(text)
    if parts.scheme.lower() not in LINK_SCHEMES or not parts.netloc:
        raise Invalid(f"expected a {'/'.join(LINK_SCHEMES)} URL that serves the files (e.g. "
                      "https://data.example.org/products)")
    if parts.password:
        raise Invalid("expected a URL without a password: it is published to the world in every notification")
    return text.rstrip("/")


def to_aliases(value: Any) -> Mapping[str, Mapping[str, str]]:
    """Per-field value mapping for topic levels and data ids.

    INI: ``platform_name: Metop-B=metop-b, Metop-C=metop-c; sensor: avhrr/3=avhrr-3``;
    TOML: a table of tables ``{platform_name = {"Metop-B" = "metop-b"}}``.
    """
    if isinstance(value, Mapping):
        out: dict[str, Mapping[str, str]] = {}
        for field_name, mapping in value.items():
            if not isinstance(mapping, Mapping):
                raise Invalid(f"expected a table of value = level for field {field_name!r}")
            out[str(field_name)] = MappingProxyType({str(k): str(v) for k, v in mapping.items()})
        return MappingProxyType(out)
    out = {}
    for group in str(value).split(";"):
        if not group.strip():
            continue
        field_name, colon, pairs = group.partition(":")
        if not colon or not field_name.strip():
            raise Invalid("expected 'field: value=level, value=level; field2: ...'", got=group.strip())
        mapping = {}
        for pair in pairs.split(","):
            if not pair.strip():
                continue
            raw, equals, level = pair.partition("=")
            if not equals or not raw.strip() or not level.strip():
                raise Invalid("expected value=level pairs", got=pair.strip())
            mapping[raw.strip()] = level.strip()
        out[field_name.strip()] = MappingProxyType(mapping)
    return MappingProxyType(out)


def to_subscription_filters(value: Any) -> tuple[str, ...]:
    from trollmoves.wis2.topics import TopicError, check_subscription_filter

    filters = to_comma_list(value) if isinstance(value, str) and "," in value else to_list(value)
    if not filters:
        raise Invalid("expected one or more MQTT topic filters (origin/a/wis2/... or cache/a/wis2/...)")
    for item in filters:
        try:
            check_subscription_filter(item)
        except TopicError as exc:
            raise Invalid(f"expected an MQTT topic filter under origin/a/wis2/ or cache/a/wis2/ ({exc})",
                          got=item) from None
    return filters


_choice_direction = _choice(*DIRECTIONS)
_choice_version = _choice(*MQTT_VERSIONS, aliases={"3": "3.1.1", "311": "3.1.1", "mqttv5": "5",
                                                    "mqttv311": "3.1.1", "v5": "5"})
_choice_policy = _choice("core", "recommended")
_choice_deletion = _choice("ignore", "delete")


def _chain_repr(self: Any) -> str:
    """The redacted repr, with the broker password masked: a chain may end up in a log or a traceback."""
    import dataclasses

    return _redacted_repr(dataclasses.replace(self, password="***") if self.password else self)


@dataclass(frozen=True)
class Wis2Chain:
    """Keys both directions share: the broker and how to log in to it."""

    __repr__ = _chain_repr

    name: str
    direction: str = key(_choice_direction, required=True, doc="publish (posttroll -> WIS2) or subscribe")
    broker: str = key(to_broker_url, required=True, doc="mqtt://host[:1883] or mqtts://host[:8883]")
    username: str | None = key(to_nonempty_str, None, doc="broker user")
    password: str | None = key(to_str, None, doc="broker password (never logged)")
    ca_file: str | None = key(to_existing_file, None, doc="CA bundle for mqtts:// (default: the system store)")
    mqtt_version: str = key(_choice_version, "auto", doc="auto (MQTT 5, then 3.1.1), 5 or 3.1.1")
    client_id: str | None = key(to_nonempty_str, None, doc="MQTT client id (required for subscribe)")
    keepalive: int = key(to_nonneg_int, 60, doc="MQTT keepalive, seconds")


@dataclass(frozen=True, repr=False)
class Wis2PublishChain(Wis2Chain):
    """posttroll messages of ``topics`` -> one WIS2 Notification Message per file."""

    topics: tuple[str, ...] = key(to_list, required=True, doc="posttroll topics to announce on WIS2")
    subscribe_addresses: tuple[str, ...] = key(to_list, (), doc="publishers to subscribe to directly")
    nameserver: str | bool = key(to_nameserver, "localhost", doc="nameserver to find publishers (false: none)")
    services: tuple[str, ...] = key(to_list, (), doc="publisher names to look up on the nameserver")
    centre_id: str = key(to_nonempty_str, required=True, doc="WIS2 centre id, e.g. se-smhi")
    policy: str = key(_choice_policy, "core", doc="data policy: core or recommended")
    wis2_topic: str = key(to_nonempty_str, required=True,
                          doc="topic template, origin/a/wis2/{centre_id}/data/{policy}/<discipline>/...")
    aliases: Mapping[str, Mapping[str, str]] = key(to_aliases, EMPTY_MAPPING,
                                                   doc="field: value=level mapping for topic levels")
    base_path: str = key(to_nonempty_str, required=True, doc="local directory that base_url serves")
    base_url: str = key(to_link_base, required=True, doc="http(s)/ftp/sftp URL where base_path is served")
    data_id: str = key(to_nonempty_str, DEFAULT_DATA_ID, doc="data_id template ({leaf}: the topic's leaf)")
    media_type: str | None = key(to_nonempty_str, None, doc="media type of the files (default: from the name)")
    inline_content: bool = key(to_bool, False, doc="embed files whose base64 is under 4096 characters")
    properties: tuple[str, ...] = key(to_comma_list, DEFAULT_PROPERTIES, doc="message fields copied as properties")
    queue_size: int = key(to_nonneg_int, 1000, doc="notifications kept while the broker is unreachable")
    publish_timeout: float = key(to_nonneg_float, 30.0, doc="seconds to wait for the broker's PUBACK")


@dataclass(frozen=True, repr=False)
class Wis2SubscribeChain(Wis2Chain):
    """WIS2 notifications on ``subscribe`` filters -> verified downloads -> posttroll ``file`` messages."""

    subscribe: tuple[str, ...] = key(to_subscription_filters, required=True,
                                     doc="MQTT topic filters, e.g. origin/a/wis2/+/data/core/weather/#")
    shared_group: str | None = key(to_nonempty_str, None, doc="MQTT 5 shared subscription group ($share)")
    session_expiry: int = key(to_nonneg_int, 86400, doc="seconds the broker keeps our session while away")
    destination: str = key(to_nonempty_str, required=True, doc="directory the files are stored in")
    publish_topic: str = key(to_nonempty_str, required=True, doc="posttroll subject of the file messages")
    seen_ttl: float = key(to_nonneg_float, 86400.0, doc="seconds a notification id is remembered")
    on_deletion: str = key(_choice_deletion, "ignore", doc="what a deletion notification does: ignore or delete")
    schema: str | None = key(to_existing_file, None, doc="WNM JSON schema to validate against (no network)")
    download_timeout: float = key(to_nonneg_float, 60.0, doc="seconds per download attempt")
    download_retries: int = key(to_nonneg_int, 5, doc="retries of a 429/5xx/network failure")
    workers: int = key(to_nonneg_int, 4, doc="parallel downloads")


CHAIN_CLASSES = {"publish": Wis2PublishChain, "subscribe": Wis2SubscribeChain}


def _check_publish(name: str, values: dict[str, Any], report: _Report) -> bool:
    from trollmoves.wis2.topics import TopicError, TopicTemplate

    ok = True
    try:
        TopicTemplate(values["wis2_topic"], aliases=values.get("aliases", EMPTY_MAPPING),
                      constants={"centre_id": values["centre_id"], "policy": values.get("policy", "core")})
    except TopicError as exc:
        report.error(name, "wis2_topic", f"expected a WIS2 topic template ({exc}), got {values['wis2_topic']!r}")
        ok = False
    try:
        check_property_names(values.get("properties", DEFAULT_PROPERTIES))
    except NotificationError as exc:
        report.error(name, "properties", str(exc))
        ok = False
    return ok


def _check_subscribe(name: str, values: dict[str, Any], report: _Report) -> bool:
    """The schema is read now: a broken or unreadable schema file is a config error, not a refused message."""
    if not values.get("schema"):
        return True
    try:
        load_validator(values["schema"])
    except NotificationError as exc:
        report.error(name, "schema", str(exc))
        return False
    return True


def _build(name: str, raw: Mapping[str, Any], report: _Report) -> Any | None:
    direction = str(raw.get("direction", "")).strip().lower()
    if direction not in CHAIN_CLASSES:
        shown = f", got {raw['direction']!r}" if "direction" in raw else ""
        report.error(name, "direction", f"expected one of {', '.join(DIRECTIONS)}{shown}")
        return None
    cls = CHAIN_CLASSES[direction]
    known = _known_keys(cls)
    for unknown in raw:
        if unknown not in known:
            report.warn(name, unknown, f"unknown key for a WIS2 {direction} chain, ignored")
    values = _convert_fields(cls, name, {k: v for k, v in raw.items() if k in known}, report,
                             secret_keys=frozenset({"password"}))
    if values is None:
        return None
    if values.get("password") and not values.get("username"):
        report.error(name, "username", "missing: a password is given without a user")
        return None
    if direction == "subscribe" and not values.get("client_id"):
        report.error(name, "client_id", "missing required key for subscribe (a fixed id keeps the broker "
                                        "session, so that messages sent while we are away are not lost)")
        return None
    if direction == "publish" and not _check_publish(name, values, report):
        return None
    if direction == "subscribe" and not _check_subscribe(name, values, report):
        return None
    return cls(name=name, **values)


def _load_wis2(path: str, report: _Report) -> Config:
    parsed = _ini_like(path, report)
    if parsed is None:
        return _finish(path, "wis2", report)
    sections, defaults, _own_keys = parsed
    daemon = _daemon_settings(sections.pop(DAEMON_SECTION, None), report)
    if not sections:
        report.error(None, None, "no sections: a wis2 config needs at least one [chain] section "
                                 "(direction = publish or subscribe)")
    chains = []
    for name, raw in sections.items():
        chain = _build(name, raw, report)
        if chain is not None:
            chains.append(chain)
    _check_unique_client_ids(chains, report)
    return _finish(path, "wis2", report, chains=tuple(chains), daemon=daemon)


def _check_unique_client_ids(chains: list, report: _Report) -> None:
    """Two connections with one client id on one broker take the session from each other, forever."""
    seen: dict[tuple[str, str], str] = {}
    for chain in list(chains):
        if not chain.client_id:
            continue
        where = (chain.broker, chain.client_id)
        if where in seen:
            report.error(chain.name, "client_id", f"{chain.client_id!r} is already used by [{seen[where]}] "
                                                  "on the same broker")
            chains.remove(chain)
        else:
            seen[where] = chain.name
