"""End to end: site.yml deploys a three-host site through a DMZ mirror, and Prometheus watches it.

Four network namespaces with a real sshd each stand in for the hosts, on two L2 segments that
nothing routes between (netns.HostNetwork): inside = server, mirror, prometheus; outside = mirror,
client, prometheus. The client cannot reach the server, so a file that arrives came through the
mirror: announced by the server, re-announced outside by the mirror, which has the server push it
into its relay directory (SFTP as the mirror's user) when the client asks, then pushes it on (SFTP
as the client's user). ansible-playbook runs in the Prometheus host's namespace, with an inventory
written here; site.yml deploys the three daemons and Prometheus (role trollmoves_prometheus: Debian
package, the repository's monitoring/ rules, scrape jobs generated from the inventory). systemd is
not PID 1: the test starts each daemon from its unit (test_e2e.start_unit) and Prometheus from
Debian's prometheus.service merged with the role's drop-in, as the units' users. Then:

- a file dropped on the server host arrives byte-identical on the client host;
- every target is up, every rule evaluates without error, no alert is pending or firing;
- the mirror's daemon is stopped by PID and TrollmovesDaemonDown{job="trollmoves-mirror"} fires
  within its `for:` (read from monitoring/alerts.yml) plus scrape/evaluation slack; meanwhile the
  second site.yml run (it touches no daemon: manage_systemd is off) reports changed=0 on every
  host, so its time hides in the `for:` wait. Scrape and evaluation intervals are 1 s.

Each host has its own tree under /srv/tm-site-<pid>/<host> and service user (tm-site-srv, -mir,
-cli; Prometheus runs as Debian's prometheus user). Teardown stops every process by PID, deletes
the namespaces, the tree and the users. test_prometheus_config_from_example_inventory needs no
namespaces: the prometheus play with the example inventory, on this machine, into a temporary tree.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import grp
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
import yaml

from tests import servers
from tests.ansible.netns import HostNetwork, common_inventory_vars, hosts_under, ssh_keygen
from tests.ansible.test_e2e import metric_value, start_unit
from tests.ansible.tools import ANSIBLE_DIR, REPO, VENV, PlaybookRun, run_tool

SEGMENTS = {"inside": ["server", "mirror", "prometheus"], "outside": ["mirror", "client", "prometheus"]}
USERS = {"server": "tm-site-srv", "mirror": "tm-site-mir", "client": "tm-site-cli"}
SSH_USERS = {"server": ["root"], "mirror": ["root", USERS["mirror"]], "client": ["root", USERS["client"]],
             "prometheus": ["root"]}  # the mirror and the client get files pushed over SFTP
NAMES = {"server": "tm-server", "mirror": "tm-mirror", "client": "tm-client", "prometheus": "tm-prometheus"}
PUBLISH_PORTS = {"server": 9010, "mirror": 9012}
REQUEST_PORTS = {"server": 9094, "mirror": 9338}
METRICS_PORTS = {"server": 9110, "client": 9111, "mirror": 9112}
PROMETHEUS_PORT = 9090
INTERVAL = "1s"
CHAIN = "e2e"
TOPICS = {"inside": "/e2e/segment", "outside": "/e2e/relayed"}
ARRIVAL_TIMEOUT = 120.0
ALERTS = REPO / "monitoring" / "alerts.yml"
DOWN_ALERT = "TrollmovesDaemonDown"
PACKAGED_UNITS = (Path("/lib/systemd/system/prometheus.service"), Path("/usr/lib/systemd/system/prometheus.service"))


# --------------------------------------------------------------------------------------------------
# Prometheus as Debian's unit and the role's drop-in would start it
# --------------------------------------------------------------------------------------------------

def unit_fields(*paths: Path) -> dict[str, list[str]]:
    """Settings of a unit and its drop-ins, in order; an empty assignment resets a list (``ExecStart=``)."""
    fields: dict[str, list[str]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, value = (part.strip() for part in line.split("=", 1))
                fields[key] = fields.get(key, []) + [value] if value else []
    return fields


def prometheus_argv(dropin: Path) -> tuple[list[str], str]:
    """(argv, user) of Debian's prometheus.service with the role's drop-in: $ARGS from its EnvironmentFile."""
    packaged = next((path for path in PACKAGED_UNITS if path.exists()), None)
    if packaged is None:
        servers.require_or_skip("Debian's prometheus.service not found: apt-get install prometheus")
    fields = unit_fields(packaged, dropin)
    env: dict[str, str] = {}
    for item in fields.get("EnvironmentFile", []):
        path = Path(item.lstrip("-"))
        for line in path.read_text().splitlines() if path.exists() else []:
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip().strip("'\"")
    (exec_start,) = fields["ExecStart"]
    argv: list[str] = []
    for word in shlex.split(exec_start):
        bare = re.fullmatch(r"\$(\w+)", word)
        argv.extend(env.get(bare[1], "").split() if bare else [word])
    (user,) = fields["User"]
    return argv, user


def start_prometheus(host, dropin: Path):
    argv, user = prometheus_argv(dropin)
    account = pwd.getpwnam(user)
    return host.start("prometheus", [
        "setpriv", "--reuid", user, "--regid", grp.getgrgid(account.pw_gid).gr_name, "--init-groups",
        "--no-new-privs", "--", "env", "-i", "-C", "/", f"HOME={account.pw_dir}", "PATH=/usr/bin:/bin", *argv])


def api(host, path: str) -> dict:
    """GET Prometheus' HTTP API from inside its namespace; the ``data`` member of the answer."""
    status, body = host.http_get(f"http://127.0.0.1:{PROMETHEUS_PORT}{path}")
    answer = json.loads(body) if status == 200 else {}
    assert answer.get("status") == "success", f"{path}: {status} {body[:500]}"
    return answer["data"]


