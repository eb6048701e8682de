"""WIS2 bridge throughput on loopback: notifications published per second, files downloaded per second.

    python perf/macro/wis2.py [--small 1000] [--large 20]

Everything is real and on 127.0.0.1: a mosquitto broker (tests/wis2/mosquitto.py), an HTTP
server serving the files (tests/wis2/httpserver.py), posttroll messages from a test feed, and
the bridge (``Wis2Bridge``) in this process. Measured for 4 KiB and 10 MiB files:

* publish: from the first posttroll ``file`` message sent to the last notification the broker
  acknowledged (``trollmoves_wis2_notifications_published_total``); each notification needs the
  file's sha512 (computed: the announcements carry none) and a PUBACK;
* subscribe: from the first WNM injected (QoS 1, by another MQTT client) to the last file stored
  after length and sha512 verification (``trollmoves_wis2_downloads_total``), 4 download workers.

Reported, not gated: the figures depend on mosquitto and on the HTTP server in this process.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import paho.mqtt.client as paho  # noqa: E402

from tests.daemons.helpers import Feed, wait_for  # noqa: E402
from tests.wis2.httpserver import start_http  # noqa: E402
from tests.wis2.mosquitto import DEFAULT_ACL, start_mosquitto  # noqa: E402
from trollmoves.config import load_strict  # noqa: E402
from trollmoves.wis2_bridge import Wis2Bridge, Wis2Options  # noqa: E402

TOPIC = "origin/a/wis2/se-test/data/core/weather/space-based-observations/metop-b/avhrr-3"
TEMPLATE = "origin/a/wis2/{centre_id}/data/{policy}/weather/space-based-observations/{platform_name}/{sensor}"


def _config(work: Path, broker, feed_address: str, base: Path, base_url: str) -> str:
    path = work / "wis2.ini"
    path.write_text(f"""[trollmoves]
state_directory = {work / 'state'}

[out]
direction = publish
broker = {broker.url}
username = publisher
password = {broker.users['publisher']}
mqtt_version = 5
topics = /level1
subscribe_addresses = {feed_address}
nameserver = false
centre_id = se-test
wis2_topic = {TEMPLATE}
base_path = {base}
base_url = {base_url}

[in]
direction = subscribe
broker = {broker.url}
username = subscriber
password = {broker.users['subscriber']}
client_id = perf-in
subscribe = cache/a/wis2/+/data/core/#
destination = {work / 'in'}
publish_topic = /wis2/in
""")
    return str(path)


def _count(service, name: str, **labels) -> float:
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


def _publish_rate(service, feed: Feed, files: list[Path]) -> float:
    before = _count(service, "trollmoves_wis2_notifications_published_total", chain="out", rel="canonical")
    start = time.perf_counter()
    for path in files:
        feed.send("/level1/perf", "file", {"uri": str(path), "uid": path.name, "platform_name": "Metop-B",
                                           "sensor": "avhrr-3"})
    target = before + len(files)
    wait_for(lambda: _count(service, "trollmoves_wis2_notifications_published_total", chain="out",
                            rel="canonical") >= target, timeout=600, interval=0.005, what="all published")
    return len(files) / (time.perf_counter() - start)


def _subscribe_rate(service, broker, http, files: list[Path]) -> float:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"perf-inject-{uuid.uuid4().hex[:6]}",
                         protocol=paho.MQTTv5)
    client.username_pw_set("publisher", broker.users["publisher"])
    client.connect("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
    client.loop_start()
    messages = []
    for path in files:
        body = path.read_bytes()
        messages.append(json.dumps({
            "id": str(uuid.uuid4()), "conformsTo": ["http://wis.wmo.int/spec/wnm/1/conf/core"], "type": "Feature",
            "geometry": None,
            "properties": {"data_id": f"wis2/se-test/data/core/perf/{path.name}",
                           "pubtime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "datetime": None,
                           "integrity": {"method": "sha512",
                                         "value": base64.b64encode(hashlib.sha512(body).digest()).decode()}},
            "links": [{"href": http.url(path.name), "rel": "canonical", "type": "application/octet-stream",
                       "length": len(body)}]}))
    before = _count(service, "trollmoves_wis2_downloads_total", chain="in")
    start = time.perf_counter()
    infos = [client.publish(TOPIC.replace("origin/", "cache/", 1), message, qos=1) for message in messages]
    for info in infos:
        info.wait_for_publish(60)
    target = before + len(files)
    wait_for(lambda: _count(service, "trollmoves_wis2_downloads_total", chain="in") >= target, timeout=600,
             interval=0.005, what="all downloaded")
    elapsed = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    return len(files) / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1000, help="number of 4 KiB files (default 1000)")
    parser.add_argument("--large", type=int, default=20, help="number of 10 MiB files (default 20)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tm-wis2-perf-") as tmp:
        work = Path(tmp)
        base = work / "pub"
        base.mkdir()
        (work / "state").mkdir()
        users = {name: f"pw-{secrets.token_urlsafe(8)}" for name in ("publisher", "subscriber", "limited")}
        acl = DEFAULT_ACL.replace("topic readwrite origin/a/wis2/#", "topic readwrite origin/a/wis2/#\n"
                                                                    "topic readwrite cache/a/wis2/#")
        broker = start_mosquitto(work / "mosquitto", users=users, acl=acl)
        http = start_http(base)
        feed = Feed()
        service = Wis2Bridge(load_strict(_config(work, broker, feed.address, base, http.url("").rstrip("/")),
                                         "wis2"), Wis2Options(publish_port=0, publish_nameservers=False))
        service.start()
        try:
            feed.send("/level1/warmup", "beat", {})
            time.sleep(1.0)  # zmq slow joiner
            for label, count, size in (("4 KiB", args.small, 4096), ("10 MiB", args.large, 10 << 20)):
                files = []
                for index in range(count):
                    path = base / f"perf_{size}_{index:05d}.dat"
                    path.write_bytes(os.urandom(size))
                    files.append(path)
                published = _publish_rate(service, feed, files)
                downloaded = _subscribe_rate(service, broker, http, files)
                print(f"{label}: {count} files: published {published:,.0f} WNM/s; downloaded+verified "
                      f"{downloaded:,.1f} files/s ({downloaded * size / 1e6:,.1f} MB/s)", flush=True)
        finally:
            service.stop(10)
            feed.stop()
            http.stop()
            broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
