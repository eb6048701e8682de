"""The WIS2 bridge end to end, in-process, against a real mosquitto and a real HTTP server.

Publish: a posttroll ``file`` message -> one WNM on the broker (topic, link first with length,
integrity sha512 base64, times). Subscribe: a WNM -> a verified download -> a posttroll ``file``
message; duplicates, updates, bad notifications and failing downloads as the issue lists them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid

import pytest

from tests.daemons.helpers import Collector, Feed, load, running, sample, wait_for
from tests.servers import free_port
from tests.wis2 import reference
from tests.wis2.bridge_helpers import (
    TOPIC,
    MqttListener,
    inject,
    publish_section,
    subscribe_section,
    wnm,
    write_config,
)
from tests.wis2.httpserver import start_http
from trollmoves.wis2_bridge import Wis2Bridge, Wis2Options

pytestmark = pytest.mark.timeout(120)


def bridge(config_path: str, port: int | None = None) -> Wis2Bridge:
    return Wis2Bridge(load(config_path, "wis2"), Wis2Options(publish_port=port, publish_nameservers=False,
                                                             retry_poll_interval=0.1))


def metric(service, name: str, **labels) -> float:
    return sample(service, name, **labels)


def check_with_wmo_tools(tmp_path, topic: str, message: dict) -> None:
    """What the bridge put on the wire passes pywis-pubsub's WNM test suite (schema included) and
    pywis-topics' publication validation; skipped without the shared WIS2 data (see tests/wis2/reference.py)."""
    if not reference.have_wis2_data():
        return
    reference.require_pywis()
    topics, failures = reference.pywis_batch(reference.pywis_home(tmp_path), [topic], {"published": message})
    assert topics == {topic: True}
    assert failures == {"published": []}


# --------------------------------------------------------------------------------------------------
# Publish
# --------------------------------------------------------------------------------------------------

def test_announced_file_becomes_one_valid_notification(tmp_path, mosquitto):
    base = tmp_path / "pub"
    (base / "avhrr").mkdir(parents=True)
    product = base / "avhrr" / "hrpt_metop01_20261206_1200.l1b"
    product.write_bytes(os.urandom(5000))
    listener = MqttListener(mosquitto)
    with Feed() as feed:
        config = write_config(tmp_path, publish_section("out", mosquitto, feed.address, base,
                                                        "https://data.example.org/pub"))
        with running(bridge(config)) as service:
            feed.wait_subscribed(service, "/level1/avhrr", "wis2")
            feed.send("/level1/avhrr", "file", {
                "uri": str(product), "uid": product.name, "platform_name": "Metop-B", "sensor": "avhrr/3",
                "orbit_number": 61234, "start_time": "2026-12-06T12:00:00", "end_time": "2026-12-06T12:15:00"})
            topic, message = listener.get()
            assert topic == TOPIC
            props = message["properties"]
            assert message["conformsTo"] == ["http://wis.wmo.int/spec/wnm/1/conf/core"]
            assert "version" not in message
            uuid.UUID(message["id"], version=4)
            link = message["links"][0]
            assert link == {"href": "https://data.example.org/pub/avhrr/hrpt_metop01_20261206_1200.l1b",
                            "rel": "canonical", "type": link["type"], "length": 5000}
            assert props["integrity"] == {"method": "sha512", "value": base64.b64encode(
                hashlib.sha512(product.read_bytes()).digest()).decode()}
            assert props["data_id"] == ("wis2/se-test/data/core/weather/space-based-observations/metop-b/avhrr-3/"
                                        "hrpt_metop01_20261206_1200.l1b")
            assert props["start_datetime"].startswith("2026-12-06T12:00:00") and props["start_datetime"][-1] == "Z"
            assert props["end_datetime"].startswith("2026-12-06T12:15:00")
            assert props["pubtime"].endswith("Z")
            assert props["platform_name"] == "Metop-B" and props["orbit_number"] == 61234
            assert len(json.dumps(message)) <= 8192
            check_with_wmo_tools(tmp_path, topic, message)
            wait_for(lambda: metric(service, "trollmoves_wis2_notifications_published_total", chain="out",
                                    rel="canonical") == 1, what="the published counter")
            # the same file announced again: nothing new for WIS2
            feed.send("/level1/avhrr", "file", {"uri": str(product), "uid": product.name,
                                                "platform_name": "Metop-B", "sensor": "avhrr/3"})
            assert listener.empty_for(2.0)
            # changed bytes under the same data_id: an update
            product.write_bytes(os.urandom(6000))
            feed.send("/level1/avhrr", "file", {"uri": str(product), "uid": product.name,
                                                "platform_name": "Metop-B", "sensor": "avhrr/3"})
            _topic, updated = listener.get()
            assert updated["links"][0]["rel"] == "update" and updated["links"][0]["length"] == 6000
            assert updated["properties"]["data_id"] == props["data_id"] and updated["id"] != message["id"]
    listener.close()


