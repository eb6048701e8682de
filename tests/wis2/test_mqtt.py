"""trollmoves.wis2.mqtt against a real mosquitto on 127.0.0.1 (password file + ACL, see conftest.py).

What a user of the bridge sees is asserted: bytes received, PUBACK outcomes, error reasons and texts,
log records free of passwords, redelivery after a crash, nothing lost across a broker restart.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from tests.servers import _launch, _session_ports, _wait_ready, free_port
from trollmoves.wis2.mqtt import BrokerSettings, MqttError, MqttPublisher, MqttSubscriber

REPO = Path(__file__).resolve().parents[2]
TOPIC = "origin/a/wis2/xx-test/data/core/weather/space-based-observations/metop-b/avhrr-3"
WAIT = 20.0


class Inbox:
    """Collects deliveries from a subscriber's callback; acks them unless told not to."""

    def __init__(self, ack: bool = True):
        self.ack = ack
        self.deliveries = []
        self._changed = threading.Condition()

    def __call__(self, delivery) -> None:
        if self.ack:
            delivery.ack()
        with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()

    @property
    def payloads(self) -> list[bytes]:
        with self._changed:
            return [d.payload for d in self.deliveries]

    def wait_for(self, count: int, timeout: float = WAIT) -> list:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"got {len(self.deliveries)} of {count} messages in {timeout} s: "
                                     f"{self.payloads[:10]}")
            return list(self.deliveries)


