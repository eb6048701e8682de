"""The Grafana dashboard (monitoring/trollmoves-dashboard.json), checked as JSON and against a live scrape.

Why: a dashboard fails silently. A typo in a metric name, a label the daemons do not have, or a
recording rule that was renamed shows "No data" in exactly the panel an operator opens at 3 a.m.
So every panel query is run here through a real Prometheus (Debian package, on loopback) that
scrapes a real server and client in this process while files flow, with the recording rules of
monitoring/recording.yml loaded: each query must be valid PromQL, every metric it names must exist
in that scrape (or be a recording rule), every panel must return data, and the flow panels a
rate above 0.

Names that may be absent from this scrape are listed with the reason, never allowed wholesale:
the WIS2 bridge's series and the recording rules made of them (no bridge runs here; they are
checked against the bridge's own metric definitions instead). Only a panel that reads nothing
but those may be empty.
"""

from __future__ import annotations

import json
import pathlib
import re
import signal
import time
import urllib.parse

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.daemons.helpers import load, wait_for
from tests.daemons.test_metrics import Prometheus, client_ini, drop, fetch, require_prometheus, server_ini
from tests.servers import free_port
from trollmoves.client import Client
from trollmoves.metrics import Metrics, MetricsHTTPServer
from trollmoves.metrics.wis2 import Wis2Metrics
from trollmoves.server import Server, ServerOptions

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "trollmoves-dashboard.json"
RECORDING_RULES = ROOT / "monitoring" / "recording.yml"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ROWS = ["Overview", "Flow", "Failures", "Peers", "Storage", "WIS2 bridge"]
VARIABLES = {"datasource": "datasource", "job": "query", "instance": "query", "chain": "query"}
CHAINLESS = {"up", "trollmoves_state_store_writable", "trollmoves_state_store_errors_total"}
"""Series without a ``chain`` label: their selectors filter by job and instance only."""
CORE_PANELS = ["Chains up", "Files announced /s", "Files received /s", "Bytes /s", "Heartbeat age"]
"""Panels that must show data for a server and a client that moved files."""
FLOW_PANELS = {"Files announced /s", "Files received /s", "Bytes /s"}
"""Core panels whose rate must be above 0: files moved while Prometheus scraped."""
SERVER_JOB, CLIENT_JOB = "trollmoves-server", "trollmoves-client"
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "inf", "nan"}


# --------------------------------------------------------------------------------------------------
# Reading the dashboard
# --------------------------------------------------------------------------------------------------

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(board: dict) -> list[dict]:
    """Every panel, rows included, with the children of collapsed rows."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def query_panels(board: dict) -> list[dict]:
    return [panel for panel in all_panels(board) if panel["type"] != "row"]


def targets(board: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every target."""
    return [(panel["title"], target["expr"]) for panel in query_panels(board) for target in panel["targets"]]


def variable(board: dict, name: str) -> dict:
    return next(item for item in board["templating"]["list"] if item["name"] == name)


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matchers) of every ``name{...}`` in a PromQL expression."""
    return re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr)


def metric_names(expr: str) -> set[str]:
    """The metric and recording-rule names a PromQL expression reads (functions and keywords excluded)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def referenced_names(board: dict) -> set[str]:
    return {name for _title, expr in targets(board) for name in metric_names(expr)}


def wis2_sample_names() -> set[str]:
    """Every sample name the WIS2 bridge exports, from its metric definitions (no bridge runs here)."""
    registry = CollectorRegistry()
    wis2 = Wis2Metrics(Metrics("wis2", registry=registry, process_metrics=False))
    wis2.init_chain("publishing", "publish")
    wis2.init_chain("subscribing", "subscribe")
    return {sample.name for family in registry.collect() for sample in family.samples}


def recording_rule_names() -> set[str]:
    rules = yaml.safe_load(RECORDING_RULES.read_text(encoding="utf-8"))
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


def allowed_absent(name: str) -> str | None:
    """Why ``name`` may be missing from this test's scrape, or None when it must be there."""
    if name.startswith(("trollmoves_wis2_", "trollmoves:wis2_")):
        return "no WIS2 bridge runs in this test (checked against the bridge's metric definitions instead)"
    return None


def substitute(expr: str, values: dict[str, str]) -> str:
    """What Grafana sends to Prometheus: variables replaced, ``$datasource`` only picks the data source."""
    text = expr.replace("$__rate_interval", "1m").replace("$__interval", "5s")
    for name, value in values.items():
        text = text.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in text, f"an unknown variable left in {text!r}"
    return text


