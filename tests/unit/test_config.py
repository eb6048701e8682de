"""Config loading: the original INI/YAML rules, their TOML spelling, and the messages for bad input.

Why: every daemon starts from ``trollmoves.config.load``; a key read differently
from trollmoves 0.19 silently changes where files go, and a bad value found at
3 a.m. instead of at load time is an incident. Pure logic: files in tmp_path, no
servers.
"""

from __future__ import annotations

import dataclasses
import textwrap
from types import MappingProxyType

import pytest

from trollmoves import config
from trollmoves.config import ClientChain, MirrorChain, Provider, ServerChain
from trollmoves.errors import ConfigError

SERVER = """
[hrit]
origin = /data/in/{name}.dat
topic = /1b/hrit
request_port = 9094
"""


def load(tmp_path, text: str, kind: str | None = None, name: str = "test.ini") -> config.Config:
    """Write ``text`` to tmp_path/name and load it. INI/TOML lines are stripped (no test here needs
    INI continuation lines), so that indented snippets can be concatenated."""
    path = tmp_path / name
    if name.endswith((".ini", ".toml")):
        text = "\n".join(line.strip() for line in text.splitlines()) + "\n"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return config.load(path, kind)


def only_chain(cfg: config.Config):
    assert not cfg.errors, cfg.errors
    assert len(cfg.chains) == 1
    return cfg.chains[0]


# --------------------------------------------------------------------------------------------------
# INI rules shared by server, mirror, move_it and client
# --------------------------------------------------------------------------------------------------


def test_default_section_is_inherited_and_overridden(tmp_path):
    cfg = load(
        tmp_path,
        """
        [DEFAULT]
        delete = true
        station = kiruna
        [a]
        origin = /a/{name}
        topic = /a
        [b]
        origin = /b/{name}
        topic = /b
        delete = false
    """,
        "server",
    )
    assert not cfg.errors
    a, b = cfg.chains
    assert (a.delete, a.station) == (True, "kiruna")
    assert (b.delete, b.station) == (False, "kiruna")


def test_server_defaults_are_the_originals(tmp_path):
    chain = only_chain(load(tmp_path, SERVER, "server"))
    assert (chain.delete, chain.compression, chain.req_timeout, chain.transfer_req_timeout) == (
        False,
        False,
        1,
        10,
    )
    assert (chain.station, chain.remove_delay, chain.watchdog_timeout, chain.prog) == (
        "unknown",
        30,
        1.0,
        "./xRITDecompress",
    )
    assert chain.working_directory is None
    assert chain.request_port == 9094 and isinstance(chain, ServerChain)


def test_connection_parameters_nesting_and_boolean_conversion(tmp_path):
    """``a__b__c = v`` nests; 0/false and 1/true become booleans, other values stay strings (as 0.19)."""
    chain = only_chain(
        load(
            tmp_path,
            SERVER
            + """
        connection_parameters__connection_uptime = 30
        connection_parameters__ssh_key_filename = /home/u/.ssh/id
        connection_parameters__use_tmp_on_transfer = TRUE
        connection_parameters__ftp_passive = 0
        connection_parameters__fsync = 1
        connection_parameters__hardlink = False
        connection_parameters__client_kwargs__endpoint_url = http://s3.local:9000
        connection_parameters__client_kwargs__verify = false
    """,
            "server",
        )
    )
    assert config.thaw(chain.connection_parameters) == {
        "connection_uptime": "30",
        "ssh_key_filename": "/home/u/.ssh/id",
        "use_tmp_on_transfer": True,
        "ftp_passive": False,
        "fsync": True,
        "hardlink": False,
        "client_kwargs": {"endpoint_url": "http://s3.local:9000", "verify": False},
    }
    assert isinstance(chain.connection_parameters, MappingProxyType)


def test_connection_parameters_in_default_merge_key_by_key(tmp_path):
    chain = only_chain(
        load(
            tmp_path,
            """
        [DEFAULT]
        connection_parameters__connection_uptime = 20
        connection_parameters__ssh_key_filename = /k
        [hrit]
        origin = /data/{name}
        topic = /t
        connection_parameters__connection_uptime = 5
    """,
            "server",
        )
    )
    assert config.thaw(chain.connection_parameters) == {"connection_uptime": "5", "ssh_key_filename": "/k"}


