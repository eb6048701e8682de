"""MQTT publisher and subscriber for the WIS2 bridge, over paho-mqtt (>= 2.1, callback API 2).

Why wrappers: paho leaves the decisions that matter for WIS2 to the caller; here they are made once.
QoS 1, no retain; MQTT 5 first (only it says *why* a publish was refused: PUBACK 135 for an ACL refusal,
which mosquitto acknowledges and drops silently on 3.1.1), 3.1.1 when the broker answers "unsupported
protocol version"; a bad password fails ``start()`` while an unreachable broker is retried (1..60 s);
a bounded queue across reconnects; persistent subscriber sessions with manual acks, so a crash before
a file is stored means a redelivery, not a loss. Errors are :class:`MqttError` whose ``reason`` (from
:data:`REASONS`) is a metric label for the bridge; texts name broker ``host:port`` and client id, never
the password.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from urllib.parse import unquote, urlsplit

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from trollmoves.errors import TrollmovesError
from trollmoves.redact import redact

logger = logging.getLogger(__name__)
_paho_logger = logging.getLogger(f"{__name__}.paho")  # paho's own lines at DEBUG: ours say what matters

REASONS = frozenset({"auth", "not_authorised", "refused", "tls", "unreachable", "timeout", "protocol",
                     "closed", "queue_full"})
"""Every ``MqttError.reason`` (and ``PublishOutcome.reason``): a small fixed set, usable as a label."""

_SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
_PROTOCOLS = {"auto": MQTTProtocolVersion.MQTTv5, "5": MQTTProtocolVersion.MQTTv5,
              "3.1.1": MQTTProtocolVersion.MQTTv311}
_OK = MQTTErrorCode.MQTT_ERR_SUCCESS
_UNSUPPORTED_PROTOCOL = 132
_AUTH_CODES = frozenset({134, 135, 140})  # bad user name or password, not authorised, bad auth method
_FATAL_AT_START = frozenset({"auth", "tls", "protocol", "not_authorised"})
_PUBACK_REASONS = {135: "not_authorised", 144: "protocol", 145: "protocol", 153: "protocol"}  # else "refused"


class MqttError(TrollmovesError):
    """An MQTT failure; ``reason`` is one of :data:`REASONS`. The text is passed through ``redact``."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown MqttError reason {reason!r}")
        self.reason = reason
        super().__init__(redact(message))


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to connect. Credentials inside ``url`` move to ``username``/``password``.

    ``ca_file`` None: the system store (``mqtts://`` only). ``client_id`` None: a random one (publishers
    only: a subscriber's session is found by its id). ``protocol``: "auto" (5, else 3.1.1), "5", "3.1.1".
    ``session_expiry`` (s): how long the broker keeps an offline subscriber's session and messages.
    """

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    client_id: str | None = None
    protocol: str = "auto"
    keepalive: int = 60
    session_expiry: int = 86400
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.username is not None:
            for name, inside in (("username", parts.username), ("password", parts.password)):
                if inside is not None and getattr(self, name) not in (None, unquote(inside)):
                    raise ValueError(f"broker {redact(self.url)}: {name} given both in the url and separately")
                if inside is not None:
                    object.__setattr__(self, name, unquote(inside))
            object.__setattr__(self, "url", self.url.replace(parts.netloc, parts.netloc.rpartition("@")[2], 1))
        tls, _, _ = self.parse_url(self.url)
        for fine, problem in (
                (self.protocol in _PROTOCOLS, f"protocol must be auto, 5 or 3.1.1, got {self.protocol!r}"),
                (self.password is None or bool(self.username), "a password needs a username"),
                (self.ca_file is None or tls, f"ca_file {self.ca_file} given but the url is not mqtts://"),
                (self.client_id is None or bool(self.client_id), "client_id is empty"),
                (0 < self.keepalive <= 65535, f"keepalive must be 1..65535 s, got {self.keepalive!r}"),
                (0 <= self.session_expiry <= 0xFFFFFFFF, f"session_expiry out of range: {self.session_expiry!r}"),
                (self.connect_timeout > 0, f"connect_timeout must be > 0, got {self.connect_timeout!r}")):
            if not fine:
                raise ValueError(f"broker {self.url}: {problem}")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["password"] = None if self.password is None else "***"
        return f"BrokerSettings({', '.join(f'{key}={value!r}' for key, value in shown.items())})"

    __str__ = __repr__

    @staticmethod
    def parse_url(url: str) -> tuple[bool, str, int]:
        """``(tls, host, port)`` of ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; ValueError naming the url."""
        shown = redact(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            raise ValueError(f"broker url {shown}: {redact(err)}") from None
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"broker url {shown}: scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
        if not parts.hostname or port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"broker url {shown}: expected {parts.scheme}://host[:port] and nothing else")
        tls, default_port = _SCHEMES[parts.scheme]
        return tls, parts.hostname, port or default_port

    @property
    def address(self) -> str:  # host:port, for messages
        _, host, port = self.parse_url(self.url)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class PublishOutcome:
    """The broker's answer to one publish: ``ok`` False when its PUBACK code is >= 128."""

    ok: bool
    reason_code: int
    reason: str | None
    topic: str
    mid: int


class _Connection:
    """What publisher and subscriber share: one paho client, its state (``_lock``: callbacks run in
    paho's network thread) and its errors."""

    _manual_ack = _persistent = False
    _callbacks = ("on_pre_connect", "on_connect", "on_connect_fail", "on_disconnect")
    max_inflight, queue_size = 20, 0  # outgoing QoS 1 limits (0: unbounded)

    def __init__(self, settings: BrokerSettings, client_id: str):
        self.settings, self.client_id = settings, client_id
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._client: paho.Client | None = None
        self._settled = settings.protocol != "auto"  # protocol known: fixed, or learnt from a CONNACK
        self.connected = False  # read-only for users, like the two below
        self.last_error: MqttError | None = None
        self.protocol = "3.1.1" if settings.protocol == "3.1.1" else "5"  # after a fall-back, the one that worked
        self._generation = 0  # successful connects so far
        self._outcome: bool | MqttError | None = None  # what start() waits for
        self._logged_reason: str | None = None  # a repeated failure is logged at DEBUG only
        self._stopping = self._reported = False

    def _build(self) -> paho.Client:
        settings, v5 = self.settings, self.protocol == "5"
        tls, host, port = settings.parse_url(settings.url)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=_PROTOCOLS[self.protocol],
                             manual_ack=self._manual_ack, **({} if v5 else {"clean_session": not self._persistent}))
        client.on_log = lambda _client, _userdata, _level, text: _paho_logger.log(  # ERROR: a bug in a callback
            logging.ERROR if text.startswith("Caught exception") else logging.DEBUG, "%s", text)
        client.suppress_exceptions = True  # a bug in a callback is logged, it does not end the loop
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if tls:
            try:
                client.tls_set_context(ssl.create_default_context(cafile=settings.ca_file))
            except (OSError, ValueError) as err:
                raise MqttError("tls", f"broker {settings.address}: ca_file {settings.ca_file}: {err}") from None
        client.connect_timeout = settings.connect_timeout
        client.reconnect_delay_set(1, 60)  # seconds, doubling
        for name in self._callbacks:  # a callback of a client no longer ours (fall-back, stop) is dropped
            method = getattr(self, f"_{name}")
            setattr(client, name, lambda c, *args, m=method: m(c, *args) if c is self._client else None)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(self.queue_size)
        options: dict = {"clean_start": not self._persistent} if v5 else {}
        if v5 and self._persistent:
            options["properties"] = Properties(PacketTypes.CONNECT)
            options["properties"].SessionExpiryInterval = settings.session_expiry
        client.connect_async(host, port, settings.keepalive, **options)
        return client

    def _on_connected(self, client: paho.Client, flags) -> None:
        self._set_outcome(True)

    def _drain(self, timeout: float) -> None:
        """Subclasses wait for their in-flight work here (stop)."""

    def _stopped(self) -> None:
        """Subclasses release their waiters here (stop)."""

    def start(self, wait: float = 10.0) -> None:
        """Connect in paho's thread; return once connected, once a first attempt failed in a retryable way,
        or after *wait* s. Raise MqttError for what retrying cannot fix: "auth", "tls", "protocol", ACL."""
        with self._lock:
            if self._client is not None:
                raise RuntimeError(f"MQTT client {self.client_id} for {self.settings.address} already started")
            self._stopping, self._outcome = False, None
            self._client = self._build()
            self._client.loop_start()
            deadline = time.monotonic() + wait
            while self._outcome is None and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            outcome = self._outcome
        if isinstance(outcome, MqttError) and outcome.reason in _FATAL_AT_START:
            self.stop(self.settings.connect_timeout)
            raise outcome
        if outcome is None:
            logger.warning("not connected to %s as %s after %.0f s; still trying in the background",
                           self.settings.address, self.client_id, wait)

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect and end paho's thread (bounded by ``connect_timeout`` when a connect is under way)."""
        with self._lock:
            client = self._client
            if client is None or self._stopping:
                return
            self._stopping = True
            self._changed.notify_all()
        self._drain(timeout)
        client.disconnect()
        client.loop_stop()
        with self._lock:
            self._client, self.connected = None, False
            self._changed.notify_all()
        self._stopped()

    def _set_outcome(self, outcome: bool | MqttError) -> None:
        with self._lock:
            if self._outcome is None:
                self._outcome = outcome
            self._changed.notify_all()

    def _fail(self, error: MqttError) -> None:
        with self._lock:
            self.last_error, self._reported = error, True
            repeated, self._logged_reason = self._logged_reason == error.reason, error.reason
        level = logging.DEBUG if repeated else (logging.ERROR if error.reason in _FATAL_AT_START else logging.WARNING)
        logger.log(level, "%s", error)
        self._set_outcome(error)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        address, code = self.settings.address, reason_code.value
        if not reason_code.is_failure:
            with self._lock:
                self.connected, self._settled, self._logged_reason, self.last_error = True, True, None, None
                self._generation += 1
                self._changed.notify_all()
            logger.info("connected to %s as %s (MQTT %s%s)", address, self.client_id, self.protocol,
                        ", session present" if flags.session_present else "")
            self._on_connected(client, flags)
        elif code == _UNSUPPORTED_PROTOCOL and self.settings.protocol == "auto" and not self._settled:
            logger.info("broker %s does not speak MQTT 5 (%s); falling back to MQTT 3.1.1", address, reason_code)
            client.disconnect()
            client.loop_stop()  # from its own thread: returns at once, the thread ends after this callback
            with self._lock:
                if not self._stopping:
                    self.protocol = "3.1.1"
                    self._client = self._build()
                    self._client.loop_start()
        else:
            reason = "auth" if code in _AUTH_CODES else "protocol" if code == _UNSUPPORTED_PROTOCOL else "refused"
            hint = "" if reason != "auth" else (": check username and password" if self.settings.username else
                                                ": no username given and the broker refuses anonymous clients")
            self._fail(MqttError(reason, f"broker {address} refused client {self.client_id}: {reason_code} "
                                         f"(CONNACK {code}){hint}"))

    def _on_connect_fail(self, client, userdata) -> None:
        err = sys.exc_info()[1]  # paho calls this from its `except OSError` block
        reason = ("tls" if isinstance(err, ssl.SSLError) else
                  "timeout" if isinstance(err, TimeoutError) else "unreachable")
        self._fail(MqttError(reason, f"cannot connect to broker {self.settings.address} as {self.client_id}: "
                                     f"{err or 'connection failed'}"))

    def _on_pre_connect(self, client, userdata) -> None:
        self._reported = False  # no failure reported yet for this attempt

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was_connected, stopping, self.connected = self.connected, self._stopping, False
            self._changed.notify_all()
        where = f"broker {self.settings.address} ({self.client_id})"
        if stopping and was_connected:
            logger.info("disconnected from %s", where)
        elif not stopping and (was_connected or not self._reported):  # e.g. TLS port, no MQTT: before CONNACK
            self._fail(MqttError("closed", f"connection to {where} lost{'' if was_connected else ' before CONNACK'}: "
                                           f"{reason_code}; reconnecting"))


