"""Metrics on an injected registry, scrape-time values, health tracking and the /metrics, /healthz server.

Why: an operator alerts on these names and labels; a label set missing until its first event
makes ``rate()`` empty, a scrape-time callback that raises must not break the scrape, and a
health endpoint that says 200 while a chain is stalled hides an incident. Values are read with
``get_sample_value`` on a registry of the test's own; the HTTP server is real (loopback).
Only the clock of the stall detection is faked.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from trollmoves import __version__
from trollmoves._accel import IMPLEMENTATION
from trollmoves.metrics import (
    FAILURE_REASONS,
    MESSAGE_TYPES,
    REFUSAL_REASONS,
    REQUEST_TYPES,
    SCHEMES,
    HealthTracker,
    Metrics,
    MetricsHTTPServer,
    message_type_label,
    scheme_label,
)
from trollmoves.movers.pool import ConnectionPool

from tests.servers import require_or_skip


@pytest.fixture
def metrics():
    return Metrics("server", CollectorRegistry())


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels)


def get(url, headers=None):
    """(status, headers, body) of a GET, also for 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class Connection:
    """What the pool lends: something with ``alive()`` and ``close()``."""

    def __init__(self):
        self.open = True

    def alive(self):
        return self.open

    def close(self):
        self.open = False


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


# --------------------------------------------------------------------------------------------------
# Metric objects
# --------------------------------------------------------------------------------------------------

def test_build_info_names_version_daemon_and_speedups(metrics):
    assert value(metrics, "trollmoves_build_info", version=__version__, daemon="server",
                 speedups=IMPLEMENTATION) == 1


def test_init_chain_creates_every_label_set_at_zero(metrics):
    metrics.init_chain("hrit")
    for name in ("trollmoves_files_announced_total", "trollmoves_files_received_total",
                 "trollmoves_messages_malformed_total", "trollmoves_duplicates_skipped_total",
                 "trollmoves_retries_total", "trollmoves_watcher_restarts_total", "trollmoves_catch_up_files_total",
                 "trollmoves_messages_dropped_total", "trollmoves_retry_queue_length",
                 "trollmoves_retry_queue_oldest_timestamp_seconds", "trollmoves_last_transfer_timestamp_seconds",
                 "trollmoves_last_heartbeat_timestamp_seconds", "trollmoves_file_arrival_latency_seconds_count"):
        assert value(metrics, name, chain="hrit") == 0, name
    for atype in REQUEST_TYPES:
        assert value(metrics, "trollmoves_requests_total", chain="hrit", type=atype) == 0
    for reason in REFUSAL_REASONS:
        assert value(metrics, "trollmoves_requests_refused_total", chain="hrit", reason=reason) == 0
    for atype in MESSAGE_TYPES:
        assert value(metrics, "trollmoves_messages_received_total", chain="hrit", type=atype) == 0
        assert value(metrics, "trollmoves_messages_published_total", chain="hrit", type=atype) == 0
    for scheme in SCHEMES:
        for name in ("trollmoves_transfers_started_total", "trollmoves_transfers_succeeded_total",
                     "trollmoves_transferred_bytes_total", "trollmoves_transfer_duration_seconds_count"):
            assert value(metrics, name, chain="hrit", scheme=scheme) == 0, (name, scheme)
        for reason in FAILURE_REASONS:
            assert value(metrics, "trollmoves_transfers_failed_total", chain="hrit", scheme=scheme,
                         reason=reason) == 0
    for result in ("success", "failure"):
        assert value(metrics, "trollmoves_config_reloads_total", result=result) == 0
    assert value(metrics, "trollmoves_chains") == 1
    assert metrics.chains == {"hrit"}


def test_reinitialising_a_chain_keeps_its_values(metrics):
    metrics.init_chain("hrit")
    metrics.files_announced.labels("hrit").inc(5)
    metrics.init_chain("hrit")
    assert value(metrics, "trollmoves_files_announced_total", chain="hrit") == 5


def test_counts_through_cached_children_are_exported_and_a_removed_chain_starts_again(metrics):
    metrics.init_chain("hrit")
    for _ in range(3):
        metrics.child(metrics.files_announced, "hrit").inc()
    metrics.child(metrics.transferred_bytes, "hrit", "file").inc(4096)
    assert value(metrics, "trollmoves_files_announced_total", chain="hrit") == 3
    assert value(metrics, "trollmoves_transferred_bytes_total", chain="hrit", scheme="file") == 4096
    metrics.remove_chain("hrit")
    metrics.init_chain("hrit")
    metrics.child(metrics.files_announced, "hrit").inc()
    assert value(metrics, "trollmoves_files_announced_total", chain="hrit") == 1