@pytest.mark.parametrize(
    ("old", "value"),
    [("connection_uptime", "12"), ("ssh_key_filename", "value1"), ("ssh_connection_timeout", "2.5"),
     ("ssh_private_key_file", "value1")],
)
def test_deprecated_top_level_keys_move_into_connection_parameters_with_a_warning(tmp_path, old, value):
    cfg = load(tmp_path, SERVER + f"{old} = {value}\n", "server")
    chain = only_chain(cfg)
    assert chain.connection_parameters[old] == value
    assert any(f"[hrit] {old}:" in w and f"connection_parameters__{old}" in w for w in cfg.warnings), (
        cfg.warnings
    )


def test_explicit_connection_parameter_wins_over_deprecated_key(tmp_path):
    chain = only_chain(
        load(
            tmp_path,
            SERVER
            + """
        connection_uptime = 99
        connection_parameters__connection_uptime = 10
    """,
            "server",
        )
    )
    assert chain.connection_parameters["connection_uptime"] == "10"


def test_no_deprecation_warning_without_deprecated_keys(tmp_path):
    """0.19 warned for every section (its ssh_key_filename=None default); we warn only when it applies."""
    cfg = load(tmp_path, SERVER, "server")
    assert cfg.warnings == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("True", True),
        ("yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
        ("0", False),
    ],
)
def test_booleans_are_booleans(tmp_path, text, expected):
    chain = only_chain(load(tmp_path, SERVER + f"delete = {text}\n", "server"))
    assert chain.delete is expected


@pytest.mark.parametrize("bad", ["maybe", "2", "yess", "none"])
def test_bad_boolean_names_file_section_key_value_and_expectation(tmp_path, bad):
    cfg = load(tmp_path, SERVER + f"delete = {bad}\n", "server", name="srv.ini")
    assert cfg.chains == ()
    assert cfg.errors == (
        f"srv.ini [hrit] delete: expected a boolean (true/false, yes/no, on/off, 1/0), got '{bad}'",
    )


def test_bad_value_inherited_from_default_says_so(tmp_path):
    cfg = load(tmp_path, "[DEFAULT]\ndelete = perhaps\n" + SERVER, "server", name="srv.ini")
    assert cfg.errors == (
        (
            "srv.ini [hrit] delete: expected a boolean (true/false, yes/no, on/off, 1/0), "
            "got 'perhaps' (inherited from [DEFAULT])"
        ),
    )


def test_one_bad_section_leaves_the_others(tmp_path):
    cfg = load(
        tmp_path,
        SERVER
        + """
        [broken]
        origin = /data/b/{name}
        topic = /b
        request_port = abc
    """,
        "server",
    )
    assert cfg.chain_names == ("hrit",)
    assert len(cfg.errors) == 1 and "[broken] request_port" in cfg.errors[0]


def test_unknown_key_warning_names_file_section_and_key(tmp_path):
    cfg = load(tmp_path, SERVER + "colour = blue\n", "server", name="srv.ini")
    only_chain(cfg)
    assert cfg.warnings == ("srv.ini [hrit] colour: unknown key for a server section, ignored",)


def test_unknown_default_key_warned_once_under_default(tmp_path):
    cfg = load(tmp_path, "[DEFAULT]\ncolour = blue\n" + SERVER, "server", name="srv.ini")
    assert cfg.warnings == ("srv.ini [DEFAULT] colour: unknown key for a server config, ignored",)


def test_info_parsing_with_comma_lists(tmp_path):
    chain = only_chain(
        load(tmp_path, SERVER + "info = sensor=seviri; stations=a,b ;variant = 0DEG;\n", "server")
    )
    assert dict(chain.info) == {"sensor": "seviri", "stations": ["a", "b"], "variant": "0DEG"}


def test_bad_info_item_is_shown_alone(tmp_path):
    cfg = load(tmp_path, SERVER + "info = sensor=seviri;oops\n", "server", name="srv.ini")
    assert cfg.errors == ("srv.ini [hrit] info: expected key=value;key2=value2 items, got 'oops'",)