def wait_until(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def clients():
    """Start MQTT clients through ``clients.start(obj)``; every one is stopped after the test."""
    started = []

    class Starter:
        @staticmethod
        def start(client, wait: float = 10.0):
            started.append(client)
            client.start(wait)
            return client

    yield Starter()
    for client in reversed(started):
        client.stop(2)


def subscriber(broker, broker_settings, inbox, client_id="sub-1", protocol="auto", filters=(TOPIC,), **kw):
    settings = broker_settings(broker, "subscriber", client_id=client_id, protocol=protocol)
    return MqttSubscriber(settings, list(filters), inbox, **kw)


# --------------------------------------------------------------------------------------------
# Settings (pure)


def test_broker_url_defaults_and_errors_name_the_url_without_password():
    assert BrokerSettings.parse_url("mqtt://broker.example.org") == (False, "broker.example.org", 1883)
    assert BrokerSettings.parse_url("mqtts://broker.example.org") == (True, "broker.example.org", 8883)
    assert BrokerSettings.parse_url("mqtts://10.1.2.3:9883/") == (True, "10.1.2.3", 9883)
    for bad in ("ws://u:hunter2@host", "mqtt://u:hunter2@host:99999", "mqtt://u:hunter2@host/path", "host:1883"):
        with pytest.raises(ValueError) as err:
            BrokerSettings.parse_url(bad)
        assert "hunter2" not in str(err.value)
        assert "host" in str(err.value)


def test_credentials_in_url_move_to_fields_and_password_never_shows():
    settings = BrokerSettings(url="mqtt://alice:hunter2@broker.example.org:1884", client_id="c1")
    assert (settings.url, settings.username, settings.password) == ("mqtt://broker.example.org:1884", "alice",
                                                                    "hunter2")
    assert settings.address == "broker.example.org:1884"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert "password='***'" in repr(settings)
    split = BrokerSettings(url="mqtt://alice@broker.example.org", password="hunter2")
    assert (split.url, split.username, split.password) == ("mqtt://broker.example.org", "alice", "hunter2")
    with pytest.raises(ValueError, match="password given both") as err:
        BrokerSettings(url="mqtt://alice:hunter2@broker.example.org", password="other")
    assert "hunter2" not in str(err.value) and "other" not in str(err.value)
    with pytest.raises(ValueError, match="protocol"):
        BrokerSettings(url="mqtt://h", protocol="4")
    with pytest.raises(ValueError, match="ca_file"):
        BrokerSettings(url="mqtt://h", ca_file="/etc/ssl/ca.pem")


@hypothesis_settings(max_examples=200, deadline=None)
@given(password=st.text(min_size=6, max_size=30).filter(lambda pw: pw.strip() == pw and "\x00" not in pw))
def test_any_password_in_a_url_is_parsed_and_never_shown(password):
    settings = BrokerSettings(url=f"mqtt://alice:{quote(password, safe='')}@broker.example.org:1883")
    assert (settings.username, settings.password, settings.url) == ("alice", password, "mqtt://broker.example.org:1883")
    other = BrokerSettings(url="mqtt://broker.example.org:1883", username="alice", password="other")
    assert repr(settings) == str(settings) == repr(other)  # the password does not change what is shown
    with pytest.raises(ValueError) as err:
        BrokerSettings(url=f"mqtt://alice:{quote(password, safe='')}@broker.example.org:99999")
    assert quote(password, safe="") not in str(err.value)


def test_subscriber_needs_a_fixed_client_id_and_valid_filters():
    with pytest.raises(ValueError, match="client_id"):
        MqttSubscriber(BrokerSettings(url="mqtt://h"), [TOPIC], print)
    settings = BrokerSettings(url="mqtt://h", client_id="s")
    for bad in (["a/#/b"], ["a/b+"], [], "origin/a/wis2/#", ["$share/g/a/#"]):
        with pytest.raises(ValueError):
            MqttSubscriber(settings, bad, print)
    shared = MqttSubscriber(settings, ["origin/a/wis2/#"], print, shared_group="bridges")
    assert shared.subscriptions == ("$share/bridges/origin/a/wis2/#",)


# --------------------------------------------------------------------------------------------
# Against mosquitto


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_publish_reaches_subscriber_with_identical_bytes(mosquitto, broker_settings, clients, protocol):
    inbox = Inbox()
    sub = clients.start(subscriber(mosquitto, broker_settings, inbox, protocol=protocol))
    pub = clients.start(MqttPublisher(broker_settings(mosquitto, "publisher", protocol=protocol)))
    assert sub.connected and pub.connected
    assert pub.protocol == sub.protocol == ("5" if protocol == "auto" else "3.1.1")
    payload = b'{"id": "x"}\n' + bytes(range(256))
    outcome = pub.publish(TOPIC, payload)
    assert outcome.ok and outcome.reason is None and outcome.topic == TOPIC
    [delivery] = inbox.wait_for(1)
    assert delivery.payload == payload and delivery.topic == TOPIC and delivery.qos == 1


@pytest.mark.parametrize("user, password", [("publisher", "wrong-{secret}"), (None, None)],
                         ids=["wrong-password", "anonymous"])
def test_refused_login_is_an_auth_error_naming_the_broker_and_hiding_the_password(
        mosquitto, broker_settings, caplog, user, password):
    caplog.set_level(logging.DEBUG)
    secret = "Zq8-" + os.urandom(6).hex()
    fields = {"protocol": "5"}
    if user:
        fields.update(username=user, password=password.format(secret=secret))
    for client in (MqttPublisher(broker_settings(mosquitto, None, **fields)),
                   MqttSubscriber(broker_settings(mosquitto, None, client_id="s", **fields), [TOPIC], print)):
        with pytest.raises(MqttError) as err:
            client.start(5)
        assert err.value.reason == "auth"
        assert f"127.0.0.1:{mosquitto.port}" in str(err.value)
        assert ("username" in str(err.value)) if user is None else ("password" in str(err.value))
        assert not client.connected
        assert secret not in str(err.value) and secret not in repr(err.value)
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "refused" in logged
    assert secret not in logged


def test_password_in_the_url_never_reaches_logs_or_errors(mosquitto, broker_settings, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "Ur1-" + os.urandom(6).hex()
    settings = BrokerSettings(url=f"mqtt://publisher:{secret}@127.0.0.1:{mosquitto.port}", connect_timeout=5)
    with pytest.raises(MqttError) as err:
        MqttPublisher(settings).start(5)
    assert err.value.reason == "auth"
    assert secret not in str(err.value)
    assert secret not in "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)


def test_acl_refused_publish_is_reported_on_mqtt5_and_silent_on_311(mosquitto, broker_settings, clients):
    limited5 = clients.start(MqttPublisher(broker_settings(mosquitto, "limited", protocol="5")))
    outcome = limited5.publish(TOPIC, b"refused")
    assert (outcome.ok, outcome.reason_code, outcome.reason) == (False, 135, "not_authorised")
    # MQTT 3.1.1 PUBACKs carry no reason code: the same refusal looks like a success (documented).
    limited311 = clients.start(MqttPublisher(broker_settings(mosquitto, "limited", protocol="3.1.1")))
    assert limited311.publish(TOPIC, b"silently dropped").ok
    assert f"Denied PUBLISH from {limited311.client_id}" in mosquitto.log_text()


def test_unreachable_broker_is_not_fatal(broker_settings, clients, caplog):
    class Nowhere:  # a free port below the ephemeral range: a connect to it cannot meet itself
        url = f"mqtt://127.0.0.1:{_session_ports(1)[0]}"
        users = {"publisher": "x"}

    pub = clients.start(MqttPublisher(broker_settings(Nowhere, "publisher")), wait=5)
    assert not pub.connected
    assert pub.last_error.reason == "unreachable"
    assert Nowhere.url.removeprefix("mqtt://") in str(pub.last_error)
    with pytest.raises(MqttError) as err:
        pub.publish(TOPIC, b"x", timeout=0.2)
    assert err.value.reason == "timeout"


def test_unacked_message_is_redelivered_to_the_same_client_id_and_acked_one_is_not(
        mosquitto, broker_settings, clients):
    pub = clients.start(MqttPublisher(broker_settings(mosquitto, "publisher")))
    first = Inbox(ack=False)
    sub = clients.start(subscriber(mosquitto, broker_settings, first))
    assert pub.publish(TOPIC, b"one").ok
    first.wait_for(1)
    sub.stop(2)  # never acked

    second = Inbox(ack=False)
    sub2 = clients.start(subscriber(mosquitto, broker_settings, second))
    [again] = second.wait_for(1)
    assert again.payload == b"one" and again.duplicate
    assert again.ack() and not again.ack()  # sent once; idempotent
    sub2.stop(2)  # the PUBACK goes out before the DISCONNECT

    third = Inbox()
    clients.start(subscriber(mosquitto, broker_settings, third))
    assert pub.publish(TOPIC, b"marker").ok
    third.wait_for(1)
    assert third.payloads == [b"marker"]  # a redelivered "one" would have come before the marker


_SUBSCRIBER_SCRIPT = """
import sys, time
from trollmoves.wis2.mqtt import BrokerSettings, MqttSubscriber
url, user, client_id, topic = sys.argv[1:5]
settings = BrokerSettings(url=url, username=user, password=sys.stdin.readline().strip(), client_id=client_id)
sub = MqttSubscriber(settings, [topic], lambda d: print("got", d.payload.decode(), flush=True))
sub.start()
print("ready", sub.connected, flush=True)
time.sleep(120)
"""


def test_subscriber_killed_before_ack_gets_the_message_again(mosquitto, broker_settings, clients):
    proc = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER_SCRIPT, mosquitto.url, "subscriber", "crashy",
                             TOPIC], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        proc.stdin.write(mosquitto.users["subscriber"] + "\n")
        proc.stdin.close()
        assert proc.stdout.readline().split() == ["ready", "True"]
        pub = clients.start(MqttPublisher(broker_settings(mosquitto, "publisher")))
        assert pub.publish(TOPIC, b"crash-me").ok
        assert proc.stdout.readline().split() == ["got", "crash-me"]
    finally:
        proc.kill()  # SIGKILL by PID: no DISCONNECT, no PUBACK
        proc.wait(10)
        proc.stdout.close()
    inbox = Inbox()
    clients.start(subscriber(mosquitto, broker_settings, inbox, client_id="crashy"))
    [delivery] = inbox.wait_for(1)
    assert delivery.payload == b"crash-me" and delivery.duplicate


def test_messages_published_while_subscriber_is_offline_arrive_when_it_returns(mosquitto, broker_settings,
                                                                               clients):
    clients.start(subscriber(mosquitto, broker_settings, Inbox())).stop(2)  # creates the session
    pub = clients.start(MqttPublisher(broker_settings(mosquitto, "publisher")))
    for index in range(5):
        assert pub.publish(TOPIC, b"offline-%d" % index).ok
    inbox = Inbox()
    clients.start(subscriber(mosquitto, broker_settings, inbox))
    inbox.wait_for(5)
    assert sorted(inbox.payloads) == [b"offline-%d" % i for i in range(5)]


def test_broker_restart_while_publishing_loses_nothing(mosquitto, broker_settings, clients):
    count = 200
    inbox = Inbox()
    clients.start(subscriber(mosquitto, broker_settings, inbox))
    pub = clients.start(MqttPublisher(broker_settings(mosquitto, "publisher")))

    def publish(index: int):
        return pub.publish(TOPIC, b"msg-%03d" % index, timeout=45)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(publish, i) for i in range(count // 2)]
        inbox.wait_for(count // 4)
        mosquitto.stop()  # while the first half is still being published
        wait_until(lambda: not pub.connected, "the publisher to notice the broker is gone")
        futures += [pool.submit(publish, i) for i in range(count // 2, count)]  # waiting through the outage
        mosquitto.restart()
        outcomes = [future.result() for future in futures]
    assert all(outcome.ok for outcome in outcomes)
    inbox.wait_for(count)
    wait_until(lambda: set(inbox.payloads) == {b"msg-%03d" % i for i in range(count)}, "all payloads")
    duplicates = len(inbox.payloads) - count
    print(f"broker restart: {count} messages, {duplicates} duplicates (QoS 1 allows them; the bridge dedups by id)")


def test_queue_is_bounded_while_the_broker_is_down_and_kept_for_the_reconnect(mosquitto, broker_settings,
                                                                              clients):
    clients.start(subscriber(mosquitto, broker_settings, Inbox())).stop(2)
    pub = clients.start(MqttPublisher(broker_settings(mosquitto, "publisher"), queue_size=3))
    mosquitto.stop()
    wait_until(lambda: not pub.connected, "the publisher to notice the broker is gone")
    for index in range(3):
        with pytest.raises(MqttError) as err:
            pub.publish(TOPIC, b"queued-%d" % index, timeout=0.2)
        assert err.value.reason == "timeout" and "stays queued" in str(err.value)
    with pytest.raises(MqttError) as err:
        pub.publish(TOPIC, b"one too many", timeout=30)
    assert err.value.reason == "queue_full"
    assert f"127.0.0.1:{mosquitto.port}" in str(err.value)

    mosquitto.restart()
    inbox = Inbox()
    clients.start(subscriber(mosquitto, broker_settings, inbox))
    inbox.wait_for(3)
    assert sorted(inbox.payloads) == [b"queued-0", b"queued-1", b"queued-2"]
    assert pub.publish(TOPIC, b"after", timeout=30).ok


def test_shared_group_splits_messages_between_instances(mosquitto, broker_settings, clients):
    inboxes = [Inbox(), Inbox()]
    for index, inbox in enumerate(inboxes):
        clients.start(subscriber(mosquitto, broker_settings, inbox, client_id=f"shared-{index}",
                                 filters=["origin/a/wis2/#"], shared_group="bridges"))
    pub = clients.start(MqttPublisher(broker_settings(mosquitto, "publisher")))
    for index in range(10):
        assert pub.publish(TOPIC, b"s-%d" % index).ok
    wait_until(lambda: len(inboxes[0].payloads) + len(inboxes[1].payloads) >= 10, "10 messages in all")
    assert sorted(inboxes[0].payloads + inboxes[1].payloads) == sorted(b"s-%d" % i for i in range(10))


def test_mqtts_with_ca_file_works_and_an_unknown_ca_is_a_tls_error(tls_mosquitto, broker_settings, clients):
    trusted = broker_settings(tls_mosquitto, "publisher", ca_file=str(tls_mosquitto.ca_file))
    assert trusted.url.startswith("mqtts://")
    pub = clients.start(MqttPublisher(trusted))
    assert pub.connected and pub.publish(TOPIC, b"over tls").ok
    with pytest.raises(MqttError) as err:  # the system store does not know the throwaway CA
        MqttPublisher(broker_settings(tls_mosquitto, "publisher")).start(5)
    assert err.value.reason == "tls"
    assert f"127.0.0.1:{tls_mosquitto.port}" in str(err.value) and "certificate verify failed" in str(err.value)


def test_plain_mqtt_to_a_tls_port_reports_the_lost_connection(tls_mosquitto, broker_settings, clients):
    settings = broker_settings(tls_mosquitto, "publisher", url=tls_mosquitto.url.replace("mqtts://", "mqtt://"))
    pub = clients.start(MqttPublisher(settings), wait=5)
    assert not pub.connected
    assert pub.last_error.reason == "closed" and "before CONNACK" in str(pub.last_error)


_AMQTT_CONFIG = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""


def test_auto_protocol_falls_back_to_311_on_a_broker_without_mqtt5(tmp_path, clients):
    """amqtt is a real MQTT 3.1.1-only broker: it answers an MQTT 5 CONNECT with CONNACK 1."""
    amqtt = os.environ.get("TROLLMOVES_AMQTT") or shutil.which("amqtt")
    if not amqtt:
        pytest.skip("no MQTT 3.1.1-only broker: pip install amqtt in a venv, set TROLLMOVES_AMQTT to its bin/amqtt")
    port = free_port()
    (tmp_path / "amqtt.yaml").write_text(_AMQTT_CONFIG.format(port=port))
    broker = _launch("amqtt", [amqtt, "-c", str(tmp_path / "amqtt.yaml")], tmp_path, "amqtt.log", None, False)
    try:
        _wait_ready(broker, "127.0.0.1", [port])
        pub = clients.start(MqttPublisher(BrokerSettings(url=f"mqtt://127.0.0.1:{port}", connect_timeout=5)))
        assert pub.connected and pub.protocol == "3.1.1"
        assert pub.publish(TOPIC, b"via 3.1.1").ok
    finally:
        broker.stop()
