"""Messaging: the only module of trollmoves that imports posttroll.

Messages are encoded and decoded with posttroll's own ``Message`` (the wire format
is posttroll's, byte for byte); this module absorbs posttroll's pitfalls
(see ``shared/docs/posttroll-trollsift.md``):

* the subscriber loop drains every waiting message per poll and never sleeps
  (posttroll's sleeps ~80 µs per message, capping it near 8k msg/s);
* high-water marks are set deliberately (zmq's default of 1000 drops bursts), and
  messages a publisher could not queue are counted, not silently lost;
* a malformed message is counted and skipped, it never ends a receive loop;
* request, reply and subscription sockets refuse messages above ``max_message_size``
  (zmq.MAXMSGSIZE, 16 MiB by default: far above any real announcement, even of a
  large dataset): zmq drops the sender's connection before anything is decoded;
* ``uid`` and ``uri`` stay strings (posttroll turns ISO-like strings into datetimes);
* no module-level state: every socket belongs to an object that a test can create
  twice in one process and close.

Multicast is never required: publishers register with listed nameservers (or with
none), subscribers connect to direct addresses or look services up by name.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pwd
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq
from posttroll import config as posttroll_config
from posttroll.backends.zmq import get_context
from posttroll.backends.zmq.socket import close_socket, set_up_client_socket, set_up_server_socket
from posttroll.message import MESSAGE_VERSION, Message, MessageError
from posttroll.message_broadcaster import sendaddressservice
from posttroll.publisher import get_own_ip
from posttroll.subscriber import Subscriber as _PosttrollSubscriber

from trollmoves._accel import iso_object_hook
from trollmoves.errors import MessageDecodeError, RequestError

logger = logging.getLogger(__name__)

DEFAULT_SNDHWM = 100_000
DEFAULT_RCVHWM = 100_000
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # bytes; zmq.MAXMSGSIZE of every receiving socket
HEARTBEAT_INTERVAL = 30
_STRING_KEYS = ("uid", "uri")

__all__ = [
    "Message", "MessageError", "MessageDecodeError", "Publisher", "Subscriber", "RequestServer",
    "Requester", "decode", "encode", "make_message", "lookup_addresses", "magickfy_topics",
    "heartbeat_subject", "own_ip", "NameServerThread", "shorten",
]


# --------------------------------------------------------------------------------------------------
# Codec
# --------------------------------------------------------------------------------------------------

_MAGIC = "pytroll:/"
_HEADER_SPLIT = re.compile(r"\s+")
_SENDER = f"{pwd.getpwuid(os.getuid())[0]}@{socket.gethostname()}"  # what posttroll computes per message


def _json_default(obj: Any) -> Any:
    """posttroll's datetime encoder for v1.2: anything with isoformat(), else not serialisable."""
    try:
        return obj.isoformat()
    except AttributeError:
        raise TypeError(f"{obj!r} is not JSON serializable") from None


def _json_default_naive(obj: Any) -> Any:
    """posttroll's datetime encoder for versions <= v1.01: timezone dropped."""
    try:
        return obj.replace(tzinfo=None).isoformat()
    except (AttributeError, TypeError):
        raise TypeError(f"{obj!r} is not JSON serializable") from None


