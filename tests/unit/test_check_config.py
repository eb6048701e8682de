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
from controller import run_cli

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
    "client_xrit_without_decompressor.ini": [
        "client_xrit_without_decompressor.ini",
        "[hrit]",
        "xritdecompressor",
        "compression = xrit",
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
