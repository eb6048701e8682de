"""The push decision: what a ``push`` request asks for, and whether this server does it.

Pure: from the request's type and data, the chain's ``allowed_destinations`` and one
lookup, ``refusal(path)`` (why the chain must not serve a file, None if it may), it
returns either a ``PushPlan`` (which file goes where, the reply once all went well) or a
``Refusal`` (the reply text, the metric reason, the log line). The request port does the
I/O (transfers, metrics, logging, replying); what is decided here is unit-tested without
sockets. The checks run in the order 0.19's clients have always seen their errors in:
no data, no ``uri``, no destination, a relative local path, a destination outside the
allow-list, then each file (not announced, outside the origin, not matching the pattern).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trollmoves import confine, messaging
from trollmoves.redact import clean_url


class BadRequest(ValueError):
    """A request with values the server cannot use: the client's mistake, not a bug of ours.

    It is answered ``err`` and logged as one WARNING line, never with a traceback
    (a client repeating it must not fill the log).
    """


@dataclass(frozen=True)
class Refusal:
    """A request not served: the ``err`` reply text, the ``requests_refused`` reason (None: not
    counted) and the WARNING line after ``Chain <name>: `` (None: not logged)."""

    reply: str
    reason: str | None = None
    log: str | None = None


@dataclass(frozen=True)
class PushItem:
    """One file of a push: its local path, where it goes, the request's ``path`` for it, and the
    destination as it may be shown (no credentials)."""

    path: str
    destination: str
    rel_path: Any
    shown: str


@dataclass(frozen=True)
class PushPlan:
    """A push to do: the files in order, the backup targets, and the reply once all arrived."""

    items: tuple[PushItem, ...]
    backup_targets: Any
    reply_type: str
    reply_data: dict


def uri_entries(data: Any) -> list[dict]:
    """Every dict holding a ``uri`` anywhere in request data (top level, dataset, collection)."""
    return messaging.entries_with(data, "uri")


def entry_path(entry: dict) -> str:
    """The local path a request's entry names (the path of its ``uri``)."""
    return urlsplit(str(entry["uri"])).path


def reply_type(data: dict, request_type: str) -> str:
    """The original's reply type after a push: file, dataset or collection, else the request type."""
    if "uri" in data:
        return "file"
    if "dataset" in data:
        return "dataset"
    if "collection" in data:
        return "collection"
    return request_type


def clean_destination(data: dict, cleaned: str | None = None) -> dict:
    """A copy of request data with the destination stripped of credentials (scheme + host + path).

    ``cleaned``: ``clean_url(destination)`` if the caller has it already.
    """
    reply = dict(data)
    if "destination" in reply and isinstance(reply["destination"], str):
        reply["destination"] = cleaned if cleaned is not None else clean_url(reply["destination"])
    return reply


def push_reply_data(data: dict, cleaned: str | None = None) -> dict:
    """The data of a successful push reply: the request's, with a credential-free destination that includes a
    top-level ``path`` (0.19 replies ``join(destination path, path)``, the file actually written)."""
    reply = clean_destination(data, cleaned)
    rel_path = data.get("path")
    if isinstance(rel_path, str) and rel_path and isinstance(reply.get("destination"), str):
        parts = urlsplit(reply["destination"])
        reply["destination"] = urlunsplit(parts._replace(path=os.path.join(parts.path, rel_path)))
    return reply


def push_directory(destination: str, rel_path: str | None) -> str:
    """The destination of a push without ``path``: it names a directory, the file keeps its name.

    0.19's clients always publish ``join(destination path, uid)`` as the received file's URI
    (and create that directory first); a destination without a trailing slash written *as* the
    file would overwrite itself with every file and leave those URIs pointing at nothing. With
    a ``path`` (relative path) in the request the joined path names the file, as in 0.19.
    """
    if rel_path:
        return destination
    parts = urlsplit(destination)
    if not parts.path or parts.path.endswith("/"):
        return destination
    return urlunsplit(parts._replace(path=parts.path + "/"))