def test_listen_chain_needs_no_origin(tmp_path):
    chain = only_chain(
        load(
            tmp_path,
            """
        [relay]
        listen = /1b/hrit
        topic = /relay
        request_port = 9000
        addresses = tcp://a:1 tcp://b:2
        nameserver = false
        addr_listener = no
    """,
            "server",
        )
    )
    assert chain.origin is None and chain.listen == "/1b/hrit"
    assert chain.addresses == ("tcp://a:1", "tcp://b:2")
    assert chain.nameserver is False and chain.addr_listener is False


def test_chain_without_origin_or_listen_is_an_error(tmp_path):
    cfg = load(tmp_path, "[x]\ntopic = /t\n", "server", name="s.ini")
    assert cfg.errors == ("s.ini [x] origin: missing required key (a server chain needs origin or listen)",)


def test_duplicate_request_port_is_an_error_naming_both_sections(tmp_path):
    cfg = load(
        tmp_path,
        SERVER + "[other]\norigin = /o/{n}\ntopic = /o\nrequest_port = 9094\n",
        "server",
        name="s.ini",
    )
    assert cfg.chain_names == ("hrit",)
    assert cfg.errors == ("s.ini [other] request_port: port 9094 is already used by section [hrit]",)


def test_daemon_section_is_not_a_chain(tmp_path):
    cfg = load(tmp_path, "[trollmoves]\nmetrics_port = 9110\ndrain_timeout = 5\n" + SERVER, "server")
    assert cfg.chain_names == ("hrit",)
    assert cfg.daemon.metrics_port == 9110 and cfg.daemon.drain_timeout == 5.0


def test_keys_are_case_insensitive(tmp_path):
    chain = only_chain(load(tmp_path, "[hrit]\nOrigin = /d/{n}\nTOPIC = /t\n", "server"))
    assert chain.topic == "/t"


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------

CLIENT = """
[hrit]
providers = server1:9010 server2:9011/1b/hrit/0deg [::1]:9012 tcp://server3:9013
destination = ftp://ftp.local/data/{platform_name}/
topic = /1b/hrit
"""


def test_providers_with_and_without_topic(tmp_path):
    chain = only_chain(load(tmp_path, CLIENT, "client"))
    assert chain.providers == (
        Provider("server1", 9010),
        Provider("server2", 9011, "/1b/hrit/0deg"),
        Provider("[::1]", 9012),
        Provider("server3", 9013),
    )
    assert [p.address for p in chain.providers][:2] == ["tcp://server1:9010", "tcp://server2:9011"]
    assert [str(p) for p in chain.providers] == [
        "server1:9010",
        "server2:9011/1b/hrit/0deg",
        "[::1]:9012",
        "server3:9013",
    ]
    assert [config.to_provider(str(p)) for p in chain.providers] == list(chain.providers)


@pytest.mark.parametrize("bad", ["foo", "host:", "host:port", "host:70000", ":9010"])
def test_bad_provider_names_the_item(tmp_path, bad):
    cfg = load(tmp_path, CLIENT.replace("server1:9010", bad), "client", name="c.ini")
    assert cfg.errors == (
        f"c.ini [hrit] providers: expected host:port[/topic] (whitespace-separated), got '{bad}'",
    )


def test_topic_may_come_from_every_provider(tmp_path):
    chain = only_chain(
        load(
            tmp_path,
            """
        [hrit]
        providers = a:1/x b:2/y
        destination = file:///d/
    """,
            "client",
        )
    )
    assert chain.topic is None


def test_client_without_any_topic_is_an_error(tmp_path):
    cfg = load(tmp_path, "[hrit]\nproviders = a:1 b:2/y\ndestination = file:///d/\n", "client", name="c.ini")
    assert cfg.errors == ("c.ini [hrit] topic: missing required key (or give every provider a /topic)",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("False", False),
        ("false", False),
        ("no", False),
        ("localhost", ("localhost",)),
        ("ns1 ns2:5557", ("ns1", "ns2:5557")),
    ],
)
def test_nameservers_false_or_list(tmp_path, text, expected):
    chain = only_chain(load(tmp_path, CLIENT + f"nameservers = {text}\n", "client"))
    assert chain.nameservers == expected


