"""Issue 15: random and mutated messages on every receive path.

A seeded generator (reproducible: the seed is in the test id) mutates genuine
messages structurally (fields replaced by hostile values: wrong types, huge
numbers, deep nesting, long strings) and at the byte level (flips, cuts,
inserts, mangled headers), and adds plain random bytes. They are fed to a
server's request port, to a client's subscription (as a listed provider) and
to a dispatcher's subscription. Afterwards no service thread has died, health
is ok, and a genuine file sent afterwards arrives.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time

import zmq

from tests.daemons.helpers import Collector, drop, new_server, running, sha256, wait_for
from tests.hostile.rogue import archive_dispatcher, client_with_rogue, wait_heard
from trollmoves import messaging

SEED = 15
PER_PATH = 100  # three receive paths: ~300 inputs in all


def hostile_values(rng: random.Random, extra: list) -> list:
    """Values a peer may put in any field."""
    deep = 2_000 if rng.random() < 0.5 else 50_000
    nested: object = []
    for _ in range(30):
        nested = [nested]
    return [None, True, False, 0, -1, 2 ** 70, -(10 ** 30), 1e308, 0.5, "", " ", "nonsense", "x" * 10_000,
            "ünï\u0000cödé\udcff"[:-1], "2024-13-45T99:99:99", "1e400", [], {}, [1, "a", None],
            {"a": {"b": [1]}},
            nested, {"uri": None, "uid": 5}, [{"uri": 1}], "%s%n{0}{uid}", "\n\r\t"] + extra \
        + [json.loads("[" * min(deep, 900) + "]" * min(deep, 900))]


KEYS = ["uri", "uid", "request_address", "dataset", "collection", "destination", "path", "catch_up",
        "max_count", "since", "size", "checksum", "platform_name", "start_time", "mtime", "origin"]


def structured(rng: random.Random, subject: str, atype: str, base: dict, extra: list) -> bytes:
    """A genuine-looking message with a few fields replaced or added."""
    data = dict(base)
    values = hostile_values(rng, extra)
    for _ in range(rng.randint(1, 4)):
        data[rng.choice(KEYS)] = rng.choice(values)
    if rng.random() < 0.1:
        data = rng.choice(values)
    atype = atype if rng.random() < 0.7 else rng.choice(["push", "ack", "info", "ping", "file", "dataset",
                                                          "collection", "beat", "del", "x" * 300, "ünï"])
    try:
        return messaging.encode(subject, atype, data).encode("utf-8", "surrogatepass")
    except messaging.MessageDecodeError:
        return raw_header(subject, atype) + b" application/json " + b"[" * 100_000


def raw_header(subject: str, atype: str) -> bytes:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    return f"pytroll:/{subject} {atype} rogue@host {now} v1.2".encode()


def byte_level(rng: random.Random, genuine: bytes, subject: str) -> bytes:
    """Flips, cuts, inserts, mangled headers, random bytes."""
    kind = rng.randrange(7)
    raw = bytearray(genuine)
    if kind == 0:
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif kind == 1:
        raw = raw[:rng.randrange(len(raw))]
    elif kind == 2:
        at = rng.randrange(len(raw))
        raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 50)))
    elif kind == 3:
        header = rng.choice([b" v9.9", b" v1.2 text/ascii", b" v1.2 binary/octet-stream \xff\xfe",
                             b" v1.2 bogus/mime x", b" v1.2 application/json {",
                             b" v1.2 application/json nan",
                             b" v1.2 application/json [" + b"{\"a\":" * 3_000])
        raw = bytearray(raw_header(subject, "file").rsplit(b" ", 1)[0] + header)
    elif kind == 4:
        raw = bytearray(f"pytroll:/{subject} file rogue@host not-a-time v1.2 application/json {{}}".encode())
    elif kind == 5:
        raw = bytearray(rng.randbytes(rng.randint(0, 2_000)))
    else:
        raw = bytearray(f"pytroll:/{subject}".encode() + rng.randbytes(rng.randint(0, 200)))
    return bytes(raw)


def known_hostile(subject: str, atype: str) -> list[bytes]:
    """The inputs that broke receivers before (issue 15), always among the random ones."""
    header = raw_header(subject, atype)
    return [header + b" application/json " + b"[" * 100_000 + b"]" * 100_000,
            header + b" application/json " + b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
            header + b" application/json " + b"[" * 1_000,
            header + b" application/json {\"uri\": " + b"[" * 50_000 + b"}",
            f"pytroll:/{subject} {atype} rogue@host 99999-01-01T00:00:00 v1.2".encode(),
            header + b" application/json "
            + json.dumps({"catch_up": {"since": "yesterday", "max_count": "x"}}).encode()]


def inputs(rng: random.Random, count: int, subject: str, atype: str, base: dict, extra: list) -> list[bytes]:
    """``count`` inputs: the known hostile ones spread among structured and byte-level mutations."""
    genuine = messaging.encode(subject, atype, base).encode()
    made = [structured(rng, subject, atype, base, extra) if rng.random() < 0.6
            else byte_level(rng, genuine, subject) for _ in range(count)]
    for payload in known_hostile(subject, atype):
        made.insert(rng.randrange(len(made)), payload)
    return made[:count]


def send_bytes(publisher: messaging.Publisher, payload: bytes) -> None:
    """Publish raw bytes (not necessarily UTF-8): what a rogue publisher can put on the wire."""
    with publisher._lock:
        publisher._socket.send(payload)


def test_server_request_port(dirs):
    rng = random.Random(SEED)
    server = new_server(dirs)
    fuzz_dst = dirs["other"]
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        address = server.request_address(server.config.chains[0])
        announced = drop(dirs, 1, prefix="ANNOUNCED")[0]
        wait_for(lambda: seen.of_type("file"), what="the announcement")
        base = {"uri": announced, "uid": os.path.basename(announced),
                "destination": f"file://localhost{fuzz_dst}"}
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{address}")
        try:
            started = time.monotonic()
            sent = inputs(rng, PER_PATH, "/test/files", rng.choice(["push", "info", "ack"]), base,
                          [address, f"file://localhost{fuzz_dst}"])
            for index, payload in enumerate(sent):
                bad_envelopes = [[payload], [b"", b"", payload], [b"x", payload]]
                frames = [b"", payload] if index % 10 else rng.choice(bad_envelopes)
                sock.send_multipart(frames)
            replies = 0
            while replies < len(sent) and sock.poll(5000):
                sock.recv_multipart()
                replies += 1
            assert replies == len(sent), f"{len(sent) - replies} of {len(sent)} requests were never answered"
            assert time.monotonic() - started < 60
        finally:
            sock.close()
        assert server.health()["ok"], server.health()
        assert all(thread.is_alive() for served in server.chains.values() for thread in served._threads)
        requester = messaging.Requester(address)
        assert requester.request(messaging.make_message("/test/files", "ping"), 5).type == "pong"
        source = drop(dirs, 1, prefix="GENUINE")[0]
        wait_for(lambda: [m for m in seen.of_type("file") if m.data.get("uid") == os.path.basename(source)],
                 what="the genuine announcement")
        push = {"uri": source, "uid": os.path.basename(source),
                "destination": f"file://localhost{dirs['dst']}"}
        reply = requester.request(messaging.make_message("/test/files", "push", push), timeout=10)
        requester.close()
    assert reply.type == "file", reply.data
    assert sha256(str(dirs["dst"] / os.path.basename(source))) == sha256(source)


def test_client_subscription_from_a_listed_provider(dirs):
    rng = random.Random(SEED + 1)
    server = new_server(dirs)
    rogue = messaging.Publisher("rogue", 0, "127.0.0.1").start()
    try:
        with running(server):
            request_address = server.request_address(server.config.chains[0])
            client = client_with_rogue(dirs, server.publisher.port, rogue.port)
            with running(client), Collector([f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                            "/test") as seen:
                wait_heard(client, lambda: rogue.send("pytroll://test/files probe"))
                base = {"uri": str(dirs["src"] / "NOAA19_999.dat"), "uid": "NOAA19_999.dat",
                        "request_address": request_address, "platform_name": "NOAA19"}
                started = time.monotonic()
                for payload in inputs(rng, PER_PATH, "/test/files", "file", base, [request_address]):
                    send_bytes(rogue, payload)
                time.sleep(1.0)
                assert time.monotonic() - started < 60
                health = client.health()
                assert health["ok"] and all(c["listening"] for c in health["chains"].values()), health
                source = drop(dirs, 1)[0]
                wait_for(lambda: [m for m in seen.finals() if m.data.get("uid") == os.path.basename(source)],
                         timeout=30, what="the genuine file delivered")
                assert client.health()["ok"], client.health()
    finally:
        rogue.stop()
    assert sha256(str(dirs["dst"] / os.path.basename(source))) == sha256(source)


def test_dispatcher_subscription(tmp_path):
    from tests.daemons.helpers import Feed, make_file

    rng = random.Random(SEED + 2)
    src, archive = tmp_path / "src", tmp_path / "archive"
    src.mkdir()
    with Feed() as feed:
        dispatcher = archive_dispatcher(feed, tmp_path)
        with running(dispatcher), Collector([f"tcp://127.0.0.1:{dispatcher.publisher.port}"],
                                            "/dispatched") as seen:
            feed.wait_subscribed(dispatcher, "/product/probe", "dispatcher")
            base = {"uri": make_file(src, "fuzzed.dat"), "uid": "fuzzed.dat", "platform_name": "NOAA19"}
            started = time.monotonic()
            for payload in inputs(rng, PER_PATH, "/product/x", "file", base, []):
                send_bytes(feed.publisher, payload)
            time.sleep(1.0)
            assert time.monotonic() - started < 60
            assert dispatcher.health()["ok"], dispatcher.health()
            assert dispatcher.fatal_error() is None
            path = make_file(src, "genuine.dat")
            feed.send("/product/x", "file", {"uri": path, "uid": "genuine.dat"})
            wait_for(lambda: [m for m in seen.of_type("file") if m.data.get("uid") == "genuine.dat"],
                     timeout=30, what="the genuine product dispatched")
            assert dispatcher.health()["ok"], dispatcher.health()
    assert sha256(str(archive / "genuine.dat")) == sha256(path)
