"""The client's decisions, as pure functions: what a message is, whether to request a file, when to retry.

A client chain receives messages from its providers, decides what to do with each
and then does it (metrics, log lines, state store, transfer workers). The deciding
is kept apart here, with plain values in and a small frozen answer out, so that
every branch can be tested without sockets, threads or a state store, and so that
the chain (``trollmoves.client.FollowedChain``) reads as "ask, then act".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trollmoves import confine
from trollmoves.announcements import ANNOUNCEMENT_TYPES, collect_uids

RETRY_DELAY_CAP = 300.0  # s: fast retries wait 2, 4, 8 ... s, never longer than this


# --------------------------------------------------------------------------------------------------
# What a received message is
# --------------------------------------------------------------------------------------------------

class MessageKind(enum.Enum):
    BEAT = "beat"  # a provider's heartbeat: it is alive, and how often it beats
    NO_FILES = "no_files"  # names no file: nothing to do (not even logged)
    OTHER_CLIENT_PUSHING = "other_client_pushing"  # another client (a hot spare's primary) asked for the file
    OTHER_CLIENT_DONE = "other_client_done"  # another client has the file: its ``ack`` or final message
    ANNOUNCEMENT = "announcement"  # a server offers the file: consider requesting it
    IGNORE = "ignore"  # any other type naming files


def classify_message(message_type: str, has_uids: bool, has_request_address: bool) -> MessageKind:
    """What a message from a provider means to this client.

    A final ``file``/``dataset``/``collection`` message without ``request_address`` is the
    one another client publishes once it has the file (0.19's clients do not always send
    ``ack``), so it counts as done, as an ``ack`` does.
    """
    if message_type == "beat":
        return MessageKind.BEAT
    if not has_uids:
        return MessageKind.NO_FILES
    if message_type == "push":
        return MessageKind.OTHER_CLIENT_PUSHING
    if message_type == "ack" or (message_type in ANNOUNCEMENT_TYPES and not has_request_address):
        return MessageKind.OTHER_CLIENT_DONE
    if message_type in ANNOUNCEMENT_TYPES:
        return MessageKind.ANNOUNCEMENT
    return MessageKind.IGNORE


def beat_interval(data: dict) -> float | None:
    """A heartbeat's ``min_interval`` (s; 30 when absent or zero), or None when it is not a number."""
    try:
        return float(data.get("min_interval", 30) or 30)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Whether to request an announced file, and from whom
# --------------------------------------------------------------------------------------------------

class AnnouncementAction(enum.Enum):
    REFUSE = "refuse"  # a uid or destination field would leave the destination (path escape)
    REJECT_REQUEST_ADDRESS = "reject_request_address"  # not host:port: nothing can be requested
    DUPLICATE = "duplicate"  # already handled here
    ADD_SOURCE = "add_source"  # pending: this server becomes a fallback source
    ALREADY_PENDING = "already_pending"  # pending, and this server is already one of its sources
    REQUEST = "request"  # new: request it (now, or after ``delay``)


@dataclass(frozen=True)
class AnnouncementDecision:
    action: AnnouncementAction
    ack: bool = False  # DUPLICATE: tell the server the file is handled (it may delete its copy)
    delay: float = 0.0  # REQUEST: s to wait first (a hot spare's ``processing_delay``)
    caught_up: bool = False  # REQUEST: the file was found by a catch-up (counted as such)

    @property
    def provider_usable(self) -> bool:
        """Whether the announcing server can be asked at all (then it is noted as a provider)."""
        return self.action not in (AnnouncementAction.REFUSE, AnnouncementAction.REJECT_REQUEST_ADDRESS)


def confinement_error(data: dict, template_fields: Sequence[str]) -> confine.ConfinementError | None:
    """Why an announcement's uids or destination-template fields would leave the destination, or None.

    The uid is joined to the destination (and published), the fields are composed into it: a
    provider must not make the client create directories or name files outside it.
    """
    try:
        confine.check_announcement(collect_uids(data), data, template_fields)
    except confine.ConfinementError as exc:
        return exc
    return None


