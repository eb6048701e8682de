"""End to end out: our server -> our client -> the bridge -> WIS2 subscribers that are not ours.

Issue 18 ("End to end out"): a file our server announces and our client fetches is announced by the
bridge's publish chain on a real mosquitto, and the WMO's pywis-pubsub (``subscribe --download``,
message validation and data verification on) and Sarracenia (``sr3`` over MQTT 5) each store
identical bytes, once. The client's destination is served by a real HTTP server (the chain's
``base_url``). Each reference tool runs from its own venv and is skipped when absent (a failure
under ``TROLLMOVES_REQUIRE_SERVERS=1``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.daemons.helpers import client_config, drop, load, new_server, running, sample, wait_for
from tests.wis2 import reference
from tests.wis2.bridge_helpers import write_config
from tests.wis2.httpserver import start_http
from tests.wis2.interop import start_pywis_subscriber, start_sr3_subscriber
from trollmoves import messaging
from trollmoves.client import Client
from trollmoves.state import StateStore
from trollmoves.wis2_bridge import Wis2Bridge, Wis2Options

pytestmark = pytest.mark.timeout(120)

SUBJECT = "/test/files"
LEAF = "weather/space-based-observations/noaa19/avhrr"
"""The topic leaf of the server's files: ``platform_name`` NOAA19 from the name, ``sensor`` avhrr from ``info``."""
WIS2_TOPIC = f"origin/a/wis2/se-test/data/core/{LEAF}"
SIZES = (4096, 1_500_000)
SETTLE = 2.0
"""Seconds a subscriber is given after the last file to (wrongly) store anything a second time."""


def bridge_section(broker, client_publisher: str, base_path: Path, base_url: str) -> str:
    """A publish chain on the client's final ``file`` messages, as a centre would deploy it."""
    return f"""
[out]
direction = publish
broker = {broker.url}
username = publisher
password = {broker.users['publisher']}
mqtt_version = 5
topics = {SUBJECT}
subscribe_addresses = {client_publisher}
nameserver = false
centre_id = se-test
wis2_topic = origin/a/wis2/{{centre_id}}/data/{{policy}}/weather/space-based-observations/{{platform_name}}/{{sensor}}
base_path = {base_path}
base_url = {base_url}
publish_timeout = 5
"""


def wait_bridge_hears(publisher: messaging.Publisher, bridge: Wis2Bridge) -> None:
    """Send probe beats on the client's own publisher until the bridge counts one (zmq slow joiner)."""
    def beats() -> float:
        return sample(bridge, "trollmoves_messages_received_total", chain="wis2", type="beat")

    before = beats()

    def heard() -> bool:
        publisher.send(messaging.make_message(SUBJECT, "beat", {"probe": True}))
        return beats() > before

    wait_for(heard, 20, 0.1, "the bridge to receive from the client's publisher")


@pytest.fixture
def pytroll_to_wis2(tmp_path, dirs, module_mosquitto):
    """Server -> client (into ``dirs["dst"]``, served over HTTP) -> bridge publishing on mosquitto.

    Yields ``publish(subscriber)``: drops one file per size of :data:`SIZES` into the server's
    directory and returns their paths once the bridge acknowledged both notifications.
    """
    with start_http(dirs["dst"]) as http, running(new_server(dirs)) as server:
        client = Client(client_config(dirs, server.publisher.port), state=StateStore(None))
        with running(client):
            publisher = client.chains["chain"].publisher
            bridge_dir = tmp_path / "bridge"
            bridge_dir.mkdir()
            config = write_config(bridge_dir, bridge_section(module_mosquitto, f"tcp://127.0.0.1:{publisher.port}",
                                                             dirs["dst"], http.base_url))
            bridge = Wis2Bridge(load(config, "wis2"), Wis2Options(publish_nameservers=False))
            with running(bridge):
                wait_bridge_hears(publisher, bridge)

                def publish(subscriber) -> list[str]:
                    sources = [drop(dirs, 1, size=size, start=index)[0] for index, size in enumerate(SIZES)]
                    wait_for(lambda: sample(bridge, "trollmoves_wis2_notifications_published_total", chain="out",
                                            rel="canonical") == len(SIZES), 60,
                             what=f"the bridge to publish {len(SIZES)} notifications; {subscriber.name} log:\n"
                                  f"{subscriber.log_text()[-4000:]}")
                    return sources

                yield publish


def assert_stored_once(subscriber, sources: list[str], relative) -> None:
    """Each source stored by ``subscriber`` at ``relative(name)``, byte-identical, once; nothing else."""
    stored = {name: subscriber.wait_stored(relative(name), 60)
              for name in (os.path.basename(source) for source in sources)}
    time.sleep(SETTLE)
    log = subscriber.log_text()
    for source in sources:
        path = stored[os.path.basename(source)]
        assert path.read_bytes() == Path(source).read_bytes(), f"{path} differs from {source}; log:\n{log[-8000:]}"
        assert subscriber.times_stored(path) == 1, f"{path} stored more than once; log:\n{log[-8000:]}"
    assert subscriber.stored_files() == sorted(relative(os.path.basename(s)) for s in sources), log[-8000:]


@pytest.fixture
def pywis_installed():
    """Skip before anything starts when pywis-pubsub or the WNM schema it validates with is missing."""
    reference.require_pywis()
    reference.require_wis2_data()


@pytest.fixture
def sr3_installed():
    reference.require_sr3()


def test_pywis_pubsub_downloads_what_the_bridge_announces(tmp_path, module_mosquitto, pywis_installed,
                                                          pytroll_to_wis2):
    with start_pywis_subscriber(tmp_path / "pywis", module_mosquitto, "origin/a/wis2/se-test/#") as subscriber:
        sources = pytroll_to_wis2(subscriber)
        # pywis-pubsub names files by data_id: the bridge's default wis2/<centre>/data/<policy>/<leaf>/<uid>
        assert_stored_once(subscriber, sources, lambda name: f"wis2/se-test/data/core/{LEAF}/{name}")
        log = subscriber.log_text()
    assert log.count(f"Topic: {WIS2_TOPIC}") == len(SIZES)
    assert log.count("Validating message") == len(SIZES), "pywis-pubsub's ETS did not run on every notification"
    assert "Cannot validate message" not in log and "Data verification failed" not in log


def test_sarracenia_downloads_what_the_bridge_announces(tmp_path, module_mosquitto, sr3_installed,
                                                       pytroll_to_wis2):
    with start_sr3_subscriber(tmp_path / "sr3", module_mosquitto, "origin/a/wis2/se-test/#") as subscriber:
        sources = pytroll_to_wis2(subscriber)
        # sr3 takes links[0]: its href's base name, into `directory` (mirror off)
        assert_stored_once(subscriber, sources, lambda name: name)
        log = subscriber.log_text()
    assert "Invalid message" not in log
    for source, size in zip(sources, SIZES):
        # accepted from links[0]: the href's path and the link's length
        assert f"retrievePath: /{os.path.basename(source)} size: " in log and f"({size})" in log
