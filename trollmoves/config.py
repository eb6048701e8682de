"""Configuration: the original trollmoves INI/YAML files (and TOML) into frozen, validated objects.

Everything a daemon needs is checked here, at load time, with no network I/O, so
that a daemon never finds out about a typo at 3 a.m. when the first file arrives.
``trollmoves check-config FILE`` runs exactly this code.

Formats:

* INI (server, client, mirror, move_it): one section per chain, ``[DEFAULT]``
  inherited, ``connection_parameters__<key>`` nested keys, booleans as booleans.
* YAML (dispatcher, s3downloader): the original mappings.
* TOML: the same content in another spelling. For the INI kinds each top-level
  table is a section (``[DEFAULT]`` included); for the YAML kinds the mapping is
  the same.

One reserved INI section, ``[trollmoves]``, holds daemon-wide settings of ours
(metrics address and port, state directory, drain timeout); the original ignores
sections it cannot use, so an original daemon reading our file is not disturbed.

Problems are collected, not raised one by one: every message names the file, the
section and the key, the value found and what was expected, e.g.
``client.ini [hrit] providers: expected host:port[/topic], got 'foo'``.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from trollmoves.errors import ConfigError

logger = logging.getLogger(__name__)

KINDS = ("server", "client", "mirror", "move_it", "dispatcher", "s3downloader")
DAEMON_SECTION = "trollmoves"
CHECKSUM_METHODS = ("xxh3_128", "xxh3_64", "sha256", "sha512", "md5", "none")
DESTINATION_SCHEMES = ("", "file", "ftp", "scp", "sftp", "s3")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DEPRECATED_CONNECTION_KEYS = ("connection_uptime", "ssh_key_filename", "ssh_connection_timeout",
                               "ssh_private_key_file")

EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


_NOTHING = object()


class Invalid(ValueError):
    """A value failed conversion; the text says what was expected.

    ``got`` is the part of the value at fault when it is not the whole value (one
    item of a list), so that the message shows that item instead of the list.
    """

    def __init__(self, text: str, got: Any = _NOTHING):
        super().__init__(text)
        self.got = got


# --------------------------------------------------------------------------------------------------
# Value converters: each takes the raw value (a str from INI, a native value from YAML/TOML) and
# returns the typed value or raises Invalid("expected ...").
# --------------------------------------------------------------------------------------------------

def to_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise Invalid("expected a string")
    return str(value).strip()


def to_nonempty_str(value: Any) -> str:
    text = to_str(value)
    if not text:
        raise Invalid("expected a non-empty string")
    return text


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Invalid("expected a boolean (true/false, yes/no, on/off, 1/0)")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise Invalid("expected an integer")
    try:
        return int(str(value).strip())
    except ValueError:
        raise Invalid("expected an integer") from None


def to_nonneg_int(value: Any) -> int:
    number = to_int(value)
    if number < 0:
        raise Invalid("expected an integer >= 0")
    return number


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
               "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def to_byte_size(value: Any) -> int:
    """A size in bytes: ``1048576``, ``100 MiB``, ``10G`` (binary units; 0 means no limit)."""
    text = "" if isinstance(value, bool) else str(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise Invalid("expected a size in bytes, e.g. 1048576, 100 MiB or 10 GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise Invalid("expected a number")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise Invalid("expected a number") from None
    if not math.isfinite(number):
        raise Invalid("expected a finite number")
    return number


def to_nonneg_float(value: Any) -> float:
    number = to_float(value)
    if number < 0:
        raise Invalid("expected a number >= 0")
    return number


def to_port(value: Any) -> int:
    number = to_int(value)
    if not 0 <= number <= 65535:
        raise Invalid("expected a port number 0-65535")
    return number


def to_request_port(value: Any) -> int:
    number = to_port(value)
    if number == 0:
        raise Invalid("expected a port number 1-65535")
    return number


def to_list(value: Any) -> tuple[str, ...]:
    """Whitespace-separated list (INI) or a real list (YAML/TOML)."""
    if isinstance(value, (list, tuple)):
        return tuple(to_nonempty_str(item) for item in value)
    return tuple(str(value).split())


def to_comma_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(to_nonempty_str(item) for item in value)
    return tuple(item.strip() for item in str(value).split(",") if item.strip())


def to_pattern(value: Any) -> str:
    """A trollsift pattern: balanced braces, fields trollsift can parse."""
    from trollsift import globify
    from trollsift.parser import regex_format

    pattern = to_nonempty_str(value)
    try:
        globify(pattern)
        regex_format(pattern)
    except Exception as exc:  # noqa: BLE001 - trollsift: ValueError, re.error, AttributeError, KeyError...
        raise Invalid(f"expected a trollsift pattern ({exc})") from None
    return pattern


def to_origin(value: Any) -> str:
    pattern = to_pattern(value)
    if not os.path.isabs(pattern.split("{", 1)[0] or "x"):
        raise Invalid("expected an absolute path pattern (e.g. /data/in/{name}.dat)")
    return pattern


def to_template(value: Any) -> str:
    """A destination template: a URL whose fields are filled from message metadata."""
    from trollsift import globify

    text = to_nonempty_str(value)
    try:
        globify(text)
    except Exception as exc:  # noqa: BLE001 - as in to_pattern: trollsift's errors have no common base
        raise Invalid(f"expected a URL template with balanced {{fields}} ({exc})") from None
    scheme = urlsplit(text.split("{", 1)[0] if "://" not in text.split("{", 1)[0] else text).scheme
    if "://" in text and scheme.lower() not in DESTINATION_SCHEMES:
        raise Invalid(f"expected a destination URL with scheme in {', '.join(s for s in DESTINATION_SCHEMES if s)}"
                      f" (got scheme '{scheme}')")
    _check_userinfo(text)
    return text


def _check_userinfo(url: str) -> None:
    """Refuse a password whose ``#``, ``?`` or ``/`` would end the URL's user-info early.

    ``ftp://alice:pa#ss@host/`` means password ``pa#ss`` to a reader, but to ``urlsplit`` (client,
    server, 0.19 alike) ``pa`` is a port and ``ss@host/`` a fragment: the transfer fails, and the
    password was published in ``push`` messages. The redaction still recognises such a user-info;
    when it does and ``urlsplit`` sees none, the two disagree and the URL is refused.
    """
    from trollmoves.redact import redact

    if "@" in urlsplit(url).netloc or redact(url) == url:
        return
    raise Invalid("expected a URL whose password has '#', '?' and '/' percent-encoded (%23, %3F, %2F; "
                  "or use the login key): unencoded, they end the user-info early and the password leaks",
                  got=redact(url))


def to_url_list(value: Any) -> tuple[str, ...]:
    items = to_list(value)
    if not items:
        raise Invalid("expected one or more destination URLs")
    urls = []
    for item in items:
        try:
            urls.append(to_template(item))
        except Invalid as exc:
            raise Invalid(str(exc), got=item) from None
    return tuple(urls)


_PROVIDER = re.compile(r"^(?:tcp://)?(?P<host>\[[0-9a-fA-F:]+\]|[^\s:/]+):(?P<port>\d+)(?:/(?P<topic>.*))?$")


@dataclass(frozen=True)
class Provider:
    """A publisher to subscribe to: ``host:port[/topic]``."""

    host: str
    port: int
    topic: str | None = None

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{self.topic or ''}"  # the topic starts with "/"


def to_provider(text: str) -> Provider:
    match = _PROVIDER.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise Invalid("expected host:port[/topic]")
    topic = match["topic"]
    if topic is not None:
        topic = "/" + topic.strip("/") if topic.strip("/") else None
    return Provider(match["host"], int(match["port"]), topic)


def to_providers(value: Any) -> tuple[Provider, ...]:
    items = to_list(value)
    if not items:
        raise Invalid("expected one or more host:port[/topic]")
    providers = []
    for item in items:
        try:
            providers.append(to_provider(item))
        except Invalid:
            raise Invalid("expected host:port[/topic] (whitespace-separated)", got=item) from None
    return tuple(providers)


def to_nameservers(value: Any) -> tuple[str, ...] | bool:
    """``False`` (no nameserver, plain publisher) or a list of nameserver hosts."""
    if isinstance(value, bool):
        if value:
            raise Invalid("expected False or a list of nameserver hosts")
        return False
    if isinstance(value, (list, tuple)):
        return to_list(value)
    text = str(value).strip()
    if text.lower() in _FALSE or text.lower() == "none":
        return False
    hosts = to_list(text)
    if not hosts:
        raise Invalid("expected False or a list of nameserver hosts")
    return hosts


def to_nameserver(value: Any) -> str | bool:
    """A ``listen`` chain's ``nameserver``: a host, or a boolean."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    return to_nonempty_str(text)


