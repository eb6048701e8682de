"""The message codec: posttroll's wire format, written and read byte for byte as posttroll does.

``pytroll:/<subject> <type> <sender> <time> <version>[ <mime-type> <payload>]``, one zmq
frame. posttroll's ``Message(...).encode()`` validates and serialises the data three
times and ``Message.decode`` validates once more; here a message is built and encoded
once and decoded without re-validation, with the same output (held to posttroll's own
in ``tests/unit/test_codec.py``, with Hypothesis). Two deliberate differences: ``uid``
and ``uri`` stay the strings that were sent (posttroll turns ISO-like strings into
datetimes), and every decode failure is a ``MessageDecodeError`` (posttroll lets a
``ValueError`` or ``IndexError`` escape, which ends its subscriber's loop).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import re
import socket
from typing import Any

from posttroll.message import MESSAGE_VERSION, Message, MessageError

from trollmoves._accel import iso_object_hook
from trollmoves.errors import MessageDecodeError

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
        body = text[9:]
        if body and not body[0].isspace() and not body[-1].isspace():
            # the same list as the regex split (same whitespace set, Py_UNICODE_ISSPACE) when nothing leads or
            # trails; 5 x cheaper, and the split was a quarter of a decode
            parts = body.split(None, 6)
        else:
            parts = _HEADER_SPLIT.split(body, maxsplit=6)
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
