"""What the WIS2 bridge's subscribe side does with notifications from the tools other centres use,
and with the notifications a hostile or broken peer sends - in-process, real mosquitto, real HTTP.

Why these: a WIS2 Node publishes with whatever it has (``mosquitto_pub`` in scripts, pywis-pubsub's
``publish``), so the bridge must take their messages as they are on the wire; deletions, schema
failures, stale updates, failing servers and hostile names are what a subscriber meets on a Global
Broker; TLS and shared subscriptions are how it is deployed. Each test asserts what a user sees:
bytes in the destination, the posttroll announcement, the metric of the decision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as paho
import pytest

from tests.daemons.helpers import Collector, load, running, sample, wait_for
from tests.servers import free_port, require_or_skip
from tests.wis2 import reference
from tests.wis2.bridge_helpers import TOPIC, subscribe_section, wnm, write_config
from tests.wis2.httpserver import start_http
from trollmoves.wis2_bridge import Wis2Bridge, Wis2Options

pytestmark = pytest.mark.timeout(120)
CHAIN = "in"


def bridge(config_path: str, port: int) -> Wis2Bridge:
    return Wis2Bridge(load(config_path, "wis2"), Wis2Options(publish_port=port, publish_nameservers=False,
                                                             retry_poll_interval=0.1))


def metric(service, name: str, chain: str = CHAIN, **labels) -> float:
    return sample(service, name, chain=chain, **labels)


@pytest.fixture
def files(tmp_path):
    """A real HTTP server on a fresh directory: (root, server)."""
    root = tmp_path / "www"
    server = start_http(root)
    yield root, server
    server.stop()


@contextlib.contextmanager
def subscribing(workdir, broker, *, extra: str = "", client_id: str = "tm-bridge-in", destination=None):
    """A bridge with one subscribe chain ``in`` (state under ``workdir``) and a Collector on its publisher."""
    workdir.mkdir(parents=True, exist_ok=True)
    destination = destination or workdir / "in"
    port = free_port()
    config = write_config(workdir, subscribe_section(CHAIN, broker, destination, client_id=client_id, extra=extra))
    with running(bridge(config, port)) as service:
        with Collector([f"tcp://127.0.0.1:{port}"], "/wis2") as collector:
            yield service, collector


def announced_uids(collector) -> list[str]:
    return sorted(message.data["uid"] for message in collector.of_type("file"))


def visible(directory) -> list[str]:
    return sorted(os.listdir(directory))


def publish_all(broker, messages, *, user: str = "publisher", topic: str = TOPIC) -> None:
    """Publish notifications with QoS 1 over one MQTT 5 connection (TLS when the broker has a CA)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"inject-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv5)
    client.username_pw_set(user, broker.users[user])
    if broker.ca_file:
        client.tls_set(ca_certs=str(broker.ca_file))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, json.dumps(message), qos=1) for message in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published(), "the broker did not acknowledge a notification"
    finally:
        client.loop_stop()
        client.disconnect()


# --------------------------------------------------------------------------------------------------
# Other publishers: mosquitto_pub and pywis-pubsub
# --------------------------------------------------------------------------------------------------

def test_notification_published_with_mosquitto_pub_is_stored(tmp_path, mosquitto, files):
    tool = shutil.which("mosquitto_pub")
    if tool is None:
        require_or_skip("mosquitto_pub not found: apt-get install mosquitto-clients")
    root, http = files
    body = os.urandom(7000)
    (root / "mp.bin").write_bytes(body)
    payload = tmp_path / "wnm.json"
    payload.write_text(json.dumps(wnm(http.url("mp.bin"), body)))
    with subscribing(tmp_path, mosquitto) as (service, collector):
        done = subprocess.run([tool, "-V", "mqttv5", "-q", "1", "-h", "127.0.0.1", "-p", str(mosquitto.port),
                               "-u", "publisher", "-P", mosquitto.users["publisher"], "-t", TOPIC,
                               "-f", str(payload)], capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: collector.of_type("file"), what="the announcement of the mosquitto_pub notification")
        assert (tmp_path / "in" / "mp.bin").read_bytes() == body
        assert announced_uids(collector) == ["mp.bin"]