def to_info(value: Any) -> Mapping[str, Any]:
    """``k=v;k2=a,b`` into a mapping; comma-separated values become lists (as the original)."""
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    items: dict[str, Any] = {}
    for element in str(value).split(";"):
        element = element.strip()
        if not element:
            continue
        if "=" not in element:
            raise Invalid("expected key=value;key2=value2 items", got=element)
        key, val = (part.strip() for part in element.split("=", 1))
        if not key:
            raise Invalid("expected key=value;key2=value2 items", got=element)
        items[key] = val.split(",") if "," in val else val
    return MappingProxyType(items)


def _choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    aliases = aliases or {}

    def convert(value: Any) -> str:
        text = to_str(value).lower()
        text = aliases.get(text, text)
        if text not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}")
        return text

    return convert


def to_server_compression(value: Any) -> str | bool:
    """Server-side decompression: ``xrit`` or ``bzip`` (never ``eval``-ed, unlike the original)."""
    if isinstance(value, bool) or str(value).strip().lower() in _FALSE | {""}:
        if value is True:
            raise Invalid("expected xrit or bzip")
        return False
    return _choice("xrit", "bzip", aliases={"bz2": "bzip", "bzip2": "bzip"})(value)


def to_client_compression(value: Any) -> str | bool:
    if isinstance(value, bool) or str(value).strip().lower() in _FALSE | {""}:
        if value is True:
            raise Invalid("expected bzip, tar or xrit")
        return False
    return _choice("bzip", "tar", "xrit", aliases={"bz2": "bzip", "bzip2": "bzip"})(value)


