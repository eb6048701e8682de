"""The shipped Prometheus rules: monitoring/alerts.yml, monitoring/recording.yml and their unit tests.

Why: an alert that never fires, fires on a healthy site or names a metric no daemon exports is
worse than none, because operators trust its silence. So:

* ``promtool check rules`` (syntax, PromQL, templates) and ``promtool test rules`` (input series
  -> expected alerts with their labels and rendered annotations, recording rule values) run on the
  real files with the real ``promtool`` (Debian package ``prometheus``);
* every alert (per severity) has a unit test that fires it and one that must stay quiet, and every
  recording rule has a value test: checked here by reading the test files, so a new rule cannot
  ship untested;
* every metric a rule reads is documented in docs/metrics.md or docs/wis2.md (what the daemons
  export), is ``up`` (Prometheus' own), or is recorded in recording.yml;
* a real Prometheus loads both files while it scrapes a real server and client moving files:
  every rule evaluates without error on the real label sets, the recording rules have data and
  no alert is pending or firing on that healthy pair.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.servers import require_or_skip

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
ALERTS = MONITORING / "alerts.yml"
RECORDING = MONITORING / "recording.yml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
METRICS_DOC = REPO / "docs" / "metrics.md"
WIS2_DOC = REPO / "docs" / "wis2.md"

SEVERITIES = {"critical", "warning"}
DAEMON_WIDE = {"TrollmovesDaemonDown", "TrollmovesStateStoreUnwritable"}
"""Alerts about a whole daemon (no chain label): their summary names the job instead of the chain."""
RECORDED = ("trollmoves:files_announced:rate5m", "trollmoves:files_received:rate5m",
            "trollmoves:transferred_bytes:rate5m", "trollmoves:transfers_failed:rate5m",
            "trollmoves:transfers_failure_ratio:rate5m", "trollmoves:wis2_published:rate5m",
            "trollmoves:wis2_downloads:rate5m")
"""The names fixed for the dashboard (issue 19): they must exist, with job, instance and chain."""
NOT_EXPORTED = {"up": "set by Prometheus for every scrape target"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def require_promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        require_or_skip("promtool not installed (Debian package prometheus; tests/run_all.sh installs it)")
    return promtool


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def rules(path: Path, kind: str) -> list[dict]:
    """The rules of a rule file that have ``kind`` ("alert" or "record"), from all groups."""
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"] if kind in rule]


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


# --------------------------------------------------------------------------------------------------
# PromQL metric names and the documented metrics
# --------------------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, enough for our rules).

    Strings, label matchers ``{...}``, range and subquery brackets ``[...]`` and label lists of
    ``by``/``on``/``group_left``... are removed; what is left of identifiers is a metric name
    unless a ``(`` follows (a function or aggregation) or it is a keyword. Numbers such as
    ``1e9`` and durations such as ``5m`` are not identifiers (they start with a digit).
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if word.lower() in _KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def documented_metrics() -> tuple[set[str], tuple[str, ...]]:
    """(names, name prefixes) of the metrics docs/metrics.md and docs/wis2.md#metrics list.

    docs/metrics.md: the first cell of each row of a table with 4 or more columns (the metrics
    table; the labels table has 2); a cell such as ``process_*`` is a prefix. docs/wis2.md: every
    ``trollmoves_wis2_*`` name of its "## Metrics" section.
    """
    names: set[str] = set()
    prefixes: list[str] = []
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Za-z_:][A-Za-z0-9_:]*)(\*?)`", cells[0]) if len(cells) >= 4 else None
        if match:
            (prefixes.append(match.group(1)) if match.group(2) else names.add(match.group(1)))
    wis2 = WIS2_DOC.read_text(encoding="utf-8")
    section = wis2.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    names |= set(re.findall(r"`(trollmoves_wis2_[a-z0-9_]+)", section))
    return names, tuple(prefixes)


def is_documented(name: str, names: set[str], prefixes: tuple[str, ...]) -> bool:
    candidates = {name} | {name[:-len(suffix)] for suffix in HISTOGRAM_SUFFIXES if name.endswith(suffix)}
    return any(candidate in names or candidate.startswith(prefixes) for candidate in candidates)


def test_metric_names_finds_selectors_and_skips_functions_labels_and_numbers():
    expr = """
      time() - (last_file{chain="a", job=~"x.*"} > 0 or on (job, instance, chain)
        last_file * 0 + on (job, instance) group_left () process_start_time_seconds)
      > on (job, instance, chain) clamp_max(sum by (job) (rate(c_total{reason="not_authorised"}[5m])), 1e9)
      and histogram_quantile(0.95, sum without (le) (rate(h_bucket[5m] offset 1h))) > bool 2
      or trollmoves:default:rate5m unless absent(gone)
    """
    assert metric_names(expr) == {"last_file", "process_start_time_seconds", "c_total", "h_bucket",
                                  "trollmoves:default:rate5m", "gone"}


# --------------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------------

def test_promtool_check_rules_is_clean():
    result = run(require_promtool(), "check", "rules", str(ALERTS), str(RECORDING))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    assert RULE_TESTS, "no promtool test files in monitoring/tests"
    result = run(require_promtool(), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


# --------------------------------------------------------------------------------------------------
# Coverage of the unit tests and conventions of the rules
# --------------------------------------------------------------------------------------------------

def unit_tests() -> list[tuple[Path, dict]]:
    """(test file, test group) for every group of every promtool test file."""
    return [(path, group) for path in RULE_TESTS for group in load_yaml(path)["tests"]]


def test_unit_test_files_load_the_shipped_rule_files():
    for path in RULE_TESTS:
        loaded = {(path.parent / name).resolve() for name in load_yaml(path)["rule_files"]}
        tests = load_yaml(path)["tests"]
        if any(group.get("alert_rule_test") for group in tests):
            assert ALERTS.resolve() in loaded, f"{path.name}: rule_files must load monitoring/alerts.yml"
        assert RECORDING.resolve() in loaded, f"{path.name}: rule_files must load monitoring/recording.yml"


def test_every_alert_has_a_firing_test_per_severity_and_a_quiet_test():
    firing: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for _path, group in unit_tests():
        for case in group.get("alert_rule_test") or []:
            expected = case.get("exp_alerts") or []
            if not expected:
                quiet.add(case["alertname"])
            for alert in expected:
                firing.add((case["alertname"], alert["exp_labels"]["severity"]))
    wanted = {(rule["alert"], rule["labels"]["severity"]) for rule in rules(ALERTS, "alert")}
    assert not wanted - firing, f"alerts (name, severity) with no test firing them: {sorted(wanted - firing)}"
    untested = {name for name, _severity in wanted} - quiet
    assert not untested, f"alerts with no test where they stay quiet (exp_alerts: []): {sorted(untested)}"
    unknown = {name for name, _severity in firing} - {name for name, _severity in wanted}
    assert not unknown, f"tests of alerts that do not exist in alerts.yml: {sorted(unknown)}"


def test_every_recording_rule_has_a_value_test():
    tested = " ".join(case["expr"] for _path, group in unit_tests()
                      for case in group.get("promql_expr_test") or [])
    records = [rule["record"] for rule in rules(RECORDING, "record")]
    assert [name for name in records if name not in metric_names(tested)] == []


def test_recording_rules_have_the_agreed_names_and_labels():
    records = {rule["record"]: rule["expr"] for rule in rules(RECORDING, "record")}
    assert set(RECORDED) <= set(records), sorted(set(RECORDED) - set(records))
    for name in RECORDED:
        assert "sum by (job, instance, chain)" in records[name], f"{name} must keep job, instance and chain"


def test_alerts_have_severity_summary_naming_chain_and_instance_and_a_runbook():
    groups = load_yaml(ALERTS)["groups"]
    assert [group["name"] for group in groups] == ["trollmoves"]
    for rule in rules(ALERTS, "alert"):
        name, annotations = rule["alert"], rule.get("annotations", {})
        assert name.startswith("Trollmoves"), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity critical or warning"
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{name}: annotation {key} missing"
        summary = annotations["summary"]
        assert "{{ $labels.instance }}" in summary, f"{name}: the summary must name the instance"
        scope = "{{ $labels.job }}" if name in DAEMON_WIDE else "{{ $labels.chain }}"
        assert scope in summary, f"{name}: the summary must name {scope}"


def test_rules_read_only_documented_or_recorded_metrics():
    names, prefixes = documented_metrics()
    assert "trollmoves_files_received_total" in names and "trollmoves_wis2_broker_connected" in names
    recorded = {rule["record"] for rule in rules(RECORDING, "record")}
    unknown = {}
    for path, kind in ((ALERTS, "alert"), (RECORDING, "record")):
        for rule in rules(path, kind):
            for metric in metric_names(rule["expr"]):
                known = metric in recorded or metric in NOT_EXPORTED or is_documented(metric, names, prefixes)
                if not known:
                    unknown.setdefault(metric, []).append(f"{path.name} {rule[kind]}")
    assert not unknown, ("metrics read by the rules but documented in neither docs/metrics.md nor "
                         f"docs/wis2.md#metrics (nor recorded): {unknown}")


# --------------------------------------------------------------------------------------------------
# A real Prometheus evaluating the rules on a healthy server and client
# --------------------------------------------------------------------------------------------------

def start_prometheus_with_rules(workdir: Path, jobs: dict[str, int]):
    """tests/daemons/test_metrics.py's Prometheus, then our rule files added and loaded (SIGHUP).

    Imported late: that module imports the daemons. The helper writes its config as JSON (which
    is YAML); we add ``rule_files`` to it and reload, the way an operator installs the rules.
    """
    from tests.daemons.helpers import wait_for
    from tests.daemons.test_metrics import Prometheus

    prometheus = Prometheus(workdir, jobs).start()
    config_path = workdir / "prometheus.yml"
    config = json.loads(config_path.read_text())
    config["rule_files"] = [str(RECORDING), str(ALERTS)]
    config_path.write_text(json.dumps(config, indent=1))
    os.kill(prometheus.proc.pid, signal.SIGHUP)
    wait_for(lambda: rules_api(prometheus), 30, 0.25, f"Prometheus to load the rules from {config_path}")
    return prometheus


def api(prometheus, path: str) -> dict:
    status, text = prometheus_fetch(f"http://127.0.0.1:{prometheus.port}/api/v1/{path}")
    answer = json.loads(text)
    assert status == 200 and answer["status"] == "success", text
    return answer["data"]


def rules_api(prometheus) -> list[dict]:
    """Every rule Prometheus has loaded, with its health, lastError and lastEvaluation."""
    return [rule for group in api(prometheus, "rules")["groups"] for rule in group["rules"]]


def prometheus_fetch(url: str) -> tuple[int, str]:
    from tests.daemons.test_metrics import fetch

    return fetch(url)


@pytest.mark.timeout(180)
def test_a_real_prometheus_evaluates_every_rule_on_a_healthy_pair(tmp_path):
    if shutil.which("prometheus") is None:
        require_or_skip("prometheus not installed (Debian package prometheus; tests/run_all.sh installs it)")
    from tests.daemons.helpers import wait_for
    from tests.daemons.test_metrics import Pair, drop

    pair = Pair(tmp_path)
    prometheus = None
    try:
        pair.start_server()
        pair.start_client()
        drop(pair.sources["chain"], 1)
        pair.arrived(1)
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        jobs = {"trollmoves-server": pair.server_http.port, "trollmoves-client": pair.client_http.port}
        prometheus = start_prometheus_with_rules(workdir, jobs)
        expected = {rule.get("alert") or rule.get("record") for path in (ALERTS, RECORDING)
                    for rule in rules(path, "alert") + rules(path, "record")}
        assert {rule["name"] for rule in rules_api(prometheus)} == expected
        client = '{job="trollmoves-client", chain="chain"}'
        server = '{job="trollmoves-server", chain="chain"}'
        flowing = (f"trollmoves:files_announced:rate5m{server}", f"trollmoves:files_received:rate5m{client}",
                   f"trollmoves:transferred_bytes:rate5m{client}")
        dropped = 1

        def evaluated() -> list[dict]:
            """Files keep flowing until every rule has run and each rate has two different samples."""
            nonlocal dropped
            drop(pair.sources["chain"], 1, start=dropped)
            dropped += 1
            found = rules_api(prometheus)
            done = all(rule.get("lastEvaluation", "").startswith("2") for rule in found)  # else year 0001
            return found if done and all(prometheus.value(query) for query in flowing) else []

        every_rule = wait_for(evaluated, 60, 0.5, f"every rule evaluated once and {flowing} > 0")
        pair.arrived(dropped)
        broken = {rule["name"]: rule.get("lastError") for rule in every_rule if rule["health"] != "ok"}
        assert not broken, f"rules failing on real series: {broken}\n{prometheus.log()[-2000:]}"
        assert prometheus.value(f"trollmoves:transfers_failure_ratio:rate5m{client}") == 0
        assert prometheus.value("trollmoves:default_expected_interval_seconds") == 3600
        alerts = api(prometheus, "alerts")["alerts"]
        assert alerts == [], f"alerts pending or firing on a healthy pair: {alerts}"
    finally:
        if prometheus is not None:
            prometheus.close()
        pair.close()