def test_notification_published_with_pywis_pubsub_is_stored(tmp_path, mosquitto, files):
    venv = reference.require_pywis()
    root, http = files
    body = os.urandom(9000)  # over 4096 bytes: pywis would otherwise offer to inline it
    (root / "pw.bin").write_bytes(body)
    home = tmp_path / "pywis-home"
    home.mkdir()
    config = tmp_path / "pywis-publish.yml"
    broker_url = f"mqtt://publisher:{mosquitto.users['publisher']}@127.0.0.1:{mosquitto.port}"
    config.write_text(f"broker: {broker_url}\nqos: 1\nverify_certs: false\nclient_id: pywis-test\n")
    with subscribing(tmp_path, mosquitto) as (service, collector):
        done = subprocess.run([str(venv / "bin" / "pywis-pubsub"), "publish", "-c", str(config), "-t", TOPIC,
                               "-u", http.url("pw.bin"), "-d", "2026-12-06T12:00:00Z"],
                              env=reference.pywis_env(home), capture_output=True, text=True,
                              timeout=reference.RUN_TIMEOUT, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: collector.of_type("file"), what="the announcement of the pywis-pubsub notification")
        assert (tmp_path / "in" / "pw.bin").read_bytes() == body
        announced = collector.of_type("file")[0]
        assert announced.data["data_id"] == f"{TOPIC}/pw.bin"  # how pywis-pubsub builds it
        assert announced.data["start_time"].isoformat().startswith("2026-12-06T12:00:00")
        assert http.hits("pw.bin") == 2  # pywis read it once to hash it, the bridge once


# --------------------------------------------------------------------------------------------------
# Deletions
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("on_deletion, action", [("delete", "deleted"), ("ignore", "ignored")])
def test_deletion_notifications(tmp_path, mosquitto, files, on_deletion, action):
    root, http = files
    body = os.urandom(3000)
    (root / "del.bin").write_bytes(body)
    stored = tmp_path / "in" / "del.bin"
    with subscribing(tmp_path, mosquitto, extra=f"on_deletion = {on_deletion}") as (service, collector):
        first = wnm(http.url("del.bin"), body)
        publish_all(mosquitto, [first])
        wait_for(lambda: collector.of_type("file"), what="the file stored")
        assert stored.read_bytes() == body
        deletion = wnm(http.url("del.bin"), body, data_id=first["properties"]["data_id"], rel="deletion")
        unknown = wnm(http.url("other.bin"), body, data_id="wis2/se-other/data/core/weather/never-stored",
                      rel="deletion")
        publish_all(mosquitto, [deletion, unknown])
        wait_for(lambda: metric(service, "trollmoves_wis2_deletions_total", action=action) == 1
                 and metric(service, "trollmoves_wis2_deletions_total", action="unknown") == 1,
                 what=f"the deletion counted as {action} and the unknown one as unknown")
        other = {"deleted", "ignored"} - {action}
        assert metric(service, "trollmoves_wis2_deletions_total", action=other.pop()) == 0
        assert stored.exists() is (on_deletion == "ignore")
        assert len(collector.of_type("file")) == 1


# --------------------------------------------------------------------------------------------------
# Refused notifications: schema, href, link
# --------------------------------------------------------------------------------------------------

def _no_geometry(message: dict) -> dict:
    del message["geometry"]  # the schema requires it; parse() does not look at it
    return message


def _space_in_pubtime(message: dict) -> dict:
    message["properties"]["pubtime"] = "2026-12-06 12:00:00Z"  # parse() is lenient, RFC 3339 is not
    return message


@pytest.mark.parametrize("spoil", [_no_geometry, _space_in_pubtime], ids=["no_geometry", "pubtime_format"])
def test_schema_refuses_what_parse_accepts(tmp_path, mosquitto, files, spoil):
    reference.require_wis2_data()
    root, http = files
    body = os.urandom(2000)
    (root / "bad.bin").write_bytes(body)
    (root / "good.bin").write_bytes(body)
    with subscribing(tmp_path, mosquitto, extra=f"schema = {reference.schema_path()}") as (service, collector):
        publish_all(mosquitto, [spoil(wnm(http.url("bad.bin"), body)), wnm(http.url("good.bin"), body)])
        wait_for(lambda: collector.of_type("file"), what="the valid notification stored")
        wait_for(lambda: metric(service, "trollmoves_wis2_notifications_rejected_total", reason="schema") == 1,
                 what="the schema refusal counted")
        assert http.hits("bad.bin") == 0
    assert visible(tmp_path / "in") == ["good.bin"]


