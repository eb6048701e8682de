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

Layout (one job per module):

* ``converters``: one raw value into a typed value (``to_*``, ``Provider``), or ``Invalid``;
* ``model``: the frozen dataclasses daemons receive (chains, ``Config``, ``DaemonSettings``)
  and the key tables (``key()``, refused and ignored keys);
* ``report``: problems collected with file, section and key;
* ``convert``: raw mappings into typed fields, transfer options, daemon settings;
* ``formats``: INI/TOML/YAML files into raw sections or mappings;
* ``sections``: the INI kinds' sections into chains; ``dispatch`` and ``s3``: the
  dispatcher's and the s3downloader's schemas and readers;
* ``wis2``: the WIS2 bridge's publish and subscribe chains;
* ``kinds``: which daemon a file is for; ``loading``: ``load``, ``load_strict``, ``describe_keys``.

This package re-exports the names code and tests use as ``trollmoves.config.<name>``.
``Invalid`` and ``to_bool`` come from ``trollmoves.values``, shared with the transfer options.
"""

from trollmoves.config.converters import (
    CHECKSUM_METHODS,
    DESTINATION_SCHEMES,
    Invalid,
    Provider,
    to_bind_address,
    to_bool,
    to_byte_size,
    to_checksum,
    to_client_compression,
    to_comma_list,
    to_existing_dir,
    to_existing_file,
    to_float,
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
    to_pattern,
    to_port,
    to_provider,
    to_providers,
    to_request_port,
    to_server_compression,
    to_str,
    to_template,
    to_url_list,
)
from trollmoves.config.model import (
    CHAIN_CLASSES,
    ClientChain,
    Config,
    DAEMON_SECTION,
    DaemonSettings,
    EMPTY_MAPPING,
    IGNORED_AS_IN_019,
    KINDS,
    MirrorChain,
    MoveItChain,
    REFUSED_KEYS,
    ServerChain,
    derived,
    key,
    thaw,
)
from trollmoves.config.formats import (
    is_toml,
    is_yaml,
)
from trollmoves.config.dispatch import (
    DispatchConfig,
    DispatchTarget,
    RetrySettings,
    SubscriberSettings,
)
from trollmoves.config.s3 import (
    S3DOWNLOADER_LOGGING_KEYS,
    S3DownloaderSettings,
)
from trollmoves.config.wis2 import (
    Wis2Chain,
    Wis2PublishChain,
    Wis2SubscribeChain,
)
from trollmoves.config.kinds import (
    NotADaemonConfig,
    detect_kind,
    guess_kind,
)
from trollmoves.config.loading import (
    describe_keys,
    load,
    load_strict,
)

__all__ = [
    "CHAIN_CLASSES",
    "CHECKSUM_METHODS",
    "ClientChain",
    "Config",
    "DAEMON_SECTION",
    "DESTINATION_SCHEMES",
    "DaemonSettings",
    "DispatchConfig",
    "DispatchTarget",
    "EMPTY_MAPPING",
    "IGNORED_AS_IN_019",
    "Invalid",
    "KINDS",
    "MirrorChain",
    "MoveItChain",
    "NotADaemonConfig",
    "Provider",
    "REFUSED_KEYS",
    "RetrySettings",
    "S3DOWNLOADER_LOGGING_KEYS",
    "S3DownloaderSettings",
    "ServerChain",
    "Wis2Chain",
    "Wis2PublishChain",
    "Wis2SubscribeChain",
    "SubscriberSettings",
    "derived",
    "describe_keys",
    "detect_kind",
    "guess_kind",
    "is_toml",
    "is_yaml",
    "key",
    "load",
    "load_strict",
    "thaw",
    "to_bind_address",
    "to_bool",
    "to_byte_size",
    "to_checksum",
    "to_client_compression",
    "to_comma_list",
    "to_existing_dir",
    "to_existing_file",
    "to_float",
    "to_info",
    "to_int",
    "to_list",
    "to_login",
    "to_nameserver",
    "to_nameservers",
    "to_nonempty_str",
    "to_nonneg_float",
    "to_nonneg_int",
    "to_origin",
    "to_pattern",
    "to_port",
    "to_provider",
    "to_providers",
    "to_request_port",
    "to_server_compression",
    "to_str",
    "to_template",
    "to_url_list",
]
