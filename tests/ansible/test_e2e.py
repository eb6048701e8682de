"""End to end: site.yml deploys a server host and a client host over SSH, and files flow.

Two network namespaces stand in for the two hosts, joined by a veth pair on a random /30 of
10.231.0.0/16 that exists only inside them; each runs a real sshd (root logs in with a key).
ansible-playbook runs inside the client namespace (so no traffic leaves the namespaces) with an
inventory written here. systemd is not PID 1, so the test starts each daemon itself from its
unit: the ExecStart line with %i and the EnvironmentFile's variables expanded, as the unit's
User/Group (setpriv, no new privileges), in its WorkingDirectory.

Then a file dropped in the server host's watched directory must arrive, byte for byte, in the
client host's destination: the client asks the server to push it over SFTP as the client's
service user, authenticated with the key the roles installed and checked against the host key
they installed. Both metrics endpoints are scraped; with nft available, the firewall rules are
loaded in the namespaces and a source that is not a configured scraper is dropped. A second
site.yml run must report changed=0 on both hosts.

The namespaces share this machine's file system, so each host gets its own tree under
/srv/tm-e2e-<pid>/<host> (config, venv, units, state, data) and its own service user
(tm-e2e-srv, tm-e2e-cli): the roles' paths and user are variables, set per host in the
inventory. Teardown stops every process by PID, deletes the namespaces, the tree and the users.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import time
from pathlib import Path

import pytest

from tests.ansible.netns import HostPair, common_inventory_vars, hosts_under, ssh_keygen
from tests.ansible.tools import ANSIBLE_DIR, VENV, PlaybookRun, run_tool

USERS = {"server": "tm-e2e-srv", "client": "tm-e2e-cli"}
PUBLISH_PORT = 9010
REQUEST_PORT = 9094
METRICS_PORTS = {"server": 9110, "client": 9111}
CHAIN = "e2e"
TOPIC = "/e2e/segment"
ARRIVAL_TIMEOUT = 90.0


# --------------------------------------------------------------------------------------------------
# Units: what systemd would run
# --------------------------------------------------------------------------------------------------

def _unit_fields(path: Path) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            fields.setdefault(key.strip(), []).append(value.strip())
    return fields


def _environment_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            key, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def unit_command(unit: Path, instance: str) -> dict:
    """ExecStart of a template unit for ``instance``, expanded as systemd does for our units.

    Handles the specifiers %i and %%, EnvironmentFile= and $VAR (split into words) / ${VAR}
    (one word) in ExecStart: what the trollmoves units use.
    """
    fields = _unit_fields(unit)

    def specifiers(text: str) -> str:
        return text.replace("%%", "\0").replace("%i", instance).replace("\0", "%")

    env: dict[str, str] = {}
    for item in fields.get("EnvironmentFile", []):
        env.update(_environment_file(Path(specifiers(item).lstrip("-"))))
    (exec_start,) = fields["ExecStart"]
    argv: list[str] = []
    for word in shlex.split(specifiers(exec_start)):
        braced = re.fullmatch(r"\$\{(\w+)\}", word)
        bare = re.fullmatch(r"\$(\w+)", word)
        if braced:
            argv.append(env.get(braced[1], ""))
        elif bare:
            argv.extend(env.get(bare[1], "").split())
        else:
            argv.append(word)
    (user,) = fields["User"]
    (group,) = fields["Group"]
    (workdir,) = fields["WorkingDirectory"]
    return {"argv": argv, "user": user, "group": group, "workdir": specifiers(workdir), "env": env}


def start_unit(host, unit: Path, instance: str = "main"):
    """Start what ``unit`` would start, in ``host``'s namespace, as the unit's user."""
    command = unit_command(unit, instance)
    home = pwd.getpwnam(command["user"]).pw_dir
    env_words = [f"{key}={value}" for key, value in command["env"].items()]
    return host.start(unit.name.replace("@.service", ""), [
        "setpriv", "--reuid", command["user"], "--regid", command["group"], "--init-groups", "--no-new-privs",
        "--", "env", "-i", "-C", command["workdir"], f"HOME={home}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
        *env_words, *command["argv"]])


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

def metric_value(text: str, name: str, **labels: str) -> float | None:
    """Value of the sample ``name{labels...}`` in a Prometheus text exposition (labels: a subset)."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?", line.strip())
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match[3])
    return None


# --------------------------------------------------------------------------------------------------
# The deployment
# --------------------------------------------------------------------------------------------------

def _tree(base: Path, host: str) -> dict[str, str]:
    root = base / host
    return {
        "trollmoves_common_user": USERS[host],
        "trollmoves_common_group": USERS[host],
        "trollmoves_common_home": f"{root}/home",
        "trollmoves_common_config_dir": f"{root}/etc",
        "trollmoves_common_install_dir": f"{root}/opt",
        "trollmoves_common_unit_dir": f"{root}/units",
        "trollmoves_common_nftables_dir": f"{root}/nftables.d",
    }


