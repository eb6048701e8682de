"""Announcements as peers send them: their uids, their request address, their storable form.

Shared by everything that follows a server (client, mirror): what identifies the
files of an announcement (``collect_uids``), whether its ``request_address`` is one a
request can be sent to, and its data made JSON-storable for the state store.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from trollmoves import messaging

ANNOUNCEMENT_TYPES = ("file", "dataset", "collection")
_REQUEST_ADDRESS = re.compile(r"(?:tcp://)?"  # host name or IPv4, or [IPv6]; then the port
                              r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})")


def usable_request_address(value: Any) -> str | None:
    """``value`` if it is a ``host:port`` (optionally ``tcp://``) a request can be sent to, else None.

    The address comes from a peer's announcement: a word, a number, null, a list or a zmq
    endpoint with extras (``;source``) would make zmq's connect raise, which used to leave the
    file's pending entry started forever. Checked once here, before anything is recorded.
    """
    if not isinstance(value, str):
        return None
    match = _REQUEST_ADDRESS.fullmatch(value)
    if match is None or not 0 < int(match.group(1)) < 65536:
        return None
    return value


def collect_uids(data: Any) -> list[str]:
    """Every ``uid`` of an announcement (top level, dataset and collection entries)."""
    return [str(entry["uid"]) for entry in messaging.entries_with(data, "uid")]


def jsonable(value: Any) -> Any:
    """A message's data made JSON-serialisable (datetimes as ISO text), for the state store."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