def multi_value(*values: str) -> str:
    """Grafana's rendering of a multi-value variable in a Prometheus regex matcher: escaped, ``(a|b)``."""
    escaped = [re.escape(value).replace("\\", "\\\\") for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


# --------------------------------------------------------------------------------------------------
# The JSON model
# --------------------------------------------------------------------------------------------------

def test_dashboard_model():
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["title"] == "trollmoves" and re.fullmatch(r"[\w-]{8,40}", board["uid"])
    assert board["id"] is None, "an exported id would clash with the importing Grafana's own"
    assert {item["name"]: item["type"] for item in board["templating"]["list"]} == VARIABLES
    assert variable(board, "datasource")["query"] == "prometheus"
    for name in ("job", "instance", "chain"):
        item = variable(board, name)
        assert item["multi"] and item["includeAll"] and item["allValue"], name
        assert item["datasource"] == DATASOURCE, name
        assert item["definition"].startswith("label_values(") and item["query"]["query"] == item["definition"]
    rows = [panel for panel in board["panels"] if panel["type"] == "row"]
    assert [row["title"] for row in rows] == ROWS
    assert board["panels"][0]["type"] == "row", "every panel belongs to a row"
    for row in rows:
        assert bool(row["panels"]) == row["collapsed"], f"row {row['title']}: children only when collapsed"


def test_panel_ids_and_grid_positions():
    board = dashboard()
    ids = [panel["id"] for panel in all_panels(board)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    cells = {}
    for panel in all_panels(board):
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) and grid[key] >= 0 for key in "hwxy"), panel["title"]
        assert grid["h"] > 0 and 0 < grid["w"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_queries_the_chosen_datasource():
    board = dashboard()
    for panel in query_panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]

    def uids(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and isinstance(value, dict):
                    yield value.get("uid")
                elif key == "datasource" and isinstance(value, str):
                    yield value
                else:
                    yield from uids(value)
        elif isinstance(node, list):
            for item in node:
                yield from uids(item)

    assert set(uids(board)) == {"${datasource}"}, "a hard-coded data source"


def test_every_selector_filters_by_the_variables():
    for title, expr in targets(dashboard()):
        found = selectors(expr)
        assert found, f"{title}: no selector in {expr}"
        assert {name for name, _ in found} == metric_names(expr), f"{title}: a metric without a selector: {expr}"
        for name, matchers in found:
            required = ['job=~"$job"', 'instance=~"$instance"']
            if name not in CHAINLESS:
                required.append('chain=~"$chain"')
            for matcher in required:
                assert matcher in matchers, f"{title}: {name} lacks {matcher}"


def test_names_are_recording_rules_or_daemon_metrics():
    names = referenced_names(dashboard())
    used = {name for name in names if ":" in name}
    assert used, "the dashboard reads no recording rule"
    assert used <= recording_rule_names(), f"not in monitoring/recording.yml: {used - recording_rule_names()}"
    wis2 = {name for name in names if name.startswith("trollmoves_wis2_")}
    assert wis2, "the WIS2 row reads no bridge metric"
    assert wis2 <= wis2_sample_names(), f"not exported by the WIS2 bridge: {wis2 - wis2_sample_names()}"


# --------------------------------------------------------------------------------------------------
# Against a live scrape
# --------------------------------------------------------------------------------------------------

class Site:
    """A server and a client in this process (the client with a real state store), each serving /metrics."""

    def __init__(self, tmp_path: pathlib.Path):
        self.source, self.destination, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
        for directory in (self.source, self.destination, state):
            directory.mkdir()
        path = server_ini(tmp_path / "server.ini", {"chain": (self.source, free_port())})
        self.server = Server(load(path, "server"), ServerOptions(publish_port=0, publish_address="127.0.0.1"))
        self.tmp, self.state = tmp_path, state
        self.client = None
        self.http: list[MetricsHTTPServer] = []

    def start(self) -> Site:
        self.server.start()
        self.http.append(MetricsHTTPServer("127.0.0.1", 0, self.server.metrics, self.server.health).start())
        path = client_ini(self.tmp / "client.ini", self.server.publisher.port, self.destination,
                          daemon=f"state_directory = {self.state}")
        self.client = Client(load(path, "client"))
        self.client.start()
        self.http.append(MetricsHTTPServer("127.0.0.1", 0, self.client.metrics, self.client.health).start())
        return self

    def arrived(self, count: int) -> None:
        wait_for(lambda: len([n for n in self.destination.iterdir() if not n.name.startswith(".")]) >= count,
                 what=f"{count} files at the destination")

    def close(self) -> None:
        for http in self.http:
            http.stop()
        if self.client is not None:
            self.client.stop(10)
        self.server.stop(10)


def load_rules(prometheus: Prometheus, rule_files: list[pathlib.Path]) -> set[str]:
    """Add rule files to the running Prometheus (SIGHUP reloads its config); return the recording rules."""
    config_path = prometheus.workdir / "prometheus.yml"
    config = json.loads(config_path.read_text())
    config["rule_files"] = [str(path) for path in rule_files]
    config_path.write_text(json.dumps(config, indent=1))
    prometheus.proc.send_signal(signal.SIGHUP)

    def loaded():
        status, text = fetch(f"http://127.0.0.1:{prometheus.port}/api/v1/rules?type=record")
        groups = json.loads(text)["data"]["groups"] if status == 200 else []
        return {rule["name"] for group in groups for rule in group["rules"]}

    return wait_for(loaded, 20, 0.2, f"the rules of {rule_files} in Prometheus (log: {prometheus.log()[-2000:]})")


def api(prometheus: Prometheus, path: str, **params) -> list:
    url = f"http://127.0.0.1:{prometheus.port}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
    status, text = fetch(url)
    answer = json.loads(text)
    assert status == 200 and answer["status"] == "success", f"{url}: {text}"
    return answer["data"]


def variable_values(prometheus: Prometheus, definition: str, values: dict[str, str]) -> set[str]:
    """A ``label_values(selector, label)`` variable as Grafana runs it: the label's values in the series."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", substitute(definition, values))
    selector, label = match.groups()
    return {series[label] for series in api(prometheus, "series", **{"match[]": selector}) if label in series}


@pytest.fixture
def site(tmp_path):
    made = Site(tmp_path)
    try:
        yield made.start()
    finally:
        made.close()


@pytest.mark.timeout(150)
def test_every_panel_query_against_a_live_scrape(site, tmp_path):
    require_prometheus()
    board = dashboard()
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server_http, client_http = site.http
    prometheus = Prometheus(workdir, {SERVER_JOB: server_http.port, CLIENT_JOB: client_http.port})
    try:
        prometheus.start()
        records = load_rules(prometheus, [RECORDING_RULES])
        time.sleep(0.5)  # zmq slow joiner: the client's subscription reaches the server's publisher
        drop(site.source, 3)
        site.arrived(3)
        # a heartbeat now rather than in 30 s: the real server's publisher, the client's real subscription
        wait_for(lambda: site.server.publisher.heartbeat(0) and prometheus.value(
            f'trollmoves_last_heartbeat_timestamp_seconds{{job="{CLIENT_JOB}"}} > 0'), 30, 0.5,
            "a heartbeat counted by the client and scraped")
        # both counters scraped before the second batch, so that the rates see it move
        prometheus.wait_value(f'trollmoves_files_announced_total{{job="{SERVER_JOB}"}}', 3)
        prometheus.wait_value(f'trollmoves_files_received_total{{job="{CLIENT_JOB}"}}', 3)
        drop(site.source, 3, start=3)  # while Prometheus scrapes and evaluates the rules
        site.arrived(6)
        prometheus.wait_value(f'trollmoves_files_announced_total{{job="{SERVER_JOB}"}}', 6)
        prometheus.wait_value(f'trollmoves_files_received_total{{job="{CLIENT_JOB}"}}', 6)

        all_values = {name: variable(board, name)["allValue"] for name in ("job", "instance", "chain")}
        chosen = {"job": multi_value(SERVER_JOB, CLIENT_JOB),
                  "instance": multi_value(f"127.0.0.1:{server_http.port}", f"127.0.0.1:{client_http.port}"),
                  "chain": multi_value("chain")}
        panels = {panel["title"]: panel for panel in query_panels(board)}
        absent = {name: allowed_absent(name) for name in referenced_names(board)}
        core = [title for title in CORE_PANELS  # a core panel may only go without data for a stated reason
                if not any(absent[name] for target in panels[title]["targets"]
                           for name in metric_names(target["expr"]))]

        def lacking_data():  # recording rules need two evaluations over two scrapes: poll
            lacking = set()
            for title in core:
                for target in panels[title]["targets"]:
                    for values in (all_values, chosen):
                        result = prometheus.query(substitute(target["expr"], values))
                        if not result or (title in FLOW_PANELS and max(float(r["value"][1]) for r in result) <= 0):
                            lacking.add(title)
            return sorted(lacking)

        deadline = time.monotonic() + 60
        while (lacking := lacking_data()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not lacking, f"core panels without data (or a zero rate while files flowed): {lacking}"

        # every panel shows data, but those reading only series absent for a stated reason
        empty = sorted({title for title, expr in targets(board) if not prometheus.query(substitute(expr, all_values))
                        and not all(absent.get(name) for name in metric_names(expr))})
        assert not empty, f"panels without data while a server and a client moved files: {empty}"

        # every query is valid PromQL, for "All" and for chosen values
        for title, expr in targets(board):
            for values in (all_values, chosen):
                api(prometheus, "query", query=substitute(expr, values))  # status success or it fails

        # every name a panel reads exists in the scrape or is a recording rule, or is absent for a stated reason
        scraped = set(api(prometheus, "label/__name__/values"))
        missing = {name: absent[name] for name in referenced_names(board) if name not in scraped | records}
        unexplained = sorted(name for name, reason in missing.items() if reason is None)
        assert not unexplained, f"panels read metrics that are neither scraped nor recorded: {unexplained}"
        for name, reason in sorted(missing.items()):
            print(f"absent from this scrape: {name}: {reason}")

        # the variables list what runs: jobs, instances, chains
        assert variable_values(prometheus, variable(board, "job")["definition"], all_values) == {SERVER_JOB,
                                                                                               CLIENT_JOB}
        assert variable_values(prometheus, variable(board, "instance")["definition"], chosen) == {
            f"127.0.0.1:{server_http.port}", f"127.0.0.1:{client_http.port}"}
        chains = variable_values(prometheus, variable(board, "chain")["definition"], all_values)
        assert chains == {"chain"} or absent.get("trollmoves_chain_up"), chains
    finally:
        prometheus.close()

