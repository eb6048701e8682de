"""``trollmoves check-config``, run as a real program on broken and example configs.

Why: Ansible runs it as ``validate:`` before installing a config, and operators run
it by hand. What they see is the exit code and the text: each problem must name
the file, the section and the key, with the value found and what was expected, and
never be a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.controller import run_cli

from trollmoves import config

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "tests" / "data" / "broken"
EXAMPLES = ROOT / "examples"

EXPECTED = {
    # file: substrings the output must hold (file name, [section], key, value found / expectation)
    "server_missing_topic.ini": ["server_missing_topic.ini", "[hrit]", "topic", "missing required key"],
    "server_request_port_abc.ini": [
        "server_request_port_abc.ini",
        "[hrit]",
        "request_port",
        "expected an integer",
        "got 'abc'",
    ],
    "server_delete_maybe.ini": [
        "server_delete_maybe.ini",
        "[hrit]",
        "delete",
        "expected a boolean",
        "got 'maybe'",
    ],
    "server_default_bad_boolean.ini": [
        "server_default_bad_boolean.ini",
        "[hrit]",
        "delete",
        "got 'perhaps'",
        "inherited from [DEFAULT]",
    ],
    "server_unbalanced_brace.ini": [
        "server_unbalanced_brace.ini",
        "[hrit]",
        "origin",
        "expected a trollsift pattern",
        "'/data/in/{platform_name_{start_time",
    ],
    "server_duplicate_request_port.ini": [
        "server_duplicate_request_port.ini",
        "[aapp]",
        "request_port",
        "port 9094 is already used by section [hrit]",
    ],
    "server_relative_origin.ini": [
        "server_relative_origin.ini",
        "[hrit]",
        "origin",
        "expected an absolute path pattern",
        "got 'data/in/{name}.dat'",
    ],
    "server_unknown_compression.ini": [
        "server_unknown_compression.ini",
        "[hrit]",
        "compression",
        "expected one of xrit, bzip",
        "got 'zip'",
    ],
    "server_invalid_syntax.ini": ["server_invalid_syntax.ini", "not a valid INI file", "line: 2"],
    "server_empty.ini": ["server_empty.ini", "no sections"],
    "server_bad_types.toml": [
        "server_bad_types.toml",
        "[hrit]",
        "request_port",
        "expected an integer",
        "got 'abc'",
    ],
    "client_bad_provider.ini": [
        "client_bad_provider.ini",
        "[hrit]",
        "providers",
        "expected host:port[/topic]",
        "got 'foo'",
    ],
    "client_missing_destination.ini": [
        "client_missing_destination.ini",
        "[hrit]",
        "destination",
        "missing required key",
    ],
    "client_publish_port_out_of_range.ini": [
        "client_publish_port_out_of_range.ini",
        "[hrit]",
        "publish_port",
        "expected a port number 0-65535",
        "got '70000'",
    ],
    "client_invalid_syntax.toml": ["client_invalid_syntax.toml", "not a valid TOML file"],
    "mirror_missing_providers.ini": [
        "mirror_missing_providers.ini",
        "[hrit]",
        "providers",
        "missing required key",
    ],
    "move_it_bad_destination_scheme.ini": [
        "move_it_bad_destination_scheme.ini",
        "[hrit]",
        "destinations",
        "got 'gopher://old.example.com/archive/'",
        "scheme 'gopher'",
    ],
    "dispatch_bad_condition.yaml": [
        "dispatch_bad_condition.yaml",
        "[target1.dispatch_configs[0]]",
        "conditions.sun_zenith_angle",
        "expected a numeric comparison",
        "got '<abc'",
    ],
    "dispatch_no_dispatch_configs.yaml": [
        "dispatch_no_dispatch_configs.yaml",
        "[target1]",
        "dispatch_configs",
        "missing required key",
    ],
    "dispatch_invalid_syntax.yaml": ["dispatch_invalid_syntax.yaml", "not a valid YAML file", "line 5"],
    "s3downloader_no_bucket.yaml": ["s3downloader_no_bucket.yaml", "bucket", "missing required key"],
    "s3downloader_empty.yaml": ["s3downloader_empty.yaml", "empty file"],
}

RUNNERS = {
    "console-script": ["trollmoves", "check-config"],
    "python-m": [sys.executable, "-m", "trollmoves.cli", "check-config"],
}


def test_every_broken_file_has_expectations():
    assert sorted(p.name for p in BROKEN.iterdir()) == sorted(EXPECTED)
    assert len(EXPECTED) >= 14


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_config_fails_with_file_section_and_key(name, runner):
    code, out, err = run_cli([*RUNNERS[runner], str(BROKEN / name)], timeout=60)
    assert code == 1, out + err
    assert "Traceback" not in out + err
    errors = [line for line in out.splitlines() if line.startswith("ERROR ")]
    assert errors, out
    missing = [text for text in EXPECTED[name] if not any(text in line for line in errors)]
    assert not missing, f"output lacks {missing}:\n{out}"
    # The section, key and value are named together, on one line.
    assert any(all(text in line for text in EXPECTED[name]) for line in errors), out


def test_several_files_at_once_exit_1_and_report_each():
    files = [
        str(BROKEN / "server_delete_maybe.ini"),
        str(EXAMPLES / "move_it_client.ini"),
        str(BROKEN / "dispatch_bad_condition.yaml"),
    ]
    code, out, _ = run_cli(["trollmoves", "check-config", *files])
    assert code == 1
    assert "server_delete_maybe.ini [hrit] delete" in out and "dispatch_bad_condition.yaml" in out
    assert f"OK {files[1]}: client config, 4 sections" in out


def test_quiet_prints_errors_only_and_strict_fails_on_warnings(tmp_path):
    path = tmp_path / "warn.ini"
    path.write_text("[hrit]\norigin = /d/{n}\ntopic = /t\ncolour = blue\n")
    code, out, _ = run_cli(["trollmoves", "check-config", "-q", str(path)])
    assert (code, out) == (0, "")
    code, out, _ = run_cli(["trollmoves", "check-config", "--strict", str(path)])
    assert code == 1 and "WARNING warn.ini [hrit] colour: unknown key" in out


def test_kind_option_overrides_the_guess(tmp_path):
    path = tmp_path / "client.ini"
    path.write_text("[hrit]\nproviders = a:1\ndestination = file:///d/\ntopic = /t\n")
    assert run_cli(["trollmoves", "check-config", str(path)])[0] == 0
    code, out, _ = run_cli(["trollmoves", "check-config", "--kind", "server", str(path)])
    assert code == 1 and "[hrit] origin: missing required key" in out


def test_missing_file_and_bad_kind(tmp_path):
    code, out, err = run_cli(["trollmoves", "check-config", str(tmp_path / "nope.ini")])
    assert code == 1 and "nope.ini: no such file" in out and "Traceback" not in err
    code, _, err = run_cli(["trollmoves", "check-config", "--kind", "nonsense", str(tmp_path)])
    assert code == 2 and "invalid choice: 'nonsense'" in err


CONFIG_SUFFIXES = (".ini", ".yaml", ".yml", ".toml")
EXAMPLE_CONFIGS = sorted(p for p in EXAMPLES.iterdir() if p.is_file() and p.suffix in CONFIG_SUFFIXES)


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_every_example_passes(path):
    code, out, err = run_cli(["trollmoves", "check-config", str(path)])
    assert code == 0, out + err
    assert out.startswith(f"OK {path}"), out


TWINS = sorted(p for p in EXAMPLES.glob("*.toml"))


def _twin_params():
    for toml_path in TWINS:
        original = next(p for p in EXAMPLE_CONFIGS if p.stem == toml_path.stem and p.suffix != ".toml")
        yield pytest.param(original, toml_path, id=toml_path.name)


def test_every_ini_and_yaml_example_has_a_toml_twin():
    stems = {p.stem for p in EXAMPLE_CONFIGS if p.suffix != ".toml"}
    assert stems == {p.stem for p in TWINS}


@pytest.mark.parametrize(("original", "twin"), list(_twin_params()))
def test_toml_twin_loads_to_equal_objects(original, twin):
    """The TOML examples are the same content: same chains, daemon settings and extras."""
    expected, got = config.load(original), config.load(twin)
    assert expected.kind == got.kind
    assert not expected.errors and not got.errors, expected.errors + got.errors
    assert expected.chains == got.chains
    assert (expected.daemon, expected.extra) == (got.daemon, got.extra)


# --------------------------------------------------------------------------------------------------
# Issue 13: transfer options typed at load, lenient where 0.19 was, kind detected from content
# --------------------------------------------------------------------------------------------------

def _check(tmp_path, name: str, text: str, *options: str) -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(text)
    code, out, err = run_cli(["trollmoves", "check-config", *options, str(path)])
    assert "Traceback" not in out + err
    return code, out


SERVER_INI = "[chain]\norigin = /data/in/{name}\ntopic = /t\nrequest_port = 9094\n"


@pytest.mark.parametrize(("line", "expected"), [
    ("connection_parameters__retries = lots",
     "ERROR server.ini [chain] connection_parameters__retries: expected an integer, got 'lots'"),
    ("connection_parameters__connection_uptime = soon",
     "ERROR server.ini [chain] connection_parameters__connection_uptime: expected a number, got 'soon'"),
    ("connection_parameters__use_tmp_on_transfer = maybe",
     "ERROR server.ini [chain] connection_parameters__use_tmp_on_transfer: expected a boolean"),
    ("connection_parameters__buffer_size = big",
     "ERROR server.ini [chain] connection_parameters__buffer_size: expected a size in bytes"),
    ("connection_parameters__checksum = crc7",
     "ERROR server.ini [chain] connection_parameters__checksum: expected one of"),
    ("ssh_connection_timeout = later",  # a deprecated top-level key, typed as well
     "ERROR server.ini [chain] ssh_connection_timeout: expected a number, got 'later'"),
    ("connection_parameters__max_concurrency = -2",
     "ERROR server.ini [chain] connection_parameters__max_concurrency: expected an integer >= 0, got '-2'"),
])
def test_connection_parameters_are_typed_at_load(tmp_path, line, expected):
    """What the movers would reject at the first transfer is rejected by check-config (Ansible's validate:)."""
    code, out = _check(tmp_path, "server.ini", SERVER_INI + line + "\n")
    assert code == 1, out
    assert any(row.startswith(expected) for row in out.splitlines()), out


def test_every_bad_connection_parameter_is_reported_at_once(tmp_path):
    code, out = _check(tmp_path, "server.ini", SERVER_INI + "connection_parameters__retries = lots\n"
                       "connection_parameters__verify = perhaps\n")
    assert code == 1
    assert "[chain] connection_parameters__retries:" in out and "[chain] connection_parameters__verify:" in out


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("move_it.ini", "[m]\norigin = /d/{name}\ndestinations = file:///out/\nconnection_parameters__retries = lots\n",
     "ERROR move_it.ini [m] connection_parameters__retries: expected an integer, got 'lots'"),
    ("mirror.ini", "[m]\nproviders = a:1\ndestination = file:///d/\norigin = /d/{name}\ntopic = /t\n"
     "request_port = 9338\nconnection_parameters__num_ssh_retries = two\n",
     "ERROR mirror.ini [m] connection_parameters__num_ssh_retries: expected an integer, got 'two'"),
    ("server.toml", '[chain]\norigin = "/d/{name}"\ntopic = "/t"\n[chain.connection_parameters]\nretries = "lots"\n',
     "ERROR server.toml [chain] connection_parameters.retries: expected an integer, got 'lots'"),
    ("dispatch.yaml", "t:\n  host: sftp://h\n  connection_parameters: {retries: lots}\n"
     "  dispatch_configs: [{topics: [/a]}]\n",
     "ERROR dispatch.yaml [t] connection_parameters.retries: expected an integer, got 'lots'"),
    ("s3downloader.yaml", "bucket: b\ns3_kwargs: {anon: sometimes}\n",
     "ERROR s3downloader.yaml s3_kwargs.anon: expected a boolean"),
])
def test_every_kind_types_its_transfer_options(tmp_path, name, text, expected):
    code, out = _check(tmp_path, name, text)
    assert code == 1, out
    assert any(row.startswith(expected) for row in out.splitlines()), out


