"""Publish and subscribe: a PUB socket with heartbeats and registration, SUB sockets drained per poll.

Against posttroll's pitfalls (``shared/docs/posttroll-trollsift.md``): the subscriber
drains every waiting message per poll and never sleeps (posttroll sleeps ~80 µs per
message, capping it near 8k msg/s); high-water marks are set deliberately (zmq's
default of 1000 drops bursts) and a message a publisher could not queue is counted,
not silently lost; a malformed message is counted and skipped, it never ends a
receive loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import zmq
from posttroll.backends.zmq.socket import close_socket
from posttroll.message import Message
from posttroll.message_broadcaster import sendaddressservice
from posttroll.subscriber import Subscriber as _PosttrollSubscriber

from trollmoves.errors import MessageDecodeError
from trollmoves.messaging.codec import decode, make_message, wire
from trollmoves.messaging.curve import CurveClientKeys, CurveServerKeys, SecureBinding
from trollmoves.messaging.sockets import (
    DEFAULT_MAX_MESSAGE_SIZE,
    client_socket,
    own_ip,
    server_socket,
    tcp_address,
)

logger = logging.getLogger(__name__)

DEFAULT_SNDHWM = 100_000
DEFAULT_RCVHWM = 100_000
HEARTBEAT_INTERVAL = 30


def magickfy_topics(topics: str | Iterable[str]) -> list[str]:
    """zmq subscription prefixes for posttroll topics (``/a/b`` -> ``pytroll://a/b``)."""
    return _PosttrollSubscriber._magickfy_topics(list([topics] if isinstance(topics, str) else topics))


def heartbeat_subject(name: str) -> str:
    return f"/heartbeat/{name}"


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
        return tcp_address(host, self.port)

    def _default_advertise(self) -> str:
        if self.bind_address not in ("*", "0.0.0.0", ""):
            return self.bind_address
        return own_ip()

    def start(self) -> Publisher:
        # No XPUB_NODROP: with it, one subscriber at its high-water mark would block the messages of all
        # the others; without it that subscriber alone misses messages (and our clients catch up).
        options = {zmq.SNDHWM: self.sndhwm, zmq.LINGER: 100}
        try:
            self._socket, self.port, self._binding = server_socket(
                zmq.XPUB, tcp_address(self.bind_address, self._requested_port), options, self.curve)
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
        """Read (and ignore) subscription frames an XPUB socket receives, so they never pile up.

        ``EVENTS`` first, after every send: it makes zmq apply the subscriptions that arrived (a
        subscriber that joined gets the very next message, as before), and only when frames are
        waiting is ``recv`` called; a recv that finds nothing raises zmq.Again, and building that
        exception after every message sent cost more than the send.
        """
        sock = self._socket
        try:
            while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                sock.recv(zmq.NOBLOCK)
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
        sock = client_socket(zmq.SUB, address, options, self.curve)
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