def seconds(duration: str) -> float:
    """A Prometheus duration (``2m``, ``1h30m``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def alert_for(name: str) -> float:
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
             if rule.get("alert") == name]
    assert rules, f"{ALERTS} has no alert {name}"
    return seconds(str(rules[0].get("for", "0s")))


def _daemon_vars(kind: str, host, base: Path, scrapers: list[str], data_directory: str) -> dict:
    """What every daemon host of the site sets: its own tree and service user, metrics for Prometheus."""
    root = base / kind
    return {
        "ansible_host": host.address,
        "trollmoves_common_user": USERS[kind],
        "trollmoves_common_group": USERS[kind],
        "trollmoves_common_home": f"{root}/home",
        "trollmoves_common_config_dir": f"{root}/etc",
        "trollmoves_common_install_dir": f"{root}/opt",
        "trollmoves_common_unit_dir": f"{root}/units",
        "trollmoves_common_nftables_dir": f"{root}/nftables.d",
        f"trollmoves_{kind}_manage_systemd": False,
        f"trollmoves_{kind}_metrics_port": METRICS_PORTS[kind],
        f"trollmoves_{kind}_metrics_address": "0.0.0.0",
        f"trollmoves_{kind}_metrics_scrapers": scrapers,
        f"trollmoves_{kind}_data_directories": [data_directory],
    }


def write_inventory(path: Path, base: Path, net: HostNetwork, wheelhouse, keys: dict[str, Path],
                    firewall: bool) -> dict[str, str]:
    """The site's inventory; returns the directories the file passes through."""
    server, mirror, client, prom = (net.hosts[name] for name in ("server", "mirror", "client", "prometheus"))
    dirs = {"outgoing": f"{base}/server/data/outgoing", "relay": f"{base}/mirror/data/relay",
            "incoming": f"{base}/client/data/incoming"}
    push_key = keys["push"].read_text()
    push_public = keys["push"].with_suffix(".pub").read_text().strip()
    common = common_inventory_vars(keys, wheelhouse, firewall)
    scrapers = prom.all_addresses()
    server_vars = {
        **_daemon_vars("server", server, base, scrapers, dirs["outgoing"]),
        "trollmoves_common_ssh_private_key": push_key,
        "trollmoves_common_ssh_known_hosts": [mirror.known_host(mirror.addresses["inside"])],
        "trollmoves_server_publish_port": PUBLISH_PORTS["server"],
        "trollmoves_server_chains": [{
            "name": CHAIN, "origin": dirs["outgoing"] + "/{name}.dat", "topic": TOPICS["inside"],
            "request_port": REQUEST_PORTS["server"], "request_address": server.address, "info": {"sensor": "e2e"},
        }],
    }
    mirror_vars = {
        **_daemon_vars("mirror", mirror, base, scrapers, dirs["relay"]),
        "trollmoves_common_ssh_private_key": push_key,
        "trollmoves_common_ssh_known_hosts": [client.known_host()],
        "trollmoves_common_ssh_authorized_keys": [push_public],
        "trollmoves_mirror_publish_port": PUBLISH_PORTS["mirror"],
        "trollmoves_mirror_chains": [{
            "name": CHAIN,
            "providers": [f"{server.address}:{PUBLISH_PORTS['server']}"],
            "client_topic": TOPICS["inside"],
            "destination": f"sftp://{USERS['mirror']}@{mirror.addresses['inside']}{dirs['relay']}/",
            "origin": dirs["relay"] + "/{filename}",
            "request_address": mirror.addresses["outside"],
            "request_port": REQUEST_PORTS["mirror"],
            "topic": TOPICS["outside"],
            "nameservers": False,
            "delete": True,
        }],
    }
    client_vars = {
        **_daemon_vars("client", client, base, scrapers, dirs["incoming"]),
        "trollmoves_common_ssh_authorized_keys": [push_public],
        "trollmoves_client_chains": [{
            "name": CHAIN,
            "providers": [f"{mirror.addresses['outside']}:{PUBLISH_PORTS['mirror']}"],
            "destination": f"sftp://{USERS['client']}@{client.address}{dirs['incoming']}/",
            "topic": TOPICS["outside"],
            "nameservers": False,
            "publish_port": 0,
        }],
    }
    prometheus_vars = {
        "ansible_host": prom.address,
        "trollmoves_prometheus_config_dir": f"{base}/prometheus/etc",
        "trollmoves_prometheus_storage_path": f"{base}/prometheus/data",
        "trollmoves_prometheus_unit_dir": f"{base}/prometheus/units",
        "trollmoves_prometheus_listen_address": f"0.0.0.0:{PROMETHEUS_PORT}",
        "trollmoves_prometheus_scrape_interval": INTERVAL,
        "trollmoves_prometheus_scrape_timeout": INTERVAL,
        "trollmoves_prometheus_evaluation_interval": INTERVAL,
        "trollmoves_prometheus_manage_systemd": False,
    }
    inventory = {"all": {"vars": common, "children": {
        "trollmoves_servers": {"hosts": {NAMES["server"]: server_vars}},
        "trollmoves_mirrors": {"hosts": {NAMES["mirror"]: mirror_vars}},
        "trollmoves_clients": {"hosts": {NAMES["client"]: client_vars}},
        "trollmoves_prometheus": {"hosts": {NAMES["prometheus"]: prometheus_vars}},
    }}}
    path.write_text(json.dumps(inventory, indent=2))
    return dirs


