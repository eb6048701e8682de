"""trollmoves.messaging against real zmq sockets on 127.0.0.1 and posttroll itself.

Why: the wire is the compatibility contract with trollmoves 0.19 and every pytroll
tool; posttroll must read what we send and we must read what posttroll sends. The
layer's reasons to exist are also checked here: no drops in a burst, malformed
frames skipped instead of ending the loop, uid/uri kept as strings, and requests
answered the way the original's REQ clients expect. No mocks: real sockets.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
import zmq
from posttroll.message import Message
from posttroll.publisher import Publisher as PosttrollPublisher
from posttroll.subscriber import NSSubscriber
from posttroll.subscriber import Subscriber as PosttrollSubscriber

from trollmoves import messaging
from trollmoves.errors import MessageDecodeError, RequestError

HOST = "127.0.0.1"
JOIN_TIMEOUT = 10.0
FILE_DATA = {
    "sensor": "seviri",
    "platform_name": "Meteosat-11",
    "uri": "/data/in/H-000-MSG4.dat",
    "uid": "H-000-MSG4.dat",
    "request_address": "127.0.0.1:9094",
    "size": 123456,
    "nested": [1, "a"],
    "checksum": {"method": "xxh3_128", "value": "00ff"},
}


def _tcp(port: int) -> str:
    return f"tcp://{HOST}:{port}"


@pytest.fixture
def publisher():
    pub = messaging.Publisher(f"test_{uuid.uuid4().hex[:8]}", 0, bind_address=HOST).start()
    yield pub
    pub.stop()


def _join_ours(send, subscriber: messaging.Subscriber) -> None:
    """Send pings until the subscriber gets one: SUB drops what was sent before it joined (slow joiner)."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while time.monotonic() < deadline:
        send(messaging.encode("/test/ping", "ping"))
        if any(msg.type == "ping" for _, msg in subscriber.recv(0.05)):
            return
    raise AssertionError("subscriber never joined")


def _receive_ours(
    subscriber: messaging.Subscriber, count: int, timeout: float = 20.0, atype: str | None = None
) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += [
            msg
            for _, msg in subscriber.recv(0.2)
            if msg.type != "ping" and (atype is None or msg.type == atype)
        ]
    return got


# --------------------------------------------------------------------------------------------------
# Codec
# --------------------------------------------------------------------------------------------------


def _without_time(raw: str) -> tuple[list[str], str]:
    head, _, rest = raw.partition(" v1.")
    fields = head.split(" ")
    return fields[:3], "v1." + rest  # magic+subject, type, sender; then version, mime and payload


@pytest.mark.parametrize(
    "data",
    [
        FILE_DATA,
        "some text with spaces",
        "",
        {},
        {"dataset": [{"uri": "/a/1", "uid": "1"}, {"uri": "/a/2", "uid": "2"}], "sensor": "viirs"},
        {"start_time": dt.datetime(2024, 1, 1, 12, 0, 0, 123456), "name": "Ålesund"},
        {"min_interval": 30},
    ],
)
def test_encode_is_byte_identical_to_posttroll_except_time(data):
    ours = messaging.encode("/oper/test", "file", data)
    theirs = Message("/oper/test", "file", data).encode()
    assert _without_time(ours) == _without_time(theirs)


def test_decode_keeps_uid_and_uri_strings_other_iso_fields_become_datetimes():
    raw = messaging.encode(
        "/oper/test",
        "file",
        {
            "uid": "20240101",
            "uri": "20240102",
            "start_date": "20240103",
            "start_time": "2024-01-01T12:00:00",
            "orbit": "12345",
        },
    )
    ours = messaging.decode(raw)
    theirs = Message.decode(raw)
    assert ours.data["uid"] == "20240101" and ours.data["uri"] == "20240102"
    assert theirs.data["uid"] == dt.datetime(2024, 1, 1)  # what posttroll alone does
    for name in ("start_date", "start_time", "orbit"):
        assert ours.data[name] == theirs.data[name]
    assert ours.data["start_date"] == dt.datetime(2024, 1, 3)
    assert (ours.subject, ours.type, ours.sender, ours.time) == (
        theirs.subject,
        theirs.type,
        theirs.sender,
        theirs.time,
    )