def test_remove_chain_drops_only_that_chain(metrics):
    metrics.init_chain("hrit")
    metrics.init_chain("avhrr")
    metrics.files_announced.labels("hrit").inc()
    metrics.transfer_duration.labels("hrit", "sftp").observe(0.2)
    metrics.remove_chain("hrit")
    text = prometheus_client.generate_latest(metrics.registry).decode()
    assert 'chain="hrit"' not in text
    assert value(metrics, "trollmoves_files_announced_total", chain="avhrr") == 0
    assert metrics.chains == {"avhrr"}
    assert value(metrics, "trollmoves_chains") == 1


def test_nothing_lands_in_the_global_registry():
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    Metrics("client").init_chain("x")
    Metrics("client").init_chain("x")  # two services in one process: no duplicate-name error
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before


@pytest.mark.parametrize(("given", "label"), [("sftp", "sftp"), ("SFTP", "sftp"), ("", "file"), (None, "file"),
                                              ("gopher", "file"), ("s3", "s3")])
def test_scheme_label_is_from_the_fixed_set(given, label):
    assert scheme_label(given) == label


def test_message_type_label_is_from_the_fixed_set():
    assert message_type_label("dataset") == "dataset"
    assert message_type_label("/some/evil/uri") == "other"


# --------------------------------------------------------------------------------------------------
# Scrape-time values
# --------------------------------------------------------------------------------------------------

def test_scrape_callbacks_run_before_the_values_are_read(metrics):
    metrics.init_chain("hrit")
    queue = [100.0, 50.0, 75.0]

    def scrape():
        metrics.retry_queue_length.labels("hrit").set(len(queue))
        metrics.retry_queue_oldest.labels("hrit").set(min(queue, default=0))

    metrics.add_scrape_callback(scrape, chain="hrit")
    assert value(metrics, "trollmoves_retry_queue_length", chain="hrit") == 3
    assert value(metrics, "trollmoves_retry_queue_oldest_timestamp_seconds", chain="hrit") == 50
    queue.clear()
    text = prometheus_client.generate_latest(metrics.registry).decode()
    assert 'trollmoves_retry_queue_length{chain="hrit"} 0.0' in text


def test_a_failing_scrape_callback_does_not_break_the_scrape(metrics, caplog):
    metrics.init_chain("hrit")

    def broken():
        raise RuntimeError("boom")

    metrics.add_scrape_callback(broken)
    metrics.add_scrape_callback(lambda: metrics.retry_queue_length.labels("hrit").set(7))
    assert value(metrics, "trollmoves_retry_queue_length", chain="hrit") == 7
    assert "scrape callback" in caplog.text


def test_chain_callbacks_go_with_the_chain(metrics):
    calls = []
    metrics.init_chain("a")
    metrics.add_scrape_callback(lambda: calls.append("a-old"), chain="a")
    metrics.init_chain("a")  # the chain restarted: the old instance's callback is obsolete
    metrics.add_scrape_callback(lambda: calls.append("a-new"), chain="a")
    metrics.init_chain("b")
    metrics.add_scrape_callback(lambda: calls.append("b"), chain="b")
    remove_global = metrics.add_scrape_callback(lambda: calls.append("global"))
    metrics.registry.collect().__next__()  # the scrape collector comes first
    assert calls == ["a-new", "b", "global"]
    calls.clear()
    metrics.remove_chain("b")
    remove_global()
    list(metrics.registry.collect())
    assert calls == ["a-new"]


def test_pool_statistics_at_scrape_time(metrics):
    pool = ConnectionPool(idle_timeout=60)
    assert value(metrics, "trollmoves_pool_connections", state="idle") == 0
    stop_watching = metrics.watch_pool(pool)
    try:
        with pool.lease("key", Connection):
            assert value(metrics, "trollmoves_pool_connections", state="leased") == 1
        assert value(metrics, "trollmoves_pool_connections", state="idle") == 1
        assert value(metrics, "trollmoves_pool_connections", state="leased") == 0
        with pool.lease("key", Connection):
            pass
        assert value(metrics, "trollmoves_pool_connections_opened_total") == 1
        assert value(metrics, "trollmoves_pool_connections_reused_total") == 1
    finally:
        pool.close()
    assert value(metrics, "trollmoves_pool_connections", state="idle") == 0
    assert value(metrics, "trollmoves_pool_connections_closed_total") == 1
    stop_watching()
    assert value(metrics, "trollmoves_pool_connections_opened_total") == 0