to_checksum = _choice(*CHECKSUM_METHODS, aliases={"xxh128": "xxh3_128", "xxh3": "xxh3_128", "xxh64": "xxh3_64"})


def to_login(value: Any) -> str:
    """``user[:password]``; the password may hold any character (``@``, ``/``, ``:``, ``#``...): the client
    percent-encodes both parts when it puts them into the destination URL it sends the server."""
    text = to_nonempty_str(value)
    if not text.partition(":")[0]:
        raise Invalid("expected user[:password] with a non-empty user")
    return text


def to_bind_address(value: Any) -> str:
    text = to_nonempty_str(value)
    if any(c in text for c in " /"):
        raise Invalid("expected an IP address or host name to bind to (e.g. 127.0.0.1, 0.0.0.0 or *)")
    return text


def to_existing_dir(value: Any) -> str:
    text = to_nonempty_str(value)
    if not os.path.isdir(os.path.expanduser(text)):
        raise Invalid("expected an existing directory")
    return text


def to_existing_file(value: Any) -> str:
    text = to_nonempty_str(value)
    if not os.path.isfile(os.path.expanduser(text)):
        raise Invalid("expected an existing file")
    return text


# --------------------------------------------------------------------------------------------------
# Declarative key tables: a dataclass field with metadata {"conv": converter, "required": bool}.
# --------------------------------------------------------------------------------------------------

def key(conv: Callable[[Any], Any], default: Any = None, *, required: bool = False, doc: str = "") -> Any:
    """A config key: converter, default, whether it is required, and a one-line description."""
    meta = {"conv": conv, "required": required, "doc": doc}
    if isinstance(default, Mapping):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def derived(doc: str) -> Any:
    """A field computed at load from other keys (not a key of the file): typed transfer options."""
    return field(default=None, repr=False, compare=False, metadata={"derived": True, "doc": doc})


def _is_key(fld: dataclasses.Field) -> bool:
    return not fld.metadata.get("derived")