def test_nameservers_unset_means_none(tmp_path):
    assert only_chain(load(tmp_path, CLIENT, "client")).nameservers is None


def test_client_defaults_are_the_originals(tmp_path):
    chain = only_chain(load(tmp_path, CLIENT, "client"))
    assert isinstance(chain, ClientChain)
    assert (chain.heartbeat, chain.create_target_directory, chain.delete, chain.compression) == (
        True,
        True,
        False,
        False,
    )
    assert (chain.req_timeout, chain.transfer_req_timeout, chain.publish_port, chain.ftp_root) == (
        1,
        10,
        0,
        "/",
    )
    assert (chain.block_size, chain.backup_targets, chain.processing_delay) == (1024, (), None)


def test_client_unknown_keys_become_replace_mda(tmp_path):
    """0.19 uses any other client key as a metadata replacement (``from:to|from2:to2``)."""
    cfg = load(
        tmp_path,
        CLIENT + "platform_name = NOAA-19:noaa19|Metop-B:metopb\nsensor = avhrr\n",
        "client",
        name="c.ini",
    )
    chain = only_chain(cfg)
    assert dict(chain.replace_mda) == {"platform_name": "NOAA-19:noaa19|Metop-B:metopb", "sensor": "avhrr"}
    assert "c.ini [hrit] sensor: not a client key; used as metadata replacement (replace_mda)" in cfg.warnings


def test_xrit_compression_without_a_decompressor_is_a_warning_not_a_refusal(tmp_path):
    """0.19 starts such a client and fails only on compressed files (issue 13): so do we, warned at load."""
    cfg = load(tmp_path, CLIENT + "compression = xrit\n", "client", name="c.ini")
    assert cfg.errors == ()
    assert only_chain(cfg).xritdecompressor is None
    assert any(w.startswith("c.ini [hrit] xritdecompressor: missing for compression = xrit") for w in cfg.warnings)
    chain = only_chain(
        load(tmp_path, CLIENT + "compression = xrit\nxritdecompressor = /opt/xrit\n", "client")
    )
    assert chain.compression == "xrit"


@pytest.mark.parametrize(
    ("text", "expected"), [("bzip", "bzip"), ("bz2", "bzip"), ("tar", "tar"), ("False", False)]
)
def test_client_compression_values(tmp_path, text, expected):
    assert only_chain(load(tmp_path, CLIENT + f"compression = {text}\n", "client")).compression == expected


def test_bad_destination_scheme(tmp_path):
    cfg = load(tmp_path, CLIENT.replace("ftp://ftp.local", "gopher://old"), "client", name="c.ini")
    assert len(cfg.errors) == 1
    assert cfg.errors[0].startswith("c.ini [hrit] destination: expected a destination URL with scheme in")


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------

PASSWORD = "s3cr3t-Pa55"


def _all_text(cfg: config.Config) -> str:
    return "\n".join([*cfg.errors, *cfg.warnings, repr(cfg), str(cfg), *(repr(c) for c in cfg.chains)])


def test_login_password_never_in_repr(tmp_path):
    cfg = load(tmp_path, CLIENT + f"login = user:{PASSWORD}\n", "client")
    chain = only_chain(cfg)
    assert chain.login == f"user:{PASSWORD}"  # the value itself is intact
    assert PASSWORD not in _all_text(cfg)
    assert "login='user:***'" in repr(chain)


def test_mirror_login_password_never_in_repr(tmp_path):
    cfg = load(
        tmp_path,
        f"""
        [m]
        providers = inside:9010
        destination = file:///mirror/
        origin = /mirror/{{name}}
        topic = /t
        request_port = 9338
        login = user:{PASSWORD}
    """,
        "mirror",
    )
    chain = only_chain(cfg)
    assert isinstance(chain, MirrorChain)
    assert PASSWORD not in _all_text(cfg)


