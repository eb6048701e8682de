"""The client (move_it_client.py): follow servers' announcements and have the files pushed here.

Per chain (INI section), top to bottom in this module:

- **follows**: one ``ProviderFeed`` thread listens to every provider (announcements,
  other clients' ``push``/``ack``, heartbeats; a silent provider is resubscribed and
  caught up with);
- **decides**, with the pure functions of ``trollmoves.client_decisions``: what a
  message is, whether an announced file is requested and from whom, when a failed
  fetch is retried;
- **does**: a worker requests the file from the server that announced it first
  (falling back to the next on ``err`` or timeout), verifies it, and publishes
  ``push``, ``ack`` and the final ``file`` (or ``dataset``/``collection``) message
  exactly as trollmoves 0.19 does.

What we fix and add (spec): transfers run in a worker pool, never in the
receive loop (one long transfer does not hold up a provider's other
announcements); a push is not resent as a second transfer (the server joins a
resent request to the one in progress); handled files and pending requests are
kept on disk (a restart neither re-transfers nor skips); a client that (re)joins
asks each server for what it announced meanwhile (catch-up); a hot spare whose
primary published ``push`` but never ``ack`` takes over instead of dropping the
file; no module-level caches shared between chains.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from trollmoves import confine, messaging
from trollmoves.announcements import collect_uids, jsonable, usable_request_address
from trollmoves.client_decisions import (
    AnnouncementAction,
    DelayedStartAction,
    MessageKind,
    RetryAction,
    beat_interval,
    classify_message,
    confinement_error,
    decide_announcement,
    decide_delayed_start,
    decide_retry,
    refusal_reason,
)
from trollmoves.config import ClientChain, Config
from trollmoves.destinations import compose_destination, local_directory, without_userinfo
from trollmoves.errors import MessageDecodeError, RequestError
from trollmoves.matching import Composer
from trollmoves.metrics import Metrics, message_type_label, scheme_label
from trollmoves.services import rejoining
from trollmoves.services.catch_up import CATCH_UP_MARGIN, REJOIN_GRACE
from trollmoves.services.chain_service import ChainService
from trollmoves.services.following import ProviderFeed
from trollmoves.services.received import final_message, verify_arrival, with_backup_targets
from trollmoves.services.requesters import RequesterPool
from trollmoves.services.scheduler import Scheduler
from trollmoves.state import StateStore, default_state_path, file_key

# Tests import these from here too; the helpers live in trollmoves.announcements, .destinations and .services.
__all__ = ["CATCH_UP_MARGIN", "Client", "FollowedChain", "compose_destination", "usable_request_address",
           "verify_arrival"]

logger = logging.getLogger(__name__)

SERVER_HEARTBEAT_SUBJECT = "/heartbeat/move_it_server"
MAX_WARNED_REQUEST_ADDRESSES = 1000  # distinct bad request addresses warned about per chain (then debug)


@dataclass
class Pending:
    """A file being requested: its announcements (one per provider, first first) and state."""

    key: str
    sources: list[messaging.Message]
    started: bool = False
    cancelled: bool = False
    other_client_push_at: float | None = None
    first_seen: float = field(default_factory=time.time)
    attempts: int = 0
    given_up: bool = False  # fast retries exhausted: retried every ``retry_given_up_interval`` s


@dataclass(frozen=True)
class FollowingParts:
    """What a client chain is given by its client (it never reaches back into it).

    ``publisher_curve``: CURVE keys of the chain's publisher (the daemon's, or None);
    ``workers``: transfer workers (and pooled request sockets per server) of the chain;
    ``max_fetch_attempts``: fast retries before a file is retried only every
    ``retry_given_up_interval`` s.
    """

    metrics: Metrics
    state: StateStore
    scheduler: Scheduler
    publisher_curve: messaging.CurveServerKeys | None
    workers: int = 4
    max_fetch_attempts: int = 6


class FollowedChain:
    """Subscriber, publisher and transfer workers of one client section."""

    def __init__(self, chain: ClientChain, parts: FollowingParts):
        self.chain = chain
        self.parts = parts
        self.metrics = parts.metrics
        self.state = parts.state
        self.scheduler = parts.scheduler
        self.publisher: messaging.Publisher | None = None
        self.feed: ProviderFeed | None = None
        self.curve: messaging.CurveClientKeys | None = None
        self.pending: dict[str, Pending] = {}
        self.lock = threading.Lock()
        self.workers = ThreadPoolExecutor(max_workers=parts.workers,
                                          thread_name_prefix=f"fetch:{chain.name}")
        self._stop = threading.Event()
        self.requesters = RequesterPool(chain.name, self._stop.is_set, max_idle=parts.workers)
        self.provider_last_message: dict[str, float] = {}
        self.provider_last_heard: dict[str, float] = {}
        self.provider_min_interval: dict[str, float] = {}
        self.request_addresses_by_provider: dict[str, set[str]] = {}
        self.servers = rejoining.KnownServers(chain, self.state, lambda address, since: self.workers.submit(
            self.catch_up, address, since))
        self._warned_request_addresses: set[str] = set()
        self.composer = Composer(chain.destination)
        self.template_fields = confine.template_fields(chain.destination)
        self._publish_after = 0.0

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        chain = self.chain
        self.metrics.init_chain(chain.name)
        self.metrics.add_scrape_callback(self._scrape_retry_queue, chain=chain.name)
        self.metrics.watch_destination(chain.name, chain.destination)
        self.curve = self.requesters.curve = (
            messaging.CurveClientKeys(chain.curve_secret_key_file, chain.curve_server_public_key_file)
            if chain.curve_secret_key_file else None)
        self.publisher = messaging.Publisher(f"move_it_{chain.name}", chain.publish_port, chain.publish_address,
                                             nameservers=chain.nameservers,
                                             curve=self.parts.publisher_curve).start()
        self._publish_after = time.monotonic() + (REJOIN_GRACE if chain.publish_port else 0.0)
        now = time.monotonic()
        for provider in chain.providers:
            self.provider_last_message[provider.address] = self.provider_last_heard[provider.address] = now
        self.feed = ProviderFeed(
            f"Chain {chain.name}", chain.providers, self._topics(), self.handle,
            lambda _e: self.metrics.messages_malformed.labels(chain.name).inc(),
            provider_topics=self._provider_topics, curve=self.curve, after_poll=self._check_heartbeats,
            error_text="error handling a")
        self.feed.start()
        if self.state.outbox(chain.name):
            self.workers.submit(rejoining.send_outbox, chain.name, self.state, self._publish)
        rejoining.resume_pending(chain.name, self.state, self.on_announcement)
        if chain.catch_up:
            self.servers.catch_up_with_stored()
        self.heartbeat()
        logger.info("Chain %s following %s on %s", chain.name, " ".join(str(p) for p in chain.providers),
                    chain.topic)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self.feed is not None:
            self.feed.stop(timeout)
        with self.lock:
            for entry in self.pending.values():
                if not entry.started:
                    entry.cancelled = True
        self.requesters.cancel()  # a worker waiting for a reply gives up now, not after 3 x timeout
        self.workers.shutdown(wait=True, cancel_futures=True)
        self.requesters.close()
        if self.publisher is not None:
            self.publisher.stop()

    @property
    def subscriber(self) -> messaging.Subscriber | None:
        return self.feed.subscriber if self.feed is not None else None

    def listening(self) -> bool:
        return self.feed is not None and self.feed.alive()

    def heartbeat(self) -> None:
        if self.publisher is not None:
            self.publisher.heartbeat(30)

    def _scrape_retry_queue(self) -> None:
        """At scrape time: files requested and not arrived, those waiting for a retry, the oldest's time."""
        with self.lock:
            waiting = [e.first_seen for e in self.pending.values() if e.attempts and not e.started]
            given_up = sum(1 for e in self.pending.values() if e.given_up)
            self.metrics.pending_files.labels(self.chain.name).set(len(self.pending))
        self.metrics.given_up_files.labels(self.chain.name).set(given_up)
        self.metrics.retry_queue_length.labels(self.chain.name).set(len(waiting))
        self.metrics.retry_queue_oldest.labels(self.chain.name).set(min(waiting, default=0))

    # what it follows ------------------------------------------------------------------------------
    def _topics(self) -> list[str]:
        topics = [self.chain.topic] if self.chain.topic else []
        if self.chain.heartbeat:
            topics += [SERVER_HEARTBEAT_SUBJECT, messaging.heartbeat_subject(f"move_it_{self.chain.name}")]
        return topics

    def _provider_topics(self, provider: Any) -> list[str] | None:
        if not provider.topic:
            return None
        return [provider.topic] + ([SERVER_HEARTBEAT_SUBJECT] if self.chain.heartbeat else [])

    def _check_heartbeats(self, subscriber: messaging.Subscriber) -> None:
        """Between polls: resubscribe to a silent provider and catch up from the last message heard from it."""
        scale = self.chain.heartbeat_alarm_scale
        if not scale:
            return
        now = time.monotonic()
        for address, last in list(self.provider_last_message.items()):
            limit = scale * self.provider_min_interval.get(address, 30.0)
            if now - last > limit:
                logger.warning("Chain %s: nothing from %s for %.0f s: resubscribing", self.chain.name, address,
                               now - last)
                subscriber.reconnect(address)
                self.provider_last_message[address] = now
                heard = self.provider_last_heard.get(address, last)
                for request_address in self.request_addresses_by_provider.get(address, ()):
                    self.workers.submit(self.catch_up, request_address, time.time() - now + heard - CATCH_UP_MARGIN)

    # what it decides (receive thread: quick, never blocking) --------------------------------------
    def handle(self, address: str, message: messaging.Message) -> None:
        self.provider_last_message[address] = self.provider_last_heard[address] = time.monotonic()
        self.metrics.child(self.metrics.messages_received, self.chain.name, message_type_label(message.type)).inc()
        data = message.data if isinstance(message.data, dict) else {}
        uids = collect_uids(data) if message.type != "beat" else []
        kind = classify_message(message.type, bool(uids), "request_address" in data)
        if kind is MessageKind.BEAT:
            self.metrics.last_heartbeat.labels(self.chain.name).set(time.time())
            interval = beat_interval(data)
            if interval is not None:
                self.provider_min_interval[address] = interval
            return
        if kind is MessageKind.NO_FILES:
            return
        key = file_key(uids)
        if kind is MessageKind.OTHER_CLIENT_PUSHING:
            self._other_client_pushing(key)
        elif kind is MessageKind.OTHER_CLIENT_DONE:
            self._other_client_done(key, uids)
        elif kind is MessageKind.ANNOUNCEMENT:
            self.on_announcement(message, key)
            if usable_request_address(data["request_address"]) is not None:
                self.request_addresses_by_provider.setdefault(address, set()).add(data["request_address"])
        else:
            logger.debug("Chain %s: ignoring a %s message", self.chain.name, message.type)

    def _other_client_pushing(self, key: str) -> None:
        with self.lock:
            entry = self.pending.get(key)
            if entry is not None and not entry.started:
                entry.other_client_push_at = time.monotonic()

    def _other_client_done(self, key: str, uids: list[str]) -> None:
        with self.lock:
            entry = self.pending.get(key)
            if entry is not None and not entry.started:
                entry.cancelled = True
                del self.pending[key]
        if not self.state.is_handled(self.chain.name, key):
            self.state.mark_handled(self.chain.name, key, uids)

    def on_announcement(self, message: messaging.Message, key: str, from_catch_up: bool = False) -> bool:
        """Request the file(s) of an announcement unless handled or pending; True if newly requested."""
        chain = self.chain
        escape = confinement_error(message.data, self.template_fields)
        request_address = usable_request_address(message.data.get("request_address"))
        handled = False
        if escape is None and request_address is not None:
            self.servers.note(request_address)
            handled = self.state.is_handled(chain.name, key)
        with self.lock:
            entry = self.pending.get(key)
            decision = decide_announcement(
                confined=escape is None, request_address=request_address, handled=handled,
                pending_sources=None if entry is None else [s.data.get("request_address") for s in entry.sources],
                from_catch_up=from_catch_up, processing_delay=chain.processing_delay)
            if decision.action is AnnouncementAction.ADD_SOURCE:
                entry.sources.append(message)
            elif decision.action is AnnouncementAction.REQUEST:
                self.pending[key] = Pending(key, [message])
        if decision.action is AnnouncementAction.REFUSE:
            self.refuse_escape("announcement", escape)
        elif decision.action is AnnouncementAction.REJECT_REQUEST_ADDRESS:
            self._reject_request_address(message)
        elif decision.action is AnnouncementAction.DUPLICATE:
            self.metrics.duplicates_skipped.labels(chain.name).inc()
            if decision.ack:
                self.workers.submit(self.send_ack, message)
        if decision.action is not AnnouncementAction.REQUEST:
            return False
        if decision.caught_up:
            self.metrics.catch_up_files.labels(chain.name).inc()
        if decision.delay:
            self.scheduler.call_later(decision.delay, lambda: self._delayed_start(key))
        else:
            self.workers.submit(self.fetch, key)
        # Recorded after the hand-off, so the commit runs while the worker sends the request; a
        # kill before it lands loses nothing: the server's catch-up offers the file again.
        self.state.add_pending(chain.name, key, {"subject": message.subject, "type": message.type,
                                                 "data": jsonable(message.data)})
        return True

    def refuse_escape(self, what: str, exc: confine.ConfinementError) -> None:
        """One WARNING and the ``path_escape`` refusal metric: nothing is requested, written or deleted."""
        self.metrics.requests_refused.labels(self.chain.name, "path_escape").inc()
        logger.warning("Chain %s: refused a %s (path_escape): %s", self.chain.name, what, str(exc)[:400])

    def _reject_request_address(self, message: messaging.Message) -> None:
        """Count an announcement whose ``request_address`` is unusable; one WARNING per distinct value.

        Such an announcement never becomes a pending entry, so a genuine announcement of the same
        file from a good server is requested as usual. Warned values are bounded per chain: a
        hostile publisher cannot flood the log or grow memory with new ones.
        """
        self.metrics.messages_malformed.labels(self.chain.name).inc()
        shown = repr(message.data.get("request_address"))[:100]
        if shown in self._warned_request_addresses:
            logger.debug("Chain %s: ignoring another announcement with request_address %s", self.chain.name,
                         shown)
            return
        if len(self._warned_request_addresses) < MAX_WARNED_REQUEST_ADDRESSES:
            self._warned_request_addresses.add(shown)
        logger.warning("Chain %s: ignoring an announcement of %s with an unusable request_address %s "
                       "(not host:port)", self.chain.name, ", ".join(collect_uids(message.data))[:200], shown)

    def _delayed_start(self, key: str) -> None:
        """Hot spare: start unless the primary did it; wait longer while the primary is pushing."""
        with self.lock:
            entry = self.pending.get(key)
            pushed_at = entry.other_client_push_at if entry is not None else None
            decision = decide_delayed_start(
                pending=entry is not None, cancelled=entry is not None and entry.cancelled,
                other_client_push_age=None if pushed_at is None else time.monotonic() - pushed_at,
                patience=self.chain.transfer_req_timeout * 3 + (self.chain.processing_delay or 0))
            if decision.action is DelayedStartAction.SKIP:
                return
            if decision.action is DelayedStartAction.WAIT:
                self.scheduler.call_later(decision.delay, lambda: self._delayed_start(key))
                return
            if decision.action is DelayedStartAction.TAKE_OVER:
                logger.warning("Chain %s: the other client announced a push of %s but never confirmed it: "
                               "taking over", self.chain.name, ", ".join(collect_uids(entry.sources[0].data)))
        self.workers.submit(self.fetch, key)

    # what it does (worker threads) ----------------------------------------------------------------
    def fetch(self, key: str) -> None:
        chain = self.chain
        with self.lock:
            entry = self.pending.get(key)
            if entry is None or entry.cancelled or entry.started:
                return
            entry.started = True
        index = 0
        success = None
        while index < len(entry.sources) and not self._stop.is_set():
            source = entry.sources[index]
            index += 1
            try:
                success = self._request_push(source)
            except Exception:  # noqa: BLE001 - one failing source must not leave the entry started forever
                logger.exception("Chain %s: requesting %s from %s failed", chain.name,
                                 ", ".join(collect_uids(source.data)),
                                 repr(source.data.get("request_address"))[:100])
                success = None
            if success is not None:
                break
        if success is not None:
            source, reply = success
            try:
                self._finish(entry, source, reply)
            finally:
                with self.lock:  # only now: a catch-up seeing the file meanwhile finds it pending or handled
                    self.pending.pop(key, None)
            return
        with self.lock:
            self.pending.pop(key, None)
        if self._stop.is_set():
            return
        entry.attempts += 1
        self.metrics.transfers_failed.labels(chain.name, scheme_label(urlsplit(chain.destination).scheme),
                                             "error").inc()
        self._retry_later(key, entry)

    def _retry_later(self, key: str, entry: Pending) -> None:
        """After a failed fetch: a fast retry, or (once they are used up) slow retries until the file expires.

        A file given up on used to be forgotten until a restart (health said ``pending: 0``); now it
        stays in ``pending`` (health, ``trollmoves_retry_queue_length``, ``trollmoves_given_up_files``)
        and is requested every ``retry_given_up_interval`` s, until it arrives or is older than the
        state store's age bound (``max_age``), after which its pending row would be pruned anyway.
        """
        chain = self.chain
        uids = ", ".join(collect_uids(entry.sources[0].data))
        interval = chain.retry_given_up_interval
        decision = decide_retry(attempts=entry.attempts, max_attempts=self.parts.max_fetch_attempts,
                                given_up=entry.given_up, age=time.time() - entry.first_seen,
                                max_age=self.state.max_age, given_up_interval=interval)
        if decision.action is RetryAction.EXPIRED:
            logger.error("Chain %s: %s expired after %d attempts: older than the state store's age bound "
                         "(%.0f s); no longer requested", chain.name, uids, entry.attempts, self.state.max_age)
            self.state.remove_pending(chain.name, key)
            return
        if decision.action is RetryAction.RETRY:
            logger.error("Chain %s: could not get a working source for %s; retrying in %.0f s", chain.name,
                         uids, decision.delay)
            self.metrics.retries.labels(chain.name).inc()
        else:
            entry.given_up = True
        entry.started = False
        with self.lock:
            self.pending[key] = entry
        if decision.action is RetryAction.GIVE_UP_FAST_RETRIES:
            logger.error("Chain %s: could not get a working source for %s; giving up fast retries after %d "
                         "attempts (kept as pending; %s)", chain.name, uids, entry.attempts,
                         f"retried every {interval:g} s" if interval else "retried at restart")
        elif decision.action is RetryAction.RETRY_SLOWLY:
            logger.warning("Chain %s: %s still not delivered after %d attempts; next retry in %g s", chain.name,
                           uids, entry.attempts, interval)
        if decision.delay is not None:
            self.scheduler.call_later(decision.delay, lambda: self.workers.submit(self.fetch, key))

    def _request_push(self, source: messaging.Message) -> tuple[messaging.Message, messaging.Message] | None:
        chain = self.chain
        data = with_backup_targets(source.data, chain.backup_targets)
        try:
            destination, public_destination = compose_destination(self.composer, data, chain.login)
        except (KeyError, ValueError) as exc:
            logger.error("Chain %s: cannot compose destination %s from the announcement: %s", chain.name,
                         chain.destination, exc)
            return None
        if chain.create_target_directory:
            directory = local_directory(public_destination, chain.ftp_root)
            if directory and urlsplit(public_destination).scheme in ("file", "ftp", ""):
                try:
                    os.makedirs(directory, exist_ok=True)
                except OSError as exc:
                    logger.warning("Chain %s: cannot create %s: %s", chain.name, directory, exc.strerror)
        request_data = dict(data)
        request_data["destination"] = destination
        public = dict(data)
        public["destination"] = without_userinfo(public_destination)
        self._publish(messaging.make_message(source.subject, "push", public))
        request_address = str(data["request_address"])
        scheme = scheme_label(urlsplit(destination).scheme)
        self.metrics.child(self.metrics.transfers_started, chain.name, scheme).inc()
        started = time.monotonic()
        try:
            reply = self.requesters.get(request_address).request(
                messaging.make_message(source.subject, "push", request_data),
                timeout=chain.transfer_req_timeout * 3, resend_after=chain.transfer_req_timeout)
        except (RequestError, MessageDecodeError) as exc:
            if self._stop.is_set():
                logger.info("Chain %s: stopping: the request of %s to %s is dropped (made again at start)",
                            chain.name, ", ".join(collect_uids(data)), request_address)
                return None
            logger.warning("Chain %s: server %s doesn't answer: %s", chain.name, request_address, exc)
            self.metrics.transfers_failed.labels(chain.name, scheme, "timeout").inc()
            return None
        refusal = refusal_reason(reply.type, reply.data)
        if refusal is not None:
            logger.error("Chain %s: server %s could not push %s: %s", chain.name, request_address,
                         ", ".join(collect_uids(data)), reply.data)
            self.metrics.transfers_failed.labels(chain.name, scheme, refusal).inc()
            return None
        mismatch = verify_arrival(data, public_destination, chain.ftp_root, chain.checksum)
        if mismatch:
            logger.error("Chain %s: %s from %s: %s; the file stays pending and is requested again",
                         chain.name, ", ".join(collect_uids(data)), request_address, mismatch)
            self.metrics.transfers_failed.labels(chain.name, scheme, "checksum").inc()
            return None
        duration = time.monotonic() - started
        self.metrics.child(self.metrics.transfers_succeeded, chain.name, scheme).inc()
        self.metrics.child(self.metrics.transfer_duration, chain.name, scheme).observe(duration)
        size = data.get("size")
        if isinstance(size, int):
            self.metrics.child(self.metrics.transferred_bytes, chain.name, scheme).inc(size)
        logger.info("Chain %s: received %s from %s in %.3f s", chain.name, ", ".join(collect_uids(data)),
                    request_address, duration)
        return source, reply

    def _finish(self, entry: Pending, source: messaging.Message, reply: messaging.Message) -> None:
        chain = self.chain
        messages = [messaging.make_message(source.subject, "ack", with_backup_targets(source.data,
                                                                                      chain.backup_targets))]
        try:
            final_type, final_data = final_message(chain, self.composer, source, reply)
        except confine.ConfinementError as exc:
            self.refuse_escape("reply", exc)
            final_type, final_data = source.type, None
        if final_data is not None:
            messages.append(messaging.make_message(source.subject, final_type, final_data))
        uids = collect_uids(source.data)
        # The file is marked handled and its messages queued in one commit, then sent: a kill in
        # between neither re-transfers the file nor loses its `file` message (sent at restart).
        outbox = self.state.mark_handled_with_outbox(
            chain.name, entry.key, uids, [{"wire": messaging.wire(message)} for message in messages])
        for message in messages:
            self._publish(message)
        self.state.outbox_done(outbox)
        self.metrics.child(self.metrics.files_received, chain.name).inc()
        self.metrics.files_done(chain.name)
        self.metrics.child(self.metrics.last_transfer, chain.name).set(time.time())
        mtime = source.data.get("mtime")
        if isinstance(mtime, (int, float)):
            self.metrics.child(self.metrics.arrival_latency, chain.name).observe(max(0.0, time.time() - mtime))
        for other in entry.sources:
            if other is not source:
                self.send_ack(other)

    def send_ack(self, announcement: messaging.Message) -> None:
        """Tell a server that a file it announced is handled here (it may delete its copy)."""
        request_address = announcement.data.get("request_address")
        if not request_address:
            return
        try:
            self.requesters.get(str(request_address)).request(
                messaging.make_message(announcement.subject, "ack", dict(announcement.data)),
                timeout=max(self.chain.req_timeout, 0.1) * 3, resend_after=None)
        except RequestError as exc:
            logger.debug("Chain %s: ack to %s not answered: %s", self.chain.name, request_address, exc)

    def catch_up(self, request_address: str, since: float) -> None:
        """Ask a server for what it announced since ``since`` and request the files missed."""
        rejoining.catch_up(self.chain, self.requesters, self.state, self.on_announcement, request_address, since)

    def _publish(self, message: messaging.Message) -> None:
        if self.publisher is None:
            return
        wait = self._publish_after - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        if self.publisher.send(message):
            self.metrics.child(self.metrics.messages_published, self.chain.name, message_type_label(message.type)).inc()
        else:
            self.metrics.child(self.metrics.messages_dropped, self.chain.name).inc()


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class Client:
    """The client service: the state store, the scheduler and the chains (run by a ChainService)."""

    kind = "client"

    def __init__(self, config: Config, metrics: Metrics | None = None, state: StateStore | None = None,
                 workers_per_chain: int = 4, max_fetch_attempts: int = 6):
        self.config = config
        self.metrics = metrics or Metrics(self.kind)
        self._state_path: str | None = None
        if state is None:
            directory = config.daemon.state_directory
            self._state_path = (os.path.join(directory, os.path.basename(default_state_path(config.path, "client")))
                                if directory else default_state_path(config.path, "client"))
        self.state: StateStore | None = state
        self.metrics.watch_state_store(lambda: self.state)
        self.workers_per_chain = workers_per_chain
        self.max_fetch_attempts = max_fetch_attempts
        self.scheduler = Scheduler("client-scheduler")
        self.service = ChainService(self.kind, self._make_chain, self.metrics, tick=self._heartbeat)
        self.ready = threading.Event()

    @property
    def chains(self) -> dict[str, FollowedChain]:
        return self.service.chains

    def chain_parts(self) -> FollowingParts:
        """What each chain is given: shared metrics, state store and scheduler, and the chains' settings."""
        return FollowingParts(self.metrics, self.state, self.scheduler, messaging.publisher_curve(self.config),
                              self.workers_per_chain, self.max_fetch_attempts)

    def _make_chain(self, chain: ClientChain) -> FollowedChain:
        return FollowedChain(chain, self.chain_parts())

    def start(self) -> None:
        if self.state is None:
            self.state = StateStore(self._state_path)
        self.scheduler.start()
        self.service.start(self.config.chains)
        self.ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.scheduler.stop()
        self.service.stop(timeout)
        if self.state is not None:
            self.state.close()

    def reload(self, config: Config) -> None:
        """Rebuild changed chains, start new ones, stop removed ones; unchanged chains keep running."""
        self.service.reload(self.config, config, lambda new: setattr(self, "config", new))

    def _heartbeat(self) -> None:
        for followed in list(self.chains.values()):
            try:
                followed.heartbeat()
            except Exception:  # noqa: BLE001
                logger.exception("Heartbeat failed")

    def health(self) -> dict[str, Any]:
        chains = {}
        now = time.monotonic()
        for name, followed in self.chains.items():
            silent = min((now - t for t in followed.provider_last_heard.values()), default=None)
            chains[name] = {"listening": followed.listening(),
                            "pending": len(followed.pending),
                            "given_up": sum(1 for e in list(followed.pending.values()) if e.given_up),
                            "seconds_since_last_message": silent}
        return {"chains": chains, "ok": all(c["listening"] for c in chains.values())}

    def fatal_error(self) -> str | None:
        return self.service.fatal
