"""The WIS2 bridge's role (trollmoves_wis2): preflight, the config it writes, its unit, and secrecy.

The role's phases run on this machine (connection local, everything under a temporary
directory, systemd left alone, as tests/ansible/render_examples.yml does), with ``-vvv --diff``
so that everything Ansible can show is shown: the broker password must reach the config file
and nothing else - not the output of a good run, nor of a config that ``trollmoves check-config``
refuses, nor of a preflight failure. The config is validated by ``trollmoves check-config`` of
this checkout (a launcher in a temporary ``bin/``: the test venv's console script may belong to
another checkout) and read back with ``trollmoves.config.load`` as the bridge reads it.
The whole deployment (install, wheelhouse, idempotence of all roles) is molecule's job
(test_molecule.py).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ansible.tools import REPO, PlaybookRun, run_tool

PASSWORD = "wis2-T3st%pass;word"
"""The broker password: in the config file, never in the output."""
CHAIN_PASSWORD = "chain-0wn-s3cret"

PUBLISH_CHAIN = {
    "name": "level2",
    "topics": ["/level2/avhrr", "/level2/viirs"],
    "nameserver": False,
    "subscribe_addresses": ["tcp://127.0.0.1:40000"],
    "wis2_topic": "origin/a/wis2/{centre_id}/data/{policy}/weather/space-based-observations/{platform_name}/{sensor}",
    "aliases": {"platform_name": {"Metop-B": "metop-b", "NOAA-20": "noaa-20"}, "sensor": {"avhrr/3": "avhrr-3"}},
    "base_path": "/data/outbox",
    "base_url": "https://data.example.org/outbox",
    "inline_content": False,
    "properties": ["platform_name", "sensor", "orbit_number"],
}
SUBSCRIBE_CHAIN = {
    "name": "gb-core",
    "broker": "mqtts://globalbroker.example.org:8883",
    "username": "everyone",
    "password": CHAIN_PASSWORD,
    "ca_file": None,  # drops the inherited CA bundle: the system store
    "client_id": "xx-test-bridge-1",
    "subscribe": ["origin/a/wis2/+/data/core/weather/#"],
    "publish_topic": "/wis2/incoming",
    "on_deletion": "delete",
}


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the role sets root ownership on what it writes: run as root")


def _checkout_trollmoves(directory: Path) -> Path:
    """A ``<dir>/bin/trollmoves`` that runs this checkout's CLI with the test interpreter."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "trollmoves"
    launcher.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                        "from trollmoves.cli import main\nsys.exit(main())\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def _host_vars(base: Path) -> dict:
    """Everything under ``base``, as root, systemd untouched; a bridge with one chain each way."""
    (base / "ca.pem").write_text("placeholder: only its existence is checked\n")
    firewall = "nftables" if shutil.which("nft") else "none"
    return {
        "ansible_python_interpreter": "/usr/bin/python3",
        "trollmoves_common_venv": str(_checkout_trollmoves(base / "venv")),
        "trollmoves_common_user": "root",
        "trollmoves_common_group": "root",
        "trollmoves_common_config_dir": str(base / "etc"),
        "trollmoves_common_home": str(base / "home"),
        "trollmoves_common_unit_dir": str(base / "units"),
        "trollmoves_common_nftables_dir": str(base / "nftables.d"),
        "trollmoves_common_firewall": firewall,
        "trollmoves_common_firewall_load": False,
        "trollmoves_common_nftables_include": False,
        "trollmoves_wis2_manage_systemd": False,
        "trollmoves_wis2_publish_port": 9021,
        "trollmoves_wis2_publish_nameservers": ["ns1", "ns2"],
        "trollmoves_wis2_extra_args": ["-v"],
        "trollmoves_wis2_metrics_scrapers": ["192.0.2.10", "2001:db8::10"],
        "trollmoves_wis2_broker": "mqtt://127.0.0.1:1883",
        "trollmoves_wis2_username": "xx-test",
        "trollmoves_wis2_password": PASSWORD,
        "trollmoves_wis2_ca_file": str(base / "ca.pem"),
        "trollmoves_wis2_centre_id": "xx-test",
        "trollmoves_wis2_publish_chains": [PUBLISH_CHAIN],
        "trollmoves_wis2_subscribe_chains": [dict(SUBSCRIBE_CHAIN, destination=str(base / "data" / "wis2"))],
    }