@pytest.mark.parametrize("href", ["file:///etc/passwd", "gopher://127.0.0.1/1/x.bin", "http:///no-host.bin"])
def test_non_http_href_is_refused(tmp_path, mosquitto, files, href):
    root, http = files
    body = b"good"
    (root / "ok.bin").write_bytes(body)
    bad = wnm(http.url("ok.bin"), body)
    bad["links"][0]["href"] = href
    with subscribing(tmp_path, mosquitto) as (service, collector):
        publish_all(mosquitto, [bad, wnm(http.url("ok.bin"), body)])
        wait_for(lambda: collector.of_type("file"), what="the next good notification stored")
        wait_for(lambda: metric(service, "trollmoves_wis2_notifications_rejected_total", reason="href") == 1,
                 what="the href refusal counted")
    assert visible(tmp_path / "in") == ["ok.bin"]


def test_links_without_canonical_update_or_deletion_are_refused(tmp_path, mosquitto, files):
    root, http = files
    body = os.urandom(500)
    (root / "item.bin").write_bytes(body)
    message = wnm(http.url("item.bin"), body)
    message["links"] = [dict(message["links"][0], rel="item"), dict(message["links"][0], rel="via")]
    with subscribing(tmp_path, mosquitto) as (service, collector):
        publish_all(mosquitto, [message])
        wait_for(lambda: metric(service, "trollmoves_wis2_notifications_rejected_total", reason="link") == 1,
                 what="the link refusal counted")
        assert not collector.of_type("file")
    assert http.hits("item.bin") == 0
    assert visible(tmp_path / "in") == []


# --------------------------------------------------------------------------------------------------
# Updates and failing servers
# --------------------------------------------------------------------------------------------------

def test_stale_update_is_skipped(tmp_path, mosquitto, files):
    root, http = files
    body, older_body = os.urandom(4000), os.urandom(4100)
    (root / "st.bin").write_bytes(body)
    with subscribing(tmp_path, mosquitto) as (service, collector):
        first = wnm(http.url("st.bin"), body)
        publish_all(mosquitto, [first])
        wait_for(lambda: collector.of_type("file"), what="the first version stored")
        an_hour_before = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        (root / "st.bin").write_bytes(older_body)
        stale = wnm(http.url("st.bin"), older_body, data_id=first["properties"]["data_id"], rel="update",
                    pubtime=an_hour_before)
        publish_all(mosquitto, [stale])
        wait_for(lambda: metric(service, "trollmoves_wis2_duplicates_total", kind="stale_update") == 1,
                 what="the stale update counted")
        assert http.hits("st.bin") == 1
        assert len(collector.of_type("file")) == 1
    assert (tmp_path / "in" / "st.bin").read_bytes() == body


@pytest.mark.parametrize("failure", [503, (429, {"Retry-After": "1"})], ids=["503", "429_retry_after"])
def test_transient_http_answers_are_retried(tmp_path, mosquitto, files, failure):
    root, http = files
    body = os.urandom(6000)
    (root / "re.bin").write_bytes(body)
    http.script("re.bin", [failure])
    with subscribing(tmp_path, mosquitto) as (service, collector):
        publish_all(mosquitto, [wnm(http.url("re.bin"), body)])
        wait_for(lambda: collector.of_type("file"), what="the file stored after the retry")
        assert metric(service, "trollmoves_wis2_download_retries_total") == 1
        assert metric(service, "trollmoves_wis2_downloads_total") == 1
        assert sum(metric(service, "trollmoves_wis2_download_failures_total", reason=reason)
                   for reason in ("http_status", "network", "timeout")) == 0
    assert http.hits("re.bin") == 2
    assert (tmp_path / "in" / "re.bin").read_bytes() == body


