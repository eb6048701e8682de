"""The command lines, run as real programs: names, options, exit codes and error texts.

Why: init scripts, systemd units and Ansible call the original script names with the
original options (reference §1); a renamed option or a traceback instead of "file,
section, key: expected ..." breaks a station at its next restart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import trollmoves
from tests.controller import run_cli

BROKEN = Path(__file__).resolve().parents[2] / "tests" / "data" / "broken"

LOGGING = ["-c", "--log-config", "-l", "--log", "-v", "--verbose"]
SERVER_OPTIONS = [
    "-p",
    "--port",
    "--disable-backlog",
    "-w",
    "--watchdog",
    "--chain-check-interval",
    "--max-notifier-restarts",
    *LOGGING,
]
ORIGINAL_OPTIONS = {
    "move_it_server.py": SERVER_OPTIONS,
    "move_it_mirror.py": ["-p", "--port", *LOGGING],  # 0.19's mirror.parse_args: no backlog/watchdog options
    "move_it.py": SERVER_OPTIONS,
    "move_it_client.py": LOGGING,
    "dispatcher.py": ["-p", "--publish-port", "-n", "--publish-nameserver", *LOGGING],
    "s3downloader.py": [
        "-c",
        "--config-file",
        "-l",
        "--log",
        "-r",
        "--subscribe-nameserver",
        "-n",
        "--nameservers",
    ],
}
SUBCOMMANDS = {
    "server": "move_it_server.py",
    "client": "move_it_client.py",
    "mirror": "move_it_mirror.py",
    "move-it": "move_it.py",
    "dispatcher": "dispatcher.py",
    "s3downloader": "s3downloader.py",
}


def _options_in_help(text: str) -> set[str]:
    return {word.rstrip(",") for word in text.split() if word.startswith("-")}


@pytest.mark.parametrize("script", sorted(ORIGINAL_OPTIONS))
def test_original_script_help_lists_the_original_options(script):
    code, out, err = run_cli([script, "--help"])
    assert code == 0, err
    assert out.startswith(f"usage: {script} ")
    missing = set(ORIGINAL_OPTIONS[script]) - _options_in_help(out)
    assert not missing, f"{script} --help lacks {sorted(missing)}"


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_trollmoves_subcommand_help_has_the_same_options_as_the_script(command):
    code, out, err = run_cli(["trollmoves", command, "--help"])
    assert code == 0, err
    assert out.startswith(f"usage: trollmoves {command} ")
    _, script_out, _ = run_cli([SUBCOMMANDS[command], "--help"])
    assert _options_in_help(out) == _options_in_help(script_out)


@pytest.mark.parametrize("command", ["check-config", "demo"])
def test_trollmoves_own_subcommands_help(command):
    code, out, err = run_cli(["trollmoves", command, "--help"])
    assert code == 0, err
    assert out.startswith(f"usage: trollmoves {command}")


def test_trollmoves_help_lists_every_command():
    code, out, _ = run_cli(["trollmoves", "--help"])
    assert code == 0
    for command in [*SUBCOMMANDS, "check-config", "demo"]:
        assert f"\n  {command} " in out


def test_trollmoves_without_command_is_a_usage_error():
    code, out, _ = run_cli(["trollmoves"])
    assert code == 2 and out.startswith("usage: trollmoves <command>")


def test_unknown_command_is_a_usage_error():
    code, _, err = run_cli(["trollmoves", "sever"])
    assert code == 2 and "unknown command 'sever'" in err


def test_version():
    code, out, _ = run_cli(["trollmoves", "--version"])
    assert (code, out) == (0, f"trollmoves {trollmoves.__version__}\n")


def test_python_dash_m_runs_the_same_program():
    code, out, _ = run_cli([sys.executable, "-m", "trollmoves.cli", "--version"])
    assert (code, out) == (0, f"trollmoves {trollmoves.__version__}\n")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["move_it_server.py", "server_delete_maybe.ini"],
            "server_delete_maybe.ini [hrit] delete: expected a boolean",
        ),
        (
            ["move_it_mirror.py", "mirror_missing_providers.ini"],
            "mirror_missing_providers.ini [hrit] providers: missing required key",
        ),
        (
            ["move_it.py", "move_it_bad_destination_scheme.ini"],
            "move_it_bad_destination_scheme.ini [hrit] destinations:",
        ),
        (
            ["move_it_client.py", "client_bad_provider.ini"],
            "client_bad_provider.ini [hrit] providers: expected host:port[/topic] (whitespace-separated), got",
        ),
        (
            ["dispatcher.py", "dispatch_bad_condition.yaml"],
            "dispatch_bad_condition.yaml [target1.dispatch_configs[0]] conditions.sun_zenith_angle: expected",
        ),
        (
            ["s3downloader.py", "-c", "s3downloader_no_bucket.yaml"],
            "s3downloader_no_bucket.yaml bucket: missing required key",
        ),
        (
            ["trollmoves", "server", "server_request_port_abc.ini"],
            "server_request_port_abc.ini [hrit] request_port: expected an integer, got 'abc'",
        ),
        (["trollmoves", "client", "server_empty.ini"], "server_empty.ini: no sections"),
    ],
)
def test_daemon_on_a_broken_config_exits_non_zero_naming_file_section_and_key(argv, expected):
    argv = [*argv[:-1], str(BROKEN / argv[-1])]
    code, out, err = run_cli(argv, timeout=60)
    assert code != 0
    assert expected in err, err
    assert "Traceback" not in out + err
    assert "Cannot start" in err


def test_daemon_on_a_missing_config_file_exits_non_zero(tmp_path):
    code, out, err = run_cli(["move_it_server.py", str(tmp_path / "absent.ini")])
    assert code != 0 and "absent.ini: no such file" in err and "Traceback" not in out + err


def test_daemon_with_a_broken_log_config_exits_non_zero(tmp_path):
    log_config = tmp_path / "log.yaml"
    log_config.write_text("version: 1\nroot: {handlers: [missing]}\n")
    code, out, err = run_cli(
        ["move_it_client.py", "-c", str(log_config), str(BROKEN / "client_bad_provider.ini")]
    )
    assert code != 0 and "log.yaml: cannot use this logging config" in err and "Traceback" not in out + err


def test_missing_positional_argument_is_a_usage_error():
    code, _, err = run_cli(["move_it_server.py"])
    assert code == 2 and "the following arguments are required: config_file" in err