def decide_announcement(*, confined: bool, request_address: str | None, handled: bool,
                        pending_sources: Sequence[Any] | None, from_catch_up: bool = False,
                        processing_delay: float | None = 0.0) -> AnnouncementDecision:
    """What to do with an announcement of a file.

    ``confined``: the uids and destination fields stay within the destination;
    ``request_address``: the announcement's usable request address (None if unusable);
    ``handled``: the file is already handled here; ``pending_sources``: the request
    addresses of the pending entry's sources (None if not pending). The checks run in
    this order: a refused or unusable announcement never touches the pending entries, so
    a genuine announcement of the same file from a good server is requested as usual.
    """
    if not confined:
        return AnnouncementDecision(AnnouncementAction.REFUSE)
    if request_address is None:
        return AnnouncementDecision(AnnouncementAction.REJECT_REQUEST_ADDRESS)
    if handled:
        # a catch-up offers what the server announced, handled or not: no ack storm at each (re)join
        return AnnouncementDecision(AnnouncementAction.DUPLICATE, ack=not from_catch_up)
    if pending_sources is not None:
        if all(source != request_address for source in pending_sources):
            return AnnouncementDecision(AnnouncementAction.ADD_SOURCE)
        return AnnouncementDecision(AnnouncementAction.ALREADY_PENDING)
    return AnnouncementDecision(AnnouncementAction.REQUEST, delay=processing_delay or 0.0, caught_up=from_catch_up)


def refusal_reason(reply_type: str, reply_data: Any) -> str | None:
    """The ``reason`` a server's reply to a push request is counted with when it refused, or None (it pushed).

    ``refused`` when the server says the destination is not reachable (a client-side
    problem), ``error`` for any other ``err``.
    """
    if reply_type not in ("err", "error", "unknown"):
        return None
    return "refused" if "not reachable" in str(reply_data) else "error"


# --------------------------------------------------------------------------------------------------
# A hot spare's delayed start
# --------------------------------------------------------------------------------------------------

class DelayedStartAction(enum.Enum):
    SKIP = "skip"  # no longer pending (done elsewhere) or cancelled
    WAIT = "wait"  # the primary is pushing it: wait ``delay`` more
    TAKE_OVER = "take_over"  # the primary announced a push but never confirmed it
    START = "start"  # nobody else took it: request it


@dataclass(frozen=True)
class DelayedStartDecision:
    action: DelayedStartAction
    delay: float = 0.0


def decide_delayed_start(*, pending: bool, cancelled: bool, other_client_push_age: float | None,
                         patience: float) -> DelayedStartDecision:
    """After a hot spare's ``processing_delay``: start, keep waiting for the primary, or take over.

    ``other_client_push_age``: s since another client published ``push`` for the file
    (None: it did not); ``patience``: how long such a push may go unconfirmed.
    """
    if not pending or cancelled:
        return DelayedStartDecision(DelayedStartAction.SKIP)
    if other_client_push_age is None:
        return DelayedStartDecision(DelayedStartAction.START)
    if other_client_push_age < patience:
        return DelayedStartDecision(DelayedStartAction.WAIT, patience - other_client_push_age)
    return DelayedStartDecision(DelayedStartAction.TAKE_OVER)


# --------------------------------------------------------------------------------------------------
# After a failed fetch
# --------------------------------------------------------------------------------------------------

class RetryAction(enum.Enum):
    RETRY = "retry"  # a fast retry after ``delay``
    GIVE_UP_FAST_RETRIES = "give_up_fast_retries"  # fast retries exhausted: kept pending, retried slowly
    RETRY_SLOWLY = "retry_slowly"  # already given up on: the next slow retry
    EXPIRED = "expired"  # older than the state store keeps anything: no longer requested


@dataclass(frozen=True)
class RetryDecision:
    action: RetryAction
    delay: float | None = None  # s until the next request; None: not before a restart


def decide_retry(*, attempts: int, max_attempts: int, given_up: bool, age: float, max_age: float,
                 given_up_interval: float | None) -> RetryDecision:
    """When to request a file again after ``attempts`` failed fetches (this one included).

    Fast retries back off exponentially (2, 4, 8 ... s, at most ``RETRY_DELAY_CAP``); after
    ``max_attempts`` the file stays pending and is retried every ``given_up_interval`` s
    (0 or None: at the next start) until it is ``max_age`` s old (``age``: s since it was
    first announced), when its pending row would be pruned anyway.
    """
    if attempts < max_attempts:
        return RetryDecision(RetryAction.RETRY, min(RETRY_DELAY_CAP, 2.0 ** attempts))
    if age >= max_age:
        return RetryDecision(RetryAction.EXPIRED)
    action = RetryAction.RETRY_SLOWLY if given_up else RetryAction.GIVE_UP_FAST_RETRIES
    return RetryDecision(action, given_up_interval or None)