def test_passwords_never_in_errors_or_warnings(tmp_path):
    """A bad login, a bad URL with a password, secret connection parameters and secret client keys."""
    cfg = load(
        tmp_path,
        f"""
        [bad_login]
        providers = a:1
        destination = file:///d/
        topic = /t
        login = :{PASSWORD}
        [bad_url]
        providers = a:1
        destination = ftp://user:{PASSWORD}@host/{{broken
        topic = /t
        [secret_keys]
        providers = a:1
        destination = sftp://user:{PASSWORD}@host/d/
        topic = /t
        password = {PASSWORD}
        connection_parameters__password = {PASSWORD}
    """,
        "client",
    )
    assert len(cfg.errors) == 2, cfg.errors
    assert PASSWORD not in _all_text(cfg)


def test_secret_connection_parameters_masked_in_server_repr(tmp_path):
    cfg = load(
        tmp_path,
        SERVER + f"connection_parameters__password = {PASSWORD}\n"
        f"connection_parameters__client_kwargs__aws_secret_access_key = {PASSWORD}\n",
        "server",
    )
    chain = only_chain(cfg)
    assert chain.connection_parameters["password"] == PASSWORD
    assert PASSWORD not in _all_text(cfg)


# --------------------------------------------------------------------------------------------------
# Mirror and move_it
# --------------------------------------------------------------------------------------------------


def test_mirror_keeps_server_and_client_keys(tmp_path):
    chain = only_chain(
        load(
            tmp_path,
            """
        [m]
        providers = inside1:9010/1b/a inside2:9010
        client_topic = /1b/hrit
        destination = file:///data/mirror/
        origin = /data/mirror/{filename}
        request_port = 9338
        request_address = mirror.example.com
        topic = /1b/hrit
        delay = 2.5
    """,
            "mirror",
        )
    )
    assert chain.providers[0].topic == "/1b/a" and chain.client_topic == "/1b/hrit"
    assert (chain.request_port, chain.delay, chain.delete) == (9338, 2.5, False)


def test_move_it_destinations_list(tmp_path):
    chain = only_chain(
        load(
            tmp_path,
            """
        [m]
        origin = /in/{name}
        destinations = file:///a/ sftp://host/b/
        delete = yes
    """,
            "move_it",
        )
    )
    assert chain.destinations == ("file:///a/", "sftp://host/b/") and chain.delete is True


def test_guess_kind_from_content(tmp_path):
    paths = {}
    for name, text in {
        "s.ini": SERVER,
        "c.ini": CLIENT,
        "m.ini": "[m]\nproviders = a:1\norigin = /x/{n}\ntopic = /t\ndestination = file:///d/\n",
        "mv.ini": "[m]\norigin = /x/{n}\ndestinations = file:///d/\n",
        "d.yaml": "t:\n  dispatch_configs: [{topics: [/a]}]\n",
        "s3.yaml": "bucket: b\n",
    }.items():
        paths[name] = tmp_path / name
        paths[name].write_text(textwrap.dedent(text))
    assert {name: config.guess_kind(str(path)) for name, path in paths.items()} == {
        "s.ini": "server",
        "c.ini": "client",
        "m.ini": "mirror",
        "mv.ini": "move_it",
        "d.yaml": "dispatcher",
        "s3.yaml": "s3downloader",
    }


# --------------------------------------------------------------------------------------------------
# Dispatcher and s3downloader YAML
# --------------------------------------------------------------------------------------------------

DISPATCH = """
posttroll_subscriber:
  subscribe_addresses: [tcp://127.0.0.1:40000]
  nameserver: false
  subscribe_services: [svc]
target1:
  host: ftp://ftp.example.com
  directory: /in/{sensor}
  filepattern: '{platform_name}_{start_time:%Y%m%d%H%M}.{format}'
  aliases:
    - product: {green_snow: gs}
    - platform_name: {NOAA-19: n19}
      _alias_name: short_name
  dispatch_configs:
    - topics: [/level2/viirs]
      conditions:
        - product: [green_snow, true_color]
          sun_zenith_angle: '<90'
          except: {platform_name: NOAA-15}
        - coverage: '>=50.5'
    - topics: /level3
      directory: /other
"""