def test_exposition_passes_promtool(metrics):
    promtool = shutil.which("promtool")
    if promtool is None:
        require_or_skip("promtool not installed (Debian package prometheus; tests/run_all.sh installs it)")
    metrics.init_chain("hrit")
    metrics.files_announced.labels("hrit").inc()
    metrics.transfer_duration.labels("hrit", "sftp").observe(1.5)
    metrics.watch_pool(ConnectionPool())
    body, _content_type = metrics.exposition(None)  # promtool reads the text format (Prometheus asks for either)
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        (result.stdout, result.stderr)


# --------------------------------------------------------------------------------------------------
# Stall detection (pure logic on the counters; the clock is the only fake)
# --------------------------------------------------------------------------------------------------

def tracker_for(metrics, stalled_after=60.0):
    clock = Clock()
    return HealthTracker(metrics, stalled_after, clock=clock), clock


def test_arrivals_without_transfers_stall_the_chain(metrics):
    metrics.init_chain("hrit")
    tracker, clock = tracker_for(metrics)
    tracker.sample()
    metrics.files_announced.labels("hrit").inc()
    clock.now += 1
    tracker.sample()
    clock.now += 59
    assert tracker.stalled_for("hrit") is None
    clock.now += 1
    assert tracker.stalled_for("hrit") == 60
    ok, document = tracker.report({"chains": {"hrit": {"watching": True}}, "ok": True})
    assert not ok
    assert document["chains"]["hrit"]["state"] == "stalled"
    assert document["problems"] == ["chain hrit: stalled: files arrived but nothing transferred for 60 s"]
    metrics.transfers_succeeded.labels("hrit", "sftp").inc()
    clock.now += 1
    ok, document = tracker.report({"chains": {"hrit": {"watching": True}}, "ok": True})
    assert ok and document["chains"]["hrit"]["state"] == "ok"


def test_quiet_chains_and_served_files_are_not_stalled(metrics):
    metrics.init_chain("hrit")
    tracker, clock = tracker_for(metrics)
    clock.now += 10_000
    tracker.sample()
    assert tracker.stalled_for("hrit") is None  # nothing arrived: a quiet night is fine
    metrics.files_announced.labels("hrit").inc()
    metrics.transfers_started.labels("hrit", "file").inc()
    metrics.transfers_succeeded.labels("hrit", "file").inc()
    tracker.sample()  # arrival and transfer between two samples: served
    clock.now += 10_000
    tracker.sample()
    assert tracker.stalled_for("hrit") is None


def test_client_requests_that_keep_failing_stall_the_chain(metrics):
    metrics.init_chain("hrit")
    tracker, clock = tracker_for(metrics, stalled_after=30)
    metrics.transfers_started.labels("hrit", "sftp").inc()
    metrics.transfers_failed.labels("hrit", "sftp", "timeout").inc()
    tracker.sample()
    clock.now += 31
    metrics.transfers_started.labels("hrit", "sftp").inc()  # the retry fails too
    tracker.sample()
    assert tracker.stalled_for("hrit") == 31


def test_stall_detection_can_be_disabled_and_follows_a_changed_limit(metrics):
    limit = {"value": 0}
    metrics.init_chain("hrit")
    clock = Clock()
    tracker = HealthTracker(metrics, lambda: limit["value"], clock=clock)
    metrics.files_announced.labels("hrit").inc()
    tracker.sample()
    clock.now += 100_000
    assert tracker.stalled_for("hrit") is None
    limit["value"] = 10
    assert tracker.stalled_for("hrit") == 100_000


def test_a_re_added_chain_starts_afresh(metrics):
    metrics.init_chain("hrit")
    tracker, clock = tracker_for(metrics, stalled_after=10)
    metrics.files_announced.labels("hrit").inc(5)
    tracker.sample()
    metrics.remove_chain("hrit")
    tracker.sample()
    metrics.init_chain("hrit")
    tracker.sample()
    clock.now += 20
    assert tracker.stalled_for("hrit") is None


def test_health_report_of_down_chains_and_publisher(metrics):
    metrics.init_chain("a")
    metrics.init_chain("b")
    metrics.init_chain("c")
    metrics.last_transfer.labels("a").set(1234.5)
    metrics.last_heartbeat.labels("a").set(1200.0)
    tracker, _clock = tracker_for(metrics)
    ok, document = tracker.report({"publisher": False, "ok": True,
                                   "chains": {"a": {"watching": True}, "b": {"watching": False, "error": "gone"}}})
    assert not ok
    assert document["status"] == "fail" and document["publisher"] is False
    assert document["chains"]["a"]["state"] == "ok"
    assert document["chains"]["a"]["last_transfer"] == 1234.5
    assert document["chains"]["a"]["last_heartbeat"] == 1200.0
    assert document["chains"]["b"]["state"] == "down" and document["chains"]["b"]["error"] == "gone"
    assert document["chains"]["c"]["problems"] == ["not running"]  # initialised, but failed to start
    assert document["problems"] == ["publisher down", "chain b: not watching", "chain c: not running"]
    ok, _ = tracker.report({"ok": False})
    assert not ok


