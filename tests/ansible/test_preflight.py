"""Preflight stops a deployment on bad variables, before anything changes, and says what is wrong.

One playbook run holds every case as a play of its own: the role's preflight phase (argument
specs, then assertions) runs on localhost with one variable off, and the failure message is
recorded. Preflight only asserts, so nothing on this machine changes.
"""

from __future__ import annotations

import json

import pytest

from tests.ansible.tools import run_tool

SERVER_CHAIN = {"name": "hrit", "origin": "/data/in/{name}", "topic": "/1b/hrit", "request_port": 9094}
CLIENT_CHAIN = {"name": "hrit", "providers": ["server:9010"], "destination": "file:///data/out/", "topic": "/1b"}
TARGET = {"name": "local", "host": "", "directory": "/data/outbox", "dispatch_configs": [{"topics": ["/l2"]}]}

CASES = {
    "no chains": ("server", {"trollmoves_server_chains": []}, "must be a non-empty list of mappings"),
    "chain without name": ("server", {"trollmoves_server_chains": [{"origin": "/x/{name}", "topic": "/t"}]},
                           "each with a\nunique `name`"),
    "reserved section": ("server", {"trollmoves_server_chains": [dict(SERVER_CHAIN, name="trollmoves")]},
                         "not DEFAULT or trollmoves"),
    "chain without origin": ("server", {"trollmoves_server_chains": [{"name": "a", "topic": "/t"}]},
                             "[a]: needs origin or listen"),
    "duplicate ports": ("server", {"trollmoves_server_chains": [SERVER_CHAIN, dict(SERVER_CHAIN, name="b")]},
                        "every chain's request_port must differ"),
    "publish port type": ("server", {"trollmoves_server_publish_port": "many"}, "trollmoves_server_publish_port"),
    "stop timeout": ("server", {"trollmoves_server_drain_timeout": 60, "trollmoves_server_timeout_stop_sec": 50},
                     "must exceed the drain timeout"),
    "instance name": ("client", {"trollmoves_client_instance": "a b"}, "instance name must only use"),
    "client without destination": ("client", {"trollmoves_client_chains": [{"name": "c", "providers": ["s:1"]}]},
                                   "[c]: needs destination"),
    "missing wheel": ("client", {"trollmoves_common_wheel": "/nonexistent/trollmoves.whl"},
                      "trollmoves_common_wheel must be an"),
    "reserved target": ("dispatcher", {"trollmoves_dispatcher_targets": [dict(TARGET, name="retry")]},
                        "(not\nposttroll_subscriber, retry or trollmoves)"),
    "firewall choice": ("dispatcher", {"trollmoves_common_firewall": "iptables"}, "trollmoves_common_firewall"),
}
VALID = {
    "server": {"trollmoves_server_chains": [SERVER_CHAIN]},
    "client": {"trollmoves_client_chains": [CLIENT_CHAIN]},
    "dispatcher": {"trollmoves_dispatcher_targets": [TARGET]},
}


def _record(name: str, value: str) -> dict:
    """set_fact adding ``name: <value expression>`` to the tm_results mapping."""
    return {"ansible.builtin.set_fact": {
        "tm_results": "{{ tm_results | default({}) | combine({" + repr(name) + ": " + value + "}) }}"}}


def _play(name: str, role: str, overrides: dict) -> dict:
    return {
        "name": name, "hosts": "all", "gather_facts": False,
        "vars": {**VALID[role], **overrides},
        "tasks": [{
            "block": [
                {"ansible.builtin.include_role": {"name": f"trollmoves_{role}", "tasks_from": "preflight"}},
                _record(name, "'PASSED'"),
            ],
            # A failed loop (one assertion per item) has the item messages in `results`.
            "rescue": [_record(name, "(ansible_failed_result.results | default([]) | selectattr('failed', 'defined')"
                                     " | selectattr('failed') | map(attribute='msg') | join(' '))"
                                     " or ansible_failed_result.msg")],
        }],
    }


@pytest.fixture(scope="module")
def preflight_results(ansible_env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("preflight")
    results = workdir / "results.json"
    plays = [_play(f"valid {role}", role, {}) for role in VALID]
    plays += [_play(name, role, overrides) for name, (role, overrides, _) in CASES.items()]
    plays.append({"name": "Write the results", "hosts": "all", "gather_facts": False, "tasks": [
        {"ansible.builtin.copy": {"content": "{{ tm_results | to_json }}", "dest": str(results), "mode": "0644"}}]})
    playbook = workdir / "preflight.yml"
    playbook.write_text(json.dumps(plays, indent=1))
    run = run_tool(["ansible-playbook", "-i", "localhost,", "-c", "local",
                    "-e", "ansible_python_interpreter=/usr/bin/python3", str(playbook)], ansible_env)
    assert run.returncode == 0, run.tail(8000)
    return json.loads(results.read_text())


@pytest.mark.parametrize("role", sorted(VALID))
def test_valid_variables_pass(preflight_results, role):
    assert preflight_results[f"valid {role}"] == "PASSED"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_variable_is_refused_with_its_name(preflight_results, case):
    expected = CASES[case][2]
    message = " ".join(preflight_results[case].split())
    assert " ".join(expected.split()) in message, preflight_results[case]