def test_dispatcher_targets_conditions_aliases_and_subscriber(tmp_path):
    cfg = load(tmp_path, DISPATCH, "dispatcher", name="d.yaml")
    assert not cfg.errors and not cfg.warnings
    (target,) = cfg.chains
    assert target.name == "target1" and target.host == "ftp://ftp.example.com"
    first, second = target.dispatch_configs
    assert first.topics == ("/level2/viirs",) and second.topics == ("/level3",)
    assert second.directory == "/other"
    assert config.thaw(first.conditions) == [
        {
            "product": ["green_snow", "true_color"],
            "sun_zenith_angle": "<90",
            "except": {"platform_name": "NOAA-15"},
        },
        {"coverage": ">=50.5"},
    ]
    assert config.thaw(target.aliases) == [
        {"product": {"green_snow": "gs"}},
        {"platform_name": {"NOAA-19": "n19"}, "_alias_name": "short_name"},
    ]
    subscriber = cfg.extra["subscriber"]
    assert subscriber.subscribe_addresses == ("tcp://127.0.0.1:40000",)
    assert subscriber.nameserver is False and subscriber.subscribe_services == ("svc",)


def test_dispatcher_subscriber_defaults(tmp_path):
    cfg = load(tmp_path, "t:\n  dispatch_configs: [{topics: [/a]}]\n", "dispatcher", name="d.yaml")
    assert cfg.extra["subscriber"].nameserver == "localhost"
    assert cfg.chains[0].host == ""


@pytest.mark.parametrize("condition", ["'<abc'", "'>'", "'!=x'", "'<=1e'"])
def test_dispatcher_bad_numeric_condition(tmp_path, condition):
    cfg = load(tmp_path, DISPATCH.replace("'<90'", condition), "dispatcher", name="d.yaml")
    assert len(cfg.errors) == 1
    assert cfg.errors[0].startswith(
        "d.yaml [target1.dispatch_configs[0]] conditions.sun_zenith_angle: expected a numeric comparison"
    )


def test_dispatcher_bad_condition_in_except(tmp_path):
    cfg = load(
        tmp_path, DISPATCH.replace("platform_name: NOAA-15", "elevation: '<x'"), "dispatcher", name="d.yaml"
    )
    assert cfg.errors and "conditions.elevation" in cfg.errors[0]


def test_dispatcher_target_without_dispatch_configs(tmp_path):
    cfg = load(tmp_path, "t:\n  host: ftp://h\n", "dispatcher", name="d.yaml")
    assert cfg.errors == (
        ("d.yaml [t] dispatch_configs: missing required key (a list of {topics: [...], conditions: ...})"),
    )


def test_dispatcher_unknown_target_key_warns(tmp_path):
    cfg = load(
        tmp_path, "t:\n  colour: blue\n  dispatch_configs: [{topics: [/a]}]\n", "dispatcher", name="d.yaml"
    )
    assert cfg.warnings == ("d.yaml [t] colour: unknown key for a dispatcher target, ignored",)


S3 = """
logging: {log_rotation_days: 1, log_rotation_backup: 30, logging_mode: DEBUG}
subscribe-topic: [/s3/new, /s3/other]
publish-topic: /s3/done
bucket: atms-sdr
download_destination: /data/s3
s3_kwargs: {anon: false, client_kwargs: {endpoint_url: 'http://127.0.0.1:9000'}}
subscriber_addresses: tcp://a:1, tcp://b:2
services: ''
"""


def test_s3downloader_keys_with_dashes(tmp_path):
    cfg = load(tmp_path, S3, "s3downloader", name="s3.yaml")
    settings = only_chain(cfg)
    assert settings.subscribe_topic == ("/s3/new", "/s3/other") and settings.publish_topic == "/s3/done"
    assert settings.bucket == "atms-sdr" and settings.download_destination == "/data/s3"
    assert settings.subscriber_addresses == ("tcp://a:1", "tcp://b:2")
    assert config.thaw(settings.s3_kwargs) == {
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
    }
    assert settings.logging["logging_mode"] == "DEBUG"