REFUSED_KEYS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    kind: MappingProxyType({}) for kind in KINDS
})
"""Keys of 0.19 that this implementation decides not to honour, per kind, with the reason: a file that
sets one is refused at load (``file [section] key: not supported by this implementation: <why>``)
instead of having the key parsed and silently ignored. Empty today: every key is honoured."""


_NO_REQUESTS = "a server sends no requests (0.19 sets it and never uses it either)"
_SERVER_IGNORED = MappingProxyType({
    "publisher_port": "the publisher port is the -p option (0.19 ignores this key too)",
    "req_timeout": _NO_REQUESTS,
    "transfer_req_timeout": _NO_REQUESTS,
})
IGNORED_AS_IN_019: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "server": _SERVER_IGNORED,
    "mirror": _SERVER_IGNORED,
    "client": MappingProxyType({
        "working_directory": "files are unpacked beside the destination (0.19's client never uses it either)",
    }),
    "move_it": MappingProxyType({
        "publisher_port": "the publisher port is the -p option (0.19 ignores this key too)",
        "req_timeout": "move_it sends no requests (0.19 never uses it either)",
        "transfer_req_timeout": "move_it sends no requests (0.19 never uses it either)",
        "station": "move_it answers no ping requests (0.19's move_it neither)",
        "remove_delay": "move_it deletes a file (delete = true) once every destination has it, as 0.19 does",
    }),
})
"""Keys 0.19 reads for a kind and then never uses: accepted so that 0.19 files keep loading, but never
silently: each is a WARNING at load saying why it does nothing (an error with check-config --strict)."""


def _warn_ignored(kind: str, section: str, keys: Any, report: _Report) -> None:
    ignored = IGNORED_AS_IN_019.get(kind, {})
    for name in keys:
        if name in ignored:
            report.warn(section, name, f"ignored by a {kind}: {ignored[name]}")


def _refuse(kind: str, section: str | None, keys: Any, report: _Report) -> bool:
    """Report each refused key present; True when there was none."""
    refused = REFUSED_KEYS.get(kind, {})
    ok = True
    for name in keys:
        if name in refused:
            report.error(section, name, f"not supported by this implementation: {refused[name]}")
            ok = False
    return ok


def _redacted_repr(self: Any) -> str:
    """A dataclass repr without secrets, for chains that hold credentials.

    A login shows its user only, URLs lose their passwords and secret-looking
    connection parameters are masked: a chain may end up in a log line or a
    traceback, and a password must not.
    """
    from trollmoves.redact import redact, redact_mapping

    parts = []
    for fld in dataclasses.fields(self):
        if not fld.repr:
            continue
        value = getattr(self, fld.name)
        if fld.name == "login" and isinstance(value, str):
            user, colon, _password = value.partition(":")
            shown = repr(user + (":***" if colon else ""))
        elif isinstance(value, Mapping):
            shown = redact(repr(redact_mapping(thaw(value))))
        else:
            shown = redact(repr(value))
        parts.append(f"{fld.name}={shown}")
    return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True)
class DaemonSettings:
    """The reserved ``[trollmoves]`` section (or YAML/TOML mapping): settings of the whole daemon."""

    metrics_port: int | None = key(to_port, None, doc="port of /metrics and /healthz (off when unset)")
    metrics_address: str = key(to_bind_address, "127.0.0.1", doc="address /metrics binds to")
    state_directory: str | None = key(to_nonempty_str, None, doc="where pending work and handled files are kept")
    drain_timeout: float = key(to_nonneg_float, 30.0, doc="seconds in-flight transfers may finish at stop")
    stalled_after: float = key(to_nonneg_float, 600.0,
                               doc="health: a chain is stalled when files arrive but none moved this long")
    log_implementation: bool = key(to_bool, True, doc="log which speedups implementation is active at start")
    curve_secret_key_file: str | None = key(to_existing_file, doc="CURVE: key pair of the publisher")
    curve_clients_directory: str | None = key(to_existing_dir, doc="CURVE: public keys of allowed subscribers")


