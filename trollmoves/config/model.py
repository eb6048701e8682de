"""The config model: the frozen dataclasses a daemon receives, and the key tables behind them.

Each key is a dataclass field declared with ``key()`` (converter, default, required,
one-line doc), so that the readers, ``describe_keys`` and the tests' static key check
all work from one declaration. Also here: the keys of 0.19 refused or accepted but
ignored per kind, and the redacted repr of the chains that hold credentials.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trollmoves.config.converters import (
    Provider,
    _choice,
    to_bind_address,
    to_bool,
    to_byte_size,
    to_checksum,
    to_client_compression,
    to_existing_dir,
    to_existing_file,
    to_info,
    to_int,
    to_list,
    to_login,
    to_nameserver,
    to_nameservers,
    to_nonempty_str,
    to_nonneg_float,
    to_nonneg_int,
    to_origin,
    to_port,
    to_providers,
    to_request_port,
    to_server_compression,
    to_str,
    to_template,
    to_url_list,
)
from trollmoves.config.report import _Report
from trollmoves.values import Invalid


KINDS = ("server", "client", "mirror", "move_it", "dispatcher", "s3downloader", "wis2")
DAEMON_SECTION = "trollmoves"

EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


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


def to_intervals(value: Any) -> tuple[tuple[str, float], ...]:
    """``chain1:600, chain2:3600`` (INI; a mapping in YAML/TOML) as ((chain, seconds), ...).

    Items are separated by commas or new lines; a chain name may hold spaces, not the last ``:``.
    """
    if isinstance(value, Mapping):
        items = [(str(name), seconds) for name, seconds in value.items()]
    else:
        items = []
        for item in str(value).replace("\n", ",").split(","):
            if not item.strip():
                continue
            name, colon, seconds = item.rpartition(":")
            if not colon or not name.strip():
                raise Invalid("expected chain:seconds items separated by commas", item.strip())
            items.append((name.strip(), seconds.strip()))
    result: dict[str, float] = {}
    for name, seconds in items:
        try:
            result[name] = to_nonneg_float(seconds)
        except Invalid as exc:
            raise Invalid(f"{name}: {exc}", seconds) from None
    if len(result) < len(items):
        raise Invalid("expected each chain once")
    return tuple(result.items())


@dataclass(frozen=True)
class DaemonSettings:
    """The reserved ``[trollmoves]`` section (or YAML/TOML mapping): settings of the whole daemon."""

    metrics_port: int | None = key(to_port, None, doc="port of /metrics and /healthz (off when unset)")
    metrics_address: str = key(to_bind_address, "127.0.0.1", doc="address /metrics binds to")
    state_directory: str | None = key(to_nonempty_str, None, doc="where pending work and handled files are kept")
    drain_timeout: float = key(to_nonneg_float, 30.0, doc="seconds in-flight transfers may finish at stop")
    stalled_after: float = key(to_nonneg_float, 600.0,
                               doc="health: a chain is stalled when files arrive but none moved this long")
    expected_interval: float = key(to_nonneg_float, 0.0, doc="seconds between files expected on every chain "
                                   "(metric trollmoves_chain_expected_interval_seconds; 0: not set)")
    expected_intervals: tuple[tuple[str, float], ...] = key(to_intervals, (), doc="per chain, overriding "
                                                            "expected_interval: chain1:600, chain2:3600")
    log_implementation: bool = key(to_bool, True, doc="log which speedups implementation is active at start")
    curve_secret_key_file: str | None = key(to_existing_file, doc="CURVE: key pair of the publisher")
    curve_clients_directory: str | None = key(to_existing_dir, doc="CURVE: public keys of allowed subscribers")

    def expected_interval_of(self, chain: str) -> float:
        """The expected seconds between files of ``chain`` (``expected_intervals``, else ``expected_interval``)."""
        return dict(self.expected_intervals).get(chain, self.expected_interval)


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
