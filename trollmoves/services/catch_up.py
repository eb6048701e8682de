"""Catch-up: asking a server for what it announced while we were not listening.

Our servers answer an ``info`` request carrying ``{"catch_up": {"since": <epoch>}}``
with the announcements themselves; a client or a mirror that (re)joins, or that
lost a provider for a while, asks each server it knows and treats what comes back
like announcements received live. An original (0.19) server answers without
``announcements``: there is nothing to catch up from it.
"""

from __future__ import annotations

from typing import Any

from trollmoves import messaging

CATCH_UP_MARGIN = 30.0  # s asked for before the last time a server was heard (clock skew, in-flight messages)
PROVIDER_SEEN_PERSIST_INTERVAL = 5.0  # s between writes of "last heard from this server" to the state store
REJOIN_GRACE = 1.0  # s a new publisher waits before sending, for its subscribers' connections to take effect


def catch_up_request(topic: str | None, since: float) -> messaging.Message:
    """The ``info`` request asking for every announcement since ``since`` (and no file listing)."""
    return messaging.make_message(topic or "/", "info", {"catch_up": {"since": since}, "max_count": 0})


def offered_announcements(reply: messaging.Message) -> list[Any] | None:
    """The announcements of a catch-up reply, or None when the server offers no catch-up."""
    announcements = reply.data.get("announcements") if isinstance(reply.data, dict) else None
    return announcements if isinstance(announcements, list) else None