@dataclass(frozen=True)
class ServerChain:
    """One section of a server (move_it_server.py) config: a watched directory and its request port."""

    __repr__ = _redacted_repr

    name: str = key(to_nonempty_str, required=True)
    topic: str = key(to_nonempty_str, required=True, doc="subject of announcements")
    origin: str | None = key(to_origin, doc="trollsift pattern of the files to watch")
    listen: str | None = key(to_nonempty_str, doc="instead of origin: re-announce messages of this topic")
    request_port: int | None = key(to_request_port, doc="request (push/ack/info/ping) port; absent: standalone")
    request_address: str | None = key(to_nonempty_str, doc="host put in request_address of announcements")
    request_bind_address: str = key(to_bind_address, "*", doc="address the request port binds to")
    info: Mapping[str, Any] = key(to_info, EMPTY_MAPPING, doc="extra metadata k=v;k2=a,b")
    station: str = key(to_str, "unknown", doc="returned in pong replies")
    delete: bool = key(to_bool, False, doc="delete served files remove_delay s after push/ack")
    remove_delay: float = key(to_nonneg_float, 30.0)
    compression: str | bool = key(to_server_compression, False, doc="xrit or bzip: decompress before announcing")
    prog: str = key(to_nonempty_str, "./xRITDecompress", doc="decompressor for compression = xrit")
    working_directory: str | None = key(to_nonempty_str, doc="where decompressed files are written")
    unpack: str | None = key(_choice("tar", "zip"), doc="standalone mode: announce archive members (tar, zip)")
    watchdog_timeout: float = key(to_nonneg_float, 1.0, doc="polling interval with -w")
    origin_inotify_base_dir_skip_levels: int | None = key(
        to_int, doc="number of trailing directory levels of origin created later (watched from above)")
    connection_parameters: Mapping[str, Any] = key(lambda v: v, EMPTY_MAPPING, doc="options passed to movers")
    transfer_options: Any = derived("connection_parameters (and checksum) typed: what the movers receive")
    services: tuple[str, ...] = key(to_list, (), doc="listen chains: posttroll services")
    topics: tuple[str, ...] = key(to_list, (), doc="listen chains: topics (default: listen)")
    addr_listener: bool = key(to_bool, True)
    addresses: tuple[str, ...] = key(to_list, ())
    timeout: int = key(to_nonneg_int, 10)
    translate: bool = key(to_bool, False)
    nameserver: str | bool | None = key(to_nameserver)
    publish_port: int = key(to_port, 0, doc="ignored by the server (the publisher port is -p)")
    publisher_port: int | None = key(to_port, doc="ignored by the server (the publisher port is -p)")
    req_timeout: float = key(to_nonneg_float, 1.0)
    transfer_req_timeout: float = key(to_nonneg_float, 10.0)
    allowed_destinations: tuple[str, ...] = key(to_list, (), doc="allow-list of destination URL prefixes")
    checksum: str = key(to_checksum, "xxh3_128", doc="checksum method announced with each file")
    announce_history: int = key(to_nonneg_int, 10000, doc="announcements kept for catch-up requests")
    curve_secret_key_file: str | None = key(to_existing_file, doc="CURVE: this server's key pair "
                                            "(zmq certificate with the secret key); requires curve_clients_directory")
    curve_clients_directory: str | None = key(to_existing_dir, doc="CURVE: public keys of the clients allowed to "
                                              "send requests")

    def __post_init__(self) -> None:
        """A chain built in code, not loaded from a file, gets its typed transfer options here."""
        if self.transfer_options is None:
            object.__setattr__(self, "transfer_options", _options_of(self.connection_parameters, self.checksum))