def test_s3downloader_without_bucket(tmp_path):
    cfg = load(tmp_path, S3.replace("bucket: atms-sdr\n", ""), "s3downloader", name="s3.yaml")
    assert cfg.errors == ("s3.yaml bucket: missing required key (bucket to download from)",)


# --------------------------------------------------------------------------------------------------
# TOML spelling
# --------------------------------------------------------------------------------------------------


def test_toml_is_the_same_content(tmp_path):
    ini = load(
        tmp_path,
        """
        [DEFAULT]
        connection_parameters__connection_uptime = 20
        delete = true
        [hrit]
        origin = /data/{name}
        topic = /t
        request_port = 9094
        info = sensor=seviri;stations=a,b
        connection_parameters__ssh_key_filename = /k
    """,
        "server",
    )
    toml = load(
        tmp_path,
        """
        [DEFAULT]
        delete = true
        [DEFAULT.connection_parameters]
        connection_uptime = "20"
        [hrit]
        origin = "/data/{name}"
        topic = "/t"
        request_port = 9094
        info = { sensor = "seviri", stations = ["a", "b"] }
        connection_parameters = { ssh_key_filename = "/k" }
    """,
        "server",
        name="test.toml",
    )
    assert not toml.errors and not toml.warnings
    assert ini.chains == toml.chains


def test_toml_bad_type_names_section_and_key(tmp_path):
    cfg = load(
        tmp_path, '[hrit]\norigin = "/d/{n}"\ntopic = "/t"\nrequest_port = [1, 2]\n', "server", name="t.toml"
    )
    assert cfg.errors == ("t.toml [hrit] request_port: expected an integer, got [1, 2]",)


def test_toml_syntax_error_is_reported_not_raised(tmp_path):
    cfg = load(tmp_path, '[hrit]\nproviders = ["a:1",\n', "client", name="t.toml")
    assert len(cfg.errors) == 1 and cfg.errors[0].startswith("t.toml: not a valid TOML file:")


# --------------------------------------------------------------------------------------------------
# File-level problems
# --------------------------------------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "nope.ini")


def test_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path)


def test_unknown_kind_is_a_config_error(tmp_path):
    (tmp_path / "x.ini").write_text(SERVER)
    with pytest.raises(ConfigError, match="unknown config kind 'servr'"):
        config.load(tmp_path / "x.ini", "servr")


def test_load_strict_raises_with_every_problem(tmp_path):
    (tmp_path / "x.ini").write_text(SERVER + "delete = maybe\nrequest_address = \n")
    with pytest.raises(ConfigError) as error:
        config.load_strict(tmp_path / "x.ini", "server")
    assert len(error.value.problems) == 2


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("e.yaml", "", "e.yaml: empty file: expected a YAML mapping"),
        (
            "e.yaml",
            "a: 2001-13-01\n",
            "e.yaml: not a valid YAML file: cannot read a value (month must be in 1..12)",
        ),
        ("e.yaml", "a: &x [*x]\n", "e.yaml: not a valid config: a YAML alias refers to its own anchor"),
        (
            "e.yaml",
            "!!python/object:os.system x\n",
            "e.yaml: not a valid YAML file: could not determine a constructor",
        ),
        ("e.ini", "[a]\nx = 1\nx = 2\n", "e.ini: not a valid INI file: While reading from"),
        ("e.ini", b"[a]\nx = \xff\n", "e.ini: not UTF-8 text"),
        (
            "e.toml",
            "DEFAULT = 3\n[s]\norigin = '/a/{x}'\ntopic = '/t'\n",
            "e.toml [DEFAULT]: expected a table",
        ),
    ],
)
def test_file_level_problems_are_errors_not_exceptions(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    kind = "dispatcher" if name.endswith(".yaml") else "server"
    cfg = config.load(path, kind)
    assert cfg.errors and cfg.errors[0].startswith(expected), cfg.errors


def test_describe_keys_documents_every_field():
    rows = config.describe_keys("client")
    names = {row[0] for row in rows}
    assert {"providers", "destination", "topic", "login"} <= names
    assert all(row[1] in ("required", "optional") for row in rows)
    assert {f.name for f in dataclasses.fields(ClientChain)} - {"name"} == names