def catch_up_window(catch_up: dict) -> tuple[float, int]:
    """(since, limit) of an ``info`` request's ``catch_up``: epoch seconds and at most 10,000 announcements.

    Values a client can send wrongly (``since: 'yesterday'``, ``max_count: 'x'``, a
    list, an int too large for a float) raise BadRequest naming the field; a
    negative ``max_count`` means none.
    """
    since = catch_up.get("since", 0)
    try:
        since = since.timestamp() if isinstance(since, dt.datetime) else float(since or 0)
    except (TypeError, ValueError, OverflowError, OSError):
        raise BadRequest(f"catch_up.since must be a number of seconds since the epoch or a time, not "
                         f"{messaging.shorten(repr(since), 80)}") from None
    count = catch_up.get("max_count", 10_000)
    try:
        limit = int(count)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"catch_up.max_count must be an integer, not {messaging.shorten(repr(count), 80)}") \
            from None
    return since, max(0, min(limit, 10_000))


def path_refusal(request_type: str, path: str, reason: str) -> Refusal:
    """A ``push``/``ack`` refused for one of its files; the peer's path is never echoed or logged at full size."""
    shown = messaging.shorten(path)
    return Refusal(f"{shown} not reachable", reason,
                   f"refused a {request_type} request for {shown} ({reason.replace('_', ' ')})")


def destination_refusal(destination: str, shown: str, entries: list[dict],
                        allowed_destinations: Sequence[str]) -> Refusal | None:
    """Why a final target (destination joined with an entry's ``path``) is not allowed (None: all are).

    The check runs on normalised URLs (confine.allowed), so ``..``, a ``path`` field, another port or
    another spelling of this host can neither slip past the allow-list nor be refused by mistake.
    ``shown`` is ``clean_url(destination)``.
    """
    parts = urlsplit(destination)
    if parts.scheme.lower() in ("", "file") and not parts.path.startswith("/"):
        # a relative local path would land wherever this daemon happens to run
        return Refusal(f"destination {messaging.shorten(shown)} is not an absolute path", "destination_not_allowed",
                       f"refused a push to the relative local path {messaging.shorten(shown)!r}")
    if not allowed_destinations:
        return None
    for entry in entries:
        rel_path = entry.get("path")
        rel_path = rel_path if isinstance(rel_path, str) else None
        if not confine.allowed(destination, rel_path, allowed_destinations):
            with_path = f" with path {rel_path[:300]!r}" if rel_path else ""
            return Refusal(f"destination {shown[:300]} not allowed", "destination_not_allowed",
                           f"refused a push to {shown[:300]}{with_path} (not in allowed_destinations)")
    return None


def plan_push(request_type: str, data: Any, allowed_destinations: Sequence[str],
              refusal: Callable[[str], str | None]) -> PushPlan | Refusal:
    """The push a request asks for, or why it is refused (see the module docstring for the order)."""
    if not isinstance(data, dict):
        return Refusal("push request without data")
    entries = uri_entries(data)
    if not entries:
        return Refusal("push request without any uri")
    destination = data.get("destination")
    if not isinstance(destination, str) or not destination:
        return Refusal("push request without destination")
    shown = clean_url(destination)
    refused = destination_refusal(destination, shown, entries, allowed_destinations)
    if refused is not None:
        return refused
    paths = []
    for entry in entries:
        path = entry_path(entry)
        reason = refusal(path)
        if reason:
            return path_refusal(request_type, path, reason)
        paths.append((path, entry))
    items = []
    for path, entry in paths:
        rel_path = entry.get("path")
        target = push_directory(destination, rel_path)
        items.append(PushItem(path, target, rel_path, shown if target == destination else clean_url(target)))
    return PushPlan(tuple(items), data.get("backup_targets"), reply_type(data, request_type),
                    push_reply_data(data, shown))