def run_site(net: HostNetwork, inventory: Path, env: dict[str, str]) -> PlaybookRun:
    """ansible-playbook site.yml from inside the Prometheus host's namespace (on both segments)."""
    return run_tool(net.hosts["prometheus"].argv([str(VENV / "bin" / "ansible-playbook"), "-i", str(inventory),
                                                  "site.yml"]), env, cwd=ANSIBLE_DIR, timeout=900)


@pytest.fixture
def site():
    def build(base: Path) -> HostNetwork:
        return HostNetwork(base, SEGMENTS, SSH_USERS)

    with hosts_under("tm-site", build, USERS.values(), "three-host site test", "tm-site") as (base, net):
        yield base, net


def wait_for(condition, timeout: float, what, alive=(), interval: float = 0.5):
    """Poll ``condition`` until it returns a true value (returned).

    Fails when a process of ``alive`` exits, or after ``timeout`` s with ``what()``: the state
    when it failed (logs, API answers), not when the wait began.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for handle in alive:
            assert handle.proc.poll() is None, \
                f"{handle.name} exited with {handle.proc.returncode}:\n{servers._tail(handle.log)}"
        assert time.monotonic() < deadline, f"after {timeout:.0f} s: {what()}"
        time.sleep(interval)


def describe(alert: dict) -> str:
    labels = alert["labels"]
    chain = f", chain={labels['chain']}" if "chain" in labels else ""
    return f"{labels['alertname']}{{job={labels.get('job')}{chain}}} {alert['state']}"


@pytest.mark.timeout(1500)
def test_site_through_a_dmz_mirror_watched_by_prometheus(site, ansible_env, wheelhouse, capsys):
    base, net = site
    server, mirror, client, prom = (net.hosts[name] for name in ("server", "mirror", "client", "prometheus"))
    if shutil.which("promtool") is None or shutil.which("prometheus") is None:
        servers.require_or_skip("prometheus/promtool not installed (Debian package prometheus)")
    down_for = alert_for(DOWN_ALERT)
    keys = {"controller": base / "ssh" / "controller", "push": base / "ssh" / "push",
            "known_hosts": base / "ssh" / "known_hosts"}
    net.authorize("root", ssh_keygen(keys["controller"], "tm-site-controller"))
    ssh_keygen(keys["push"], "tm-site-push")
    keys["known_hosts"].write_text(net.known_hosts())
    firewall = shutil.which("nft") is not None
    inventory = base / "inventory.json"
    dirs = write_inventory(inventory, base, net, wheelhouse, keys, firewall)
    env = dict(ansible_env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(base / "ssh" / "cp"))

    timings: dict[str, float] = {}
    started = mark = time.monotonic()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[step], mark = now - mark, now

    first = run_site(net, inventory, env)
    lap("first site.yml")
    assert first.returncode == 0, first.tail(15000)
    assert set(first.recap) == set(NAMES.values()), first.recap_text
    for counts in first.recap.values():
        assert counts["failed"] == 0 and counts["unreachable"] == 0 and counts["changed"] > 0, first.recap_text

    units = {name: base / name / "units" / f"trollmoves-{name}@.service" for name in USERS}
    daemons = {name: start_unit(net.hosts[name], unit) for name, unit in units.items()}
    prometheus = start_prometheus(prom, base / "prometheus" / "units" / "prometheus.service.d" / "trollmoves.conf")
    running = [*daemons.values(), prometheus]

    def logs() -> str:
        return "\n".join(f"--- {handle.name} log:\n{handle.log.read_text(errors='replace')[-5000:]}"
                         for handle in running)

    def endpoint(name: str, path: str) -> str:
        return f"http://{net.hosts[name].address}:{METRICS_PORTS[name]}{path}"

    # Health answered from the Prometheus host, the configured scraper of all three.
    wait_for(lambda: all(prom.http_get(endpoint(name, "/healthz"), 2)[0] == 200 for name in daemons), 90,
             lambda: f"health endpoints did not answer 200\n{logs()}", running)
    wait_for(lambda: prom.http_get(f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready", 2)[0] == 200, 60,
             lambda: f"Prometheus not ready\n{logs()}", running)
    lap("daemons and Prometheus up")

    # The segments are apart: the client host has no way to the server host but the mirror.
    assert not client.can_connect(server.address, REQUEST_PORTS["server"], timeout=2.0)
    assert not client.can_connect(server.address, PUBLISH_PORTS["server"], timeout=2.0)
    payload = secrets.token_bytes(256 * 1024)
    name = f"segment-{secrets.token_hex(4)}.dat"
    staging = base / "server" / "data" / name
    staging.write_bytes(payload)
    staging.chmod(0o644)
    os.rename(staging, Path(dirs["outgoing"]) / name)
    arrived = Path(dirs["incoming"]) / name
    wait_for(lambda: arrived.exists() and arrived.read_bytes() == payload, ARRIVAL_TIMEOUT,
             lambda: f"{name} did not arrive in {arrived.parent}\n{logs()}", running, 0.2)
    lap("file arrived through the mirror")
    assert arrived.stat().st_uid == pwd.getpwnam(USERS["client"]).pw_uid, "pushed as the client's service user"
    mirrored = prom.http_get(endpoint("mirror", "/metrics"))[1]
    assert (metric_value(mirrored, "trollmoves_files_announced_total", chain=CHAIN) or 0) >= 1, mirrored[:3000]
    if firewall:
        # The client host is no scraper: the mirror's metrics port is dropped for it.
        assert not client.can_connect(mirror.addresses["outside"], METRICS_PORTS["mirror"], timeout=2.0)

    # Every target up, every rule evaluated without error, then no alert pending or firing.
    jobs = {"prometheus", "trollmoves-server", "trollmoves-mirror", "trollmoves-client"}

    def targets_up():
        active = api(prom, "/api/v1/targets?state=active")["activeTargets"]
        return active if ({t["labels"]["job"] for t in active} == jobs
                          and all(t["health"] == "up" for t in active)) else None

    active = wait_for(targets_up, 60, lambda: f"targets not all up: {api(prom, '/api/v1/targets')}", running)
    hosts_by_job = {t["labels"]["job"]: t["labels"].get("host") for t in active}
    assert hosts_by_job == {"prometheus": None, "trollmoves-server": NAMES["server"],
                            "trollmoves-mirror": NAMES["mirror"], "trollmoves-client": NAMES["client"]}, active
    time.sleep(3 * seconds(INTERVAL))

    def rules_ok():
        groups = api(prom, "/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = wait_for(rules_ok, 30, lambda: f"rules not all evaluated ok: {api(prom, '/api/v1/rules')}", running)
    assert DOWN_ALERT in {rule["name"] for rule in rules if rule["type"] == "alerting"}
    wait_for(lambda: not api(prom, "/api/v1/alerts")["alerts"], 60,
             lambda: f"alerts pending or firing on a healthy site: {api(prom, '/api/v1/alerts')}", running, 1.0)
    lap("targets up, rules ok, no alert")

    # The mirror's daemon goes away; the second site.yml run happens while its alert waits out `for:`.
    daemons["mirror"].stop()
    stopped = time.monotonic()
    running.remove(daemons["mirror"])
    slack = 4 * seconds(INTERVAL) + 30

    def mirror_down(state: str):
        return [a for a in api(prom, "/api/v1/alerts")["alerts"] if a["labels"].get("alertname") == DOWN_ALERT
                and a["labels"].get("job") == "trollmoves-mirror" and a["state"] == state]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second_run = pool.submit(run_site, net, inventory, env)
        wait_for(lambda: mirror_down("pending") or mirror_down("firing"), 30,
                 lambda: f"{DOWN_ALERT} not pending after the mirror stopped: {api(prom, '/api/v1/alerts')}",
                 running, 1.0)
        pending_after = time.monotonic() - stopped
        firing = wait_for(lambda: mirror_down("firing"), down_for + slack - pending_after,
                          lambda: f"{DOWN_ALERT} not firing {down_for:.0f} s (+{slack:.0f} s) after the mirror "
                                  f"stopped: {api(prom, '/api/v1/alerts')}", running, 1.0)
        fired_after = time.monotonic() - stopped
        alerts_then = api(prom, "/api/v1/alerts")["alerts"]
        second = second_run.result()
    lap(f"{DOWN_ALERT} firing (second site.yml alongside)")
    assert firing[0]["labels"]["host"] == NAMES["mirror"], firing
    assert second.returncode == 0, second.tail(15000)
    assert {host: counts["changed"] for host, counts in second.recap.items()} == \
        {host: 0 for host in NAMES.values()}, second.tail(15000)
    for handle in running:
        assert handle.proc.poll() is None, logs()

    with capsys.disabled():
        print(f"\n[e2e-site] inside {net.subnets['inside']}, outside {net.subnets['outside']}; "
              f"firewall {'nftables' if firewall else 'off'}; total {time.monotonic() - started:.1f} s: "
              + ", ".join(f"{step} {value:.1f} s" for step, value in timings.items()))
        print(f"[e2e-site] mirror stopped: {DOWN_ALERT} pending after {pending_after:.1f} s, firing after "
              f"{fired_after:.1f} s (for: {down_for:.0f} s, intervals {INTERVAL}); alerts then: "
              + ", ".join(sorted(describe(alert) for alert in alerts_then)))
        print(f"[e2e-site] first site.yml run:\n{first.recap_text}\n[e2e-site] second site.yml run:\n"
              f"{second.recap_text}")
    with contextlib.suppress(OSError):
        recap_file = os.environ.get("TROLLMOVES_E2E_SITE_RECAP_FILE")
        if recap_file:
            Path(recap_file).write_text(f"{first.recap_text}\n\n{second.recap_text}\n")


# --------------------------------------------------------------------------------------------------
# The role's output for the example inventory (no namespaces)
# --------------------------------------------------------------------------------------------------

def test_prometheus_config_from_example_inventory(ansible_env, tmp_path):
    """The prometheus play of site.yml with the example inventory writes what the role promises."""
    if os.geteuid() != 0:
        pytest.skip("the role sets root ownership on what it writes: run as root")
    if shutil.which("promtool") is None:
        servers.require_or_skip("promtool not installed (Debian package prometheus)")
    try:
        pwd.getpwnam("prometheus")
    except KeyError:
        servers.require_or_skip("no prometheus user (Debian package prometheus)")
    extra = {"ansible_become": False, "ansible_python_interpreter": "/usr/bin/python3",
             "trollmoves_prometheus_config_dir": f"{tmp_path}/etc",
             "trollmoves_prometheus_storage_path": f"{tmp_path}/data",
             "trollmoves_prometheus_unit_dir": f"{tmp_path}/units",
             "trollmoves_prometheus_manage_systemd": False, "trollmoves_prometheus_manage_packages": False}
    argv = ["ansible-playbook", "-i", str(ANSIBLE_DIR / "inventories" / "example"), "site.yml", "-c", "local",
            "--limit", "monitor.example.org", "-e", json.dumps(extra)]
    runs = [run_tool(argv, ansible_env) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.tail(8000)
    assert runs[1].recap["monitor.example.org"]["changed"] == 0, runs[1].tail(8000)
    installed = (tmp_path / "etc" / "prometheus.yml").read_bytes()
    refused = run_tool(argv + ["-e", "trollmoves_prometheus_scrape_timeout=1m"], ansible_env)  # > the interval
    assert refused.returncode != 0 and f"{tmp_path}/etc/prometheus.yml not installed" in refused.output \
        and "scrape timeout greater than scrape interval" in refused.output, refused.tail(8000)
    assert (tmp_path / "etc" / "prometheus.yml").read_bytes() == installed

    config = yaml.safe_load((tmp_path / "etc" / "prometheus.yml").read_text())
    assert config["global"] == {"scrape_interval": "30s", "scrape_timeout": "10s", "evaluation_interval": "30s",
                                "external_labels": {"site": "example"}}
    rules_dir = tmp_path / "etc" / "trollmoves"
    assert config["rule_files"] == [f"{rules_dir}/recording.yml", f"{rules_dir}/alerts.yml"]
    for name in ("recording.yml", "alerts.yml"):
        assert (rules_dir / name).read_bytes() == (REPO / "monitoring" / name).read_bytes()
    assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]
    jobs = {job["job_name"]: [(t, c.get("labels")) for c in job["static_configs"] for t in c["targets"]]
            for job in config["scrape_configs"]}
    assert jobs == {
        "prometheus": [("127.0.0.1:9090", None)],
        "trollmoves-server": [("reception1.example.org:9110", {"host": "reception1.example.org"})],
        "trollmoves-client": [("proc1.example.org:9111", {"host": "proc1.example.org"}),
                              ("proc2.example.org:9111", {"host": "proc2.example.org"})],
        "trollmoves-mirror": [("dmz-mirror.example.org:9112", {"host": "dmz-mirror.example.org"})],
        "trollmoves-dispatcher": [("proc1.example.org:9113", {"host": "proc1.example.org"})],
        "trollmoves-wis2": [("proc1.example.org:9114", {"host": "proc1.example.org"})],
        "node": [(f"{h}:9100", None) for h in ("reception1.example.org", "dmz-mirror.example.org",
                                               "proc1.example.org", "proc2.example.org")],
    }, jobs
    argv, user = prometheus_argv(tmp_path / "units" / "prometheus.service.d" / "trollmoves.conf")
    assert user == "prometheus"
    assert argv[:5] == ["/usr/bin/prometheus", f"--config.file={tmp_path}/etc/prometheus.yml",
                        f"--storage.tsdb.path={tmp_path}/data", "--storage.tsdb.retention.time=30d",
                        "--web.listen-address=0.0.0.0:9090"], argv
    assert (tmp_path / "data").stat().st_uid == pwd.getpwnam("prometheus").pw_uid