def test_acl_refused_publish_is_an_error_with_a_metric(tmp_path, mosquitto, caplog):
    base = tmp_path / "pub"
    base.mkdir()
    product = base / "f.dat"
    product.write_bytes(b"x" * 100)
    with Feed() as feed:
        config = write_config(tmp_path, publish_section("out", mosquitto, feed.address, base,
                                                        "https://data.example.org/pub", user="limited"))
        with running(bridge(config)) as service:
            feed.wait_subscribed(service, "/level1", "wis2")
            feed.send("/level1/x", "file", {"uri": str(product), "uid": "f.dat", "platform_name": "Metop-B",
                                            "sensor": "avhrr/3"})
            wait_for(lambda: metric(service, "trollmoves_wis2_publish_failures_total", chain="out",
                                    reason="not_authorised") == 1, what="the refusal to be counted")
            assert metric(service, "trollmoves_wis2_notifications_published_total", chain="out",
                          rel="canonical") == 0
    assert any("refused" in r.getMessage() and "135" in r.getMessage() for r in caplog.records)
    assert mosquitto.users["limited"] not in caplog.text


@pytest.mark.parametrize("user, password", [("publisher", "wrong-password"), (None, None)])
def test_bad_or_missing_login_is_reported_and_counted(tmp_path, mosquitto, caplog, user, password):
    login = f"username = {user}\npassword = {password}\n" if user else ""
    config = write_config(tmp_path, f"""
[in]
direction = subscribe
broker = {mosquitto.url}
{login}client_id = tm-auth-test
subscribe = origin/a/wis2/#
destination = {tmp_path / 'in'}
publish_topic = /wis2/in
""")
    with running(bridge(config)) as service:
        assert metric(service, "trollmoves_wis2_broker_errors_total", chain="in", reason="auth") == 1
        health = service.health()
        assert health["ok"] is False and "in" in health["chains"]
        assert health["chains"]["in"]["connected"] is False
    assert any("in" in r.getMessage() and "127.0.0.1" in r.getMessage() and r.levelname == "ERROR"
               for r in caplog.records)
    assert "wrong-password" not in caplog.text


# --------------------------------------------------------------------------------------------------
# Subscribe
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = start_http(root)
    yield root, server
    server.stop()


def subscribe_bridge(tmp_path, mosquitto, extra: str = ""):
    port = free_port()
    config = write_config(tmp_path, subscribe_section("in", mosquitto, tmp_path / "in", extra=extra))
    return bridge(config, port), port


