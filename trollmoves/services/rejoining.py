"""Rejoining: how a client chain makes up for the time it was not listening.

A chain that follows servers misses what they announce while it is stopped, killed or
cut off. So it remembers the servers it has heard from (``KnownServers``, in the state
store), asks each for what it announced meanwhile when it starts, when it hears from a
server for the first time and when a silent provider comes back (``catch_up``), sends
the messages it had queued just before a kill (``send_outbox``) and makes again the
requests that were pending (``resume_pending``). What comes back is handled like a
live announcement, by the chain's own ``on_announcement``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from trollmoves import messaging
from trollmoves.announcements import collect_uids, usable_request_address
from trollmoves.errors import MessageDecodeError, RequestError
from trollmoves.services.catch_up import (
    CATCH_UP_MARGIN,
    PROVIDER_SEEN_PERSIST_INTERVAL,
    catch_up_request,
    offered_announcements,
)
from trollmoves.services.requesters import RequesterPool
from trollmoves.state import StateStore, file_key

logger = logging.getLogger(__name__)

# on_announcement(message, key, from_catch_up=True) -> True if the file is newly requested
OnAnnouncement = Callable[..., bool]


class KnownServers:
    """The request addresses a chain has had announcements from, remembered on disk.

    ``catch_up(request_address, since)`` is called (on the chain's workers) for each
    server to catch up with: the stored ones at start, a new one as soon as it is heard.
    """

    def __init__(self, chain: Any, state: StateStore, catch_up: Callable[[str, float], None]):
        self.chain = chain
        self.state = state
        self.catch_up = catch_up
        self.started_at = time.time()
        self._seen: set[str] = set()
        self._persisted: dict[str, float] = {}

    def catch_up_with_stored(self) -> None:
        """At start: ask every server heard before for what it announced since it was last heard."""
        for request_address, last_seen in self.state.providers(self.chain.name).items():
            if usable_request_address(request_address) is None:
                continue
            self._seen.add(request_address)
            self.catch_up(request_address, last_seen - CATCH_UP_MARGIN)

    def note(self, request_address: str) -> None:
        """A server announced a file: catch up with it if it is new, and remember when it was heard."""
        now = time.time()
        if request_address not in self._seen:
            self._seen.add(request_address)
            if self.chain.catch_up:
                self.catch_up(request_address, self.started_at - CATCH_UP_MARGIN)
        if now - self._persisted.get(request_address, 0) > PROVIDER_SEEN_PERSIST_INTERVAL:
            self._persisted[request_address] = now
            self.state.touch_provider(self.chain.name, request_address, now)


def catch_up(chain: Any, requesters: RequesterPool, state: StateStore, on_announcement: OnAnnouncement,
             request_address: str, since: float) -> None:
    """Ask a server for what it announced since ``since`` and request the files missed."""
    try:
        reply = requesters.get(request_address).request(catch_up_request(chain.topic, since),
                                                        timeout=max(chain.transfer_req_timeout, 2.0))
    except RequestError as exc:
        logger.info("Chain %s: no catch-up from %s: %s", chain.name, request_address, exc)
        return
    announcements = offered_announcements(reply)
    if announcements is None:
        logger.info("Chain %s: %s does not offer catch-up (an original trollmoves server?)", chain.name,
                    request_address)
        return
    count = 0
    for item in announcements:
        subject, data = item.get("subject", ""), item.get("data")
        if not isinstance(data, dict) or "request_address" not in data:
            continue
        if chain.topic and not str(subject).startswith(chain.topic):
            continue
        uids = collect_uids(data)
        if not uids:
            continue
        key = file_key(uids)
        if state.is_handled(chain.name, key):
            continue
        if on_announcement(messaging.make_message(subject, item.get("type", "file"), data), key,
                           from_catch_up=True):
            count += 1
    if count:
        logger.info("Chain %s: catch-up from %s: requesting %d missed files", chain.name, request_address, count)


def send_outbox(chain_name: str, state: StateStore, publish: Callable[[messaging.Message], None]) -> None:
    """Messages of files handled just before a kill, not confirmed as sent: send them now."""
    for item_id, payload in state.outbox(chain_name):
        try:
            message = messaging.decode(str(payload["wire"]))
        except (KeyError, MessageDecodeError):
            state.outbox_done([item_id])
            continue
        logger.info("Chain %s: sending the %s message of %s queued before the restart", chain_name,
                    message.type, ", ".join(collect_uids(message.data)))
        publish(message)
        state.outbox_done([item_id])


def resume_pending(chain_name: str, state: StateStore, on_announcement: OnAnnouncement) -> None:
    """Requests that were pending when the client stopped (or was killed) are made again."""
    for key, payload in state.pending(chain_name):
        try:
            message = messaging.make_message(payload["subject"], payload["type"], payload["data"])
        except (KeyError, MessageDecodeError):
            state.remove_pending(chain_name, key)
            continue
        if usable_request_address(message.data.get("request_address")) is None:
            state.remove_pending(chain_name, key)  # recorded before the check existed
        logger.info("Chain %s: resuming the pending request of %s", chain_name, ", ".join(collect_uids(message.data)))
        on_announcement(message, key, from_catch_up=True)