def test_decode_keeps_uid_strings_inside_datasets_and_push_requests():
    for atype, data in [
        ("dataset", {"dataset": [{"uid": "20240101", "uri": "/x/20240101"}]}),
        ("push", {"uid": "2024-01-01", "uri": "/a", "destination": "file:///d/"}),
    ]:
        decoded = messaging.decode(messaging.encode("/t", atype, data))
        assert decoded.data == data


@pytest.mark.parametrize("atype", ["err", "unknown", "info", "del"])
def test_decode_keeps_uid_strings_in_every_message_type(atype):
    data = {"uid": "20240101", "uri": "/d/20240101"}
    assert messaging.decode(messaging.encode("/oper/test", atype, data)).data == data


def test_decode_reads_v1_01_messages():
    raw = 'pytroll://oper/test file user@host 2024-01-01T00:00:00 v1.01 application/json {"uid": "a.dat"}'
    msg = messaging.decode(raw)
    assert (msg.version, msg.time, msg.data) == ("v1.01", dt.datetime(2024, 1, 1), {"uid": "a.dat"})


MALFORMED = {
    "wrong magic": "pytrol://oper/test file user@host 2024-01-01T00:00:00 v1.2",
    "bad time": "pytroll://oper/test file user@host notatime v1.2",
    "mime without payload": "pytroll://oper/test file user@host 2024-01-01T00:00:00 v1.2 application/json",
    "non-UTF-8 bytes": b"pytroll://oper/test file user@host \xff\xfe\x00 v1.2",
    "truncated": "pytroll://oper/test file user@ho",
    "bad json": 'pytroll://oper/test file user@host 2024-01-01T00:00:00 v1.2 application/json {"a": ',
    "unknown mime": "pytroll://oper/test file user@host 2024-01-01T00:00:00 v1.2 image/png xyz",
    "future version": "pytroll://oper/test file user@host 2024-01-01T00:00:00 v1.3",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_decode_turns_every_posttroll_failure_into_message_decode_error(name):
    with pytest.raises(MessageDecodeError, match="malformed message"):
        messaging.decode(MALFORMED[name])


def test_malformed_frames_are_counted_and_skipped_the_loop_goes_on():
    """A raw PUB socket sends every kind of garbage between good messages; all good ones arrive."""
    context = zmq.Context.instance()
    raw_pub = context.socket(zmq.PUB)
    raw_pub.setsockopt(zmq.LINGER, 0)
    port = raw_pub.bind_to_random_port(f"tcp://{HOST}")
    seen: list[MessageDecodeError] = []
    subscriber = messaging.Subscriber([_tcp(port)], "", on_malformed=seen.append)
    try:
        _join_ours(lambda raw: raw_pub.send_string(raw), subscriber)
        # A wrong magic word never passes the subscription prefix, so it is not among these.
        bad = [value for name, value in MALFORMED.items() if name != "wrong magic"]
        for index, frame in enumerate(bad):
            raw_pub.send(frame if isinstance(frame, bytes) else frame.encode())
            raw_pub.send_string(messaging.encode("/oper/test", "file", {"uid": f"good{index}"}))
        good = _receive_ours(subscriber, len(bad), atype="file")
    finally:
        subscriber.close()
        raw_pub.close()
    assert [msg.data["uid"] for msg in good] == [f"good{index}" for index in range(len(bad))]
    assert subscriber.malformed == len(bad) == len(seen)
    assert all(isinstance(error, MessageDecodeError) for error in seen)


# --------------------------------------------------------------------------------------------------
# Publish/subscribe, both directions with posttroll
# --------------------------------------------------------------------------------------------------


def test_our_publisher_to_posttroll_subscriber_exact_message(publisher):
    subscriber = PosttrollSubscriber([_tcp(publisher.port)], topics="/oper/test")
    try:
        messages = subscriber.recv(timeout=0.05)
        deadline = time.monotonic() + JOIN_TIMEOUT
        while time.monotonic() < deadline:
            publisher.send(messaging.make_message("/oper/test/ping", "ping"))
            received = next(messages)
            if received is not None:
                break
        else:
            raise AssertionError("posttroll subscriber never joined")
        raw = messaging.encode("/oper/test/file", "file", FILE_DATA)
        assert publisher.send(raw)
        while received is None or received.type != "file":
            received = next(messages)
    finally:
        subscriber.close()
    assert received.encode() == raw
    assert received.data == FILE_DATA


def test_posttroll_publisher_to_our_subscriber():
    publisher = PosttrollPublisher(f"tcp://{HOST}:0", name="posttroll_side")
    publisher.start()
    subscriber = messaging.Subscriber([_tcp(publisher.port_number)], "/oper/test")
    try:
        _join_ours(lambda raw: publisher.send(raw.replace("/test/ping", "/oper/test/ping")), subscriber)
        raw = Message("/oper/test/file", "file", FILE_DATA).encode()
        publisher.send(raw)
        (received,) = _receive_ours(subscriber, 1, atype="file")
    finally:
        subscriber.close()
        publisher.stop()
    assert received.encode() == raw
    assert (received.subject, received.data) == ("/oper/test/file", FILE_DATA)


def test_topic_prefix_filtering(publisher):
    subscriber = messaging.Subscriber([_tcp(publisher.port)], ["/test/ping", "/wanted"])
    try:
        _join_ours(publisher.send, subscriber)
        for subject in ("/unwanted/a", "/wanted/a", "/wantedtoo", "/other"):
            publisher.send(messaging.encode(subject, "file", {"uid": subject}))
        got = _receive_ours(subscriber, 2, timeout=5)
    finally:
        subscriber.close()
    assert [msg.subject for msg in got] == ["/wanted/a", "/wantedtoo"]  # a byte prefix, as posttroll


def test_burst_of_20000_messages_arrives_complete(publisher):
    """zmq's default HWM of 1000 lost 25 % of such a burst through posttroll; ours must lose none."""
    count = 20_000
    subscriber = messaging.Subscriber([_tcp(publisher.port)], "/test")
    try:
        _join_ours(publisher.send, subscriber)
        frames = [messaging.encode("/test/burst", "file", {"uid": f"f{i}", "seq": i}) for i in range(count)]
        for frame in frames:
            publisher.send(frame)
        got = _receive_ours(subscriber, count, timeout=60)
    finally:
        subscriber.close()
    assert (publisher.dropped, subscriber.malformed) == (0, 0)
    assert [msg.data["seq"] for msg in got] == list(range(count))


def test_send_from_several_threads_loses_and_mixes_nothing(publisher):
    """Services publish from worker threads: every message arrives whole, each thread's in order."""
    threads, per_thread = 4, 2500
    subscriber = messaging.Subscriber([_tcp(publisher.port)], "/test")
    try:
        _join_ours(publisher.send, subscriber)

        def send_all(worker: int) -> None:
            for seq in range(per_thread):
                publisher.send(messaging.encode("/test/threads", "file", {"worker": worker, "seq": seq}))

        senders = [threading.Thread(target=send_all, args=(worker,)) for worker in range(threads)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        got = _receive_ours(subscriber, threads * per_thread, timeout=60)
    finally:
        subscriber.close()
    assert publisher.dropped == 0 and subscriber.malformed == 0
    for worker in range(threads):
        assert [msg.data["seq"] for msg in got if msg.data["worker"] == worker] == list(range(per_thread))


def test_heartbeat_subject_and_interval(publisher):
    subscriber = messaging.Subscriber([_tcp(publisher.port)], ["/test", "/heartbeat"])
    try:
        _join_ours(publisher.send, subscriber)
        assert publisher.heartbeat(30) is True
        assert publisher.heartbeat(30) is False  # at most one per interval
        (beat,) = _receive_ours(subscriber, 1, timeout=5, atype="beat")
    finally:
        subscriber.close()
    assert (beat.subject, beat.data) == (f"/heartbeat/{publisher.name}", {"min_interval": 30})


def test_two_publishers_in_one_process_are_independent():
    first = messaging.Publisher("first", 0, bind_address=HOST).start()
    second = messaging.Publisher("second", 0, bind_address=HOST).start()
    try:
        assert first.port != second.port
        first.stop()
        subscriber = messaging.Subscriber([_tcp(second.port)], "/test")
        try:
            _join_ours(second.send, subscriber)
        finally:
            subscriber.close()
    finally:
        second.stop()


def test_send_on_a_stopped_publisher_is_an_error():
    pub = messaging.Publisher("stopped", 0, bind_address=HOST).start()
    pub.stop()
    with pytest.raises(RuntimeError, match="not started"):
        pub.send(messaging.encode("/a", "file", {"uid": "x"}))


# --------------------------------------------------------------------------------------------------
# Request/reply
# --------------------------------------------------------------------------------------------------


class _EchoServer:
    """A RequestServer answering in its own thread: ping -> pong, push -> ack, garbage -> unknown."""

    def __init__(self):
        self.server = messaging.RequestServer(0, bind_address=HOST).start()
        self.requests: list[messaging.Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo-request-server")
        self._thread.start()

    @property
    def address(self) -> str:
        return _tcp(self.server.port)

    def _run(self) -> None:
        while not self._stop.is_set():
            for request in self.server.poll(0.05):
                self.requests.append(request)
                if request.message is None:
                    self.server.reply(
                        request, messaging.make_message("/oper/ns", "unknown", "Invalid message received")
                    )
                elif request.message.type == "ping":
                    self.server.reply(
                        request, messaging.make_message(request.message.subject, "pong", {"station": "test"})
                    )
                else:
                    reply = messaging.make_message(request.message.subject, "ack", request.message.data)
                    # Replies from another thread (a worker pool) must get through as well.
                    threading.Thread(target=self.server.reply, args=(request, reply)).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


@pytest.fixture
def echo_server():
    server = _EchoServer()
    yield server
    server.close()


def _req_socket(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(address)
    return sock


def test_request_server_answers_a_plain_req_socket(echo_server):
    """The original client talks to the server with a plain zmq REQ socket and a posttroll message."""
    sock = _req_socket(echo_server.address)
    try:
        sock.send_string(Message("ping/pong", "ping", {"station": "x"}).encode())
        reply = Message.decode(sock.recv_string())
        sock.send_string(Message("/oper/test", "push", {"uid": "20240101", "uri": "/d/20240101"}).encode())
        ack = messaging.decode(sock.recv())
    finally:
        sock.close()
    assert (reply.type, reply.data) == ("pong", {"station": "test"})
    assert (ack.type, ack.data) == ("ack", {"uid": "20240101", "uri": "/d/20240101"})


def test_requester_against_request_server(echo_server):
    requester = messaging.Requester(echo_server.address.removeprefix("tcp://"))
    reply = requester.request(messaging.make_message("/oper/test", "push", FILE_DATA), timeout=5)
    assert (reply.type, reply.data) == ("ack", FILE_DATA)
    pong = requester.request(messaging.make_message("ping/pong", "ping"), timeout=5, resend_after=0.5)
    assert pong.type == "pong"


def test_requester_times_out_with_request_error():
    silent = zmq.Context.instance().socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port(f"tcp://{HOST}")
    try:
        with pytest.raises(RequestError, match=f"no reply from tcp://{HOST}:{port} within 0.3 s"):
            messaging.Requester(_tcp(port)).request(messaging.make_message("/a", "ping"), timeout=0.3)
    finally:
        silent.close()


def test_bad_requests_do_not_kill_the_server(echo_server):
    """Two frames from a DEALER and a garbage payload from a REQ: reported, answered, server goes on."""
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(echo_server.address)
    req = _req_socket(echo_server.address)
    try:
        dealer.send(b"no empty delimiter frame")
        req.send(b"\xff\xfe garbage, not a pytroll message")
        garbage_reply = Message.decode(req.recv_string())
        req.send_string(Message("ping/pong", "ping").encode())
        pong = Message.decode(req.recv_string())
    finally:
        dealer.close()
        req.close()
    assert garbage_reply.type == "unknown" and pong.type == "pong"
    errors = [request.error for request in echo_server.requests if request.error is not None]
    assert len(errors) == 2
    assert "2 frames" in str(errors[0]) or "2 frames" in str(errors[1])


def test_two_request_servers_cannot_share_a_port():
    first = messaging.RequestServer(0, bind_address=HOST).start()
    try:
        with pytest.raises(OSError, match=f"cannot bind request port {HOST}:{first.port}"):
            messaging.RequestServer(first.port, bind_address=HOST).start()
    finally:
        first.close()


# --------------------------------------------------------------------------------------------------
# Nameserver (the real `nameserver --no-multicast` process)
# --------------------------------------------------------------------------------------------------


def test_publisher_registers_with_the_nameserver(nameserver):
    name = f"svc_{uuid.uuid4().hex[:8]}"
    publisher = messaging.Publisher(
        name, 0, bind_address=HOST, nameservers=[nameserver.host], broadcast_interval=0.5
    ).start()
    try:
        deadline, found = time.monotonic() + 15, []
        while not found and time.monotonic() < deadline:
            found = messaging.lookup_addresses(name, nameserver.host, timeout=2)
            time.sleep(0.1)
        assert found == [publisher.address] == [_tcp(publisher.port)]

        subscriber = NSSubscriber(name, topics="/test", nameserver=nameserver.host, timeout=5).start()
        try:
            messages = subscriber.recv(timeout=0.05)
            deadline, received = time.monotonic() + JOIN_TIMEOUT, None
            while received is None and time.monotonic() < deadline:
                publisher.send(messaging.make_message("/test/file", "file", {"uid": "via-ns"}))
                received = next(messages)
        finally:
            subscriber.close()
        assert received is not None and received.data == {"uid": "via-ns"}
    finally:
        publisher.stop()


def test_lookup_of_an_unknown_service_is_empty(nameserver):
    assert messaging.lookup_addresses(f"nobody_{uuid.uuid4().hex[:8]}", nameserver.host, timeout=1) == []


def test_curve_keys_of_a_daemon_and_of_a_chain():
    """The chain's own request-port keys, else the daemon's (duck-typed config: messaging imports no config)."""
    from types import SimpleNamespace

    daemon = SimpleNamespace(curve_secret_key_file="/k/server.key_secret", curve_clients_directory="/k/allowed")
    config = SimpleNamespace(daemon=daemon)
    keys = messaging.CurveServerKeys("/k/server.key_secret", "/k/allowed")
    assert messaging.publisher_curve(config) == keys
    assert messaging.request_curve(SimpleNamespace(), config) == keys
    assert messaging.request_curve(SimpleNamespace(curve_secret_key_file=None), config) == keys
    own = SimpleNamespace(curve_secret_key_file="/k/chain.key_secret", curve_clients_directory="/k/chain")
    assert messaging.request_curve(own, config) == messaging.CurveServerKeys("/k/chain.key_secret", "/k/chain")
    unset = SimpleNamespace(daemon=SimpleNamespace(curve_secret_key_file="/k/s", curve_clients_directory=None))
    assert messaging.publisher_curve(unset) is None and messaging.request_curve(SimpleNamespace(), unset) is None