def test_heartbeats_received_are_reported(metrics):
    metrics.init_chain("hrit")
    tracker, clock = tracker_for(metrics)
    tracker.sample()
    clock.now += 5
    metrics.messages_received.labels("hrit", "beat").inc()
    _, document = tracker.report({"chains": {"hrit": {"listening": True}}, "ok": True})
    assert document["chains"]["hrit"]["last_heartbeat"] == clock.now


# --------------------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------------------

def test_http_server_serves_metrics_and_health(metrics):
    metrics.init_chain("hrit")
    metrics.files_announced.labels("hrit").inc(2)
    health = {"chains": {"hrit": {"watching": True}}, "ok": True, "publisher": True}
    server = MetricsHTTPServer("127.0.0.1", 0, metrics, lambda: health).start()
    try:
        assert server.port > 0
        status, headers, body = get(server.url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert [s.value for s in families["trollmoves_files_announced"].samples
                if s.name.endswith("_total") and s.labels == {"chain": "hrit"}] == [2]
        status, headers, body = get(server.url + "/metrics", {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip" and b"trollmoves_build_info" in gzip.decompress(body)
        status, headers, body = get(server.url + "/metrics",
                                    {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"].startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
        status, headers, body = get(server.url + "/healthz")
        assert status == 200 and headers["Content-Type"] == "application/json"
        document = json.loads(body)
        assert document["status"] == "ok" and document["chains"]["hrit"]["watching"] is True
        assert document["daemon"] == "server" and document["stalled_after"] == 600
        health["chains"]["hrit"]["watching"] = False
        status, _, body = get(server.url + "/healthz")
        assert status == 503 and json.loads(body)["problems"] == ["chain hrit: not watching"]
        assert get(server.url + "/nothing")[0] == 404
    finally:
        server.stop()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):  # nobody listens any more
        sock.connect(("127.0.0.1", server.port))


def test_no_password_in_healthz(metrics):
    metrics.init_chain("hrit")
    health = {"ok": False, "chains": {"hrit": {"watching": False,
                                              "error": "ftp://user:s3cret@ftp.example.com/in: refused"}}}
    with MetricsHTTPServer("127.0.0.1", 0, metrics, lambda: health) as server:
        status, _, body = get(server.url + "/healthz")
    assert status == 503
    assert b"s3cret" not in body and "ftp://user@ftp.example.com/in" in json.loads(body)["chains"]["hrit"]["error"]


def test_a_failing_health_function_means_503(metrics):
    def health():
        raise RuntimeError("broken")

    with MetricsHTTPServer("127.0.0.1", 0, metrics, health) as server:
        status, _, body = get(server.url + "/healthz")
    assert status == 503 and "broken" in json.loads(body)["problems"][0]


def test_stalled_after_comes_from_the_service_config(metrics):
    class Daemon:
        class config:  # stands in for a Config
            class daemon:
                stalled_after = 42.0

        def health(self):
            return {"chains": {}, "ok": True}

    with MetricsHTTPServer("127.0.0.1", 0, metrics, Daemon().health) as server:
        assert json.loads(get(server.url + "/healthz")[2])["stalled_after"] == 42
    with MetricsHTTPServer("127.0.0.1", 0, metrics, Daemon().health, stalled_after=7) as server:
        assert json.loads(get(server.url + "/healthz")[2])["stalled_after"] == 7


def test_without_metrics_or_health_the_pages_still_answer():
    with MetricsHTTPServer("127.0.0.1", 0, None, None) as server:
        assert get(server.url + "/metrics")[0] == 200
        status, _, body = get(server.url + "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True


def test_two_servers_in_one_process_and_a_port_in_use():
    first, second = Metrics("server"), Metrics("client")
    with MetricsHTTPServer("127.0.0.1", 0, first) as one, MetricsHTTPServer("127.0.0.1", 0, second) as two:
        assert b'daemon="server"' in get(one.url + "/metrics")[2]
        assert b'daemon="client"' in get(two.url + "/metrics")[2]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{one.port}"):
            MetricsHTTPServer("127.0.0.1", one.port, second).start()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = MetricsHTTPServer("::1", 0, Metrics("server")).start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        assert get(server.url + "/metrics")[0] == 200
    finally:
        server.stop()