def _run_phases(ansible_env, workdir: Path, host_vars: dict, phases: list[str]) -> PlaybookRun:
    """Run the role's phases with ``-vvv --diff``; the variables come from a file (-e @file), so
    that no playbook line shown around an error holds a password."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "vars.json").write_text(json.dumps(host_vars))
    playbook = workdir / "phases.yml"
    playbook.write_text(json.dumps([{
        "name": "Run phases of trollmoves_wis2", "hosts": "all", "gather_facts": False,
        "tasks": [{"name": f"Run the {phase} phase", "ansible.builtin.include_role": {
            "name": "trollmoves_wis2", "tasks_from": phase}} for phase in phases]}], indent=1))
    return run_tool(["ansible-playbook", "-i", "localhost,", "-c", "local", "-e", f"@{workdir / 'vars.json'}",
                     "-vvv", "--diff", str(playbook)], ansible_env)


def _assert_secret(run: PlaybookRun) -> None:
    for secret in (PASSWORD, CHAIN_PASSWORD):
        assert secret not in run.output, f"a broker password is in the output of ansible-playbook -vvv --diff:\n" \
                                         f"{run.output.replace(secret, '<PASSWORD HERE>')[-6000:]}"


@pytest.fixture(scope="module")
def deployed(ansible_env, tmp_path_factory):
    """preflight, configure and run of the role, twice (the second must change nothing)."""
    _require_root()
    base = tmp_path_factory.mktemp("wis2-role")
    host_vars = _host_vars(base)
    first = _run_phases(ansible_env, base / "first", host_vars, ["preflight", "configure", "run"])
    second = _run_phases(ansible_env, base / "second", host_vars, ["preflight", "configure", "run"])
    return base, host_vars, first, second


def test_deployment_succeeds_and_is_idempotent(deployed):
    _base, _vars, first, second = deployed
    assert first.returncode == 0, first.tail(8000)
    assert second.returncode == 0, second.tail(8000)
    assert second.recap["localhost"]["changed"] == 0, second.recap_text


def test_no_password_in_the_output_of_a_deployment(deployed):
    _base, _vars, first, second = deployed
    assert "'no_log: true' was specified for this result" in first.output  # the config task ran, hidden
    _assert_secret(first)
    _assert_secret(second)


def test_config_is_readable_by_the_service_group_only(deployed):
    base, _vars, first, _second = deployed
    assert first.returncode == 0, first.tail(8000)
    info = (base / "etc" / "wis2-main.ini").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, 0)
    assert (base / "home" / "wis2-main").is_dir()
    assert (base / "data" / "wis2").is_dir()  # the subscribe chain's destination, created


def test_config_is_what_the_bridge_reads(deployed):
    from trollmoves import config

    base, _vars, first, _second = deployed
    assert first.returncode == 0, first.tail(8000)
    cfg = config.load_strict(str(base / "etc" / "wis2-main.ini"), "wis2")
    assert cfg.chain_names == ("level2", "gb-core")
    assert (cfg.daemon.metrics_port, cfg.daemon.state_directory) == (9114, str(base / "home" / "wis2-main"))
    out, inc = cfg.chain("level2"), cfg.chain("gb-core")
    # The role-level broker, login, CA bundle and centre id are inherited by the publish chain...
    assert (out.direction, out.broker, out.username, out.password) == (
        "publish", "mqtt://127.0.0.1:1883", "xx-test", PASSWORD)
    assert (out.ca_file, out.centre_id) == (str(base / "ca.pem"), "xx-test")
    assert out.topics == ("/level2/avhrr", "/level2/viirs")
    assert {k: dict(v) for k, v in out.aliases.items()} == PUBLISH_CHAIN["aliases"]
    assert out.properties == ("platform_name", "sensor", "orbit_number")
    assert (out.inline_content, out.nameserver) == (False, False)
    # ... while the subscribe chain's own keys win, null drops an inherited key, and centre_id
    # (a publish key) is not written there.
    assert (inc.direction, inc.broker, inc.username, inc.password) == (
        "subscribe", "mqtts://globalbroker.example.org:8883", "everyone", CHAIN_PASSWORD)
    assert inc.ca_file is None
    assert (inc.client_id, inc.subscribe, inc.on_deletion) == (
        "xx-test-bridge-1", ("origin/a/wis2/+/data/core/weather/#",), "delete")
    assert inc.destination == str(base / "data" / "wis2")
    raw = configparser.ConfigParser(interpolation=None)
    raw.read(base / "etc" / "wis2-main.ini")
    assert "centre_id" not in raw["gb-core"] and "ca_file" not in raw["gb-core"]
    assert raw["level2"]["aliases"] == "platform_name: Metop-B=metop-b, NOAA-20=noaa-20; sensor: avhrr/3=avhrr-3"


def test_unit_runs_trollmoves_wis2_hardened(deployed):
    base, host_vars, first, _second = deployed
    assert first.returncode == 0, first.tail(8000)
    unit_path = base / "units" / "trollmoves-wis2@.service"
    lines = unit_path.read_text().splitlines()
    venv, etc = host_vars["trollmoves_common_venv"], base / "etc"
    assert f"ExecStart={venv}/bin/trollmoves wis2 $TROLLMOVES_ARGS -c {etc}/logging.yaml {etc}/wis2-%i.ini" in lines
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
                 "CapabilityBoundingSet=", "SystemCallFilter=@system-service", "Restart=on-failure",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "ExecReload=/bin/kill -HUP $MAINPID",
                 f"ReadWritePaths={base}/home/wis2-%i", f"ReadWritePaths=-{base}/data/wis2", "TimeoutStopSec=60",
                 f"EnvironmentFile={etc}/wis2-%i.env", "User=root"):
        assert line in lines, (line, unit_path.read_text())
    env = (etc / "wis2-main.env").read_text().splitlines()
    assert "TROLLMOVES_ARGS=-p 9021 -n ns1 ns2 -v" in env, env
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's content was checked, not its verdict")
    for argv in (["systemd-analyze", "verify", str(unit_path)],
                 ["systemd-analyze", "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit_path)]):
        done = subprocess.run(argv, check=False, capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stdout[-3000:], done.stderr[-3000:])


def test_metrics_port_is_open_to_the_scrapers_only(deployed):
    base, host_vars, first, _second = deployed
    assert first.returncode == 0, first.tail(8000)
    if host_vars["trollmoves_common_firewall"] != "nftables":
        pytest.skip("nft is not installed: no rules were written")
    rules = (base / "nftables.d" / "trollmoves-wis2-main.nft").read_text()
    assert "ip saddr { 192.0.2.10 } tcp dport 9114 accept" in rules
    assert "ip6 saddr { 2001:db8::10 } tcp dport 9114 accept" in rules
    assert "tcp dport 9114 counter drop" in rules


RELOAD = "RUNNING HANDLER [trollmoves_wis2 : Reload trollmoves WIS2 bridge]"
RESTART = "RUNNING HANDLER [trollmoves_wis2 : Restart trollmoves WIS2 bridge]"


def test_config_change_reloads_and_option_change_restarts_the_bridge(ansible_env, tmp_path):
    """A changed chain notifies the reload handler only (SIGHUP); changed command-line options the
    restart handler only. systemd is left alone here, so the handlers run and skip their action."""
    _require_root()
    host_vars = _host_vars(tmp_path)
    first = _run_phases(ansible_env, tmp_path / "first", host_vars, ["configure", "run"])
    assert first.returncode == 0, first.tail(8000)
    chain = dict(host_vars["trollmoves_wis2_subscribe_chains"][0], seen_ttl=3600)
    reloaded = _run_phases(ansible_env, tmp_path / "chain", dict(host_vars, trollmoves_wis2_subscribe_chains=[chain]),
                           ["configure", "run"])
    assert reloaded.returncode == 0, reloaded.tail(8000)
    assert RELOAD in reloaded.output and RESTART not in reloaded.output, reloaded.tail(8000)
    new_options = dict(host_vars, trollmoves_wis2_subscribe_chains=[chain], trollmoves_wis2_extra_args=["-v", "-v"])
    restarted = _run_phases(ansible_env, tmp_path / "options", new_options, ["configure", "run"])
    assert restarted.returncode == 0, restarted.tail(8000)
    assert RESTART in restarted.output and RELOAD not in restarted.output, restarted.tail(8000)
    assert "TROLLMOVES_ARGS=-p 9021 -n ns1 ns2 -v -v" in (tmp_path / "etc" / "wis2-main.env").read_text().splitlines()
    for run in (first, reloaded, restarted):
        _assert_secret(run)


@pytest.mark.parametrize("bad_value, shown", [("soon", "seen_ttl"), (PASSWORD, "********")],
                         ids=["bad-value", "value-equal-to-the-password"])
def test_refused_config_names_the_key_keeps_the_old_one_never_shows_the_password(
        ansible_env, deployed, bad_value, shown):
    """check-config's refusal is reported (file, section, key); a password it might echo is masked."""
    base, host_vars, first, _second = deployed
    assert first.returncode == 0, first.tail(8000)
    config_path = base / "etc" / "wis2-main.ini"
    before = config_path.read_bytes()
    bad = dict(host_vars, trollmoves_wis2_subscribe_chains=[
        dict(host_vars["trollmoves_wis2_subscribe_chains"][0], seen_ttl=bad_value)])
    run = _run_phases(ansible_env, base / f"refused-{shown.strip('*') or 'masked'}", bad, ["configure"])
    assert run.returncode != 0, run.tail(8000)
    assert f"{config_path} not installed (the running configuration is kept)" in run.output, run.tail(8000)
    assert "[gb-core] seen_ttl" in run.output and shown in run.output, run.tail(8000)
    _assert_secret(run)
    assert config_path.read_bytes() == before