def test_hostile_basenames_stay_inside_the_destination(tmp_path, mosquitto, files):
    root, http = files
    traversal, hidden = os.urandom(1500), os.urandom(1600)
    # the server resolves d1/d2/d3/../../etc/passwd to d1/etc/passwd, inside its root
    (root / "d1" / "etc").mkdir(parents=True)
    (root / "d1" / "etc" / "passwd").write_bytes(traversal)
    (root / ".hidden").write_bytes(hidden)
    destination = tmp_path / "box" / "deep" / "in"  # two levels up is still inside tmp_path
    messages = [wnm(f"{http.base_url}/d1/d2/d3/..%2F..%2Fetc%2Fpasswd", traversal,
                    data_id="wis2/se-other/data/core/weather/traversal"),
                wnm(f"{http.base_url}/.hidden", hidden, data_id="wis2/se-other/data/core/weather/hidden")]
    with subscribing(tmp_path, mosquitto, destination=destination) as (service, collector):
        publish_all(mosquitto, messages)
        wait_for(lambda: len(collector.of_type("file")) == 2, what="both files stored")
        uris = sorted(message.data["uri"] for message in collector.of_type("file"))
    names = visible(destination)
    assert len(names) == 2 and not [name for name in names if name.startswith(".") or "/" in name], names
    assert sorted(os.path.dirname(uri) for uri in uris) == [str(destination)] * 2
    stored = {hashlib.sha256((destination / name).read_bytes()).hexdigest() for name in names}
    assert stored == {hashlib.sha256(traversal).hexdigest(), hashlib.sha256(hidden).hexdigest()}
    assert not (tmp_path / "box" / "etc").exists()
    assert sorted(p.name for p in tmp_path.joinpath("box").rglob("*") if p.is_file()) == names


# --------------------------------------------------------------------------------------------------
# Deployment: TLS, shared subscriptions
# --------------------------------------------------------------------------------------------------

def test_subscribe_chain_over_tls(tmp_path, tls_mosquitto, files):
    root, http = files
    body = os.urandom(5000)
    (root / "tls.bin").write_bytes(body)
    assert tls_mosquitto.url.startswith("mqtts://")
    with subscribing(tmp_path, tls_mosquitto, extra=f"ca_file = {tls_mosquitto.ca_file}",
                     client_id=f"tm-tls-{uuid.uuid4().hex[:6]}") as (service, collector):
        assert service.health()["chains"][CHAIN]["connected"] is True
        publish_all(tls_mosquitto, [wnm(http.url("tls.bin"), body)])
        wait_for(lambda: collector.of_type("file"), what="the file announced through the TLS broker")
    assert (tmp_path / "in" / "tls.bin").read_bytes() == body


def test_shared_subscription_splits_the_work(tmp_path, mosquitto, files):
    root, http = files
    bodies = {f"share{index:02d}.bin": os.urandom(1000 + index) for index in range(20)}
    for name, body in bodies.items():
        (root / name).write_bytes(body)
    with contextlib.ExitStack() as stack:
        sides = [stack.enter_context(subscribing(tmp_path / side, mosquitto, extra="shared_group = g",
                                                 client_id=f"tm-share-{side}"))
                 for side in ("a", "b")]
        publish_all(mosquitto, [wnm(http.url(name), body) for name, body in bodies.items()])
        wait_for(lambda: sum(len(collector.of_type("file")) for _, collector in sides) == 20,
                 what="20 announcements across the two bridges")
        counts = [metric(service, "trollmoves_wis2_downloads_total") for service, _ in sides]
        per_side = [announced_uids(collector) for _, collector in sides]
    stored = [visible(tmp_path / side / "in") for side in ("a", "b")]
    assert sorted(stored[0] + stored[1]) == sorted(bodies), "each file stored exactly once in total"
    assert not set(stored[0]) & set(stored[1])
    assert per_side == stored
    assert all(count > 0 for count in counts) and sum(counts) == 20, f"work split {counts}"
    for side, names in zip(("a", "b"), stored):
        for name in names:
            assert (tmp_path / side / "in" / name).read_bytes() == bodies[name]
    assert sum(http.hits(name) for name in bodies) == 20