@dataclass(frozen=True)
class ClientChain:
    """One section of a client (move_it_client.py) config: providers to follow, a destination."""

    __repr__ = _redacted_repr

    name: str = key(to_nonempty_str, required=True)
    providers: tuple[Provider, ...] = key(to_providers, required=True, doc="host:port[/topic] publishers")
    destination: str = key(to_template, required=True, doc="URL template the files are pushed to")
    topic: str | None = key(to_nonempty_str, doc="announcement topic to subscribe to")
    publish_port: int = key(to_port, 0)
    publish_address: str = key(to_bind_address, "*", doc="address the client's publisher binds to")
    nameservers: tuple[str, ...] | bool | None = key(to_nameservers, doc="False, or nameserver hosts")
    login: str | None = key(to_login, doc="user[:password] sent to the server only")
    heartbeat: bool = key(to_bool, True)
    heartbeat_alarm_scale: float = key(to_nonneg_float, 0.0)
    processing_delay: float | None = key(to_nonneg_float, doc="hot spare: wait before requesting")
    backup_targets: tuple[str, ...] = key(to_list, ())
    create_target_directory: bool = key(to_bool, True)
    ftp_root: str = key(to_nonempty_str, "/")
    compression: str | bool = key(to_client_compression, False)
    xritdecompressor: str | None = key(to_nonempty_str)
    block_size: int = key(to_nonneg_int, 1024)
    delete: bool = key(to_bool, False)
    unpack_max_ratio: float = key(to_nonneg_float, 100.0, doc="refuse an archive expanding beyond this many "
                                  "times its size (never below 1 MiB; 0: no ratio cap)")
    unpack_max_size: int = key(to_byte_size, 10 * 2**30, doc="refuse an archive expanding beyond this size "
                               "(e.g. 10 GiB; 0: no size cap)")
    req_timeout: float = key(to_nonneg_float, 1.0)
    transfer_req_timeout: float = key(to_nonneg_float, 10.0)
    working_directory: str | None = key(to_nonempty_str)
    checksum: str = key(to_checksum, "xxh3_128")
    catch_up: bool = key(to_bool, True, doc="ask providers for files announced while away")
    retry_given_up_interval: float = key(to_nonneg_float, 300.0, doc="s between retries of a file whose fast "
                                         "retries failed, until it arrives or the state store's age bound "
                                         "(7 days) expires it; 0: only at restart")
    curve_secret_key_file: str | None = key(to_existing_file, doc="CURVE: this client's key pair")
    curve_server_public_key_file: str | None = key(to_existing_file, doc="CURVE: the servers' public key")
    replace_mda: Mapping[str, str] = key(lambda v: v, EMPTY_MAPPING, doc="other keys: metadata replacement")


@dataclass(frozen=True)
class MirrorChain(ServerChain):
    """A mirror section: client-side toward ``providers``, server-side toward its own clients."""

    __repr__ = _redacted_repr

    providers: tuple[Provider, ...] = key(to_providers, required=True, doc="upstream host:port[/topic]")
    destination: str = key(to_template, required=True, doc="local directory URL where pulled files land")
    client_topic: str | None = key(to_nonempty_str)
    login: str | None = key(to_login)
    delay: float = key(to_nonneg_float, 0.0)
    create_target_directory: bool = key(to_bool, True)
    ftp_root: str = key(to_nonempty_str, "/")
    nameservers: tuple[str, ...] | bool | None = key(to_nameservers)
    backup_targets: tuple[str, ...] = key(to_list, ())
    heartbeat: bool = key(to_bool, True)


@dataclass(frozen=True)
class MoveItChain:
    """A move_it.py section: watch origin, copy each file to every destination."""

    __repr__ = _redacted_repr

    name: str = key(to_nonempty_str, required=True)
    origin: str = key(to_origin, required=True, doc="trollsift pattern of the files to watch")
    destinations: tuple[str, ...] = key(to_url_list, required=True, doc="destination URLs (whitespace list)")
    topic: str | None = key(to_nonempty_str)
    info: Mapping[str, Any] = key(to_info, EMPTY_MAPPING)
    request_port: int | None = key(to_request_port)
    request_address: str | None = key(to_nonempty_str)
    compression: str | bool = key(to_server_compression, False)
    prog: str = key(to_nonempty_str, "./xRITDecompress")
    working_directory: str | None = key(to_nonempty_str)
    delete: bool = key(to_bool, False)
    watchdog_timeout: float = key(to_nonneg_float, 1.0)
    connection_parameters: Mapping[str, Any] = key(lambda v: v, EMPTY_MAPPING)
    transfer_options: Any = derived("connection_parameters (and checksum) typed: what the movers receive")
    publish_port: int = key(to_port, 0)
    publisher_port: int | None = key(to_port)
    remove_delay: float = key(to_nonneg_float, 30.0)
    req_timeout: float = key(to_nonneg_float, 1.0)
    transfer_req_timeout: float = key(to_nonneg_float, 10.0)
    station: str = key(to_str, "unknown")
    checksum: str = key(to_checksum, "xxh3_128")

    __post_init__ = ServerChain.__post_init__