def _dumps_function(default):
    """json.dumps(data, default=default) with the C encoder built once, not per call (same output).

    Circular-reference checking is off (it only changes which error a circular
    structure raises; such data cannot be encoded either way).
    """
    from json.encoder import c_make_encoder, encode_basestring_ascii

    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return lambda data: json.dumps(data, default=default)
    encoder = c_make_encoder(None, default, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda data: "".join(encoder(data, 0))


_DUMPS = _dumps_function(_json_default)
_DUMPS_NAIVE = _dumps_function(_json_default_naive)


def make_message(subject: str, atype: str, data: Any = "") -> Message:
    """A posttroll Message, built and encoded once (posttroll validates and encodes it three times).

    The wire string is computed here, exactly as posttroll's ``encode()`` would write it
    (same header, same ``json.dumps`` call), and kept on the message for the publisher;
    the data must not be changed after this call. Data posttroll would refuse raises
    MessageDecodeError.
    """
    if not isinstance(subject, str) or not subject:
        raise MessageDecodeError(f"cannot build a {atype!r} message: invalid subject {subject!r}")
    if not isinstance(atype, str) or not atype:
        raise MessageDecodeError(f"cannot build a message on {subject!r}: invalid type {atype!r}")
    message = Message.__new__(Message)
    fields = message.__dict__
    fields["subject"] = subject
    fields["type"] = atype
    fields["sender"] = _SENDER
    fields["time"] = now = dt.datetime.now(dt.timezone.utc)
    fields["data"] = data
    fields["binary"] = False
    fields["version"] = version = MESSAGE_VERSION
    if version <= "v1.01":
        header = f"{_MAGIC}{subject} {atype} {_SENDER} {now.replace(tzinfo=None).isoformat()} {version}"
        dumps = _DUMPS_NAIVE
    else:
        header = f"{_MAGIC}{subject} {atype} {_SENDER} {now.isoformat()} {version}"
        dumps = _DUMPS
    if not data:
        wire = header
    elif isinstance(data, str):
        wire = f"{header} text/ascii {data}"
    else:
        try:
            wire = f"{header} application/json {dumps(data)}"
        except (TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise MessageDecodeError(f"cannot build a {atype!r} message on {subject!r}: data is not JSON "
                                     f"serializable ({exc})") from None
    fields["_wire"] = wire
    return message


def wire(message: Message | str) -> str:
    """The wire string of a message (the cached one of make_message, else posttroll's encode())."""
    if isinstance(message, str):
        return message
    return message.__dict__.get("_wire") or message.encode()


def encode(subject: str, atype: str, data: Any = "") -> str:
    """Wire string of a message, byte for byte what posttroll's Message(...).encode() writes."""
    return make_message(subject, atype, data).__dict__["_wire"]


_fromisoformat = dt.datetime.fromisoformat
# posttroll's datetime decoding of JSON objects (uid/uri kept as strings), compiled in _speedups
_JSON_DECODER = json.JSONDecoder(object_hook=iso_object_hook)


def decode(raw: str | bytes) -> Message:
    """Decode a wire string exactly as posttroll's Message.decode, keeping ``uid``/``uri`` strings.

    Same splitting, version check, time and payload rules, and the same datetimes
    in the data; every failure (including the ValueError/IndexError posttroll lets
    escape for a bad time or a missing payload) becomes MessageDecodeError.

    This is the one decode path of every receiver (subscriptions, request ports,
    replies), and a peer controls its input: whatever the decoder raises on it
    (RecursionError for deeply nested JSON, OverflowError or MemoryError from
    absurd values, ...) is a malformed message, never an exception that would end
    a receive loop or lose the other requests of a batch.
    """
    try:
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("iso-8859-1")
        else:
            text = raw
        if not text.startswith(_MAGIC):
            raise MessageError("This is not a 'pytroll:/' message (wrong magick word)")
        parts = _HEADER_SPLIT.split(text[9:], maxsplit=6)
        if len(parts) < 5:
            raise MessageError("Could not decode raw string")
        version = parts[4]
        if not version <= MESSAGE_VERSION:
            raise MessageError(f"Invalid Message version: '{version}'")
        subject, atype, sender = parts[0].strip(), parts[1].strip(), parts[2].strip()
        time = _fromisoformat(parts[3].strip())
        binary = False
        if len(parts) < 6:
            data: Any = ""
        else:
            mimetype = parts[5].lower()
            payload = parts[6]
            if mimetype == "application/json":
                try:
                    data = _JSON_DECODER.decode(payload)
                except ValueError:
                    raise MessageError(f"JSON decode failed on '{payload[:36]} ...'") from None
            elif mimetype == "text/ascii":
                data = str(payload)
            elif mimetype == "binary/octet-stream":
                data, binary = payload, True
            else:
                raise MessageError(f"Unknown mime-type '{mimetype}'")
        if not subject or not atype or not sender:
            raise MessageError(f"Invalid subject, type or sender: {subject!r} {atype!r} {sender!r}")
    except Exception as exc:  # noqa: BLE001 - see the docstring: any failure on peer input is malformed input
        shown = raw[:120] if isinstance(raw, str) else repr(raw[:120])
        raise MessageDecodeError(f"malformed message ({exc.__class__.__name__}: {str(exc)[:120]}): {shown}") \
            from None
    message = Message.__new__(Message)
    message.__dict__.update(subject=subject, type=atype, sender=sender, time=time, version=version, data=data,
                            binary=binary)
    return message


MAX_ECHO = 300


def shorten(text: object, limit: int = MAX_ECHO) -> str:
    """``str(text)``, cut to ``limit`` characters with an ellipsis and the full length.

    Whatever a peer sent may be echoed in a reply or a log line, but never at its
    full size: a 50 MB field must not become a 50 MB ``err`` reply or WARNING line.
    Redact before shortening (a cut URL could hide its ``@`` from the redaction).
    """
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def entries_with(data: Any, key: str) -> list[dict]:
    """Every dict holding ``key`` anywhere in message data (top level, dataset and collection entries)."""
    found: list[dict] = []
    if isinstance(data, dict):
        if key in data:
            found.append(data)
        for value in data.values():
            if isinstance(value, (dict, list)):
                found.extend(entries_with(value, key))
    elif isinstance(data, list):
        for item in data:
            found.extend(entries_with(item, key))
    return found


def magickfy_topics(topics: str | Iterable[str]) -> list[str]:
    """zmq subscription prefixes for posttroll topics (``/a/b`` -> ``pytroll://a/b``)."""
    return _PosttrollSubscriber._magickfy_topics(list([topics] if isinstance(topics, str) else topics))


def heartbeat_subject(name: str) -> str:
    return f"/heartbeat/{name}"


def own_ip() -> str:
    """This host's outward address, as posttroll computes it."""
    return str(get_own_ip())


def _port_range() -> tuple[int, int]:
    return (int(posttroll_config.get("pub_min_port", 49152)), int(posttroll_config.get("pub_max_port", 65536)))


def _tcp(host: str, port: int | str) -> str:
    if host.startswith("tcp://"):
        return f"{host}:{port}"
    return f"tcp://{host}:{port}"


# --------------------------------------------------------------------------------------------------
# CURVE authentication (ZeroMQ CURVE directly: posttroll 1.13 has it only process-wide)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CurveServerKeys:
    """A binding socket that requires CURVE: its own key pair and the directory of allowed client keys."""

    secret_key_file: str
    clients_directory: str


@dataclass(frozen=True)
class CurveClientKeys:
    """A connecting socket that authenticates with CURVE: its key pair and the server's public key."""

    secret_key_file: str
    server_public_key_file: str


class SecureBinding:
    """An own zmq context with its own ZAP authenticator, for the CURVE sockets of one object.

    posttroll shares one authenticator per process and stops it with the first
    publisher that stops (its pitfall); owning context and authenticator here
    means one service's stop never disables another's authentication.
    """

    def __init__(self, keys: CurveServerKeys):
        from zmq.auth import load_certificate
        from zmq.auth.thread import ThreadAuthenticator

        self.context = zmq.Context()
        self.authenticator = ThreadAuthenticator(self.context)
        self.authenticator.start()
        self.authenticator.configure_curve(domain="*", location=keys.clients_directory)
        self.public, self.secret = load_certificate(keys.secret_key_file)
        if self.secret is None:
            raise ValueError(f"{keys.secret_key_file} holds no secret key")

    def socket(self, socket_type: int, address: str, options: dict, port_range: tuple[int, int]):
        sock = self.context.socket(socket_type)
        for option, value in options.items():
            sock.setsockopt(option, value)
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        parts = address.rsplit(":", 1)
        if parts[1] == "0":
            port = sock.bind_to_random_port(parts[0], min_port=port_range[0], max_port=port_range[1])
        else:
            sock.bind(address)
            port = int(parts[1])
        return sock, port

    def close(self) -> None:
        self.authenticator.stop()
        self.context.term()


def curve_client_socket(socket_type: int, address: str, options: dict, keys: CurveClientKeys):
    """A connecting socket with CURVE client keys (posttroll's context; no authenticator needed)."""
    from zmq.auth import load_certificate

    sock = get_context().socket(socket_type)
    for option, value in options.items():
        sock.setsockopt(option, value)
    public, secret = load_certificate(keys.secret_key_file)
    server_public, _ = load_certificate(keys.server_public_key_file)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public
    sock.connect(address)
    return sock


def _server_socket(socket_type: int, address: str, options: dict, curve: CurveServerKeys | None):
    """(socket, port, secure binding or None): through posttroll, or with our own CURVE context."""
    if curve is None:
        sock, port, _ = set_up_server_socket(socket_type, address, options, _port_range())
        return sock, port, None
    binding = SecureBinding(curve)
    try:
        sock, port = binding.socket(socket_type, address, options, _port_range())
    except zmq.ZMQError:
        binding.close()
        raise
    return sock, port, binding


def _client_socket(socket_type: int, address: str, options: dict, curve: CurveClientKeys | None):
    if curve is None:
        return set_up_client_socket(socket_type, address, options)
    return curve_client_socket(socket_type, address, options, curve)


# --------------------------------------------------------------------------------------------------
# Publisher
# --------------------------------------------------------------------------------------------------

class Publisher:
    """A PUB socket on ``tcp://<bind_address>:<port>`` with heartbeats and optional registration.

    ``nameservers``: ``False`` or empty -> no registration; a list of hosts -> register
    ``name`` with each (posttroll's designated-receiver broadcaster, no multicast);
    ``None`` -> posttroll's default (UDP multicast), as the original client does when
    ``nameservers`` is unset.

    ``send`` is thread-safe. Messages that cannot be queued within ``send_timeout``
    (a subscriber ``sndhwm`` messages behind) are dropped and counted in ``dropped``.
    """

    def __init__(self, name: str, port: int = 0, bind_address: str = "*",
                 nameservers: Sequence[str] | bool | None = False, aliases: Sequence[str] = (),
                 advertise_address: str | None = None, sndhwm: int = DEFAULT_SNDHWM,
                 send_timeout: float = 1.0, broadcast_interval: float = 2.0,
                 curve: CurveServerKeys | None = None):
        self.name = name
        self.curve = curve
        self._binding: SecureBinding | None = None
        self._requested_port = int(port)
        self.bind_address = bind_address or "*"
        self.nameservers = nameservers
        self.aliases = list(aliases)
        self.advertise_address = advertise_address
        self.sndhwm = sndhwm
        self.send_timeout = send_timeout
        self.broadcast_interval = broadcast_interval
        self.port: int | None = None
        self.sent = 0
        self.dropped = 0
        self._socket = None
        self._broadcaster = None
        self._lock = threading.Lock()
        self._last_beat = 0.0

    @property
    def address(self) -> str:
        host = self.advertise_address or self._default_advertise()
        return _tcp(host, self.port)

    def _default_advertise(self) -> str:
        if self.bind_address not in ("*", "0.0.0.0", ""):
            return self.bind_address
        return own_ip()

    def start(self) -> Publisher:
        # No XPUB_NODROP: with it, one subscriber at its high-water mark would block the messages of all
        # the others; without it that subscriber alone misses messages (and our clients catch up).
        options = {zmq.SNDHWM: self.sndhwm, zmq.LINGER: 100}
        try:
            self._socket, self.port, self._binding = _server_socket(
                zmq.XPUB, _tcp(self.bind_address, self._requested_port), options, self.curve)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind publisher {self.name} on "
                                     f"{self.bind_address}:{self._requested_port}: {exc}") from None
        if self.nameservers is None or (self.nameservers and self.nameservers is not True):
            nameservers = None if self.nameservers is None else list(self.nameservers)
            self._broadcaster = sendaddressservice(self.name, self.address, [self.name] + self.aliases,
                                                   self.broadcast_interval, nameservers)
            self._broadcaster.start()
        logger.info("Publisher %s listening on %s:%s", self.name, self.bind_address, self.port)
        return self

    def send(self, message: Message | str) -> bool:
        """Queue one message; False (and counted) if it had to be dropped."""
        raw = wire(message)
        deadline = None
        with self._lock:
            if self._socket is None:
                raise RuntimeError(f"publisher {self.name} is not started")
            while True:
                try:
                    self._socket.send_string(raw, zmq.NOBLOCK)
                    self.sent += 1
                    self._drain_subscriptions()
                    return True
                except zmq.Again:
                    now = time.monotonic()
                    deadline = deadline or now + self.send_timeout
                    if now >= deadline:
                        self.dropped += 1
                        logger.warning("Publisher %s dropped a message: a subscriber is %d messages behind",
                                       self.name, self.sndhwm)
                        return False
                    self._drain_subscriptions()
                    time.sleep(0.001)

    def _drain_subscriptions(self) -> None:
        """Read (and ignore) subscription frames an XPUB socket receives, so they never pile up."""
        try:
            while True:
                self._socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass

    def heartbeat(self, min_interval: float = HEARTBEAT_INTERVAL) -> bool:
        """Send ``/heartbeat/<name>`` if ``min_interval`` s passed since the last one (as posttroll)."""
        now = time.monotonic()
        if self._last_beat and now - self._last_beat < min_interval:
            return False
        self._last_beat = now
        return self.send(make_message(heartbeat_subject(self.name), "beat", {"min_interval": min_interval}))

    def stop(self) -> None:
        if self._broadcaster is not None:
            self._broadcaster.stop()
            self._broadcaster = None
        with self._lock:
            if self._socket is not None:
                close_socket(self._socket)
                self._socket = None
            if self._binding is not None:
                self._binding.close()
                self._binding = None

    close = stop


# --------------------------------------------------------------------------------------------------
# Subscriber
# --------------------------------------------------------------------------------------------------

def lookup_addresses(service: str, nameserver: str = "localhost", timeout: float = 10.0) -> list[str]:
    """Publisher addresses (``tcp://host:port``) registered for ``service`` ("" = all) on a nameserver."""
    from posttroll.ns import get_pub_address

    try:
        found = get_pub_address(service, timeout=timeout, nameserver=nameserver)
    except (TimeoutError, zmq.ZMQError) as exc:
        logger.warning("Nameserver %s did not answer for service %r: %s", nameserver, service, exc)
        return []
    return [entry["URI"] for entry in found or [] if isinstance(entry, dict) and "URI" in entry]


class Subscriber:
    """SUB sockets to publishers, drained without sleeping; use from a single thread.

    ``on_malformed(exc)`` is called for every message that could not be decoded
    (for a metric); the message is skipped.
    """

    def __init__(self, addresses: Iterable[str] = (), topics: str | Iterable[str] = "",
                 rcvhwm: int = DEFAULT_RCVHWM,
                 on_malformed: Callable[[MessageDecodeError], None] | None = None,
                 curve: CurveClientKeys | None = None, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.topics = magickfy_topics(topics)
        self.curve = curve
        self.rcvhwm = rcvhwm
        self.max_message_size = max_message_size
        self.on_malformed = on_malformed
        self.malformed = 0
        self._sockets: dict[str, zmq.Socket] = {}
        self._poller = zmq.Poller()
        for address in addresses:
            self.add(address)

    @property
    def addresses(self) -> list[str]:
        return list(self._sockets)

    def add(self, address: str, topics: str | Iterable[str] | None = None) -> None:
        if address in self._sockets:
            return
        options = {zmq.RCVHWM: self.rcvhwm, zmq.LINGER: 0, zmq.MAXMSGSIZE: self.max_message_size}
        sock = _client_socket(zmq.SUB, address, options, self.curve)
        for topic in magickfy_topics(topics) if topics is not None else self.topics:
            sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        self._sockets[address] = sock
        self._poller.register(sock, zmq.POLLIN)
        logger.debug("Subscribed to %s", address)

    def remove(self, address: str) -> None:
        sock = self._sockets.pop(address, None)
        if sock is not None:
            self._poller.unregister(sock)
            close_socket(sock)

    def reconnect(self, address: str) -> None:
        """Drop and recreate the socket of one publisher (resubscribe after silence)."""
        self.remove(address)
        self.add(address)

    def recv(self, timeout: float | None = 1.0) -> list[tuple[str, Message]]:
        """Wait up to ``timeout`` s, then return every waiting (address, message), decoded."""
        if not self._sockets:
            time.sleep(timeout or 0)
            return []
        ready = dict(self._poller.poll(None if timeout is None else int(timeout * 1000)))
        received: list[tuple[str, Message]] = []
        for address, sock in list(self._sockets.items()):
            if sock not in ready:
                continue
            while True:
                try:
                    raw = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    received.append((address, decode(raw)))
                except MessageDecodeError as exc:
                    self.malformed += 1
                    logger.warning("Skipping a malformed message from %s: %s", address, exc)
                    if self.on_malformed is not None:
                        self.on_malformed(exc)
        return received

    def close(self) -> None:
        for address in list(self._sockets):
            self.remove(address)


# --------------------------------------------------------------------------------------------------
# Requests: ROUTER server, DEALER requester (REQ-compatible envelope)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One request received by a RequestServer; reply with ``server.reply(request, message)``."""

    identity: bytes
    raw: bytes
    message: Message | None
    error: MessageDecodeError | None = None


class RequestServer:
    """A ROUTER socket answering REQ (and DEALER) clients, as the original's request port.

    ``poll`` runs in the thread that owns the socket; ``reply`` may be called from any
    thread (worker pools): replies are queued and a pipe wakes the owner's poll.
    """

    def __init__(self, port: int, bind_address: str = "*", rcvhwm: int = 10_000,
                 curve: CurveServerKeys | None = None, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.requested_port = port
        self.max_message_size = max_message_size
        self.curve = curve
        self._binding: SecureBinding | None = None
        self.bind_address = bind_address or "*"
        self.rcvhwm = rcvhwm
        self.port: int | None = None
        self._socket = None
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = -1, -1
        self._poller = zmq.Poller()
        self._owner: int | None = None

    def start(self) -> RequestServer:
        options = {zmq.RCVHWM: self.rcvhwm, zmq.LINGER: 100, zmq.ROUTER_MANDATORY: 0,
                   zmq.MAXMSGSIZE: self.max_message_size}
        try:
            self._socket, self.port, self._binding = _server_socket(
                zmq.ROUTER, _tcp(self.bind_address, self.requested_port), options, self.curve)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind request port {self.bind_address}:{self.requested_port}: "
                                     f"{exc}") from None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        return self

    def poll(self, timeout: float = 1.0) -> list[Request]:
        """Send queued replies, wait up to ``timeout`` s, return the requests received."""
        self._owner = threading.get_ident()
        self._flush_replies()
        events = dict(self._poller.poll(int(timeout * 1000)))
        if self._wake_r in events:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            self._flush_replies()
        requests: list[Request] = []
        if self._socket in events:
            while True:
                try:
                    frames = self._socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                requests.append(self._parse(frames))
        return requests

    @staticmethod
    def _parse(frames: list[bytes]) -> Request:
        identity = frames[0]
        if len(frames) != 3 or frames[1] != b"":
            err = MessageDecodeError(f"invalid request: {len(frames)} frames, expected identity, empty, payload")
            return Request(identity, b"", None, err)
        try:
            return Request(identity, frames[2], decode(frames[2]))
        except MessageDecodeError as exc:
            return Request(identity, frames[2], None, exc)

    def reply(self, request: Request | bytes, message: Message | str) -> None:
        identity = request.identity if isinstance(request, Request) else request
        raw = wire(message)
        self._replies.put((identity, raw.encode("utf-8")))
        if threading.get_ident() == self._owner:
            self._flush_replies()
        elif self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except (BlockingIOError, OSError):
                pass

    def _flush_replies(self) -> None:
        while True:
            try:
                identity, raw = self._replies.get_nowait()
            except queue.Empty:
                return
            try:
                self._socket.send_multipart([identity, b"", raw], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.warning("Could not send a reply on port %s: %s", self.port, exc)

    def close(self) -> None:
        if self._socket is not None:
            self._flush_replies()
            self._poller.unregister(self._socket)
            close_socket(self._socket)
            self._socket = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._binding is not None:
            self._binding.close()
            self._binding = None


class Requester:
    """Send requests to a server's request port and wait for the replies.

    Uses DEALER sockets with the REQ envelope, so it talks to the original
    server's ROUTER as a REQ socket would. A request is resent on the same socket
    after ``resend_after`` s (our server answers duplicates of an in-flight push
    without starting a second transfer); the first reply wins.

    With ``pooled``, a socket that got exactly one reply to exactly one request is
    kept for the next request (no new TCP connection and handshake per file);
    any other socket (timed out, resent, malformed reply) is closed, so a late
    reply can never be taken for the answer to another request. Thread-safe.

    ``cancel()`` (or ``close()``), from any thread, makes the requests waiting for
    a reply and every later one raise ``RequestError`` ("cancelled") at once: a
    stopping client is not held up for the reply timeout. A request waits on its
    socket and on a wake-up pipe (created with the first request, closed by
    ``close()`` once no request uses it, or when the requester is collected).
    """

    def __init__(self, address: str, curve: CurveClientKeys | None = None, pooled: bool = False,
                 max_idle: int = 8, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.address = address if address.startswith("tcp://") else f"tcp://{address}"
        self.max_message_size = max_message_size
        self.curve = curve
        self.pooled = pooled
        self.max_idle = max_idle
        self._idle: list = []
        self._lock = threading.Lock()
        self._cancelled = False
        self._closed = False
        self._active = 0
        self._pipe: list[int] = []  # [read fd, write fd] once a request made it

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _cancelled_error(self, message: Message) -> RequestError:
        return RequestError(f"{message.type!r} request to {self.address} cancelled: the requester was closed")

    def _enter(self, message: Message) -> int:
        """Count a request in; return the wake-up pipe's read end. Raises when cancelled."""
        with self._lock:
            if self._cancelled:
                raise self._cancelled_error(message)
            if not self._pipe:
                import weakref

                read_fd, write_fd = os.pipe()
                os.set_blocking(write_fd, False)
                self._pipe[:] = [read_fd, write_fd]
                weakref.finalize(self, Requester._close_pipe, self._pipe)
            self._active += 1
            return self._pipe[0]

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._closed and not self._active:
                Requester._close_pipe(self._pipe)

    @staticmethod
    def _close_pipe(pipe: list[int]) -> None:
        while pipe:
            try:
                os.close(pipe.pop())
            except OSError:
                pass

    def _checkout(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        options = {zmq.LINGER: 0, zmq.MAXMSGSIZE: self.max_message_size}
        return _client_socket(zmq.DEALER, self.address, options, self.curve)

    def _checkin(self, sock, reusable: bool) -> None:
        if reusable and self.pooled:
            with self._lock:
                if len(self._idle) < self.max_idle and not self._cancelled:
                    self._idle.append(sock)
                    return
        close_socket(sock)

    def request(self, message: Message, timeout: float, resend_after: float | None = None) -> Message:
        """Send ``message``, return the reply; RequestError on timeout, bad reply or ``cancel()``."""
        raw = wire(message).encode("utf-8")
        wake = self._enter(message)
        try:
            sock = self._checkout()
            reusable = False
            try:
                poller = zmq.Poller()
                poller.register(sock, zmq.POLLIN)
                poller.register(wake, zmq.POLLIN)
                sock.send_multipart([b"", raw])
                sends = 1
                deadline = time.monotonic() + timeout
                next_resend = time.monotonic() + resend_after if resend_after else None
                while True:
                    now = time.monotonic()
                    if now >= deadline:
                        raise RequestError(f"no reply from {self.address} within {timeout:g} s "
                                           f"to a {message.type!r} request")
                    wait = deadline - now
                    if next_resend is not None:
                        wait = min(wait, max(0.0, next_resend - now))
                    events = dict(poller.poll(int(wait * 1000) + 1))
                    if wake in events:
                        raise self._cancelled_error(message)
                    if sock in events:
                        frames = sock.recv_multipart()
                        try:
                            reply = decode(frames[-1])
                        except MessageDecodeError as exc:
                            raise RequestError(f"malformed reply from {self.address}: {exc}") from None
                        reusable = sends == 1 and len(frames) == 2 and frames[0] == b""
                        return reply
                    if next_resend is not None and time.monotonic() >= next_resend:
                        sock.send_multipart([b"", raw])
                        sends += 1
                        next_resend = time.monotonic() + resend_after
            finally:
                self._checkin(sock, reusable)
        finally:
            self._leave()

    def cancel(self) -> None:
        """Wake every waiting request (it raises RequestError "cancelled"); refuse later ones. Any thread."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            if self._pipe:
                try:
                    os.write(self._pipe[1], b"x")  # stays readable: wakes every waiter, now and later
                except OSError:
                    pass

    def close(self) -> None:
        """Cancel waiting requests, close the idle sockets (and the wake-up pipe once unused)."""
        self.cancel()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            if not self._active:
                Requester._close_pipe(self._pipe)
        for sock in idle:
            close_socket(sock)


# --------------------------------------------------------------------------------------------------
# An in-process nameserver (for `trollmoves demo`; tests use the real `nameserver` process)
# --------------------------------------------------------------------------------------------------

class NameServerThread:
    """posttroll's own NameServer, without multicast, in a thread we can stop."""

    def __init__(self, bind_address: str = "127.0.0.1"):
        from posttroll.ns import NameServer

        self._ns = NameServer(multicast_enabled=False)
        self._bind_address = bind_address
        self._thread = threading.Thread(target=self._run, name="nameserver", daemon=True)

    def _run(self) -> None:
        try:
            self._ns.run(nameserver_address=self._bind_address)
        except Exception:  # pragma: no cover - logged for the operator
            logger.exception("Nameserver stopped with an error")

    def start(self) -> NameServerThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._ns.stop()
        self._thread.join(timeout)


def context_term_on_exit() -> None:  # pragma: no cover - used by the program layer only
    """Terminate posttroll's zmq context (sockets must be closed first)."""
    get_context().term()


def configured_message_version() -> str | None:
    return posttroll_config.get("message_version", None)
