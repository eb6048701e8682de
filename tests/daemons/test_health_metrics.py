"""The health metrics of issue 19 on the /metrics page of real daemons, as alerts and dashboards read them.

Why: the alert rules (monitoring/alerts.yml) and ``trollmoves status`` trust these series: a
chain down, stalled or silent, files waiting, a destination filling up, a state store that can no
longer record what was handled. Each test runs real daemons in this process (server, client,
mirror, dispatcher) with their ``MetricsHTTPServer`` on loopback, makes the condition happen for
real (a watched directory removed, a destination on a small tmpfs, a full or immutable state
directory, a dead server) and reads the value a user sees over HTTP.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time

import pytest

from tests.daemons.helpers import Feed, load, make_file, running, subscriber_yaml, wait_for, write
from tests.daemons.test_metrics import (
    Pair,
    client_ini,
    client_of_a_dead_server,
    drop,
    fetch,
    health,
    promtool_check,
    sample,
    samples_of,
    scrape,
)
from tests.servers import free_port
from tests.unit.test_health_metrics import fill, small_tmpfs
from trollmoves.client import Client
from trollmoves.dispatcher import Dispatcher, DispatcherOptions
from trollmoves.metrics import MetricsHTTPServer
from trollmoves.mirror import Mirror
from trollmoves.server import ServerOptions


@pytest.fixture
def pair(tmp_path):
    """Pairs of test_metrics.py; one closed by its test (before its tmpfs is unmounted) is not closed again."""
    made = []

    def make(**kwargs):
        made.append(Pair(tmp_path, **kwargs))
        return made[-1]

    yield make
    for item in made:
        if not getattr(item, "closed", False):
            item.close()


def close_now(pair) -> None:
    pair.close()
    pair.closed = True


def value(http, name, **labels):
    return sample(scrape(http), name, **labels)


def series(samples, name) -> dict[str, float]:
    """{chain: value} of one metric on a scraped page."""
    return {dict(labels).get("chain", ""): v for (sample_name, labels), v in samples.items() if sample_name == name}


# --------------------------------------------------------------------------------------------------
# chain_up, chain_stalled, expected interval
# --------------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_chain_up_goes_to_zero_while_the_watched_directory_is_gone(pair):
    pair = pair(check_interval=0.5)
    pair.start_server()
    samples = scrape(pair.server_http)
    assert sample(samples, "trollmoves_chain_up", chain="chain") == 1
    assert sample(samples, "trollmoves_chain_stalled", chain="chain") == 0
    shutil.rmtree(pair.sources["chain"])
    wait_for(lambda: value(pair.server_http, "trollmoves_chain_up", chain="chain") == 0, what="chain_up 0")
    assert health(pair.server_http)[1]["chains"]["chain"]["state"] == "down"
    pair.sources["chain"].mkdir()
    wait_for(lambda: value(pair.server_http, "trollmoves_chain_up", chain="chain") == 1,
             what="chain_up 1 once the watcher is restarted")


@pytest.mark.timeout(60)
def test_a_stalled_chain_is_up_and_stalled(pair):
    pair = pair(server_daemon="stalled_after = 1")
    pair.start_server()
    drop(pair.sources["chain"], 1)  # announced; nobody asks for it
    wait_for(lambda: value(pair.server_http, "trollmoves_chain_stalled", chain="chain") == 1, what="chain_stalled 1")
    samples = scrape(pair.server_http)
    assert sample(samples, "trollmoves_chain_up", chain="chain") == 1
    assert health(pair.server_http)[1]["chains"]["chain"]["state"] == "stalled"


@pytest.mark.timeout(90)
def test_files_last_file_and_expected_intervals_while_files_flow(pair):
    pair = pair(server_chains=("chain", "idle"), server_daemon="expected_interval = 3600\n"
                                                               "expected_intervals = chain:600")
    pair.start_server()
    pair.start_client()
    started = time.time()
    before = scrape(pair.client_http)
    assert series(before, "trollmoves_last_file_timestamp_seconds") == {"chain": 0}
    assert series(before, "trollmoves_files_last_minute") == {"chain": 0}
    assert series(before, "trollmoves_pending_files") == {"chain": 0}
    assert series(before, "trollmoves_chain_expected_interval_seconds") == {}, "not set: not exported"
    drop(pair.sources["chain"], 3)
    pair.arrived(3)
    wait_for(lambda: value(pair.client_http, "trollmoves_files_last_minute", chain="chain") == 3,
             what="three files in the client's last minute")
    client = scrape(pair.client_http)
    assert sample(client, "trollmoves_files_last_hour", chain="chain") == 3
    assert started <= sample(client, "trollmoves_last_file_timestamp_seconds", chain="chain") <= time.time()
    assert sample(client, "trollmoves_pending_files", chain="chain") == 0
    assert sample(client, "trollmoves_chain_up", chain="chain") == 1
    server = scrape(pair.server_http)
    assert series(server, "trollmoves_files_last_minute") == {"chain": 3, "idle": 0}
    assert series(server, "trollmoves_files_last_hour") == {"chain": 3, "idle": 0}
    assert started <= sample(server, "trollmoves_last_file_timestamp_seconds", chain="chain") <= time.time()
    assert sample(server, "trollmoves_last_file_timestamp_seconds", chain="idle") == 0
    assert series(server, "trollmoves_chain_expected_interval_seconds") == {"chain": 600, "idle": 3600}
    assert series(server, "trollmoves_chain_up") == {"chain": 1, "idle": 1}
    assert not series(server, "trollmoves_destination_free_bytes"), "a server writes to no local destination"
    assert not series(server, "trollmoves_state_store_writable"), "a server has no state store"
    for http in (pair.server_http, pair.client_http):
        promtool_check(fetch(http.url + "/metrics")[1])


@pytest.mark.timeout(60)
def test_a_client_counts_the_file_it_cannot_get_as_pending(tmp_path):
    with client_of_a_dead_server(tmp_path) as (http, announce):
        wait_for(lambda: announce() and value(http, "trollmoves_pending_files", chain="chain") == 1, 20, 0.2,
                 "the requested file pending on the client's /metrics")
        samples = scrape(http)
        assert sample(samples, "trollmoves_files_last_minute", chain="chain") == 0
        assert sample(samples, "trollmoves_last_file_timestamp_seconds", chain="chain") == 0


# --------------------------------------------------------------------------------------------------
# Destinations
# --------------------------------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_client_destination_free_and_total_bytes(pair, tmp_path):
    pair = pair()
    with small_tmpfs(tmp_path / "dst", size="8m"):
        pair.start_server()
        pair.start_client()
        samples = scrape(pair.client_http)
        stat = os.statvfs(pair.dst)
        assert sample(samples, "trollmoves_destination_size_bytes", chain="chain") == 8 * 2**20 == \
            stat.f_blocks * stat.f_frsize
        assert sample(samples, "trollmoves_destination_free_bytes", chain="chain") == stat.f_bavail * stat.f_frsize
        empty = stat.f_bavail * stat.f_frsize
        drop(pair.sources["chain"], 2, size=2**20)
        pair.arrived(2)
        wait_for(lambda: value(pair.client_http, "trollmoves_files_received_total", chain="chain") == 2,
                 what="both files received")
        free = value(pair.client_http, "trollmoves_destination_free_bytes", chain="chain")
        stat = os.statvfs(pair.dst)
        assert free == stat.f_bavail * stat.f_frsize <= empty - 2 * 2**20
        close_now(pair)  # before the tmpfs goes


@pytest.mark.timeout(90)
def test_dispatcher_local_target_destination_and_last_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with Feed() as feed:
        config = load(write(tmp_path / "dispatch.yaml", textwrap.dedent(subscriber_yaml(feed)) + textwrap.dedent(f"""
            trollmoves:
              expected_intervals:
                archive: 300
            retry:
              state_directory: {tmp_path}/state
            archive:
              host: ""
              directory: {tmp_path}/archive/{{sensor}}
              dispatch_configs:
                - topics: [/level2]
            remote:
              host: ftp://user@ftp.example.com
              directory: /in
              dispatch_configs:
                - topics: [/never]
        """)), "dispatcher")
        dispatcher = Dispatcher(config, DispatcherOptions())
        http = MetricsHTTPServer("127.0.0.1", 0, dispatcher.metrics, dispatcher.health)
        with running(dispatcher):
            http.start()
            try:
                feed.wait_subscribed(dispatcher, "/level2/probe", "dispatcher")
                samples = scrape(http)
                assert set(series(samples, "trollmoves_destination_free_bytes")) == {"archive"}
                stat = os.statvfs(tmp_path)
                assert sample(samples, "trollmoves_destination_size_bytes", chain="archive") == \
                    stat.f_blocks * stat.f_frsize
                assert series(samples, "trollmoves_chain_up") == {"archive": 1, "remote": 1}
                assert series(samples, "trollmoves_chain_expected_interval_seconds") == {"archive": 300}
                assert sample(samples, "trollmoves_state_store_writable") == 1
                assert sample(samples, "trollmoves_state_store_errors_total") == 0
                path = make_file(src, "product.nc")
                feed.send("/level2/x", "file", {"uri": path, "uid": "product.nc", "sensor": "viirs"})
                wait_for(lambda: (tmp_path / "archive" / "viirs" / "product.nc").exists(), what="the dispatched file")
                wait_for(lambda: value(http, "trollmoves_files_last_minute", chain="archive") == 1,
                         what="the dispatch counted")
                assert value(http, "trollmoves_last_file_timestamp_seconds", chain="archive") > 0
                assert value(http, "trollmoves_last_file_timestamp_seconds", chain="remote") == 0
            finally:
                http.stop()


@pytest.mark.timeout(60)
def test_mirror_exports_pending_destination_and_state_store(tmp_path):
    mirror_dir = tmp_path / "mirror"
    config = load(write(tmp_path / "mirror.ini", textwrap.dedent(f"""
        [trollmoves]
        state_directory = {tmp_path}/state
        [hrit]
        providers = 127.0.0.1:{free_port()}
        client_topic = /inside/hrit
        destination = file://{mirror_dir}/
        origin = {mirror_dir}/{{filename}}
        request_address = 127.0.0.1
        request_bind_address = 127.0.0.1
        request_port = {free_port()}
        topic = /outside/hrit
    """)), "mirror")
    mirror = Mirror(config, ServerOptions(publish_port=0, publish_address="127.0.0.1"))
    http = MetricsHTTPServer("127.0.0.1", 0, mirror.metrics, mirror.health)
    with running(mirror):
        http.start()
        try:
            samples = scrape(http)
            assert sample(samples, "trollmoves_chain_up", chain="hrit") == 1
            assert sample(samples, "trollmoves_pending_files", chain="hrit") == 0
            assert sample(samples, "trollmoves_destination_free_bytes", chain="hrit") > 0
            assert sample(samples, "trollmoves_state_store_writable") == 1
        finally:
            http.stop()


# --------------------------------------------------------------------------------------------------
# The state store
# --------------------------------------------------------------------------------------------------

def client_with_state(tmp_path, pair, state_directory) -> tuple[Client, MetricsHTTPServer]:
    path = client_ini(tmp_path / "client.ini", pair.server.publisher.port, pair.dst,
                      daemon=f"state_directory = {state_directory}")
    client = Client(load(path, "client"))
    client.start()
    pair.client = client  # stopped by the pair
    pair.client_http = MetricsHTTPServer("127.0.0.1", 0, client.metrics, client.health).start()
    time.sleep(0.5)  # zmq slow joiner
    return client, pair.client_http


@pytest.mark.timeout(90)
def test_state_store_errors_and_writable_on_a_full_file_system(pair, tmp_path):
    pair = pair()
    with small_tmpfs(tmp_path / "state", size="1m") as state:
        pair.start_server()
        _client, http = client_with_state(tmp_path, pair, state)
        samples = scrape(http)
        assert sample(samples, "trollmoves_state_store_writable") == 1
        assert sample(samples, "trollmoves_state_store_errors_total") == 0
        filler = fill(state)
        drop(pair.sources["chain"], 1)
        pair.arrived(1)  # delivered; recording it fails
        wait_for(lambda: (value(http, "trollmoves_state_store_errors_total") or 0) >= 1,
                 what="the failed writes counted")
        samples = scrape(http)
        assert sample(samples, "trollmoves_state_store_writable") == 0
        errors = sample(samples, "trollmoves_state_store_errors_total")
        os.remove(filler)
        wait_for(lambda: value(http, "trollmoves_state_store_writable") == 1, what="writable again with space")
        assert value(http, "trollmoves_state_store_errors_total") == errors
        drop(pair.sources["chain"], 1, start=1)
        pair.arrived(2)
        wait_for(lambda: value(http, "trollmoves_files_received_total", chain="chain") >= 1,
                 what="the client receiving on")
        close_now(pair)  # before the tmpfs goes


@pytest.mark.timeout(60)
def test_state_store_unwritable_while_its_directory_is_immutable(pair, tmp_path):
    pair = pair()
    state = tmp_path / "state"
    state.mkdir()
    pair.start_server()
    _client, http = client_with_state(tmp_path, pair, state)
    assert value(http, "trollmoves_state_store_writable") == 1
    if subprocess.run(["chattr", "+i", str(state)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not possible here (needs root and a file system with attributes)")
    try:
        status, text = fetch(http.url + "/metrics")
        assert status == 200 and sample(samples_of(text), "trollmoves_state_store_writable") == 0
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    assert value(http, "trollmoves_state_store_writable") == 1