CHAIN_CLASSES: dict[str, type] = {
    "server": ServerChain, "client": ClientChain, "mirror": MirrorChain, "move_it": MoveItChain,
}


@dataclass(frozen=True)
class Config:
    """A loaded config: its chains (or targets), daemon settings, and what was found wrong."""

    path: str
    kind: str
    chains: tuple[Any, ...] = ()
    daemon: DaemonSettings = DaemonSettings()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)

    def chain(self, name: str):
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise KeyError(name)

    @property
    def chain_names(self) -> tuple[str, ...]:
        return tuple(chain.name for chain in self.chains)


# --------------------------------------------------------------------------------------------------
# Generic section conversion
# --------------------------------------------------------------------------------------------------

class _Report:
    """Collects problems with the file name in front."""

    def __init__(self, path: str):
        self.label = os.path.basename(path)
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, section: str | None, key_name: str | None, text: str) -> None:
        self.errors.append(self._where(section, key_name) + text)

    def warn(self, section: str | None, key_name: str | None, text: str) -> None:
        self.warnings.append(self._where(section, key_name) + text)

    def _where(self, section: str | None, key_name: str | None) -> str:
        where = self.label
        if section is not None:
            where += f" [{section}]"
        if key_name is not None:
            where += f" {key_name}"
        return where + ": "


def _show(value: Any) -> str:
    from trollmoves.redact import redact

    text = redact(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return repr(text) if isinstance(value, str) else text


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
                found = value if exc.got is _NOTHING else exc.got
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


def _options_of(params: Mapping[str, Any], checksum: str | None) -> Any:
    """Typed options of a chain built in code (not from a file): raises InvalidSettingError."""
    from trollmoves.movers.options import TransferOptions

    attrs = dict(thaw(params))
    if checksum is not None:
        attrs.setdefault("checksum", checksum)
    return TransferOptions.from_attrs(attrs)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Turn frozen mappings/tuples back into plain dicts/lists (for libraries that want them)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


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


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------

_Sections = tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, frozenset[str]]]
"""(sections with [DEFAULT] merged in, the [DEFAULT] keys, each section's own keys)."""


def _read_ini(path: str, report: _Report) -> _Sections | None:
    # A sentinel default section keeps [DEFAULT] apart, so that each section's own keys are known.
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00no-default")
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream)
    except configparser.Error as exc:
        report.error(None, None, f"not a valid INI file: {exc}".replace("\n", " "))
        return None
    except UnicodeDecodeError as exc:
        report.error(None, None, f"not UTF-8 text: {exc}")
        return None
    defaults = dict(parser["DEFAULT"]) if parser.has_section("DEFAULT") else {}
    sections = {}
    own_keys = {}
    for name in parser.sections():
        if name == "DEFAULT":
            continue
        own = dict(parser[name])
        sections[name] = own if name == DAEMON_SECTION else {**defaults, **own}
        own_keys[name] = frozenset(own)
    return sections, defaults, own_keys


def _read_toml_sections(data: Any, report: _Report) -> _Sections | None:
    """Top-level tables are sections; ``[DEFAULT]`` is merged into each, tables key by key
    (``[DEFAULT.connection_parameters]`` as ``connection_parameters__*`` lines in INI)."""
    if not isinstance(data, Mapping):
        report.error(None, None, "expected [section] tables at the top level")
        return None
    raw_defaults = data.get("DEFAULT", {})
    if not isinstance(raw_defaults, Mapping):
        report.error("DEFAULT", None, f"expected a table of default keys, got {_show(raw_defaults)}")
        raw_defaults = {}
    defaults = {str(k).lower(): v for k, v in raw_defaults.items()}
    sections: dict[str, dict[str, Any]] = {}
    own_keys: dict[str, frozenset[str]] = {}
    for name, table in data.items():
        if name == "DEFAULT":
            continue
        if not isinstance(table, Mapping):
            report.error(None, name, f"expected a table ([{name}]) at the top level, got {_show(table)}")
            continue
        own = {str(k).lower(): v for k, v in table.items()}
        own_keys[name] = frozenset(own)
        sections[name] = own if name == DAEMON_SECTION else _merge_defaults(defaults, own)
    return sections, defaults, own_keys


