"""Shared set-up of the WIS2 bridge tests: configs, an MQTT listener, notifications to inject.

The broker is the real mosquitto of ``tests/wis2/conftest.py``; files are served by the
real HTTP server of ``tests/wis2/httpserver.py``; posttroll messages come from
``tests.daemons.helpers.Feed`` and are read with ``Collector``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as paho

from tests.daemons.helpers import write

TOPIC = "origin/a/wis2/se-test/data/core/weather/space-based-observations/metop-b/avhrr-3"
TEMPLATE = "origin/a/wis2/{centre_id}/data/{policy}/weather/space-based-observations/{platform_name}/{sensor}"


def publish_section(name: str, broker, feed_address: str, base_path: Path, base_url: str, *,
                    user: str = "publisher", extra: str = "") -> str:
    return f"""
[{name}]
direction = publish
broker = {broker.url}
username = {user}
password = {broker.users[user]}
mqtt_version = 5
topics = /level1
subscribe_addresses = {feed_address}
nameserver = false
centre_id = se-test
wis2_topic = {TEMPLATE}
aliases = sensor: avhrr/3=avhrr-3
base_path = {base_path}
base_url = {base_url}
publish_timeout = 5
{extra}
"""


def subscribe_section(name: str, broker, destination: Path, *, client_id: str = "tm-bridge-in",
                      user: str = "subscriber", extra: str = "") -> str:
    return f"""
[{name}]
direction = subscribe
broker = {broker.url}
username = {user}
password = {broker.users[user]}
client_id = {client_id}
subscribe = origin/a/wis2/+/data/core/#
destination = {destination}
publish_topic = /wis2/incoming
download_timeout = 10
download_retries = 2
{extra}
"""


def write_config(tmp_path: Path, *sections: str, name: str = "wis2.ini") -> str:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return write(tmp_path / name, f"[trollmoves]\nstate_directory = {state}\n" + "".join(sections))


class MqttListener:
    """A plain paho client (MQTT 5) collecting what arrives on a filter: what any WIS2 consumer sees."""

    def __init__(self, broker, user: str = "subscriber", topic: str = "origin/a/wis2/#"):
        self.messages: queue.Queue = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"listener-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set(user, broker.users[user])
        self._subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.connect("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
        self.client.loop_start()
        assert self._subscribed.wait(10), "the MQTT listener did not subscribe"

    def get(self, timeout: float = 15.0) -> tuple[str, dict]:
        topic, payload = self.messages.get(timeout=timeout)
        return topic, json.loads(payload)

    def empty_for(self, seconds: float) -> bool:
        try:
            self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def inject(broker, topic: str, payload: bytes | str | dict, user: str = "publisher") -> None:
    """Publish one raw notification with QoS 1, as another WIS2 centre's node would."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"inject-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv5)
    client.username_pw_set(user, broker.users[user])
    client.connect("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def wnm(href: str, body: bytes, *, data_id: str | None = None, rel: str = "canonical", notification_id=None,
        pubtime: str | None = None, length: int | None = None, digest: bytes | None = None,
        content: bool = False) -> dict:
    """A WIS2 Notification Message another centre would publish for ``body`` served at ``href``."""
    message = {
        "id": notification_id or str(uuid.uuid4()),
        "conformsTo": ["http://wis.wmo.int/spec/wnm/1/conf/core"],
        "type": "Feature",
        "geometry": None,
        "properties": {
            "data_id": data_id or f"wis2/se-other/data/core/weather/{href.rsplit('/', 1)[-1]}",
            "pubtime": pubtime or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datetime": "2026-12-06T12:00:00Z",
            "integrity": {"method": "sha512",
                          "value": base64.b64encode(digest or hashlib.sha512(body).digest()).decode()},
            "platform_name": "Metop-B",
        },
        "links": [{"href": href, "rel": rel, "type": "application/octet-stream",
                   "length": len(body) if length is None else length}],
    }
    if content:
        message["properties"]["content"] = {"encoding": "base64", "value": base64.b64encode(body).decode(),
                                            "size": len(body)}
    return message