def test_unknown_connection_parameter_warns_and_is_an_error_for_an_s3_destination(tmp_path):
    code, out = _check(tmp_path, "server.ini", SERVER_INI + "connection_parameters__retrys = 3\n")
    assert code == 0 and "WARNING server.ini [chain] connection_parameters__retrys: unknown setting" in out
    code, out = _check(tmp_path, "move_it.ini", "[m]\norigin = /d/{name}\ndestinations = s3://bucket/out/\n"
                       "connection_parameters__retrys = 3\n")
    assert code == 1 and "ERROR move_it.ini [m] connection_parameters__retrys: unknown setting: the S3 mover" in out


@pytest.mark.parametrize(("name", "text"), [
    # The original's own move_it example has an empty publish_port; 0.19 reads it as unset.
    ("move_it.ini", "[m]\norigin = /d/{name}\ndestinations = file:///out/\npublish_port =\n"),
    ("client.ini", "[c]\nproviders = a:1\ndestination = file:///d/\ntopic = /t\npublish_port =\n"),
])
def test_empty_publish_port_is_a_warning(tmp_path, name, text):
    code, out = _check(tmp_path, name, text)
    assert code == 0, out
    assert "publish_port: empty value, treated as unset" in out and out.splitlines()[-1].startswith("OK ")


