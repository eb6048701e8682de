"""What a serving daemon (server, mirror) is made of: one publisher, the chains' request ports, shared parts.

A server chain announces what it watches, a mirror chain what it follows upstream;
both then serve what they announced on their request port. The daemon around them is
the same: one publisher (heartbeat, a short grace after binding so that the first
announcements reach subscribers that reconnect), one transfer service, one deleter,
and the chains run by a ``ChainService`` (watchers checked and restarted, reload,
a shared stop deadline: pushes in progress get what is left of it, then are aborted).

A chain is given what it needs (``ServingParts``) instead of reaching back into its
daemon; ``ServingChain`` is the part every serving chain has: its announcement
history and its request port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trollmoves import messaging
from trollmoves.messaging import publisher_curve, request_curve
from trollmoves.metrics import Metrics
from trollmoves.services.announcing import AnnouncementHistory, announced_files
from trollmoves.services.catch_up import REJOIN_GRACE
from trollmoves.services.chain_service import ChainService
from trollmoves.services.deleter import Deleter
from trollmoves.services.request_port import RequestPort

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 30


@dataclass(frozen=True)
class ServerOptions:
    """Command-line level options of a server (or mirror)."""

    publish_port: int = 9010
    publish_address: str = "*"
    backlog: bool = True
    backlog_delay: float = 0.0
    polling: bool = False
    chain_check_interval: float = 30.0
    max_notifier_restarts: int = 10
    workers_per_chain: int = 8
    publisher_name: str = "move_it_server"


@dataclass(frozen=True)
class ServingParts:
    """What a serving chain is given by its daemon.

    ``publish(message, chain_name)``: send an announcement (True if sent);
    ``request_address(chain)``: the ``host:port`` announced for a chain;
    ``files(subject, max_count)``: the ``info`` listing of the whole process;
    ``request_curve(chain)``: CURVE keys of a chain's request port;
    ``abort()``: the event that ends pushes still running at the end of a stop (None: wait for them).
    """

    options: ServerOptions
    metrics: Any
    transfers: Any
    deleter: Deleter
    publish: Callable[[messaging.Message, str], bool]
    request_address: Callable[[Any], str]
    files: Callable[[str, int], list[str]]
    request_curve: Callable[[Any], Any]
    abort: Callable[[], threading.Event | None]


class ServingChain:
    """The part of every serving chain: announcement history, request port, threads, watcher-check state.

    A subclass says what the chain may serve (``refusal``) and, for the mirror, where a
    file's local copy comes from (``source_for``).
    """

    def __init__(self, chain: Any, parts: ServingParts,
                 source_for: Callable[[str], tuple[str, str | None]] | None = None):
        self.chain = chain
        self.parts = parts
        self.metrics = parts.metrics
        self.announcements = AnnouncementHistory(chain.topic, chain.announce_history)
        self.port = RequestPort(chain, self.announcements, transfers=parts.transfers, deleter=parts.deleter,
                                metrics=parts.metrics, workers=parts.options.workers_per_chain,
                                refusal=self.refusal, files=parts.files, source_for=source_for)
        self.consecutive_restarts = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def refusal(self, path: str) -> str | None:
        """Why this chain must not serve ``path`` (None: it may)."""
        raise NotImplementedError

    # what tests and the daemon read ---------------------------------------------------------------
    @property
    def history(self):
        """The announcements by path, oldest first."""
        return self.announcements.entries

    @property
    def request_server(self) -> messaging.RequestServer | None:
        return self.port.server

    @request_server.setter
    def request_server(self, server) -> None:
        self.port.server = server

    @property
    def pushed_cache_ttl(self) -> float:
        return self.port.pushed_cache_ttl

    @pushed_cache_ttl.setter
    def pushed_cache_ttl(self, ttl: float) -> None:
        self.port.pushed_cache_ttl = ttl

    def remember(self, path: str, atype: str, data: dict) -> None:
        self.announcements.remember(path, atype, data)

    def periodic(self) -> None:
        """At each watcher check: forget the files pushed out of the history that are gone."""
        self.announcements.forget_vanished()

    def dispatch(self, request: messaging.Request) -> None:
        self.port.dispatch(request)

    def push(self, message: messaging.Message) -> messaging.Message:
        return self.port.push(message)

    # lifecycle ------------------------------------------------------------------------------------
    def open_request_port(self) -> None:
        if self.chain.request_port:
            self._threads.append(self.port.open(self.chain.request_port, self.chain.request_bind_address,
                                                self.parts.request_curve(self.chain)))

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def drain(self, timeout: float) -> None:
        """Stop answering; pushes in progress finish (or are aborted when the daemon stops)."""
        self.port.drain(timeout, self.parts.abort())

    def join(self, timeout: float) -> None:
        """Wait for the chain's threads, then close the request port."""
        for thread in self._threads:
            thread.join(timeout)
        self.port.close()


