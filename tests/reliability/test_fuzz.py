"""Bad input never crashes a daemon: fuzzed messages, fuzzed requests, truncated and oversized frames.

The decoder and every request handler (push, ack, info, ping, unknown) get at least
10,000 generated cases each; each case must end in a decoded message or a
MessageDecodeError (decoder), and in a reply of a known type (handlers), with the
malformed-request counter incremented where the request was malformed.
"""

from __future__ import annotations

import logging
import string
import threading

import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.daemons.helpers import load, running, write
from tests.servers import free_port
from trollmoves import messaging
from trollmoves.errors import MessageDecodeError
from trollmoves.server import Server, ServerOptions

FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                phases=(Phase.explicit, Phase.generate, Phase.shrink))
REPLY_TYPES = {"file", "dataset", "collection", "err", "error", "ack", "info", "pong", "unknown"}

# Flat, cheap strategies: generation must stay well under a millisecond per case for 10,000 cases.
INTERESTING = ["/etc/passwd", "../../x", "/tmp/../etc/shadow", "file:///tmp/fuzz-dst/", "gopher://x/y",
               "ftp://u:p@127.0.0.1:1/x/", "", "20240101", "pytroll://x", "\x00", "a" * 300]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
                    st.sampled_from(INTERESTING))
entries = st.dictionaries(st.sampled_from(["uri", "uid", "path"]), scalars, max_size=3)
values = st.one_of(scalars, st.lists(st.one_of(scalars, entries), max_size=3), entries)
file_like = st.dictionaries(st.sampled_from(["uri", "uid", "destination", "path", "dataset", "collection",
                                             "max_count", "catch_up", "backup_targets", "request_address",
                                             "other"]), values, max_size=7)
json_values = values


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: "pytroll:/" + t),
                 st.builds(lambda s, t, rest: f"pytroll://{s} {t} user@host 2024-01-01T00:00:00 v1.2 {rest}",
                           st.text(alphabet=string.ascii_letters + "/", min_size=1, max_size=10),
                           st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
                           st.text(max_size=80))))
@FUZZ
def test_decoder_never_raises_anything_but_decode_errors(raw):
    try:
        message = messaging.decode(raw)
    except MessageDecodeError:
        return
    assert isinstance(message.subject, str) and message.type


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    (base / "src").mkdir()
    (base / "src" / "real.dat").write_bytes(b"real")
    cfg = load(write(base / "server.ini", f"""
        [fuzz]
        origin = {base}/src/{{name}}.dat
        topic = /fuzz
        request_port = {free_port()}
        request_address = 127.0.0.1
        allowed_destinations = file:///tmp/fuzz-dst/
    """), "server")
    server = Server(cfg, ServerOptions(publish_port=0, publish_address="127.0.0.1", workers_per_chain=2))
    with running(server):
        yield server


class _Replies:
    """Captures what a chain replies, without a socket: the handler logic is what is fuzzed here."""

    def __init__(self):
        self.replies = []
        self.event = threading.Event()

    def reply(self, request, message):
        self.replies.append(message)
        self.event.set()


@pytest.mark.parametrize("request_type", ["push", "ack", "info", "ping", "bogus"])
def test_request_handlers_always_reply(fuzz_server, request_type):
    chain = fuzz_server.chains["fuzz"]
    capture = _Replies()
    real_server = chain.request_server
    chain.request_server = capture
    logging.disable(logging.WARNING)  # 10,000 refusal warnings would cost more than the handlers
    try:
        @given(data=st.one_of(file_like, json_values), subject=st.sampled_from(["/fuzz", "/", "/other/x"]))
        @FUZZ
        def run(data, subject):
            try:
                message = messaging.make_message(subject, request_type, data)
            except MessageDecodeError:
                return
            capture.event.clear()
            before = len(capture.replies)
            if request_type == "push":
                reply = chain.push(message)  # the worker-pool path, called directly
                capture.replies.append(reply)
            else:
                chain.dispatch(messaging.Request(b"id", message.encode().encode(), message))
            assert len(capture.replies) == before + 1
            assert capture.replies[-1].type in REPLY_TYPES
        run()
    finally:
        logging.disable(logging.NOTSET)
        chain.request_server = real_server


def test_truncated_oversized_and_garbage_frames_on_the_real_socket(fuzz_server):
    chain = fuzz_server.chains["fuzz"]
    address = f"tcp://127.0.0.1:{chain.request_server.port}"
    context = zmq.Context.instance()
    good = messaging.encode("/fuzz", "ping")
    frames = [good[: len(good) // 2].encode(), b"\xff\xfe\x00garbage", b"", ("pytroll://x " + "a" * 5_000_000).encode(),
              good.encode() + b" trailing"]
    for payload in frames:
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        sock.send(payload)
        assert sock.poll(10_000), f"no reply to {payload[:30]!r}"
        reply = messaging.decode(sock.recv())
        assert reply.type in REPLY_TYPES
        sock.close()
    dealer = context.socket(zmq.DEALER)  # wrong envelope: no empty delimiter frame
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(address)
    dealer.send_multipart([b"one", b"two", b"three"])
    assert dealer.poll(10_000)
    dealer.close()
    pong = messaging.Requester(f"127.0.0.1:{chain.request_server.port}").request(
        messaging.make_message("/fuzz", "ping"), 5)
    assert pong.type == "pong", "the request port died"
    malformed = fuzz_server.metrics.registry.get_sample_value("trollmoves_requests_refused_total",
                                                              {"chain": "fuzz", "reason": "malformed"})
    assert malformed >= 3