def write_inventory(path: Path, base: Path, pair: HostPair, wheelhouse, keys: dict[str, Path],
                    firewall: bool) -> None:
    server, client = pair.hosts["server"], pair.hosts["client"]
    incoming = f"{base}/client/data/incoming"
    outgoing = f"{base}/server/data/outgoing"
    common = common_inventory_vars(keys, wheelhouse, firewall)
    server_vars = {
        **_tree(base, "server"),
        "ansible_host": server.address,
        "trollmoves_common_ssh_private_key": keys["push"].read_text(),
        "trollmoves_common_ssh_known_hosts": [f"{client.address} {' '.join(client.host_key_line.split()[:2])}"],
        "trollmoves_server_manage_systemd": False,
        "trollmoves_server_publish_port": PUBLISH_PORT,
        "trollmoves_server_metrics_port": METRICS_PORTS["server"],
        "trollmoves_server_metrics_address": "0.0.0.0",
        "trollmoves_server_metrics_scrapers": [client.address],
        "trollmoves_server_data_directories": [outgoing],
        "trollmoves_server_chains": [{
            "name": CHAIN,
            "origin": outgoing + "/{name}.dat",
            "topic": TOPIC,
            "request_port": REQUEST_PORT,
            "request_address": server.address,
            "info": {"sensor": "e2e"},
        }],
    }
    client_vars = {
        **_tree(base, "client"),
        "ansible_host": client.address,
        "trollmoves_common_ssh_authorized_keys": [keys["push"].with_suffix(".pub").read_text().strip()],
        "trollmoves_client_manage_systemd": False,
        "trollmoves_client_metrics_port": METRICS_PORTS["client"],
        "trollmoves_client_metrics_address": "0.0.0.0",
        # Nobody but the host itself may scrape the client: checked from the server host below.
        "trollmoves_client_metrics_scrapers": [],
        "trollmoves_client_data_directories": [incoming],
        "trollmoves_client_chains": [{
            "name": CHAIN,
            "providers": [f"{server.address}:{PUBLISH_PORT}"],
            "destination": f"sftp://{USERS['client']}@{client.address}{incoming}/",
            "topic": TOPIC,
            "nameservers": False,
            "publish_port": 0,
        }],
    }
    inventory = {"all": {"vars": common, "children": {
        "trollmoves_servers": {"hosts": {"tm-server": server_vars}},
        "trollmoves_clients": {"hosts": {"tm-client": client_vars}},
    }}}
    path.write_text(json.dumps(inventory, indent=2))


def run_site(pair: HostPair, inventory: Path, env: dict[str, str]) -> PlaybookRun:
    """ansible-playbook site.yml from inside the client host's namespace."""
    return run_tool(pair.hosts["client"].argv([str(VENV / "bin" / "ansible-playbook"), "-i", str(inventory),
                                               "site.yml"]), env, cwd=ANSIBLE_DIR, timeout=600)


@pytest.fixture
def hosts():
    def build(base: Path) -> HostPair:
        return HostPair(base, users={"server": ["root"], "client": ["root", USERS["client"]]})

    with hosts_under("tm-e2e", build, USERS.values(), "end-to-end deployment test", "tm-e2e") as (base, pair):
        yield base, pair