class ServingDaemon:
    """A server or mirror: chains (``make_chain``) run by a ChainService, one publisher, transfers, a deleter."""

    kind = "server"

    def __init__(self, config: Any, options: ServerOptions, metrics: Metrics | None = None, transfers=None):
        from trollmoves.movers import TransferService

        self.config = config
        self.options = options
        self.metrics = metrics or Metrics(self.kind)
        self._abort = threading.Event()
        self.transfers = transfers or TransferService(cancel=self._abort)
        self._own_transfers = transfers is None
        self.metrics.watch_pool(self.transfers)
        self.publisher: messaging.Publisher | None = None
        self.deleter = Deleter()
        self.service = ChainService(self.kind, self.make_chain, self.metrics, tick=self._heartbeat,
                                    check_interval=self.options.chain_check_interval,
                                    max_restarts=self.options.max_notifier_restarts, shared_stop_deadline=True)
        self.parts = ServingParts(self.options, self.metrics, self.transfers, self.deleter, self.publish,
                                  self.request_address, self.announced_files,
                                  lambda chain: request_curve(chain, self.config), self._abort_event)
        self._stop = threading.Event()
        self._own_ip: str | None = None
        self._publish_after = 0.0
        self.ready = threading.Event()

    def make_chain(self, chain_config: Any) -> Any:
        raise NotImplementedError

    @property
    def chains(self) -> dict[str, Any]:
        return self.service.chains

    # service protocol -----------------------------------------------------------------------------
    def start(self) -> None:
        self.publisher = messaging.Publisher(self.options.publisher_name, self.options.publish_port,
                                             self.options.publish_address, nameservers=False,
                                             curve=publisher_curve(self.config)).start()
        self._publish_after = time.monotonic() + (REJOIN_GRACE if self.options.publish_port else 0.0)
        self.deleter.start()
        if self.options.backlog_delay:
            time.sleep(self.options.backlog_delay)
        self.service.start(self.config.chains)
        self.publisher.heartbeat(HEARTBEAT_INTERVAL)
        self.ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.service.stop(timeout)
        self.deleter.stop()
        if self.publisher is not None:
            self.publisher.stop()
        if self._own_transfers:
            self.transfers.close()

    def reload(self, config: Any) -> None:
        """Rebuild changed chains, start new ones, stop removed ones; unchanged chains keep running."""
        self.service.reload(self.config, config, self._apply_config)

    def _apply_config(self, config: Any) -> None:
        self.config = config

    def fatal_error(self) -> str | None:
        return self.service.fatal

    def check_chains(self) -> None:
        self.service.check_chains()

    def health(self) -> dict[str, Any]:
        """Per-chain state for /healthz."""
        chains = {}
        for name, served in self.chains.items():
            chains[name] = {"watching": served.healthy(), "announced": len(served.history),
                            "error": served.last_error}
        return {"publisher": self.publisher is not None and not self._stop.is_set(), "chains": chains,
                "ok": all(c["watching"] for c in chains.values()) and self.service.fatal is None}

    # what the chains are given --------------------------------------------------------------------
    def _abort_event(self) -> threading.Event | None:
        """Pushes still running when the daemon stops are aborted (a reload lets them finish)."""
        return self._abort if self.service.stopping and self._own_transfers else None

    def _heartbeat(self) -> None:
        self.publisher.heartbeat(HEARTBEAT_INTERVAL)

    def request_address(self, chain: Any) -> str:
        if chain.request_address:
            host = chain.request_address
        else:
            if self._own_ip is None:
                self._own_ip = messaging.own_ip()
            host = self._own_ip
        return f"{host}:{chain.request_port}"

    def publish(self, message: messaging.Message, chain_name: str) -> bool:
        wait = self._publish_after - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        ok = self.publisher.send(message)
        if ok:
            self.metrics.child(self.metrics.messages_published, chain_name, message.type if message.type in
                               ("file", "dataset", "collection") else "other").inc()
        else:
            self.metrics.child(self.metrics.messages_dropped, chain_name).inc()
        return ok

    def announced_files(self, subject: str, max_count: int) -> list[str]:
        """The ``info`` listing: ``topic/uid`` of what every chain of the process announced (as 0.19)."""
        return announced_files([served.announcements for served in list(self.chains.values())], subject,
                               max_count)
