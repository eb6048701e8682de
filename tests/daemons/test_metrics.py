"""/metrics and /healthz of running daemons, scraped by a real Prometheus.

Why: operators alert on these numbers. What a user sees is asserted: PromQL answers of a real
Prometheus (Debian package, started here on loopback with a generated scrape config) that scraped
a server and a client while files flowed; ``promtool check metrics`` on the live exposition;
counters across a config reload; /healthz status codes when a watched directory disappears and
comes back, or when files arrive but nothing is transferred; the console script's
``--metrics-port`` and ``[trollmoves] metrics_port``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.controller import DaemonProcess
from tests.daemons.helpers import load, running, wait_for, write
from tests.servers import free_port, require_or_skip
from trollmoves import messaging
from trollmoves.client import Client
from trollmoves.metrics import MetricsHTTPServer
from trollmoves.server import Server, ServerOptions
from trollmoves.state import StateStore

TOPIC = "/test/metrics"


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def server_ini(path, chains, daemon=""):
    """chains: {name: (source directory, request port)}."""
    text = f"[trollmoves]\n{textwrap.dedent(daemon)}\n" if daemon else ""
    for name, (source, port) in chains.items():
        text += (f"[{name}]\norigin = {source}/{{platform_name}}_{{number:03d}}.dat\ntopic = {TOPIC}/{name}\n"
                 f"request_port = {port}\nrequest_address = 127.0.0.1\nrequest_bind_address = 127.0.0.1\n")
    return write(path, text)


def client_ini(path, publish_port, destination, topic=f"{TOPIC}/chain", name="chain", daemon="", extra="",
               request_timeout=5):
    text = f"[trollmoves]\n{textwrap.dedent(daemon)}\n" if daemon else ""
    text += (f"[{name}]\nproviders = 127.0.0.1:{publish_port}\ndestination = file://{destination}/\n"
             f"topic = {topic}\npublish_port = 0\npublish_address = 127.0.0.1\nnameservers = False\n"
             f"transfer_req_timeout = {request_timeout}\n{extra}")
    return write(path, text)


def drop(directory, count, start=0, size=2000):
    for index in range(start, start + count):
        (directory / f"NOAA19_{index:03d}.dat").write_bytes(os.urandom(size))


def fetch(url):
    """(status, body text) of a GET, also for 5xx."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples_of(text: str) -> dict[tuple[str, frozenset], float]:
    """A /metrics page as {(sample name, labels): value}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(server: MetricsHTTPServer) -> dict[tuple[str, frozenset], float]:
    status, text = fetch(server.url + "/metrics")
    assert status == 200
    return samples_of(text)


def counted(url, name, expected=1, **labels) -> bool:
    """Does the /metrics page at ``url`` hold ``expected`` for a sample?"""
    status, text = fetch(url + "/metrics")
    return status == 200 and sample(samples_of(text), name, **labels) == expected


def sample(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def health(server: MetricsHTTPServer) -> tuple[int, dict]:
    status, text = fetch(server.url + "/healthz")
    return status, json.loads(text)


def sum_by_chain(samples, name):
    totals = {}
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            chain = dict(labels)["chain"]
            totals[chain] = totals.get(chain, 0) + value
    return totals


class Prometheus:
    """A real Prometheus on 127.0.0.1 with a generated config, its own TSDB in tmp, stopped by PID."""

    def __init__(self, workdir, targets: dict[str, int], interval: str = "1s"):
        self.binary = shutil.which("prometheus")
        self.workdir = workdir
        self.targets = targets
        self.interval = interval
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log = None

    def start(self) -> Prometheus:
        config = {"global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                             "evaluation_interval": self.interval},
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                                     for job, port in self.targets.items()]}
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self._log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - open while Prometheus runs
        for _attempt in range(3):  # a lost race for the free port: try another one
            self.port = free_port()
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={config_path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if fetch(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
            self.stop()
        raise AssertionError(f"Prometheus did not start:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, text = fetch(url)
        answer = json.loads(text)
        assert status == 200 and answer["status"] == "success", text
        return answer["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        wait_for(lambda: self.value(promql) == expected, timeout, 0.25,
                 f"{promql} == {expected} in Prometheus (last: {self.value(promql)})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()


def require_prometheus():
    if shutil.which("prometheus") is None:
        require_or_skip("prometheus not installed (Debian package prometheus; tests/run_all.sh installs it)")


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        require_or_skip("promtool not installed (Debian package prometheus; tests/run_all.sh installs it)")
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert not result.stdout.strip() and not result.stderr.strip(), (result.stdout, result.stderr)


class Pair:
    """A server and a client in this process, each with its /metrics server; files go src -> dst."""

    def __init__(self, tmp_path, server_chains=("chain",), server_daemon="", check_interval=30.0):
        self.tmp = tmp_path
        self.sources = {}
        for name in server_chains:
            self.sources[name] = tmp_path / f"src-{name}"
            self.sources[name].mkdir()
        self.dst = tmp_path / "dst"
        self.dst.mkdir()
        self.ports = {name: free_port() for name in server_chains}
        self.server_path = server_ini(tmp_path / "server.ini",
                                      {n: (self.sources[n], self.ports[n]) for n in server_chains}, server_daemon)
        self.server = Server(load(self.server_path, "server"),
                             ServerOptions(publish_port=0, publish_address="127.0.0.1",
                                           chain_check_interval=check_interval))
        self.client: Client | None = None
        self.server_http = self.client_http = None

    def start_server(self):
        self.server.start()
        self.server_http = MetricsHTTPServer("127.0.0.1", 0, self.server.metrics, self.server.health).start()

    def start_client(self, **kwargs):
        path = client_ini(self.tmp / "client.ini", self.server.publisher.port, self.dst, **kwargs)
        self.client = Client(load(path, "client"), state=StateStore(None))
        self.client.start()
        self.client_http = MetricsHTTPServer("127.0.0.1", 0, self.client.metrics, self.client.health).start()
        time.sleep(0.5)  # zmq slow joiner: let the subscription reach the server's publisher

    def arrived(self, count):
        wait_for(lambda: len([n for n in os.listdir(self.dst) if not n.startswith(".")]) >= count,
                 what=f"{count} files at the destination")

    def close(self):
        for http in (self.client_http, self.server_http):
            if http is not None:
                http.stop()
        if self.client is not None:
            self.client.stop(10)
        self.server.stop(10)


@pytest.fixture
def pair(tmp_path):
    made = []

    def make(**kwargs):
        made.append(Pair(tmp_path, **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_prometheus_scrapes_server_and_client_while_files_flow(pair, tmp_path):
    require_prometheus()
    pair = pair()
    pair.start_server()
    pair.start_client()
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    prometheus = Prometheus(workdir, {"server": pair.server_http.port, "client": pair.client_http.port})
    try:
        prometheus.start()
        drop(pair.sources["chain"], 3)  # while Prometheus comes up
        pair.arrived(3)
        prometheus.wait_value('sum(up{job=~"server|client"})', 2)
        drop(pair.sources["chain"], 4, start=3)  # while it scrapes
        pair.arrived(7)
        prometheus.wait_value('trollmoves_files_announced_total{job="server",chain="chain"}', 7)
        prometheus.wait_value('sum(trollmoves_transfers_succeeded_total{job="server",chain="chain"})', 7)
        prometheus.wait_value('sum(trollmoves_transfers_succeeded_total{job="client",chain="chain"})', 7)
        prometheus.wait_value('trollmoves_files_received_total{job="client",chain="chain"}', 7)
        assert prometheus.value('trollmoves_transfers_succeeded_total{job="client",scheme="file"}') == 7
        assert prometheus.value('sum(trollmoves_transfers_failed_total)') == 0
        assert prometheus.value('trollmoves_transferred_bytes_total{job="server",scheme="file"}') == 7 * 2000
        assert prometheus.value('trollmoves_transfer_duration_seconds_count{job="server",scheme="file"}') == 7
        assert prometheus.value('trollmoves_file_arrival_latency_seconds_count{job="client"}') == 7
        assert prometheus.value('trollmoves_requests_total{job="server",type="push"}') == 7
        assert prometheus.value('trollmoves_last_transfer_timestamp_seconds{job="client"}') > time.time() - 120
        built = prometheus.query("trollmoves_build_info")
        assert sorted(r["metric"]["daemon"] for r in built) == ["client", "server"]
        # label sets initialised at start: rates exist for what never happened
        assert prometheus.value('rate(trollmoves_requests_refused_total{job="server",reason="not_announced"}[1m])') \
            == 0
    finally:
        prometheus.close()


def test_promtool_accepts_the_live_exposition_without_file_names(pair):
    pair = pair()
    pair.start_server()
    pair.start_client()
    drop(pair.sources["chain"], 2)
    pair.arrived(2)
    wait_for(lambda: sample(scrape(pair.client_http), "trollmoves_files_received_total", chain="chain") == 2,
             what="two files counted as received")
    for http in (pair.server_http, pair.client_http):
        status, text = fetch(http.url + "/metrics")
        assert status == 200
        promtool_check(text)
        for secret in ("NOAA19", ".dat", str(pair.tmp), "127.0.0.1", "file://"):
            assert secret not in text, f"{secret!r} in the metrics of {http.url}"
        assert health(http)[0] == 200


@pytest.mark.timeout(90)
def test_metrics_across_a_config_reload(pair, tmp_path):
    pair = pair(server_chains=("chain", "dropped"))
    pair.start_server()
    pair.start_client()
    drop(pair.sources["chain"], 3)
    drop(pair.sources["dropped"], 1)
    pair.arrived(3)
    wait_for(lambda: sample(scrape(pair.server_http), "trollmoves_files_announced_total", chain="dropped") == 1,
             what="the dropped chain's announcement")
    # server: "chain" unchanged, "dropped" removed, "added" new
    added = tmp_path / "src-added"
    added.mkdir()
    new = server_ini(tmp_path / "server2.ini", {"chain": (pair.sources["chain"], pair.ports["chain"]),
                                                "added": (added, free_port())})
    pair.server.reload(load(new, "server"))
    after = scrape(pair.server_http)
    assert sample(after, "trollmoves_files_announced_total", chain="chain") == 3
    assert sum_by_chain(after, "trollmoves_transfers_succeeded_total") == {"chain": 3, "added": 0}
    assert sample(after, "trollmoves_files_announced_total", chain="added") == 0
    assert not any(dict(labels).get("chain") == "dropped" for _, labels in after), "removed chain still exported"
    assert sample(after, "trollmoves_config_reloads_total", result="success") == 1
    assert sample(after, "trollmoves_chains") == 2
    status, document = health(pair.server_http)
    assert status == 200 and sorted(document["chains"]) == ["added", "chain"]
    # client: its chain changes (restarted); its counters go on
    changed = client_ini(tmp_path / "client2.ini", pair.server.publisher.port, pair.dst, extra="heartbeat = False\n")
    pair.client.reload(load(changed, "client"))
    time.sleep(0.5)  # the restarted chain's subscription
    assert sample(scrape(pair.client_http), "trollmoves_config_reloads_total", result="success") == 1
    drop(pair.sources["chain"], 1, start=3)
    pair.arrived(4)
    wait_for(lambda: sample(scrape(pair.client_http), "trollmoves_files_received_total", chain="chain") == 4,
             what="the fourth file counted after the reloads")
    server_after = scrape(pair.server_http)
    assert sample(server_after, "trollmoves_files_announced_total", chain="chain") == 4
    assert sum_by_chain(server_after, "trollmoves_transfers_succeeded_total")["chain"] == 4
    assert sum_by_chain(scrape(pair.client_http), "trollmoves_transfers_succeeded_total") == {"chain": 4}
    assert health(pair.client_http)[0] == 200


@pytest.mark.timeout(60)
def test_healthz_fails_while_a_watched_directory_is_gone(pair):
    pair = pair(check_interval=0.5)
    pair.start_server()
    status, document = health(pair.server_http)
    assert status == 200 and document["chains"]["chain"]["state"] == "ok" and document["publisher"] is True
    source = pair.sources["chain"]
    shutil.rmtree(source)
    wait_for(lambda: health(pair.server_http)[0] == 503, what="/healthz 503 without the watched directory")
    _, document = health(pair.server_http)
    assert document["status"] == "fail" and document["chains"]["chain"]["state"] == "down"
    assert "chain chain: not watching" in document["problems"]
    source.mkdir()
    wait_for(lambda: health(pair.server_http)[0] == 200, what="/healthz 200 once the watcher is restarted")
    samples = scrape(pair.server_http)
    assert sample(samples, "trollmoves_watcher_restarts_total", chain="chain") >= 1
    drop(source, 1)
    wait_for(lambda: sample(scrape(pair.server_http), "trollmoves_files_announced_total", chain="chain") == 1,
             what="an announcement from the restarted watcher")


@pytest.mark.timeout(60)
def test_healthz_reports_a_stalled_chain(pair):
    pair = pair(server_daemon="stalled_after = 1")
    pair.start_server()
    drop(pair.sources["chain"], 1)  # announced; no client asks for it
    wait_for(lambda: health(pair.server_http)[0] == 503, what="/healthz 503 for the stalled chain")
    _, document = health(pair.server_http)
    assert document["stalled_after"] == 1
    assert document["chains"]["chain"]["state"] == "stalled" and document["chains"]["chain"]["watching"] is True
    assert document["problems"][0].startswith("chain chain: stalled: files arrived but nothing transferred for")
    pair.start_client()
    drop(pair.sources["chain"], 1, start=1)  # the client sees the server, catches up with the first file
    pair.arrived(2)
    wait_for(lambda: health(pair.server_http)[0] == 200, what="/healthz 200 once a file moved")
    _, document = health(pair.server_http)
    assert document["chains"]["chain"]["last_transfer"] is not None


@pytest.mark.timeout(120)
def test_console_scripts_serve_metrics(tmp_path):
    source, destination, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for directory in (source, destination, state):
        directory.mkdir()
    publish_port, server_metrics, client_metrics = free_port(), free_port(), free_port()
    server_path = server_ini(tmp_path / "server.ini", {"chain": (source, free_port())})
    client_path = client_ini(tmp_path / "client.ini", publish_port, destination,
                             daemon=f"metrics_port = {client_metrics}\nstate_directory = {state}")
    server = DaemonProcess(["move_it_server.py", "-p", str(publish_port), "--publish-address", "127.0.0.1",
                            "--metrics-port", str(server_metrics), server_path], tmp_path / "server.log").start()
    client = DaemonProcess(["move_it_client.py", client_path], tmp_path / "client.log").start()
    server_url, client_url = f"http://127.0.0.1:{server_metrics}", f"http://127.0.0.1:{client_metrics}"
    try:
        server.wait_log(f"Serving /metrics and /healthz on http://127.0.0.1:{server_metrics}")
        client.wait_log(f"Serving /metrics and /healthz on http://127.0.0.1:{client_metrics}")
        server.wait_log("Chain chain watching")
        client.wait_log("Chain chain following")
        time.sleep(0.5)
        drop(source, 1)
        wait_for(lambda: (destination / "NOAA19_000.dat").exists(), what="the file at the destination")

        wait_for(lambda: counted(server_url, "trollmoves_files_announced_total", chain="chain"),
                 what="the announcement on the server's /metrics")
        wait_for(lambda: counted(client_url, "trollmoves_files_received_total", chain="chain"),
                 what="the reception on the client's /metrics")
        _status, text = fetch(server_url + "/metrics")
        assert 'daemon="server"' in text and "trollmoves_build_info" in text
        assert fetch(server_url + "/healthz")[0] == 200
        assert fetch(client_url + "/healthz")[0] == 200
    finally:
        assert server.stop() == 0, server.log()[-2000:]
        assert client.stop() == 0, client.log()[-2000:]
    with pytest.raises(OSError):
        urllib.request.urlopen(server_url + "/metrics", timeout=2)


@pytest.mark.timeout(60)
def test_a_refused_reload_is_counted(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    metrics_port = free_port()
    server_path = server_ini(tmp_path / "server.ini", {"chain": (source, free_port())},
                             daemon=f"metrics_port = {metrics_port}")
    server = DaemonProcess(["move_it_server.py", "-p", str(free_port()), "--publish-address", "127.0.0.1",
                            server_path], tmp_path / "server.log").start()
    url = f"http://127.0.0.1:{metrics_port}"
    try:
        server.wait_log("Chain chain watching")
        server.wait_log("Serving /metrics")
        assert counted(url, "trollmoves_config_reloads_total", 0, result="failure")
        with open(server_path, "a", encoding="utf-8") as stream:
            stream.write("\nthis line is not INI\n")
        server.wait_log("Config reload refused")
        wait_for(lambda: counted(url, "trollmoves_config_reloads_total", result="failure"),
                 what="the refused reload counted as a failure")
        assert counted(url, "trollmoves_config_reloads_total", 0, result="success")
        assert fetch(url + "/healthz")[0] == 200  # the running config is kept
    finally:
        assert server.stop() == 0, server.log()[-2000:]


@contextlib.contextmanager
def client_of_a_dead_server(tmp_path):
    """A client (with /metrics) following a publisher whose announcements point to a dead request port."""
    destination = tmp_path / "dst"
    destination.mkdir()
    announcer = messaging.Publisher("move_it_server", 0, "127.0.0.1", nameservers=False).start()
    path = client_ini(tmp_path / "client.ini", announcer.port, destination, topic=f"{TOPIC}/dead",
                      daemon="stalled_after = 1", request_timeout=0.3)
    client = Client(load(path, "client"), state=StateStore(None))
    http = MetricsHTTPServer("127.0.0.1", 0, client.metrics, client.health)
    announcement = messaging.make_message(f"{TOPIC}/dead", "file", {
        "uid": "NOAA19_000.dat", "uri": "/nowhere/NOAA19_000.dat", "request_address": f"127.0.0.1:{free_port()}"})

    def announce():  # resent until the subscription is up; the client requests the file once
        announcer.send(announcement)
        announcer.heartbeat(0)
        return True

    try:
        with running(client):
            http.start()
            yield http, announce
    finally:
        http.stop()
        announcer.stop()


@pytest.mark.timeout(60)
def test_client_healthz_stalls_while_requests_fail(tmp_path):
    with client_of_a_dead_server(tmp_path) as (http, announce):
        wait_for(lambda: announce() and health(http)[0] == 503, 20, 0.2,
                 "the client's /healthz 503: its requests keep failing")
        _, document = health(http)
        assert document["chains"]["chain"]["state"] == "stalled"
        assert document["chains"]["chain"]["listening"] is True
        assert document["chains"]["chain"]["last_heartbeat"] > time.time() - 60
        samples = scrape(http)
        assert sample(samples, "trollmoves_transfers_failed_total", chain="chain", scheme="file",
                      reason="timeout") >= 1
        assert sample(samples, "trollmoves_files_received_total", chain="chain") == 0


@pytest.mark.timeout(60)
def test_client_retry_queue_and_heartbeat(tmp_path):
    with client_of_a_dead_server(tmp_path) as (http, announce):
        def waiting_for_retry():
            announce()
            samples = scrape(http)
            return sample(samples, "trollmoves_retry_queue_length", chain="chain") == 1 and samples

        samples = wait_for(waiting_for_retry, 20, 0.2,
                           "the file in the client's retry queue (the client chain's scrape callback)")
        assert 0 < sample(samples, "trollmoves_retry_queue_oldest_timestamp_seconds", chain="chain") <= time.time()
        assert sample(samples, "trollmoves_retries_total", chain="chain") >= 1
        assert sample(samples, "trollmoves_last_heartbeat_timestamp_seconds", chain="chain") > time.time() - 60