@pytest.mark.timeout(900)
def test_site_deploys_server_and_client_over_ssh(hosts, ansible_env, wheelhouse, capsys):
    base, pair = hosts
    server, client = pair.hosts["server"], pair.hosts["client"]
    keys = {"controller": base / "ssh" / "controller", "push": base / "ssh" / "push",
            "known_hosts": base / "ssh" / "known_hosts"}
    pair.authorize("root", ssh_keygen(keys["controller"], "tm-e2e-controller"))
    ssh_keygen(keys["push"], "tm-e2e-push")
    keys["known_hosts"].write_text(pair.known_hosts())
    firewall = shutil.which("nft") is not None
    inventory = base / "inventory.json"
    write_inventory(inventory, base, pair, wheelhouse, keys, firewall)
    env = dict(ansible_env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(base / "ssh" / "cp"))

    timings: dict[str, float] = {}
    started = time.monotonic()
    first = run_site(pair, inventory, env)
    timings["first site.yml"] = time.monotonic() - started
    assert first.returncode == 0, first.tail(15000)
    assert set(first.recap) == {"tm-server", "tm-client"}, first.recap_text
    for counts in first.recap.values():
        assert counts["failed"] == 0 and counts["unreachable"] == 0 and counts["changed"] > 0, first.recap_text

    units = {name: base / name / "units" / f"trollmoves-{name}@.service" for name in ("server", "client")}
    daemons = {"server": start_unit(server, units["server"]), "client": start_unit(client, units["client"])}
    server.wait_listening(PUBLISH_PORT, daemons["server"])
    server.wait_listening(REQUEST_PORT, daemons["server"])

    def logs() -> str:
        return "\n".join(f"--- {name} log:\n{handle.log.read_text(errors='replace')[-6000:]}"
                         for name, handle in daemons.items())

    def endpoint(name: str, path: str) -> str:
        host = pair.hosts[name]
        return f"http://{host.address}:{METRICS_PORTS[name]}{path}"

    # Both daemons are up when their health endpoints answer (from the client host, a scraper).
    deadline = time.monotonic() + 60
    while not all(client.http_get(endpoint(name, "/healthz"), 2)[0] == 200 for name in daemons):
        for name, handle in daemons.items():
            assert handle.proc.poll() is None, f"{name} exited with {handle.proc.returncode}\n{logs()}"
        assert time.monotonic() < deadline, f"health endpoints did not answer 200\n{logs()}"
        time.sleep(0.5)
    time.sleep(1.0)

    timings["daemons up"] = time.monotonic() - started - sum(timings.values())
    # Drop a file into the watched directory (renamed in, so it appears complete).
    payload = secrets.token_bytes(256 * 1024)
    name = f"segment-{secrets.token_hex(4)}.dat"
    staging = base / "server" / "data" / name
    staging.write_bytes(payload)
    staging.chmod(0o644)
    os.rename(staging, base / "server" / "data" / "outgoing" / name)
    arrived = base / "client" / "data" / "incoming" / name
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while not (arrived.exists() and arrived.read_bytes() == payload):
        for daemon, handle in daemons.items():
            assert handle.proc.poll() is None, f"{daemon} exited with {handle.proc.returncode}\n{logs()}"
        assert time.monotonic() < deadline, f"{name} did not arrive in {arrived.parent}\n{logs()}"
        time.sleep(0.2)
    timings["file arrived"] = time.monotonic() - started - sum(timings.values())
    assert arrived.stat().st_uid == pwd.getpwnam(USERS["client"]).pw_uid, "pushed as the client's service user"
    assert not [p for p in arrived.parent.iterdir() if p.name != name], list(arrived.parent.iterdir())

    # Metrics of both daemons, scraped from the client host (the server's configured scraper).
    scraped = {}
    for daemon in daemons:
        status, text = client.http_get(endpoint(daemon, "/metrics"))
        assert status == 200, f"{daemon} /metrics: {status} {text[:500]}"
        assert metric_value(text, "trollmoves_build_info") == 1, text[:3000]
        scraped[daemon] = text
    assert (metric_value(scraped["server"], "trollmoves_files_announced_total", chain=CHAIN) or 0) >= 1, \
        scraped["server"]
    assert (metric_value(scraped["client"], "trollmoves_files_received_total", chain=CHAIN) or 0) >= 1, \
        scraped["client"]
    # ExecReload as systemd runs it (SIGHUP): the server reloads its config and keeps serving.
    (reload_line,) = _unit_fields(units["server"])["ExecReload"]
    server.run(shlex.split(reload_line.replace("$MAINPID", str(daemons["server"].pid))), check=True)
    deadline = time.monotonic() + 30
    while (metric_value(client.http_get(endpoint("server", "/metrics"))[1], "trollmoves_config_reloads_total",
                        result="success") or 0) < 1:
        assert daemons["server"].proc.poll() is None, f"server died on SIGHUP\n{logs()}"
        assert time.monotonic() < deadline, f"no successful reload counted after SIGHUP\n{logs()}"
        time.sleep(0.5)

    if firewall:
        # The client host lists no scrapers: from the server host its metrics port is dropped,
        # while the server's metrics port stays open to the client host, its configured scraper.
        assert not server.can_connect(client.address, METRICS_PORTS["client"], timeout=2.0)
        assert client.can_connect(server.address, METRICS_PORTS["server"])

    mark = time.monotonic()
    second = run_site(pair, inventory, env)
    timings["second site.yml"] = time.monotonic() - mark
    assert second.returncode == 0, second.tail(15000)
    assert {host: counts["changed"] for host, counts in second.recap.items()} == {"tm-server": 0, "tm-client": 0}, \
        second.tail(15000)
    for handle in daemons.values():
        assert handle.proc.poll() is None, logs()

    with capsys.disabled():
        print(f"\n[e2e] hosts {server.address} (server), {client.address} (client) on {pair.subnet}; "
              f"firewall {'nftables' if firewall else 'off'}; "
              + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items()))
        print(f"[e2e] first site.yml run:\n{first.recap_text}\n[e2e] second site.yml run:\n{second.recap_text}")
    with contextlib.suppress(OSError):
        recap_file = os.environ.get("TROLLMOVES_E2E_RECAP_FILE")
        if recap_file:
            Path(recap_file).write_text(f"{first.recap_text}\n\n{second.recap_text}\n")