def test_xrit_without_decompressor_is_a_warning(tmp_path):
    code, out = _check(tmp_path, "client.ini", "[hrit]\nproviders = server1:9010\ndestination = file:///data/\n"
                       "topic = /1b/hrit\ncompression = xrit\n")
    assert code == 0, out
    assert "WARNING client.ini [hrit] xritdecompressor: missing for compression = xrit" in out


@pytest.mark.parametrize("password", ["p@ss", "a/b", "x:y:z", "h#sh", "all@/:#?%"])
def test_login_password_with_url_characters_is_valid(tmp_path, password):
    code, out = _check(tmp_path, "client.ini", "[c]\nproviders = a:1\ndestination = ftp://h/d/\ntopic = /t\n"
                       f"login = user:{password}\n")
    assert code == 0, out
    assert password not in out


REMOVE_IT = """[DEFAULT]
mailhost = localhost
to = operator@example.com
subject = Cleanup Error on {hostname}

[hrpt]
base_dir = /data/prod/satellit/
templates = hrpt/*,hrpt/*/*
hours = 3
"""
FETCHER = """subscriber_config:
  addresses: [tcp://127.0.0.1:40000]
  nameserver: false
publisher_config:
  name: fetcher
destination: /data/fetched
"""


@pytest.mark.parametrize(("name", "text", "looks_like"), [
    ("remove_it.ini", REMOVE_IT, "a remove_it config"),
    ("remove_it.cfg", REMOVE_IT, "a remove_it config"),
    ("fetcher.yaml", FETCHER, "a pytroll-fetcher config"),
    ("fetcher.yaml-template", FETCHER, "a pytroll-fetcher config"),
    ("other.ini", "[section]\ncolour = blue\n", "an INI file whose sections have none of the keys"),
    ("other.yaml", "colour: blue\n", "a YAML file with no dispatcher targets"),
])
def test_a_file_of_another_program_is_named_as_such(tmp_path, name, text, looks_like):
    code, out = _check(tmp_path, name, text)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(f"ERROR {tmp_path / name}: not a trollmoves daemon config (looks like {looks_like}")


def test_kind_option_still_forces_a_kind_on_another_programs_file(tmp_path):
    code, out = _check(tmp_path, "remove_it.ini", REMOVE_IT, "--kind", "server")
    assert code == 1 and "ERROR remove_it.ini [hrpt] topic: missing required key" in out


@pytest.mark.parametrize(("name", "kind"), [
    ("dispatch.yaml-template", "dispatcher"),
    ("dispatch.yml.j2", "dispatcher"),
    ("dispatch.conf", "dispatcher"),
    ("s3downloader.yaml-template", "s3downloader"),
    ("server.ini-template", "server"),
])
def test_kind_and_format_come_from_the_content(tmp_path, name, kind):
    """A template's extension is no INI/YAML extension: the content decides (issue 13)."""
    source = {"dispatcher": EXAMPLES / "dispatch.yaml", "s3downloader": EXAMPLES / "s3downloader.yaml",
              "server": EXAMPLES / "move_it_server.ini"}[kind]
    code, out = _check(tmp_path, name, source.read_text())
    assert code == 0, out
    assert out.splitlines()[-1].startswith(f"OK {tmp_path / name}: {kind} config"), out
