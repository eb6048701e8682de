"""The mirror (move_it_mirror.py): relay announcements and files across a network boundary.

Per section, back to back: toward the inside, a client of ``providers`` (topic
``client_topic``, or a provider's own ``/topic``); toward the outside, a server
with its own publisher (``-p``, heartbeat ``/heartbeat/move_it_mirror``) and
request port. Each upstream announcement is re-announced with the mirror's
``request_address`` (after ``delay`` seconds); when an outside client asks for a
file, the mirror has the inside server push it into ``destination`` (a local
directory; served from there if it is already present), then pushes it on to
the requested destination like a server, and removes the local copy
``remove_delay`` s later when ``delete`` is set.

A restart loses nothing the mirror relayed: each relayed announcement (the
upstream message(s) and what was re-announced) is kept in the state store
(``[trollmoves] state_directory``, bounded by ``announce_history``) and reloaded
at start, without being announced again, so outside clients can still request
those files and catch up on them. At start, and when an upstream request address
is first seen, the mirror asks each upstream what it announced since it was last
heard (a catch-up ``info`` request) and relays what it missed while it was down.

Composed, not inherited: each section is a ``ProviderFeed`` following the
upstreams, the relay decision (``relay_decision``: confined? known? another
source?), the announcement history and request port every serving chain has
(``services.serving``), with ``local_copy`` as the port's pull hook; the daemon is
a ``ServingDaemon`` (publisher, ChainService, deleter) plus a scheduler and the
state store. Neither the server nor the client is imported.

The original mirror crashed on its first section (reference §7.1); its
``push``/``ack``/``file`` publications for the inside transfer are not repeated
here, because an outside client would take them for a hot spare's messages.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from trollmoves import confine, messaging
from trollmoves.announcements import ANNOUNCEMENT_TYPES, collect_uids, jsonable
from trollmoves.config import Config, MirrorChain
from trollmoves.destinations import compose_destination
from trollmoves.errors import MessageDecodeError, RequestError
from trollmoves.metrics import Metrics, message_type_label
from trollmoves.push_plan import entry_path, uri_entries
from trollmoves.relay_decision import relay_decision, source_news
from trollmoves.services.catch_up import (
    CATCH_UP_MARGIN,
    PROVIDER_SEEN_PERSIST_INTERVAL,
    REJOIN_GRACE,
    catch_up_request,
    offered_announcements,
)
from trollmoves.services.following import ProviderFeed
from trollmoves.services.scheduler import Scheduler
from trollmoves.services.serving import ServerOptions, ServingChain, ServingDaemon, ServingParts
from trollmoves.state import StateStore, default_state_path

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "move_it_mirror"
CATCH_UP_QUEUE = 256
PERIODIC_CATCH_UP = 60.0  # s between catch-ups with every upstream while running


def state_path(config: Config) -> str:
    """Where the mirror keeps its state: ``state_directory`` if set, else the per-config default."""
    default = default_state_path(config.path, "mirror")
    directory = config.daemon.state_directory
    return os.path.join(directory, os.path.basename(default)) if directory else default


def local_directory(destination: str, ftp_root: str) -> str:
    """Where pulled files land on this host: ``ftp_root`` + the destination's path (0.19's create_local_dir).

    With the default ``ftp_root = /`` that is the destination path itself; with an
    ``ftp://`` destination served by a local FTP server rooted at ``ftp_root``, it is
    where that server writes the files (0.19 created this directory but then looked
    for the file at the bare path).
    """
    path = urlsplit(destination).path
    return os.path.join(ftp_root, *[part for part in path.split("/") if part]) + "/"


def revive(subject: str, atype: str, data: Any) -> messaging.Message:
    """A message rebuilt from stored JSON, typed as if received (ISO times become datetimes again)."""
    return messaging.decode(messaging.encode(subject, atype, data))


class MirroredChain(ServingChain):
    """A mirror section: upstream follower + re-announcer + request port serving pulled files."""

    chain: MirrorChain

    def __init__(self, chain: MirrorChain, parts: ServingParts, state: StateStore, scheduler: Scheduler):
        super().__init__(chain, parts, source_for=self.local_copy)
        self.matcher = None  # nothing is watched: files come from upstream
        self.state = state
        self.scheduler = scheduler
        self.feed: ProviderFeed | None = None
        self.sources: dict[str, list[messaging.Message]] = {}
        self._sources_lock = threading.Lock()
        self._pull_locks: dict[str, threading.Lock] = {}
        self.started_at = time.time()
        self._upstreams: set[str] = set()
        self._upstreams_lock = threading.Lock()
        self._persisted_seen: dict[str, float] = {}
        self._without_catch_up: set[str] = set()
        self._catch_ups: queue.Queue[tuple[str, float]] = queue.Queue(maxsize=CATCH_UP_QUEUE)
        self._catch_up_after = 0.0
        self._catch_up_thread: threading.Thread | None = None
        self._recorded = 0
        self.periodic_catch_up = PERIODIC_CATCH_UP
        self._last_periodic = time.monotonic()

    def start(self) -> None:
        chain = self.chain
        self.metrics.init_chain(chain.name)
        self.metrics.add_scrape_callback(lambda: self.metrics.pending_files.labels(chain.name).set(
            self.port.inflight()), chain=chain.name)
        self.metrics.watch_destination(chain.name, chain.destination)
        self._warn_unused_keys()
        self.restore()
        self.open_request_port()
        self.feed = ProviderFeed(f"Mirror chain {chain.name}", chain.providers, [chain.client_topic or chain.topic],
                                 lambda _address, message: self.from_upstream(message),
                                 lambda _e: self.metrics.messages_malformed.labels(chain.name).inc(),
                                 provider_topics=lambda provider: [provider.topic] if provider.topic else None,
                                 error_text="cannot relay a")
        self.feed.start(10)
        self._start_catching_up()

    def stop(self, timeout: float) -> None:
        """Stop following and serving; a catch-up still waiting for a reply ends on its own, touching nothing."""
        self._stop.set()
        self.drain(timeout)
        if self.feed is not None:
            self.feed.stop(timeout)
        self.join(timeout)
        if self._catch_up_thread is not None:
            self._catch_up_thread.join(min(timeout, 1.0))

    def healthy(self) -> bool:
        return True  # nothing is watched

    def restart_watcher(self) -> bool:
        return True

    def _warn_unused_keys(self) -> None:
        """Keys a mirror section accepts (0.19 read them with the client's defaults) without effect.

        0.19's mirror published on a plain port (no nameserver registration) and its
        listeners subscribed to ``client_topic`` only (no heartbeat topics); so do we.
        """
        for name, default in (("nameservers", None), ("heartbeat", True)):
            if getattr(self.chain, name) != default:
                logger.warning("Mirror chain %s: %s has no effect on a mirror (as in 0.19): its publisher is "
                               "the -p port, and it follows the providers' announcements only",
                               self.chain.name, name)

    # persistence ----------------------------------------------------------------------------------
    def restore(self) -> None:
        """Reload what was relayed before a restart, so that it stays requestable and catch-up-able.

        Nothing is announced again: an outside client that missed an announcement
        asks for it (catch-up) like it would with any server.
        """
        chain = self.chain
        rows = self.state.announcements(chain.name, limit=chain.announce_history)
        self.state.forget_announcements(chain.name, chain.announce_history)
        restored = 0
        for key, payload, at in rows:
            try:
                sources = [revive(s["subject"], s["type"], s["data"]) for s in payload["sources"]]
                relayed = revive(chain.topic, payload["type"], payload["relayed"])
                when = float(payload.get("time", at))
            except (KeyError, TypeError, ValueError, MessageDecodeError) as exc:
                logger.warning("Mirror chain %s: skipping an unreadable stored announcement of %s: %s",
                               chain.name, key, exc)
                continue
            with self._sources_lock:
                self.sources[key] = sources
            entries = uri_entries(relayed.data)
            for entry in entries:  # with its original time: outside catch-ups compare times
                self.announcements.remember(entry_path(entry), relayed.type, relayed.data, when)
            self._announce_if_still_delayed(relayed, len(entries), when)
            restored += 1
        logger.info("Mirror chain %s: restored %d announcements from the state store", chain.name, restored)

    def _announce_if_still_delayed(self, relayed: messaging.Message, count: int, when: float) -> None:
        """An announcement still waiting for its ``delay`` when the mirror stopped was never sent: send it."""
        remaining = when + self.chain.delay - time.time()
        if self.chain.delay and remaining > 0:
            self.scheduler.call_later(remaining, lambda: self._announce(relayed.type, relayed.data, count))

    def _record(self, key: str) -> None:
        """Store the upstream sources and the relayed announcement of ``key`` (at most announce_history)."""
        with self._sources_lock:
            sources = list(self.sources.get(key, ()))
        announced = self.announcements.get(key)
        if not sources or announced is None:
            return
        self.state.remember_announcement(self.chain.name, key, {
            "sources": [{"subject": s.subject, "type": s.type, "data": jsonable(s.data)} for s in sources],
            "type": announced.atype, "relayed": jsonable(announced.data), "time": announced.time})
        self._recorded += 1
        if self._recorded % max(1, self.chain.announce_history // 10) == 0:
            self.state.forget_announcements(self.chain.name, self.chain.announce_history)

    # inside: follow the providers -----------------------------------------------------------------
    def _upstream_topics(self) -> list[str]:
        topics = [self.chain.client_topic or self.chain.topic]
        topics += [provider.topic for provider in self.chain.providers if provider.topic]
        return [topic for topic in topics if topic]

    def from_upstream(self, message: messaging.Message) -> bool:
        """A message received from upstream: counted, then relayed unless known; True if relayed."""
        data = message.data if isinstance(message.data, dict) else None
        if message.type not in ANNOUNCEMENT_TYPES or not data or "request_address" not in data:
            return False
        self.metrics.messages_received.labels(self.chain.name, message_type_label(message.type)).inc()
        return self.relay_upstream(message)

    def relay_upstream(self, message: messaging.Message) -> bool:
        """Re-announce an upstream announcement unless its file is known already; True if relayed."""
        data = message.data
        decision = relay_decision(data, confine.template_fields(self.chain.destination))
        if decision.refused is not None:
            self.metrics.requests_refused.labels(self.chain.name, "path_escape").inc()
            logger.warning("Mirror chain %s: refused an announcement (path_escape): %s", self.chain.name,
                           decision.refused)
            return False
        self._note_upstream(str(data["request_address"]))
        first_path = decision.key
        if first_path is None:
            return False
        with self._sources_lock:
            known, added = source_news(self.sources.get(first_path), data["request_address"])
            if added:
                self.sources.setdefault(first_path, []).append(message)
            while len(self.sources) > self.chain.announce_history:
                oldest = next(iter(self.sources))
                self.sources.pop(oldest)
                self._pull_locks.pop(oldest, None)
        if known:
            if added:
                self._record(first_path)  # another provider's copy, kept as an alternative source
            return False
        entries = uri_entries(data)
        relayed = dict(data)
        relayed["request_address"] = self.parts.request_address(self.chain)
        for entry in entries:
            self.remember(entry_path(entry), message.type, relayed)
        self._record(first_path)
        if self.chain.delay:
            self.scheduler.call_later(self.chain.delay, lambda: self._announce(message.type, relayed, len(entries)))
        else:
            self._announce(message.type, relayed, len(entries))
        return True

    def _announce(self, atype: str, data: dict, count: int) -> None:
        msg = messaging.make_message(self.chain.topic, atype, data)
        if self.parts.publish(msg, self.chain.name):
            self.metrics.files_announced.labels(self.chain.name).inc(count)
            self.metrics.files_done(self.chain.name, count)
            logger.info("Mirror chain %s: re-announced %s", self.chain.name, ", ".join(collect_uids(data)))

    # inside: catch up on what was announced while the mirror was away -------------------------------
    def _start_catching_up(self) -> None:
        """Ask every upstream known from the state store for what it announced since it was last heard."""
        self._catch_up_after = time.monotonic() + REJOIN_GRACE  # let the subscriptions take effect first
        self._catch_up_thread = threading.Thread(target=self._catch_up_loop, daemon=True,
                                                 name=f"catch-up:{self.chain.name}")
        self._catch_up_thread.start()
        for request_address, last_seen in self.state.providers(self.chain.name).items():
            with self._upstreams_lock:
                self._upstreams.add(request_address)
            self._ask_catch_up(request_address, last_seen - CATCH_UP_MARGIN)

    def _note_upstream(self, request_address: str) -> None:
        """A new upstream is caught up on since the mirror started; each is persisted as last heard now."""
        now = time.time()
        with self._upstreams_lock:
            first = request_address not in self._upstreams
            self._upstreams.add(request_address)
            persist = now - self._persisted_seen.get(request_address, 0.0) > PROVIDER_SEEN_PERSIST_INTERVAL
            if persist:
                self._persisted_seen[request_address] = now
        if first:
            self._ask_catch_up(request_address, self.started_at - CATCH_UP_MARGIN)
        if persist:
            self.state.touch_provider(self.chain.name, request_address, now)

    def _ask_catch_up(self, request_address: str, since: float) -> None:
        try:
            self._catch_ups.put_nowait((request_address, since))
        except queue.Full:
            logger.warning("Mirror chain %s: too many catch-ups queued, not catching up from %s",
                           self.chain.name, request_address)

    def _catch_up_loop(self) -> None:
        """Catch-ups run here, not on the receive thread: an upstream may take seconds to answer."""
        while not self._stop.is_set():
            try:
                request_address, since = self._catch_ups.get(timeout=0.25)
            except queue.Empty:
                self._catch_up_periodically()
                continue
            wait = self._catch_up_after - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            try:
                self.catch_up(request_address, since)
            except Exception:  # noqa: BLE001 - one bad upstream never stops the others' catch-up
                logger.exception("Mirror chain %s: catch-up from %s failed", self.chain.name, request_address)

    def _catch_up_periodically(self) -> None:
        """Every ``periodic_catch_up`` s, ask each upstream for what it announced meanwhile.

        A PUB/SUB message lost on the way (a network cut, a slow-joining
        subscription after the inside server restarted) is otherwise never
        relayed: the mirror has no heartbeat watch of its own. Already relayed
        files are skipped by path, so this costs one small request per upstream.
        """
        now = time.monotonic()
        if now - self._last_periodic < self.periodic_catch_up:
            return
        self._last_periodic = now
        since = time.time() - self.periodic_catch_up - CATCH_UP_MARGIN
        with self._upstreams_lock:
            upstreams = [a for a in self._upstreams if a not in self._without_catch_up]
        for request_address in upstreams:
            self._ask_catch_up(request_address, since)

    def catch_up(self, request_address: str, since: float) -> int:
        """Ask one upstream for what it announced since ``since``, relay what was missed; how many were."""
        chain = self.chain
        topics = self._upstream_topics()
        request = catch_up_request(topics[0] if topics else None, since)
        try:
            reply = messaging.Requester(request_address).request(request,
                                                                 timeout=max(chain.transfer_req_timeout, 2.0))
        except RequestError as exc:
            logger.warning("Mirror chain %s: no catch-up from %s (files it announced while the mirror was "
                           "away are not relayed): %s", chain.name, request_address, exc)
            return 0
        announcements = offered_announcements(reply)
        if announcements is None:
            self._no_catch_up_offered(request_address)
            return 0
        count = 0
        for item in announcements:
            if self._stop.is_set():
                return count
            message = self._missed_message(item)
            if message is not None and self.relay_upstream(message):
                count += 1
        self.metrics.catch_up_files.labels(chain.name).inc(count)
        logger.info("Mirror chain %s: caught up %d missed files from %s", chain.name, count, request_address)
        return count

    def _no_catch_up_offered(self, request_address: str) -> None:
        """An original (0.19) server has no catch-up: said once per upstream, it is not an error."""
        if request_address in self._without_catch_up:
            return
        self._without_catch_up.add(request_address)
        logger.info("Mirror chain %s: %s does not offer catch-up (an original trollmoves server?): files it "
                    "announced while the mirror was away are not relayed", self.chain.name, request_address)

    def _missed_message(self, item: Any) -> messaging.Message | None:
        """An announcement of a catch-up reply as a message, if it is one this chain follows."""
        if not isinstance(item, dict):
            return None
        subject, atype, data = item.get("subject"), item.get("type", "file"), item.get("data")
        if (not isinstance(subject, str) or atype not in ANNOUNCEMENT_TYPES or not isinstance(data, dict)
                or "request_address" not in data):
            return None
        topics = self._upstream_topics()
        if topics and not any(subject.startswith(topic) for topic in topics):
            return None
        try:
            return messaging.make_message(subject, atype, data)
        except MessageDecodeError:
            return None

    # outside: serve requests, pulling each file from upstream first -------------------------------
    def refusal(self, path: str) -> str | None:
        return None if self.announcements.announced(path) else "not_announced"

    def local_copy(self, upstream_path: str) -> tuple[str, str | None]:
        """The pulled copy of an upstream file, pulling it first if needed: (local path, error or None)."""
        uid = os.path.basename(upstream_path)
        with self._sources_lock:
            lock = self._pull_locks.setdefault(upstream_path, threading.Lock())
            sources = list(self.sources.get(upstream_path, ()))
        if not sources:
            return upstream_path, f"{upstream_path} has no upstream source"
        composed = compose_destination(self.chain.destination, dict(sources[0].data), None)[1]
        directory = local_directory(composed, self.chain.ftp_root)
        local = os.path.join(directory, uid)
        with lock:
            if os.path.exists(local):
                return local, None
            if self.chain.create_target_directory:
                os.makedirs(directory, exist_ok=True)
            elif not os.path.isdir(directory):
                return local, f"{directory} does not exist (create_target_directory is false)"
            errors = []
            for source in sources:
                error = self._pull(source)
                if error is None and os.path.exists(local):
                    if self.chain.delete:
                        self.parts.deleter.schedule(local, self.chain.remove_delay)
                    return local, None
                errors.append(error or f"{local} missing after the pull")
        return local, "; ".join(str(e) for e in errors) or f"{upstream_path} has no upstream source"

    def _pull(self, source: messaging.Message) -> str | None:
        chain = self.chain
        data = dict(source.data)
        destination, _public = compose_destination(chain.destination, data, chain.login)
        data["destination"] = destination
        if chain.backup_targets:
            data["backup_targets"] = list(chain.backup_targets)
        address = str(source.data["request_address"])
        started = time.monotonic()
        try:
            reply = messaging.Requester(address).request(messaging.make_message(source.subject, "push", data),
                                                         timeout=chain.transfer_req_timeout * 3,
                                                         resend_after=chain.transfer_req_timeout)
        except (RequestError, MessageDecodeError) as exc:
            logger.warning("Mirror chain %s: upstream %s doesn't answer: %s", chain.name, address, exc)
            return str(exc)
        if reply.type in ("err", "error", "unknown"):
            logger.error("Mirror chain %s: upstream %s refused: %s", chain.name, address, reply.data)
            return f"upstream: {reply.data}"
        logger.info("Mirror chain %s: pulled %s from %s in %.3f s", chain.name,
                    ", ".join(collect_uids(source.data)), address, time.monotonic() - started)
        return None


class Mirror(ServingDaemon):
    """The mirror service: serving chains fed from upstream instead of directories.

    ``state``: a store to use (tests); by default the mirror opens its own at start
    (``[trollmoves] state_directory``, else under $XDG_STATE_HOME) and closes it at stop.
    """

    kind = "mirror"

    def __init__(self, config: Config, options: ServerOptions | None = None, metrics: Metrics | None = None,
                 transfers=None, state: StateStore | None = None):
        options = dataclasses.replace(options or ServerOptions(), publisher_name=PUBLISHER_NAME)
        super().__init__(config, options, metrics, transfers)
        self.scheduler = Scheduler("mirror-scheduler")
        self.state: StateStore | None = state
        self._state_path = None if state is not None else state_path(config)
        self.metrics.watch_state_store(lambda: self.state)

    def make_chain(self, chain: MirrorChain) -> MirroredChain:
        return MirroredChain(chain, self.parts, self.state, self.scheduler)

    def start(self) -> None:
        if self.state is None:
            self.state = StateStore(self._state_path)  # unwritable: ConfigError before anything is bound
        self.scheduler.start()
        super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.scheduler.stop()
        if self._state_path is not None and self.state is not None:
            self.state.close()  # only the store it opened; an injected one belongs to the caller
            self.state = None


__all__ = ["Mirror", "MirroredChain", "ServerOptions"]