# --------------------------------------------------------------------------------------------------
# Preflight: one playbook, one play per case (as test_preflight.py), variables from files
# --------------------------------------------------------------------------------------------------

VALID = {
    "trollmoves_wis2_broker": "mqtt://127.0.0.1:1883",
    "trollmoves_wis2_username": "xx-test",
    "trollmoves_wis2_password": PASSWORD,
    "trollmoves_wis2_centre_id": "xx-test",
    "trollmoves_wis2_publish_chains": [PUBLISH_CHAIN],
    "trollmoves_wis2_subscribe_chains": [dict(SUBSCRIBE_CHAIN, destination="/data/wis2")],
}
_PUBLISH_WITHOUT = {key: value for key, value in PUBLISH_CHAIN.items() if key != "wis2_topic"}
_SUBSCRIBE_WITHOUT_ID = {key: value for key, value in VALID["trollmoves_wis2_subscribe_chains"][0].items()
                         if key != "client_id"}
CASES = {
    "no chains": ({"trollmoves_wis2_publish_chains": [], "trollmoves_wis2_subscribe_chains": []},
                  "must hold at least one chain between them"),
    "chain without name": ({"trollmoves_wis2_publish_chains": [{"topics": "/l2"}]},
                           "each a mapping with a unique `name`"),
    "same name in both lists": ({"trollmoves_wis2_publish_chains": [dict(PUBLISH_CHAIN, name="gb-core")]},
                                "each a mapping with a unique `name`"),
    "reserved section": ({"trollmoves_wis2_publish_chains": [dict(PUBLISH_CHAIN, name="trollmoves")]},
                         "not DEFAULT or trollmoves"),
    "direction of the other list": ({"trollmoves_wis2_publish_chains": [dict(PUBLISH_CHAIN, direction="subscribe")]},
                                    "no `direction` other than that of its list"),
    "publish chain without wis2_topic": ({"trollmoves_wis2_publish_chains": [_PUBLISH_WITHOUT]},
                                         "trollmoves_wis2_publish_chains [level2]: needs wis2_topic."),
    "no broker anywhere": ({"trollmoves_wis2_broker": ""}, "trollmoves_wis2_publish_chains [level2]: needs broker."),
    "no centre id": ({"trollmoves_wis2_centre_id": ""}, "[level2]: needs centre_id."),
    "subscribe chain without client_id": ({"trollmoves_wis2_subscribe_chains": [_SUBSCRIBE_WITHOUT_ID]},
                                          "trollmoves_wis2_subscribe_chains [gb-core]: needs client_id."),
    "login in the broker URL": ({"trollmoves_wis2_broker": f"mqtt://xx-test:{PASSWORD}@127.0.0.1:1883"},
                                "[level2]: broker must be mqtt://host[:port] or mqtts://host[:port]"),
    "chain password without user": (
        {"trollmoves_wis2_subscribe_chains": [dict(VALID["trollmoves_wis2_subscribe_chains"][0], username=None)]},
        "[gb-core]: a password needs a username."),
    "password without user": ({"trollmoves_wis2_username": ""},
                              "trollmoves_wis2_password needs trollmoves_wis2_username"),
    "password on two lines": ({"trollmoves_wis2_password": PASSWORD + "\nsecond line"},
                              "[level2] password: INI values must be one line"),
    "mapping value": ({"trollmoves_wis2_publish_chains": [dict(PUBLISH_CHAIN, topics={"a": "b"})]},
                      "[level2] topics: a mapping is only allowed for aliases."),
    "relative destination": (
        {"trollmoves_wis2_subscribe_chains": [dict(VALID["trollmoves_wis2_subscribe_chains"][0], destination="wis2")]},
        "[gb-core]: destination must be an absolute path."),
    "centre id": ({"trollmoves_wis2_centre_id": "XX.Test"}, "trollmoves_wis2_centre_id lowercase letters"),
    "stop timeout": ({"trollmoves_wis2_drain_timeout": 60, "trollmoves_wis2_timeout_stop_sec": 50},
                     "must exceed the drain timeout"),
    "mqtt version": ({"trollmoves_wis2_mqtt_version": "4"}, "trollmoves_wis2_mqtt_version"),
}


