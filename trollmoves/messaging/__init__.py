"""Messaging: the only package of trollmoves that imports posttroll.

Messages are encoded and decoded with posttroll's own ``Message`` (the wire format
is posttroll's, byte for byte); this package absorbs posttroll's pitfalls
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

One module per job; callers import the names from here (``messaging.Publisher``):

* ``codec``: make_message, encode, wire, decode (posttroll's wire format), shorten;
* ``entries``: walk_entries, the one walker over a payload's file entries;
* ``curve``: CURVE keys and authenticated sockets, the keys of a daemon or chain;
* ``sockets``: plain or CURVE socket set-up shared by the others;
* ``pubsub``: Publisher, Subscriber;
* ``reqrep``: RequestServer, Request, Requester;
* ``nameserver``: lookup_addresses, NameServerThread.
"""

from __future__ import annotations

from posttroll.message import Message, MessageError

from trollmoves.errors import MessageDecodeError
from trollmoves.messaging.codec import MAX_ECHO, decode, encode, make_message, shorten, wire
from trollmoves.messaging.curve import (
    CurveClientKeys,
    CurveServerKeys,
    SecureBinding,
    curve_client_socket,
    publisher_curve,
    request_curve,
)
from trollmoves.messaging.entries import entries_with, walk_entries
from trollmoves.messaging.nameserver import NameServerThread, lookup_addresses
from trollmoves.messaging.pubsub import (
    DEFAULT_RCVHWM,
    DEFAULT_SNDHWM,
    HEARTBEAT_INTERVAL,
    Publisher,
    Subscriber,
    heartbeat_subject,
    magickfy_topics,
)
from trollmoves.messaging.reqrep import Request, Requester, RequestServer
from trollmoves.messaging.sockets import DEFAULT_MAX_MESSAGE_SIZE, own_ip

__all__ = [
    "Message", "MessageError", "MessageDecodeError", "Publisher", "Subscriber", "RequestServer",
    "Requester", "decode", "encode", "make_message", "lookup_addresses", "magickfy_topics",
    "heartbeat_subject", "own_ip", "NameServerThread", "shorten",
    "Request", "wire", "MAX_ECHO", "entries_with", "walk_entries",
    "CurveClientKeys", "CurveServerKeys", "SecureBinding", "curve_client_socket", "publisher_curve",
    "request_curve",
    "DEFAULT_MAX_MESSAGE_SIZE", "DEFAULT_RCVHWM", "DEFAULT_SNDHWM", "HEARTBEAT_INTERVAL",
]