class _Slot(threading.Event):
    """One publish() waiting for its PUBACK: set with the reason ``code``, or ``closed`` by stop()."""

    code, closed = 0, False


class MqttPublisher(_Connection):
    """Publishes at QoS 1, retain false, and waits for each PUBACK. Thread-safe.

    At most ``max_inflight`` messages are unacknowledged on the wire (keep it <= the broker's Receive
    Maximum, which paho ignores; mosquitto's is 20), at most ``queue_size`` held in all, including
    those published while disconnected (paho sends them after reconnecting). MQTT 3.1.1 PUBACKs have
    no reason code: an ACL-refused publish looks successful there; use MQTT 5 to see refusals.
    """

    def __init__(self, settings: BrokerSettings, *, queue_size: int = 1000, name: str = "wis2", max_inflight: int = 20):
        if queue_size < 1 or max_inflight < 1:
            raise ValueError("queue_size and max_inflight must be >= 1")
        super().__init__(settings, settings.client_id or f"{name[:10]}-{secrets.token_hex(6)}")
        self.queue_size, self.max_inflight = queue_size, max_inflight
        self._slots: dict[int, _Slot] = {}
        self._abandoned: set[int] = set()  # mids whose publish() timed out; their PUBACK is ignored

    _callbacks = (*_Connection._callbacks, "on_publish")

    def publish(self, topic: str, payload: bytes, timeout: float = 30.0) -> PublishOutcome:
        """Publish and wait for the PUBACK, through reconnections, for up to *timeout* s.

        MqttError "queue_full" at once when ``queue_size`` messages are held; "timeout" when no PUBACK
        came in time (the message stays queued and may still go out: QoS 1 allows duplicates); "closed"
        once stopped. With protocol "auto" nothing goes to paho before a connection settled the version.
        """
        if not isinstance(topic, str) or not topic or any(c in topic for c in "+#\0"):
            raise ValueError(f"cannot publish to MQTT topic {topic!r}: empty, or holds a wildcard or NUL")
        address, deadline, who = self.settings.address, time.monotonic() + timeout, self.client_id
        with self._lock:
            while self._client is None or self._stopping or not self._settled:
                if self._client is None or self._stopping:
                    raise MqttError("closed", f"publisher {who} for {address} is stopped; {topic} not published")
                if (remaining := deadline - time.monotonic()) <= 0:
                    raise MqttError("timeout", f"not connected to broker {address} ({who}) within "
                                               f"{timeout:g} s; {topic} not published")
                self._changed.wait(remaining)
            client = self._client
        info = client.publish(topic, bytes(payload), qos=1, retain=False)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise MqttError("queue_full", f"{self.queue_size} messages already wait for broker {address} "
                                          f"({who}); {topic} not published")
        if info.rc not in (_OK, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttError("protocol", f"cannot publish {topic} to {address}: {paho.error_string(info.rc)}")
        with self._lock:
            slot = self._slots.setdefault(info.mid, _Slot())
        slot.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._slots.pop(info.mid, None)
            if not slot.is_set():
                self._abandoned.add(info.mid)
                state = "connected, no PUBACK" if self.connected else "not connected"
                raise MqttError("timeout", f"{topic} not acknowledged by broker {address} ({who}) within "
                                           f"{timeout:g} s ({state}); it stays queued")
        if slot.closed:
            raise MqttError("closed", f"publisher {who} stopped before broker {address} acknowledged {topic}")
        if slot.code >= 128:
            logger.warning("broker %s refused %s from %s: PUBACK %d (%s)", address, topic, who, slot.code,
                           _PUBACK_REASONS.get(slot.code, "refused"))
            return PublishOutcome(False, slot.code, _PUBACK_REASONS.get(slot.code, "refused"), topic, info.mid)
        logger.debug("published %s to %s (mid %d)", topic, address, info.mid)
        return PublishOutcome(True, slot.code, None, topic, info.mid)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            if mid in self._abandoned:
                self._abandoned.discard(mid)
                return
            slot = self._slots.setdefault(mid, _Slot())  # may come before publish() registered it
            slot.code = getattr(reason_code, "value", 0)
            slot.set()
            self._changed.notify_all()

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while (any(not slot.is_set() for slot in self._slots.values())
                   and (remaining := deadline - time.monotonic()) > 0):
                self._changed.wait(remaining)

    def _stopped(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                if not slot.is_set():
                    slot.closed = True
                    slot.set()
            self._abandoned.clear()


class Delivery:
    """One received message. Call :meth:`ack` once it is safely handled (file stored).

    Until then it is in flight: redelivered after a reconnect (``duplicate`` True), and the broker sends
    no more than its in-flight limit (mosquitto: 20) unacknowledged, so every delivery must be acked in
    the end, refused ones included.
    """

    __slots__ = ("topic", "payload", "mid", "qos", "duplicate", "retain", "_owner", "_generation", "_acked")

    def __init__(self, topic: str, payload: bytes, mid: int, qos: int, duplicate: bool, retain: bool,
                 owner: MqttSubscriber, generation: int):
        self.topic, self.payload, self.mid, self.qos = topic, payload, mid, qos
        self.duplicate, self.retain = duplicate, retain
        self._owner, self._generation, self._acked = owner, generation, False

    def __repr__(self) -> str:
        return (f"Delivery(topic={self.topic!r}, mid={self.mid}, qos={self.qos}, duplicate={self.duplicate}, "
                f"{len(self.payload)} bytes)")

    def ack(self) -> bool:
        """Send the PUBACK; idempotent, callable from any thread. False when nothing was sent: acked
        before, or the connection it came on is gone (the broker then redelivers it as a new Delivery)."""
        return self._owner._ack(self)


class MqttSubscriber(_Connection):
    """Receives QoS 1 messages on a persistent session with manual acks.

    The session (fixed ``client_id``; MQTT 5 ``clean_start=False`` + Session Expiry Interval, or 3.1.1
    ``clean_session=False``) keeps subscriptions and queues messages while the subscriber is away;
    subscriptions are renewed on every connect anyway. ``shared_group`` subscribes to
    ``$share/<group>/<filter>`` so that several instances split the stream.
    ``on_message(delivery)`` runs in paho's network thread: it must return fast (hand the delivery to a
    worker that acks later), as nothing else is received or acked meanwhile. Its exceptions are logged
    and leave the delivery unacknowledged.
    """

    _manual_ack = _persistent = True
    _callbacks = (*_Connection._callbacks, "on_message", "on_subscribe")

    def __init__(self, settings: BrokerSettings, filters: Sequence[str], on_message: Callable[[Delivery], None],
                 *, shared_group: str | None = None):
        if not settings.client_id:
            raise ValueError(f"broker {settings.url}: a subscriber needs a fixed client_id (its session's key)")
        if isinstance(filters, str) or not filters:
            raise ValueError(f"broker {settings.url}: expected a list of topic filters, got {filters!r}")
        for topic_filter in filters:  # checked here: paho would raise in its network thread
            levels = topic_filter.split("/") if isinstance(topic_filter, str) else [""]
            if (not topic_filter or "\0" in topic_filter or topic_filter.startswith("$share/") or "#" in levels[:-1]
                    or any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels)):
                raise ValueError(f"invalid MQTT topic filter {topic_filter!r} (use shared_group, not $share/)")
        if shared_group is not None and (not shared_group or any(c in shared_group for c in "/+#\0")):
            raise ValueError(f"invalid shared_group {shared_group!r}: no /, +, # allowed")
        super().__init__(settings, settings.client_id)
        self.filters = tuple(filters)
        self.subscriptions = tuple(f"$share/{shared_group}/{f}" if shared_group else f for f in self.filters)
        self._callback = on_message

    def _on_connected(self, client: paho.Client, flags) -> None:
        if not flags.session_present:
            logger.log(logging.WARNING if self._generation > 1 else logging.INFO,
                       "broker %s holds no session for %s: a new one starts (messages published while it was "
                       "offline are not in it)", self.settings.address, self.client_id)
        qos = SubscribeOptions(qos=1) if self.protocol == "5" else 1
        rc, _ = client.subscribe([(topic_filter, qos) for topic_filter in self.subscriptions])
        if rc != _OK:
            logger.warning("cannot send SUBSCRIBE to %s: %s", self.settings.address, paho.error_string(rc))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = ", ".join(f"{sub} ({code})" for sub, code in zip(self.subscriptions, reason_codes) if code.is_failure)
        if refused:
            reason = "not_authorised" if any(code.value == 135 for code in reason_codes) else "refused"
            self._fail(MqttError(reason, f"broker {self.settings.address} refused subscriptions of {self.client_id}: "
                                         f"{refused}"))
        else:
            logger.info("subscribed on %s to %s", self.settings.address, ", ".join(self.subscriptions))
            self._set_outcome(True)

    def _on_message(self, client, userdata, message) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            logger.warning("dropping a message with a non-UTF-8 topic from %s", self.settings.address)
            client.ack(message.mid, message.qos)
            return
        delivery = Delivery(topic, bytes(message.payload), message.mid, message.qos, bool(message.dup),
                            bool(message.retain), self, self._generation)
        logger.debug("received %r from %s", delivery, self.settings.address)
        try:
            self._callback(delivery)
        except Exception:
            logger.exception("on_message failed for %s from %s; left unacknowledged", topic, self.settings.address)

    def _ack(self, delivery: Delivery) -> bool:
        with self._lock:
            if delivery._acked:
                return False
            delivery._acked = True
            client = self._client
            current = client is not None and self.connected and self._generation == delivery._generation
        if not current:
            logger.debug("not acking %r: its connection to %s is gone, the broker will redeliver it",
                         delivery, self.settings.address)
            return False
        return delivery.qos == 0 or client.ack(delivery.mid, delivery.qos) == _OK