def _record(name: str, value: str) -> dict:
    return {"ansible.builtin.set_fact": {
        "tm_results": "{{ tm_results | default({}) | combine({" + repr(name) + ": " + value + "}) }}"}}


@pytest.fixture(scope="module")
def preflight(ansible_env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wis2-preflight")
    results = workdir / "results.json"
    plays = []
    for index, (name, overrides) in enumerate([("valid", {})] + [(n, o) for n, (o, _) in CASES.items()]):
        vars_file = workdir / f"case{index}.json"
        vars_file.write_text(json.dumps({**VALID, **overrides}))
        plays.append({"name": name, "hosts": "all", "gather_facts": False, "vars_files": [str(vars_file)], "tasks": [{
            "block": [{"ansible.builtin.include_role": {"name": "trollmoves_wis2", "tasks_from": "preflight"}},
                      _record(name, "'PASSED'")],
            "rescue": [_record(name, "ansible_failed_result.msg")]}]})
    plays.append({"name": "Write the results", "hosts": "all", "gather_facts": False, "tasks": [
        {"ansible.builtin.copy": {"content": "{{ tm_results | to_json }}", "dest": str(results), "mode": "0644"}}]})
    playbook = workdir / "preflight.yml"
    playbook.write_text(json.dumps(plays, indent=1))
    run = run_tool(["ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
                    "ansible_python_interpreter=/usr/bin/python3", "-vvv", str(playbook)], ansible_env)
    assert run.returncode == 0, run.tail(8000)
    return run, json.loads(results.read_text())


def test_preflight_accepts_valid_variables(preflight):
    assert preflight[1]["valid"] == "PASSED"


@pytest.mark.parametrize("case", sorted(CASES))
def test_preflight_refuses_a_bad_variable_by_name(preflight, case):
    message = " ".join(preflight[1][case].split())
    assert " ".join(CASES[case][1].split()) in message, preflight[1][case]


def test_preflight_never_shows_the_password(preflight):
    _assert_secret(preflight[0])
    assert not any(PASSWORD in message for message in preflight[1].values())
