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

The original mirror crashed on its first section (reference §7.1); its
``push``/``ack``/``file`` publications for the inside transfer are not repeated
here, because an outside client would take them for a hot spare's messages.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from urllib.parse import urlsplit

from trollmoves import messaging
from trollmoves.client import Scheduler, collect_uids, compose_destination
from trollmoves.config import MirrorChain
from trollmoves.errors import MessageDecodeError, RequestError
from trollmoves.metrics import message_type_label
from trollmoves.server import Server, ServedChain, ServerOptions, file_entries, request_curve

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "move_it_mirror"


class MirroredChain(ServedChain):
    """A mirror section: upstream subscriber + re-announcer + request port serving pulled files."""

    chain: MirrorChain

    def __init__(self, chain: MirrorChain, server: Mirror):
        super().__init__(chain, server)
        self.matcher = None  # nothing is watched: files come from upstream
        self.sources: dict[str, list[messaging.Message]] = {}
        self._sources_lock = threading.Lock()
        self._pull_locks: dict[str, threading.Lock] = {}

    def start(self) -> None:
        self.metrics.init_chain(self.chain.name)
        if self.chain.request_port:
            self.request_server = messaging.RequestServer(self.chain.request_port, self.chain.request_bind_address,
                                                          curve=request_curve(self.chain, self.server.config)).start()
            self._spawn(self._serve_requests, f"requests:{self.chain.name}")
        self._spawn(self._upstream_loop, f"upstream:{self.chain.name}")

    # inside: follow the providers -----------------------------------------------------------------
    def _upstream_loop(self) -> None:
        chain = self.chain
        topics = [chain.client_topic or chain.topic]
        subscriber = messaging.Subscriber((), topics, on_malformed=lambda _e: self.metrics.messages_malformed.labels(
            chain.name).inc())
        for provider in chain.providers:
            subscriber.add(provider.address, [provider.topic] if provider.topic else None)
        try:
            while not self._stop.is_set():
                for _address, message in subscriber.recv(0.25):
                    try:
                        self.from_upstream(message)
                    except Exception:  # noqa: BLE001
                        logger.exception("Mirror chain %s: cannot relay a %s message", chain.name, message.type)
        finally:
            subscriber.close()

    def from_upstream(self, message: messaging.Message) -> None:
        data = message.data if isinstance(message.data, dict) else None
        if message.type not in ("file", "dataset", "collection") or not data or "request_address" not in data:
            return
        self.metrics.messages_received.labels(self.chain.name, message_type_label(message.type)).inc()
        entries = file_entries(data)
        if not entries:
            return
        first_path = urlsplit(str(entries[0]["uri"])).path
        with self._sources_lock:
            known = first_path in self.sources
            alternatives = self.sources.setdefault(first_path, [])
            if all(m.data.get("request_address") != data["request_address"] for m in alternatives):
                alternatives.append(message)
            while len(self.sources) > self.chain.announce_history:
                oldest = next(iter(self.sources))
                self.sources.pop(oldest)
                self._pull_locks.pop(oldest, None)
        if known:
            return  # announced already (another provider's copy is kept as an alternative source)
        relayed = dict(data)
        relayed["request_address"] = self.server.request_address(self.chain)
        for entry in entries:
            self.remember(urlsplit(str(entry["uri"])).path, message.type, relayed)
        if self.chain.delay:
            self.server.scheduler.call_later(
                self.chain.delay, lambda: self._announce(message.type, relayed, len(entries)))
        else:
            self._announce(message.type, relayed, len(entries))

    def _announce(self, atype: str, data: dict, count: int) -> None:
        msg = messaging.make_message(self.chain.topic, atype, data)
        if self.server.publish(msg, self.chain.name):
            self.metrics.files_announced.labels(self.chain.name).inc(count)
            logger.info("Mirror chain %s: re-announced %s", self.chain.name, ", ".join(collect_uids(data)))

    # outside: serve requests ----------------------------------------------------------------------
    def refusal(self, path: str) -> str | None:
        with self.history_lock:
            return None if path in self.history else "not_announced"

    def _transfer_once(self, path: str, destination: str, rel_path: str | None,
                       backup_targets: list | None) -> str | None:
        local, error = self.local_copy(path)
        if error:
            return error
        return super()._transfer_once(local, destination, rel_path, backup_targets)

    def local_copy(self, upstream_path: str) -> tuple[str, str | None]:
        """The pulled copy of an upstream file, pulling it first if needed: (local path, error or None)."""
        uid = os.path.basename(upstream_path)
        with self._sources_lock:
            lock = self._pull_locks.setdefault(upstream_path, threading.Lock())
            sources = list(self.sources.get(upstream_path, ()))
        if not sources:
            return upstream_path, f"{upstream_path} has no upstream source"
        composed = compose_destination(self.chain.destination, dict(sources[0].data), None)[1]
        directory = urlsplit(composed).path
        local = os.path.join(directory if directory.endswith("/") else directory + "/", uid)
        with lock:
            if os.path.exists(local):
                return local, None
            os.makedirs(directory, exist_ok=True)
            errors = []
            for source in sources:
                error = self._pull(source)
                if error is None and os.path.exists(local):
                    with self.history_lock:
                        self.history[local] = self.history.get(upstream_path)
                    if self.chain.delete:
                        self.server.deleter.schedule(local, self.chain.remove_delay)
                    return local, None
                errors.append(error or f"{local} missing after the pull")
        return local, "; ".join(str(e) for e in errors) or f"{upstream_path} has no upstream source"

    def _pull(self, source: messaging.Message) -> str | None:
        chain = self.chain
        data = dict(source.data)
        destination, _public = compose_destination(chain.destination, data, chain.login)
        data["destination"] = destination
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


class Mirror(Server):
    """The mirror service: a Server whose chains are fed from upstream instead of directories."""

    kind = "mirror"
    chain_class = MirroredChain

    def __init__(self, config, options: ServerOptions | None = None, metrics=None, transfers=None):
        options = options or ServerOptions()
        if options.publisher_name != PUBLISHER_NAME:
            options = ServerOptions(**{**options.__dict__, "publisher_name": PUBLISHER_NAME})
        super().__init__(config, options, metrics, transfers)
        self.scheduler = Scheduler("mirror-scheduler")

    def start(self) -> None:
        self.scheduler.start()
        super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.scheduler.stop()


__all__ = ["Mirror", "MirroredChain", "ServerOptions"]
