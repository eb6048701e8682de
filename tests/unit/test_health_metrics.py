"""The pieces behind the health metrics of issue 19, each on its own.

Why: alerts and ``trollmoves status`` read these numbers; a wrong window, a remote destination
taken for a local one, a typo in ``expected_intervals`` that silently sets nothing, or a state
store error that goes uncounted would each mislead an operator. Asserted here: the rolling
counts at chosen times, which part of a destination template is measured, the config keys as
``check-config`` reports them, the chain gauges derived from a /healthz document, and real
SQLite write failures on a full file system (a small tmpfs, when this machine lets us mount).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemons.helpers import write
from trollmoves import config as tm_config
from trollmoves.metrics import Metrics
from trollmoves.metrics.health_export import HealthCollector, chain_states, expected_interval
from trollmoves.metrics.recent import RecentFiles
from trollmoves.metrics.space import local_root, space
from trollmoves.state import StateStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --------------------------------------------------------------------------------------------------
# Rolling counts
# --------------------------------------------------------------------------------------------------

def test_recent_files_counts_the_last_minute_and_hour():
    recent = RecentFiles()
    start = 1_700_000_000.0
    recent.add("hrit", 2, start)
    recent.add("hrit", 1, start + 0.5)  # the same second
    recent.add("hrit", 4, start + 30)
    recent.add("other", 1, start + 30)
    assert recent.counts("hrit", start + 30) == (7, 7)
    assert recent.counts("hrit", start + 60) == (4, 7)  # the first second left the minute
    assert recent.counts("hrit", start + 89) == (4, 7)
    assert recent.counts("hrit", start + 90) == (0, 7)
    assert recent.counts("hrit", start + 3599) == (0, 7)
    assert recent.counts("hrit", start + 3600) == (0, 4)
    assert recent.counts("hrit", start + 3630) == (0, 0)
    assert recent.counts("other", start + 31) == (1, 1)
    assert recent.counts("never", start) == (0, 0)
    recent.forget("other")
    assert recent.counts("other", start + 31) == (0, 0)


def test_recent_files_keep_at_most_an_hour_of_buckets():
    recent = RecentFiles()
    for second in range(10_000):
        recent.add("busy", 1, 1_700_000_000 + second)
    assert len(recent._buckets["busy"]) == 3600
    assert recent.counts("busy", 1_700_000_000 + 9_999) == (60, 3600)


# --------------------------------------------------------------------------------------------------
# Destinations
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("destination", "root"), [
    ("file:///data/{platform_name}/in", "/data"),
    ("file:///data/out/", "/data/out"),
    ("file://localhost/data/out", "/data/out"),
    ("/archive/{sensor}", "/archive"),
    ("/archive/NOAA{number}_x/", "/archive"),
    ("/data/out", "/data/out"),
    ("ftp://user:pw@host/in/{sensor}", None),
    ("sftp://host/data", None),
    ("s3://bucket/products", None),
    ("relative/dir", None),
    ("", None),
    (None, None),
])
def test_local_root_is_the_fixed_local_part_of_a_destination(destination, root):
    assert local_root(destination) == root


def test_space_of_a_directory_not_created_yet_is_its_parents(tmp_path):
    stat = os.statvfs(tmp_path)
    free, size = space(str(tmp_path / "not" / "yet"))
    assert size == stat.f_blocks * stat.f_frsize
    assert 0 < free <= size


def exposition(metrics: Metrics) -> dict[tuple[str, frozenset], float]:
    text = metrics.exposition()[0].decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_only_local_destinations_are_exported_and_a_removed_chain_leaves(tmp_path):
    metrics = Metrics("client", process_metrics=False)
    for name in ("local", "remote"):
        metrics.init_chain(name)
    assert metrics.watch_destination("local", f"file://{tmp_path}/{{platform_name}}/")
    assert not metrics.watch_destination("remote", "ftp://host/in/")
    samples = exposition(metrics)
    stat = os.statvfs(tmp_path)
    assert samples[("trollmoves_destination_size_bytes", frozenset({("chain", "local")}))] == \
        stat.f_blocks * stat.f_frsize
    assert not any(labels == frozenset({("chain", "remote")}) for name, labels in samples
                   if name.startswith("trollmoves_destination_"))
    metrics.remove_chain("local")
    assert not any(name.startswith("trollmoves_destination_") for name, _ in exposition(metrics))


def test_files_done_sets_the_last_file_time_and_the_windows():
    metrics = Metrics("server", process_metrics=False)
    metrics.init_chain("hrit")
    before = exposition(metrics)
    assert before[("trollmoves_last_file_timestamp_seconds", frozenset({("chain", "hrit")}))] == 0
    assert before[("trollmoves_files_last_minute", frozenset({("chain", "hrit")}))] == 0
    metrics.files_done("hrit", 3)
    after = exposition(metrics)
    assert after[("trollmoves_last_file_timestamp_seconds", frozenset({("chain", "hrit")}))] > 0
    assert after[("trollmoves_files_last_minute", frozenset({("chain", "hrit")}))] == 3
    assert after[("trollmoves_files_last_hour", frozenset({("chain", "hrit")}))] == 3


# --------------------------------------------------------------------------------------------------
# Chain gauges from a /healthz document
# --------------------------------------------------------------------------------------------------

def test_chain_states_follow_the_health_document():
    document = {"publisher": True, "chains": {"a": {"state": "ok", "stalled": False},
                                              "b": {"state": "down", "stalled": False},
                                              "c": {"state": "stalled", "stalled": True}}}
    assert chain_states(document, ["a", "b", "c", "gone"]) == {
        "a": (True, False), "b": (False, False), "c": (True, True), "gone": (False, False)}
    document["receiving"] = False  # the daemon's subscription is down: no chain is up
    assert {name: up for name, (up, _) in chain_states(document).items()} == {"a": False, "b": False, "c": False}


def test_a_failing_health_report_marks_the_known_chains_down():
    def broken():
        raise RuntimeError("boom")

    families = {family.name: family for family in HealthCollector(broken, lambda: None, lambda: ["a"]).collect()}
    assert [(s.labels, s.value) for s in families["trollmoves_chain_up"].samples] == [({"chain": "a"}, 0.0)]


# --------------------------------------------------------------------------------------------------
# [trollmoves] expected_interval, expected_intervals
# --------------------------------------------------------------------------------------------------

SERVER_SECTION = """
[hrit]
origin = /data/{name}.dat
topic = /hrit
[avhrr]
origin = /data/avhrr/{name}.dat
topic = /avhrr
"""


def test_expected_intervals_from_ini(tmp_path):
    path = write(tmp_path / "server.ini", "[trollmoves]\nexpected_interval = 900\n"
                 "expected_intervals = hrit:600,\n  avhrr : 3600\n" + SERVER_SECTION)
    cfg = tm_config.load(path, "server")
    assert not cfg.errors and not cfg.warnings
    assert cfg.daemon.expected_intervals == (("hrit", 600.0), ("avhrr", 3600.0))
    assert cfg.daemon.expected_interval_of("hrit") == expected_interval(cfg.daemon, "hrit") == 600
    assert cfg.daemon.expected_interval_of("other") == expected_interval(cfg.daemon, "other") == 900
    assert tm_config.load(write(tmp_path / "plain.ini", SERVER_SECTION), "server").daemon.expected_interval_of(
        "hrit") == 0


def test_expected_intervals_as_a_yaml_mapping(tmp_path):
    path = write(tmp_path / "dispatch.yaml", f"""
        trollmoves:
          expected_intervals:
            archive: 120
        archive:
          directory: {tmp_path}/archive
          dispatch_configs:
            - topics: [/x]
    """)
    cfg = tm_config.load(path, "dispatcher")
    assert not cfg.errors and not cfg.warnings, (cfg.errors, cfg.warnings)
    assert cfg.daemon.expected_interval_of("archive") == 120


def check_config(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trollmoves.cli", "check-config", *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))


@pytest.mark.parametrize(("line", "message"), [
    ("expected_intervals = hrit:ten", "server.ini [trollmoves] expected_intervals: hrit: expected a number, "
                                      "got 'ten'"),
    ("expected_intervals = avhrr:60, hrit:-1", "server.ini [trollmoves] expected_intervals: hrit: expected a "
                                               "number >= 0, got '-1'"),
    ("expected_intervals = hrit", "server.ini [trollmoves] expected_intervals: expected chain:seconds items "
                                  "separated by commas, got 'hrit'"),
    ("expected_intervals = hrit:1, hrit:2", "server.ini [trollmoves] expected_intervals: expected each chain once"),
    ("expected_interval = -5", "server.ini [trollmoves] expected_interval: expected a number >= 0, got '-5'"),
])
def test_check_config_names_a_bad_interval(tmp_path, line, message):
    result = check_config(write(tmp_path / "server.ini", f"[trollmoves]\n{line}\n" + SERVER_SECTION))
    assert result.returncode == 1
    assert f"ERROR {message}" in result.stdout, result.stdout


def test_check_config_warns_about_an_unknown_chain(tmp_path):
    result = check_config(write(tmp_path / "server.ini", "[trollmoves]\nexpected_intervals = hrit:60, hirt:60\n"
                                + SERVER_SECTION))
    assert result.returncode == 0, result.stdout
    assert ("WARNING server.ini [trollmoves] expected_intervals: no chain named 'hirt' in this file "
            "(chains: hrit, avhrr)") in result.stdout
    assert check_config("--strict", tmp_path / "server.ini").returncode == 1


# --------------------------------------------------------------------------------------------------
# The state store: failed writes counted, writability at scrape time
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(directory, size="1m"):
    """A tmpfs of ``size`` mounted on ``directory`` (skipped where mounting is not allowed), unmounted after."""
    os.makedirs(directory, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                            capture_output=True, text=True, check=False)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory) -> str:
    """Write a file into ``directory`` until its file system is full; return its path."""
    path = os.path.join(directory, "filler")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(descriptor)
    return path


def test_failed_writes_are_counted_and_writability_recovers(tmp_path):
    with small_tmpfs(tmp_path / "mnt") as mount:
        store = StateStore(str(mount / "state.sqlite"))
        try:
            store.mark_handled("chain", "first", ["a.dat"])
            assert store.writable() and store.write_errors == 0
            filler = fill(mount)
            failures = 0
            for index in range(50):
                try:
                    store.mark_handled("chain", f"key{index}", ["x" * 2000])
                except Exception as exc:  # noqa: BLE001 - what a daemon's caller gets
                    failures += 1
                    assert "full" in str(exc)
            assert failures and store.write_errors == failures
            assert not store.writable()
            assert store.write_errors == failures, "the scrape-time probe is not counted as an error"
            assert store.is_handled("chain", "first")  # reads go on
            os.remove(filler)
            assert store.writable(), "writable again once there is space, with nothing else written"
            store.mark_handled("chain", "after", ["b.dat"])
            assert store.is_handled("chain", "after") and store.write_errors == failures
        finally:
            store.close()


def test_an_immutable_state_directory_is_not_writable(tmp_path):
    directory = tmp_path / "state"
    store = StateStore(str(directory / "state.sqlite"))
    try:
        assert store.writable()
        if subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False).returncode:
            pytest.skip("chattr +i is not possible here (needs root and a file system with attributes)")
        try:
            assert not store.writable()
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        assert store.writable()
    finally:
        store.close()


def test_state_store_metrics_appear_with_the_store(tmp_path):
    metrics = Metrics("client", process_metrics=False)
    holder: dict[str, StateStore | None] = {"store": None}
    metrics.watch_state_store(lambda: holder["store"])
    assert not any(name.startswith("trollmoves_state_store") for name, _ in exposition(metrics))
    holder["store"] = StateStore(str(tmp_path / "state.sqlite"))
    try:
        samples = exposition(metrics)
        assert samples[("trollmoves_state_store_writable", frozenset())] == 1
        assert samples[("trollmoves_state_store_errors_total", frozenset())] == 0
    finally:
        holder["store"].close()