def _merge_defaults(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for name, value in own.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            value = _merge_defaults(merged[name], value)
        merged[name] = value
    return merged


def _load_structured(path: str, report: _Report) -> Any:
    """YAML or TOML by extension; None (with an error reported) when unreadable."""
    suffix = Path(path).suffix.lower()
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except UnicodeDecodeError as exc:
        report.error(None, None, f"not UTF-8 text: {exc}")
        return None
    if suffix == ".toml":
        import tomllib  # strict TOML 1.0; the `toml` package accepts broken files (`a = [1,` as [1])

        try:
            return tomllib.loads(text)
        except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
            report.error(None, None, f"not a valid TOML file: {_first_line(exc)}")
            return None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        report.error(None, None, f"not a valid YAML file: {_yaml_problem(exc)}")
        return None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors let these escape for values such as `2001-13-01`,
        # `!!int x` or `!!timestamp x`: still a bad file, not a crash.
        report.error(None, None, f"not a valid YAML file: cannot read a value ({_first_line(exc)})")
        return None
    if data is None:
        report.error(None, None, "empty file: expected a YAML mapping")
        return None
    if _has_cycle(data):
        report.error(None, None, "not a valid config: a YAML alias refers to its own anchor (recursive data)")
        return None
    return data


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def _yaml_problem(exc: Exception) -> str:
    """The YAML problem with its line and column, on one line."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        context = getattr(exc, "context", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"{context + ': ' if context else ''}{problem} ({where})"
    return _first_line(exc)


def _has_cycle(value: Any, active: set[int] | None = None) -> bool:
    """True when YAML anchors made a container contain itself (it would recurse for ever later)."""
    if not isinstance(value, (dict, list)):
        return False
    active = set() if active is None else active
    if id(value) in active:
        return True
    active.add(id(value))
    items = value.values() if isinstance(value, dict) else value
    found = any(_has_cycle(item, active) for item in items)
    active.discard(id(value))
    return found


def is_toml(path: str) -> bool:
    return Path(path).suffix.lower() == ".toml"


def is_yaml(path: str) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def _ini_like(path: str, report: _Report) -> _Sections | None:
    if is_toml(path):
        data = _load_structured(path, report)
        if data is None:
            return None
        return _read_toml_sections(data, report)
    return _read_ini(path, report)


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


def _finish(path: str, kind: str, report: _Report, **kwargs: Any) -> Config:
    return Config(path=path, kind=kind, errors=tuple(report.errors), warnings=tuple(report.warnings), **kwargs)


# --------------------------------------------------------------------------------------------------
# Dispatcher and s3downloader (YAML / TOML)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------

class NotADaemonConfig(ConfigError):
    """The file is readable but is no trollmoves daemon config (a remove_it or fetcher config...)."""


_SERVER_KEYS = frozenset({"origin", "listen", "request_port", "topic"})
_CLIENT_KEYS = frozenset({"providers", "destination", "client_topic"})
_FOREIGN_INI = (({"base_dir", "templates"}, "a remove_it config"),)
_FOREIGN_YAML = (({"subscriber_config", "publisher_config"}, "a pytroll-fetcher config"),)
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
    cls = CHAIN_CLASSES.get(kind) or {"s3downloader": S3DownloaderSettings}.get(kind)
    if cls is None:
        return []
    rows = []
    for fld in dataclasses.fields(cls):
        if fld.name == "name" or not _is_key(fld):
            continue
        rows.append((fld.name, "required" if fld.metadata.get("required") else "optional", fld.default,
                     fld.metadata.get("doc", "")))
    return rows