def test_notification_downloaded_verified_stored_and_announced_once(tmp_path, mosquitto, files):
    root, http = files
    body = os.urandom(20000)
    (root / "a.bin").write_bytes(body)
    service, port = subscribe_bridge(tmp_path, mosquitto)
    with running(service) as service:
        with Collector([f"tcp://127.0.0.1:{port}"], "/wis2") as collector:
            message = wnm(http.url("a.bin"), body)
            message["properties"]["start_datetime"] = "2026-12-06T12:00:00Z"
            message["properties"]["end_datetime"] = "2026-12-06T12:10:00Z"
            del message["properties"]["datetime"]
            inject(mosquitto, TOPIC, message)
            wait_for(lambda: collector.of_type("file"), what="the announcement")
            stored = tmp_path / "in" / "a.bin"
            assert stored.read_bytes() == body
            announced = collector.of_type("file")[0]
            assert announced.subject == "/wis2/incoming"
            assert announced.data["uri"] == str(stored) and announced.data["uid"] == "a.bin"
            assert announced.data["data_id"] == message["properties"]["data_id"]
            assert announced.data["wis2_topic"] == TOPIC and announced.data["platform_name"] == "Metop-B"
            assert announced.data["start_time"].isoformat().startswith("2026-12-06T12:00:00")
            # the same id again, then the same data_id under a new id: no download, no announcement
            inject(mosquitto, TOPIC, message)
            inject(mosquitto, TOPIC, dict(message, id=str(uuid.uuid4())))
            wait_for(lambda: metric(service, "trollmoves_wis2_duplicates_total", chain="in", kind="id") == 1
                     and metric(service, "trollmoves_wis2_duplicates_total", chain="in", kind="data_id") == 1,
                     what="both duplicates counted")
            assert http.hits("a.bin") == 1
            assert len(collector.of_type("file")) == 1
            # an update with a newer pubtime overwrites and is announced again
            new_body = os.urandom(30000)
            (root / "a.bin").write_bytes(new_body)
            update = wnm(http.url("a.bin"), new_body, data_id=message["properties"]["data_id"], rel="update")
            inject(mosquitto, TOPIC, update)
            wait_for(lambda: len(collector.of_type("file")) == 2, what="the update's announcement")
            assert stored.read_bytes() == new_body
    assert not [p for p in (tmp_path / "in").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("case, reason", [
    ("bad_integrity", "integrity"), ("wrong_length", "length"), ("not_found", "http_status")])
def test_failed_downloads_store_nothing_and_are_counted(tmp_path, mosquitto, files, case, reason):
    root, http = files
    body = os.urandom(4096)
    (root / "b.bin").write_bytes(body)
    message = {"bad_integrity": lambda: wnm(http.url("b.bin"), body, digest=hashlib.sha512(b"other").digest()),
               "wrong_length": lambda: wnm(http.url("b.bin"), body, length=len(body) + 1),
               "not_found": lambda: wnm(http.url("missing.bin"), body)}[case]()
    service, port = subscribe_bridge(tmp_path, mosquitto)
    with running(service) as service:
        with Collector([f"tcp://127.0.0.1:{port}"], "/wis2") as collector:
            inject(mosquitto, TOPIC, message)
            wait_for(lambda: metric(service, "trollmoves_wis2_download_failures_total", chain="in",
                                    reason=reason) == 1, what=f"the {reason} failure counted")
            assert not collector.of_type("file")
    assert list((tmp_path / "in").iterdir()) == []


@pytest.mark.parametrize("payload, reason", [
    (b"{not json", "json"),
    (json.dumps({"id": "x", "type": "Feature"}).encode(), "fields"),
])
def test_malformed_notifications_are_refused_and_the_loop_goes_on(tmp_path, mosquitto, files, payload, reason):
    root, http = files
    body = b"good file"
    (root / "g.bin").write_bytes(body)
    service, port = subscribe_bridge(tmp_path, mosquitto)
    with running(service) as service:
        with Collector([f"tcp://127.0.0.1:{port}"], "/wis2") as collector:
            inject(mosquitto, TOPIC, payload)
            wait_for(lambda: metric(service, "trollmoves_wis2_notifications_rejected_total", chain="in",
                                    reason=reason) == 1, what="the refusal counted")
            inject(mosquitto, TOPIC, wnm(http.url("g.bin"), body))
            wait_for(lambda: collector.of_type("file"), what="the next good notification handled")
    assert (tmp_path / "in" / "g.bin").read_bytes() == body


def test_v04_and_inline_content(tmp_path, mosquitto, files):
    root, http = files
    body = b"inline bytes " * 20
    service, port = subscribe_bridge(tmp_path, mosquitto)
    with running(service) as service:
        with Collector([f"tcp://127.0.0.1:{port}"], "/wis2") as collector:
            inline = wnm(http.url("never-served.bin"), body, content=True)
            inject(mosquitto, TOPIC, inline)
            wait_for(lambda: collector.of_type("file"), what="the inline file announced")
            assert (tmp_path / "in" / "never-served.bin").read_bytes() == body
            assert http.hits("never-served.bin") == 0
            v04_body = os.urandom(1000)
            (root / "v04.bin").write_bytes(v04_body)
            v04 = wnm(http.url("v04.bin"), v04_body)
            del v04["conformsTo"]
            v04["version"] = "v04"
            inject(mosquitto, TOPIC, v04)
            wait_for(lambda: len(collector.of_type("file")) == 2, what="the v04 file announced")
            assert (tmp_path / "in" / "v04.bin").read_bytes() == v04_body


def test_full_loop_publish_then_subscribe(tmp_path, mosquitto, files):
    """Our own notification, consumed by our own subscribe chain: posttroll -> WIS2 -> posttroll."""
    root, http = files
    product = root / "loop.dat"
    product.write_bytes(os.urandom(12345))
    port = free_port()
    with Feed() as feed:
        config = write_config(tmp_path,
                              publish_section("out", mosquitto, feed.address, root, http.url("").rstrip("/")),
                              subscribe_section("in", mosquitto, tmp_path / "in"))
        with running(bridge(config, port)) as service:
            with Collector([f"tcp://127.0.0.1:{port}"], "/wis2") as collector:
                feed.wait_subscribed(service, "/level1", "wis2")
                feed.send("/level1/x", "file", {"uri": str(product), "uid": product.name,
                                                "platform_name": "Metop-B", "sensor": "avhrr/3"})
                wait_for(lambda: collector.of_type("file"), what="the file back through WIS2")
                assert (tmp_path / "in" / "loop.dat").read_bytes() == product.read_bytes()


def test_dataset_message_gives_one_notification_per_file(tmp_path, mosquitto):
    base = tmp_path / "pub"
    base.mkdir()
    paths = []
    for index in range(3):
        path = base / f"seg_{index}.dat"
        path.write_bytes(os.urandom(100 + index))
        paths.append(path)
    listener = MqttListener(mosquitto)
    with Feed() as feed:
        config = write_config(tmp_path, publish_section("out", mosquitto, feed.address, base,
                                                        "https://data.example.org/pub"))
        with running(bridge(config)) as service:
            feed.wait_subscribed(service, "/level1", "wis2")
            feed.send("/level1/seg", "dataset", {
                "platform_name": "Metop-B", "sensor": "avhrr/3",
                "dataset": [{"uri": str(path), "uid": path.name} for path in paths]})
            received = sorted(listener.get()[1]["links"][0]["href"] for _ in paths)
            assert received == [f"https://data.example.org/pub/{path.name}" for path in paths]
            assert listener.empty_for(1.0)
    listener.close()


def test_removed_file_is_withdrawn_with_a_deletion_notification(tmp_path, mosquitto):
    """remove_it's ``del`` message on /deletion -> a ``deletion`` notification for the data_id we published."""
    base = tmp_path / "pub"
    base.mkdir()
    product = base / "old.dat"
    product.write_bytes(os.urandom(300))
    listener = MqttListener(mosquitto)
    with Feed() as feed:
        section = publish_section("out", mosquitto, feed.address, base, "https://data.example.org/pub")
        config = write_config(tmp_path, section.replace("topics = /level1", "topics = /level1 /deletion"))
        with running(bridge(config)) as service:
            feed.wait_subscribed(service, "/level1", "wis2")
            feed.send("/level1/x", "file", {"uri": str(product), "uid": product.name, "platform_name": "Metop-B",
                                            "sensor": "avhrr/3"})
            _topic, published = listener.get()
            # a file never published: nothing to withdraw
            feed.send("/deletion", "del", {"uri": str(base / "never-announced.dat")})
            feed.send("/deletion", "del", {"uri": str(product)})
            topic, deletion = listener.get()
            assert topic == TOPIC
            assert deletion["links"][0]["rel"] == "deletion"
            assert deletion["links"][0]["href"] == published["links"][0]["href"]
            assert deletion["properties"]["data_id"] == published["properties"]["data_id"]
            assert deletion["id"] != published["id"]
            check_with_wmo_tools(tmp_path, topic, deletion)
            assert listener.empty_for(1.0)
            wait_for(lambda: metric(service, "trollmoves_wis2_notifications_published_total", chain="out",
                                    rel="deletion") == 1, what="the deletion counted")
    listener.close()
