"""The client (move_it_client.py): follow servers' announcements and have the files pushed here.

Per chain (INI section): one subscriber thread listens to every provider; each
announcement of a file not yet handled is requested from the server that
announced it first (falling back to the next on ``err`` or timeout); after the
transfer the client publishes ``push``, ``ack`` and the final ``file`` (or
``dataset``/``collection``) message exactly as trollmoves 0.19 does.

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

import heapq
import itertools
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote, urlsplit, urlunsplit

from trollsift import compose

from trollmoves import confine, messaging
from trollmoves.chains import reload_chains
from trollmoves.config import ClientChain, Config
from trollmoves.matching import Composer
from trollmoves.movers.checksum import file_checksum
from trollmoves.errors import MessageDecodeError, RequestError
from trollmoves.metrics import Metrics, message_type_label, scheme_label
from trollmoves.redact import strip_password
from trollmoves.state import StateStore, default_state_path, file_key
from trollmoves.unpack import UnpackError, unpack, wants_unpacking

logger = logging.getLogger(__name__)

SERVER_HEARTBEAT_SUBJECT = "/heartbeat/move_it_server"
PROVIDER_SEEN_PERSIST_INTERVAL = 5.0
CATCH_UP_MARGIN = 30.0
REJOIN_GRACE = 1.0
MAX_WARNED_REQUEST_ADDRESSES = 1000  # distinct bad request addresses warned about per chain (then debug)
_REQUEST_ADDRESS = re.compile(r"(?:tcp://)?"  # host name or IPv4, or [IPv6]; then the port
                              r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})")


# --------------------------------------------------------------------------------------------------
# Pure helpers (message shapes of the original)
# --------------------------------------------------------------------------------------------------

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


def compose_destination(template: str | Composer, data: dict, login: str | None) -> tuple[str, str]:
    """(destination sent to the server, with credentials; destination published, without password).

    Host defaults to this host's name when the template has none, as the original does.
    """
    composed = template.compose(data) if isinstance(template, Composer) else compose(template, data)
    parts = urlsplit(composed)
    scheme = parts.scheme or "file"
    host = parts.netloc.rsplit("@", 1)[-1] if parts.netloc else ""
    if not host and scheme != "s3":
        host = socket.gethostname()
    user_info = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    if login:
        user_info = quote_login(login)
    netloc = f"{user_info}@{host}" if user_info else host
    path = as_directory(parts.path)
    with_login = urlunsplit((scheme, netloc, path, parts.query, parts.fragment))
    return with_login, strip_password(with_login)


def quote_login(login: str) -> str:
    """``user[:password]`` percent-encoded for a URL's user-info.

    A password holding ``@``, ``/``, ``#``, ``?`` or ``%`` would otherwise end the user-info
    early: the server would log in with part of it and take the rest for the host or path
    (and a log line would show it). The movers' ``parse_destination`` unquotes both parts.
    ``:`` and RFC 3986's other user-info characters stay as written, so that a trollmoves 0.19
    server, which does not unquote, still gets such passwords right.
    """
    user, colon, password = login.partition(":")
    quoted = quote(user, safe="!$&'()*+,;=")
    return quoted + colon + quote(password, safe="!$&'()*+,;=:") if colon else quoted


def without_userinfo(url: str) -> str:
    """The destination as 0.19 publishes it in ``push`` messages: no user, no password (host and port kept)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def as_directory(path: str) -> str:
    """A client destination always names a directory, as in 0.19: ``/data/in/sub`` is ``/data/in/sub/``.

    0.19's client creates the whole path and publishes ``join(path, uid)``; a server told
    ``/data/in/sub`` without the slash would write every file *as* ``sub``. The slash makes every
    server, ours or 0.19's, and every scheme (S3 included) deliver ``sub/<uid>``.
    """
    return path if not path or path.endswith("/") else path + "/"


def is_local_host(host: str | None) -> bool:
    if not host or host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        address = socket.gethostbyname(host)
    except OSError:
        return False
    if address.startswith("127."):
        return True
    try:
        local = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        local = set()
    return address in local


def make_uri(destination: str, uid: str) -> str:
    """URI of a received file, as the original's ``make_uris``: a plain path if local, else a URL."""
    parts = urlsplit(destination)
    path = os.path.join(parts.path, uid)
    if parts.scheme == "s3":
        return f"s3://{parts.netloc}{path if path.startswith('/') else '/' + path}"
    if parts.scheme in ("", "file") or is_local_host(parts.hostname):
        return path
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def local_directory(destination: str, ftp_root: str) -> str | None:
    """The local directory a destination lands in (``ftp_root`` + the whole path), or None for S3.

    The whole path, as 0.19's ``create_local_dir``: the destination names a directory.
    """
    parts = urlsplit(destination)
    if parts.scheme == "s3":
        return None
    return os.path.join(ftp_root, parts.path.lstrip("/"))


def verify_arrival(data: dict, destination: str, ftp_root: str, method: str) -> str | None:
    """Check each delivered file on this host against its announced checksum: the mismatch, or None.

    The client's ``checksum`` key (default xxh3_128; ``none`` switches verification off) names
    the method it verifies with: an announcement carrying a checksum of that method (our
    servers' default) is verified on arrival when the delivered file is visible here: a
    ``file://`` destination, or FTP to a local name with ``ftp_root`` set (the local directory the
    FTP server serves, as 0.19 uses it for unpacking). SFTP/SCP paths may be chrooted, so they are
    not read here. A corrupt copy is removed so that it is never taken for the file;
    announcements from 0.19 servers carry no checksum.
    """
    if not method or method == "none":
        return None
    parts = urlsplit(destination)
    if parts.scheme == "ftp":
        if ftp_root in ("", "/") or not is_local_host(parts.hostname):
            return None
    elif parts.scheme not in ("", "file"):
        return None
    root = ftp_root if parts.scheme == "ftp" else "/"
    for entry in messaging.entries_with(data, "uid"):
        announced = entry.get("checksum")
        if not isinstance(announced, dict) or announced.get("method") != method:
            continue
        path = os.path.join(root, os.path.join(parts.path, str(entry["uid"])).lstrip("/"))
        try:
            found = file_checksum(path, method).value
        except FileNotFoundError:
            # already taken by a consumer (moved or deleted as soon as it appeared): it arrived, and
            # requesting it again would only fail against a server that deleted its source
            logger.debug("%s was taken before it could be verified", path)
            continue
        except OSError as exc:
            return f"cannot verify {path}: {exc.strerror or exc}"
        if found != announced.get("value"):
            try:
                os.remove(path)
            except OSError:
                pass
            return f"{path} arrived with {method} {found}, announced {announced.get('value')} (copy removed)"
    return None


def replace_metadata(data: dict, replacements: dict[str, str]) -> None:
    """Original ``replace_mda``: config keys override message values, with ``from:to|…`` maps."""
    for key_name, value in replacements.items():
        if key_name not in data:
            continue
        if ":" in value:
            mapping = dict(item.split(":", 1) for item in value.split("|") if ":" in item)
            if str(data[key_name]) in mapping:
                data[key_name] = mapping[str(data[key_name])]
        else:
            data[key_name] = value


# --------------------------------------------------------------------------------------------------
# A small scheduler: one thread for delayed work (hot-spare delays, retries, catch-up)
# --------------------------------------------------------------------------------------------------

class Scheduler:
    """Run callables at a later time on one thread (bounded threads, unlike one Timer per file)."""

    def __init__(self, name: str = "scheduler"):
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def call_later(self, delay: float, function: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), function))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic()))
                if self._stopping:
                    return
                _, _, function = heapq.heappop(self._heap)
            try:
                function()
            except Exception:  # noqa: BLE001
                logger.exception("Scheduled task failed")

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)


# --------------------------------------------------------------------------------------------------
# One chain
# --------------------------------------------------------------------------------------------------

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


class FollowedChain:
    """Subscriber, publisher and transfer workers of one client section."""

    def __init__(self, chain: ClientChain, client: Client):
        self.chain = chain
        self.client = client
        self.metrics = client.metrics
        self.state = client.state
        self.publisher: messaging.Publisher | None = None
        self.pending: dict[str, Pending] = {}
        self.lock = threading.Lock()
        self.workers = ThreadPoolExecutor(max_workers=client.workers_per_chain,
                                          thread_name_prefix=f"fetch:{chain.name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.provider_last_message: dict[str, float] = {}
        self.provider_last_heard: dict[str, float] = {}
        self.provider_min_interval: dict[str, float] = {}
        self.request_addresses_by_provider: dict[str, set[str]] = {}
        self._seen_request_addresses: set[str] = set()
        self._warned_request_addresses: set[str] = set()
        self._persisted_seen: dict[str, float] = {}
        self.started_at = time.time()
        self.composer = Composer(chain.destination)
        self.template_fields = confine.template_fields(chain.destination)
        self._requesters: dict[str, messaging.Requester] = {}
        self._requesters_lock = threading.Lock()
        self.subscriber: messaging.Subscriber | None = None
        self._resubscribe: set[str] = set()
        self._publish_after = 0.0

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        chain = self.chain
        self.metrics.init_chain(chain.name)
        self.metrics.add_scrape_callback(self._scrape_retry_queue, chain=chain.name)
        from trollmoves.server import publisher_curve

        self.curve = (messaging.CurveClientKeys(chain.curve_secret_key_file, chain.curve_server_public_key_file)
                      if chain.curve_secret_key_file else None)
        self.publisher = messaging.Publisher(f"move_it_{chain.name}", chain.publish_port, chain.publish_address,
                                             nameservers=chain.nameservers,
                                             curve=publisher_curve(self.client.config)).start()
        self._publish_after = time.monotonic() + (REJOIN_GRACE if chain.publish_port else 0.0)
        self._thread = threading.Thread(target=self._receive_loop, name=f"listen:{chain.name}", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(10)
        if self.state.outbox(chain.name):
            self.workers.submit(self._send_outbox)
        self._resume_pending()
        if chain.catch_up:
            for request_address, last_seen in self.state.providers(chain.name).items():
                if usable_request_address(request_address) is None:
                    continue
                self._seen_request_addresses.add(request_address)
                self.workers.submit(self.catch_up, request_address, last_seen - CATCH_UP_MARGIN)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.lock:
            for entry in self.pending.values():
                if not entry.started:
                    entry.cancelled = True
        with self._requesters_lock:  # a worker waiting for a reply gives up now, not after 3 x timeout
            for requester in self._requesters.values():
                requester.cancel()
        self.workers.shutdown(wait=True, cancel_futures=True)
        with self._requesters_lock:
            for requester in self._requesters.values():
                requester.close()
            self._requesters.clear()
        if self.publisher is not None:
            self.publisher.stop()

    def _scrape_retry_queue(self) -> None:
        """At scrape time: files waiting for a retry, and since when the oldest is waiting."""
        with self.lock:
            waiting = [e.first_seen for e in self.pending.values() if e.attempts and not e.started]
            given_up = sum(1 for e in self.pending.values() if e.given_up)
        self.metrics.given_up_files.labels(self.chain.name).set(given_up)
        self.metrics.retry_queue_length.labels(self.chain.name).set(len(waiting))
        self.metrics.retry_queue_oldest.labels(self.chain.name).set(min(waiting, default=0))

    def requester(self, request_address: str) -> messaging.Requester:
        """The pooled requester of one server: its sockets are reused from file to file."""
        with self._requesters_lock:
            requester = self._requesters.get(request_address)
            if requester is None and self._stop.is_set():
                raise RequestError(f"chain {self.chain.name} is stopping: no new request to {request_address}")
            if requester is None:
                requester = self._requesters[request_address] = messaging.Requester(
                    request_address, self.curve, pooled=True, max_idle=self.client.workers_per_chain)
            return requester

    def _topics(self) -> list[str]:
        topics = [self.chain.topic] if self.chain.topic else []
        if self.chain.heartbeat:
            topics += [SERVER_HEARTBEAT_SUBJECT, messaging.heartbeat_subject(f"move_it_{self.chain.name}")]
        return topics

    def _receive_loop(self) -> None:
        chain = self.chain
        subscriber = messaging.Subscriber(
            (), self._topics(), on_malformed=lambda _e: self.metrics.messages_malformed.labels(chain.name).inc(),
            curve=self.curve)
        self.subscriber = subscriber
        for provider in chain.providers:
            topics = None
            if provider.topic:
                topics = [provider.topic] + ([SERVER_HEARTBEAT_SUBJECT] if chain.heartbeat else [])
            subscriber.add(provider.address, topics)
            self.provider_last_message[provider.address] = time.monotonic()
            self.provider_last_heard[provider.address] = time.monotonic()
        self._ready.set()
        try:
            while not self._stop.is_set():
                for address, message in subscriber.recv(0.25):
                    try:
                        self.handle(address, message)
                    except Exception:  # noqa: BLE001 - a bad message never stops the listener
                        logger.exception("Chain %s: error handling a %s message from %s", chain.name,
                                         message.type, address)
                self._check_heartbeats(subscriber)
                for address in list(self._resubscribe):
                    self._resubscribe.discard(address)
                    subscriber.reconnect(address)
        finally:
            subscriber.close()

    def _check_heartbeats(self, subscriber: messaging.Subscriber) -> None:
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

    # message handling (receive thread: quick, never blocking) ------------------------------------
    def handle(self, address: str, message: messaging.Message) -> None:
        self.provider_last_message[address] = self.provider_last_heard[address] = time.monotonic()
        self.metrics.messages_received.labels(self.chain.name, message_type_label(message.type)).inc()
        data = message.data if isinstance(message.data, dict) else {}
        if message.type == "beat":
            self.metrics.last_heartbeat.labels(self.chain.name).set(time.time())
            try:
                self.provider_min_interval[address] = float(data.get("min_interval", 30) or 30)
            except (TypeError, ValueError):
                pass
            return
        uids = collect_uids(data)
        if not uids:
            return
        key = file_key(uids)
        if message.type == "push":
            self._other_client_pushing(key)
        elif message.type == "ack" or (message.type in ("file", "dataset", "collection")
                                       and "request_address" not in data):
            self._other_client_done(key, uids)
        elif message.type in ("file", "dataset", "collection") and "request_address" in data:
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
        try:
            self._check_confined(message.data)
        except confine.ConfinementError as exc:
            self.refuse_escape("announcement", exc)
            return False
        request_address = usable_request_address(message.data.get("request_address"))
        if request_address is None:
            self._reject_request_address(message)
            return False
        self._note_provider(request_address)
        if self.state.is_handled(chain.name, key):
            self.metrics.duplicates_skipped.labels(chain.name).inc()
            if not from_catch_up:
                self.workers.submit(self.send_ack, message)
            return False
        with self.lock:
            entry = self.pending.get(key)
            if entry is not None:
                if all(s.data.get("request_address") != request_address for s in entry.sources):
                    entry.sources.append(message)
                return False
            entry = Pending(key, [message])
            self.pending[key] = entry
        if from_catch_up:
            self.metrics.catch_up_files.labels(chain.name).inc()
        if chain.processing_delay:
            self.client.scheduler.call_later(chain.processing_delay, lambda: self._delayed_start(key))
        else:
            self.workers.submit(self.fetch, key)
        # Recorded after the hand-off, so the commit runs while the worker sends the request; a
        # kill before it lands loses nothing: the server's catch-up offers the file again.
        self.state.add_pending(chain.name, key, {"subject": message.subject, "type": message.type,
                                                 "data": jsonable(message.data)})
        return True

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

    def _note_provider(self, request_address: str) -> None:
        now = time.time()
        if request_address not in self._seen_request_addresses:
            self._seen_request_addresses.add(request_address)
            if self.chain.catch_up:
                self.workers.submit(self.catch_up, request_address, self.started_at - CATCH_UP_MARGIN)
        if now - self._persisted_seen.get(request_address, 0) > PROVIDER_SEEN_PERSIST_INTERVAL:
            self._persisted_seen[request_address] = now
            self.state.touch_provider(self.chain.name, request_address, now)

    def _delayed_start(self, key: str) -> None:
        """Hot spare: start unless the primary did it; wait longer while the primary is pushing."""
        with self.lock:
            entry = self.pending.get(key)
            if entry is None or entry.cancelled:
                return
            if entry.other_client_push_at is not None:
                patience = self.chain.transfer_req_timeout * 3 + (self.chain.processing_delay or 0)
                waited = time.monotonic() - entry.other_client_push_at
                if waited < patience:
                    self.client.scheduler.call_later(patience - waited, lambda: self._delayed_start(key))
                    return
                logger.warning("Chain %s: the other client announced a push of %s but never confirmed it: "
                               "taking over", self.chain.name, ", ".join(collect_uids(entry.sources[0].data)))
        self.workers.submit(self.fetch, key)

    # transfers (worker threads) -------------------------------------------------------------------
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
        if success is None:
            if self._stop.is_set():
                return
            entry.attempts += 1
            self.metrics.transfers_failed.labels(chain.name, scheme_label(urlsplit(chain.destination).scheme),
                                                 "error").inc()
            uids = ", ".join(collect_uids(entry.sources[0].data))
            if entry.attempts < self.client.max_fetch_attempts:
                delay = min(300.0, 2.0 ** entry.attempts)
                logger.error("Chain %s: could not get a working source for %s; retrying in %.0f s", chain.name,
                             uids, delay)
                self.metrics.retries.labels(chain.name).inc()
                entry.started = False
                with self.lock:
                    self.pending[key] = entry
                self.client.scheduler.call_later(delay, lambda: self.workers.submit(self.fetch, key))
            else:
                self._give_up(key, entry, uids)

    def _give_up(self, key: str, entry: Pending, uids: str) -> None:
        """After the fast retries: keep the file visible as pending and retry it slowly, until it expires.

        A file given up on used to be forgotten until a restart (health said ``pending: 0``); now it
        stays in ``pending`` (health, ``trollmoves_retry_queue_length``, ``trollmoves_given_up_files``)
        and is requested every ``retry_given_up_interval`` s, until it arrives or is older than the
        state store's age bound (``max_age``), after which its pending row would be pruned anyway.
        """
        chain = self.chain
        if time.time() - entry.first_seen >= self.state.max_age:
            logger.error("Chain %s: %s expired after %d attempts: older than the state store's age bound "
                         "(%.0f s); no longer requested", chain.name, uids, entry.attempts, self.state.max_age)
            self.state.remove_pending(chain.name, key)
            return
        interval = chain.retry_given_up_interval
        first = not entry.given_up
        entry.given_up = True
        entry.started = False
        with self.lock:
            self.pending[key] = entry
        if first:
            logger.error("Chain %s: could not get a working source for %s; giving up fast retries after %d "
                         "attempts (kept as pending; %s)", chain.name, uids, entry.attempts,
                         f"retried every {interval:g} s" if interval else "retried at restart")
        else:
            logger.warning("Chain %s: %s still not delivered after %d attempts; next retry in %g s", chain.name,
                           uids, entry.attempts, interval)
        if interval:
            self.client.scheduler.call_later(interval, lambda: self.workers.submit(self.fetch, key))

    def _request_push(self, source: messaging.Message) -> tuple[messaging.Message, messaging.Message] | None:
        chain = self.chain
        data = self.with_backup_targets(source.data)
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
        self.metrics.transfers_started.labels(chain.name, scheme).inc()
        started = time.monotonic()
        try:
            reply = self.requester(request_address).request(
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
        if reply.type in ("err", "error", "unknown"):
            logger.error("Chain %s: server %s could not push %s: %s", chain.name, request_address,
                         ", ".join(collect_uids(data)), reply.data)
            self.metrics.transfers_failed.labels(chain.name, scheme, "refused" if "not reachable" in
                                                 str(reply.data) else "error").inc()
            return None
        mismatch = verify_arrival(data, public_destination, chain.ftp_root, chain.checksum)
        if mismatch:
            logger.error("Chain %s: %s from %s: %s; the file stays pending and is requested again",
                         chain.name, ", ".join(collect_uids(data)), request_address, mismatch)
            self.metrics.transfers_failed.labels(chain.name, scheme, "checksum").inc()
            return None
        duration = time.monotonic() - started
        self.metrics.transfers_succeeded.labels(chain.name, scheme).inc()
        self.metrics.transfer_duration.labels(chain.name, scheme).observe(duration)
        size = data.get("size")
        if isinstance(size, int):
            self.metrics.transferred_bytes.labels(chain.name, scheme).inc(size)
        logger.info("Chain %s: received %s from %s in %.3f s", chain.name, ", ".join(collect_uids(data)),
                    request_address, duration)
        return source, reply

    def _finish(self, entry: Pending, source: messaging.Message, reply: messaging.Message) -> None:
        chain = self.chain
        messages = [messaging.make_message(source.subject, "ack", self.with_backup_targets(source.data))]
        final_type, final_data = self.local_message(source, reply)
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
        self.metrics.files_received.labels(chain.name).inc()
        self.metrics.last_transfer.labels(chain.name).set(time.time())
        mtime = source.data.get("mtime")
        if isinstance(mtime, (int, float)):
            self.metrics.arrival_latency.labels(chain.name).observe(max(0.0, time.time() - mtime))
        for other in entry.sources:
            if other is not source:
                self.send_ack(other)

    def with_backup_targets(self, data: dict) -> dict:
        """A copy of announcement data with the chain's ``backup_targets``: 0.19 adds them to the message itself,
        so its published ``push``, ``ack`` and final messages all carry them (and the server gets them)."""
        data = dict(data)
        if self.chain.backup_targets:
            data["backup_targets"] = list(self.chain.backup_targets)
        return data

    def local_message(self, source: messaging.Message, reply: messaging.Message) -> tuple[str, dict | None]:
        """The final message: URIs at the destination, ``origin`` = the server, unpacked if configured."""
        chain = self.chain
        data = dict(reply.data) if isinstance(reply.data, dict) else dict(source.data)
        try:
            destination = self._confined_reply(source, data)
        except confine.ConfinementError as exc:
            self.refuse_escape("reply", exc)
            return source.type, None
        origin = data.pop("request_address", None) or source.data.get("request_address")
        if not chain.backup_targets:
            data.pop("backup_targets", None)
        atype = reply.type if reply.type in ("file", "dataset", "collection") else source.type
        entries = _uri_entries(data)
        for entry in entries:
            entry["uri"] = make_uri(destination, str(entry["uid"]))
        if chain.compression:
            try:
                atype = self._unpack(data, entries, destination, atype)
            except (UnpackError, OSError) as exc:
                logger.error("Chain %s: cannot unpack %s: %s", chain.name, ", ".join(collect_uids(data)), exc)
                return atype, None
        data["origin"] = origin
        replace_metadata(data, dict(chain.replace_mda))
        return atype, data

    def _check_confined(self, data: dict) -> None:
        """Refuse an announcement whose uids or destination-template fields would leave the destination.

        The uid is joined to the destination (and published), the fields are composed into it: a
        provider must not make the client create directories or name files outside it.
        """
        confine.check_announcement(collect_uids(data), data, self.template_fields)

    def _confined_reply(self, source: messaging.Message, data: dict) -> str:
        """The reply's destination (without password) after checking it and every uid stay in ours.

        A provider's reply decides where the client looks for, unpacks and deletes files; a rogue
        one could name ``/elsewhere/victim.tar``, ``../x.tar`` or another destination.
        """
        own = strip_password(compose_destination(self.composer, source.data, None)[1])
        destination = data.pop("destination", None) or own
        if not isinstance(destination, str):
            raise confine.ConfinementError(f"reply destination {str(destination)[:200]!r} is not a URL")
        destination = strip_password(destination)
        no_lookup = frozenset()  # only the paths are compared: no host-name look-up per file
        if not confine.within_path(
                confine.location(destination, local=no_lookup).path, confine.location(own, local=no_lookup).path):
            raise confine.ConfinementError(f"reply destination {str(destination)[:200]!r} leaves {own}")
        for entry in messaging.entries_with(data, "uid"):
            confine.check_relative(str(entry["uid"]), "uid")
        return destination

    def refuse_escape(self, what: str, exc: confine.ConfinementError) -> None:
        """One WARNING and the ``path_escape`` refusal metric: nothing is requested, written or deleted."""
        self.metrics.requests_refused.labels(self.chain.name, "path_escape").inc()
        logger.warning("Chain %s: refused a %s (path_escape): %s", self.chain.name, what, str(exc)[:400])

    def _unpack(self, data: dict, entries: list[dict], destination: str, atype: str) -> str:
        chain = self.chain
        directory = local_directory(destination, chain.ftp_root) or ""
        for entry in entries:
            uid = str(entry["uid"])
            if not wants_unpacking(uid, chain.compression):
                continue
            results = unpack(confine.confined_join(directory, uid, "uid"), chain.compression,
                             xritdecompressor=chain.xritdecompressor, block_size=chain.block_size,
                             delete=chain.delete, max_ratio=chain.unpack_max_ratio,
                             max_size=chain.unpack_max_size)
            if len(results) == 1:
                entry["uid"] = os.path.basename(results[0])
                entry["uri"] = make_uri(destination, os.path.relpath(results[0], directory))
            else:
                names = [os.path.relpath(r, directory) for r in results]
                entry.pop("uid", None)
                entry.pop("uri", None)
                entry["dataset"] = [{"uid": n, "uri": make_uri(destination, n)} for n in names]
                if entry is data:
                    atype = "dataset" if atype == "file" else atype
        return atype

    def send_ack(self, announcement: messaging.Message) -> None:
        """Tell a server that a file it announced is handled here (it may delete its copy)."""
        request_address = announcement.data.get("request_address")
        if not request_address:
            return
        try:
            self.requester(str(request_address)).request(
                messaging.make_message(announcement.subject, "ack", dict(announcement.data)),
                timeout=max(self.chain.req_timeout, 0.1) * 3, resend_after=None)
        except RequestError as exc:
            logger.debug("Chain %s: ack to %s not answered: %s", self.chain.name, request_address, exc)

    def catch_up(self, request_address: str, since: float) -> None:
        """Ask a server for what it announced since ``since`` and request the files missed."""
        topic = self.chain.topic or "/"
        try:
            reply = self.requester(request_address).request(
                messaging.make_message(topic, "info", {"catch_up": {"since": since}, "max_count": 0}),
                timeout=max(self.chain.transfer_req_timeout, 2.0))
        except RequestError as exc:
            logger.info("Chain %s: no catch-up from %s: %s", self.chain.name, request_address, exc)
            return
        announcements = reply.data.get("announcements") if isinstance(reply.data, dict) else None
        if announcements is None:
            logger.info("Chain %s: %s does not offer catch-up (an original trollmoves server?)", self.chain.name,
                        request_address)
            return
        count = 0
        for item in announcements:
            subject, data = item.get("subject", ""), item.get("data")
            if not isinstance(data, dict) or "request_address" not in data:
                continue
            if self.chain.topic and not str(subject).startswith(self.chain.topic):
                continue
            uids = collect_uids(data)
            if not uids:
                continue
            key = file_key(uids)
            if self.state.is_handled(self.chain.name, key):
                continue
            if self.on_announcement(messaging.make_message(subject, item.get("type", "file"), data), key,
                                    from_catch_up=True):
                count += 1
        if count:
            logger.info("Chain %s: catch-up from %s: requesting %d missed files", self.chain.name,
                        request_address, count)

    def _send_outbox(self) -> None:
        """Messages of files handled just before a kill, not confirmed as sent: send them now."""
        queued = self.state.outbox(self.chain.name)
        for item_id, payload in queued:
            try:
                message = messaging.decode(str(payload["wire"]))
            except (KeyError, MessageDecodeError):
                self.state.outbox_done([item_id])
                continue
            logger.info("Chain %s: sending the %s message of %s queued before the restart", self.chain.name,
                        message.type, ", ".join(collect_uids(message.data)))
            self._publish(message)
            self.state.outbox_done([item_id])

    def _resume_pending(self) -> None:
        """Requests that were pending when the client stopped (or was killed) are made again."""
        for key, payload in self.state.pending(self.chain.name):
            try:
                message = messaging.make_message(payload["subject"], payload["type"], payload["data"])
            except (KeyError, MessageDecodeError):
                self.state.remove_pending(self.chain.name, key)
                continue
            if usable_request_address(message.data.get("request_address")) is None:
                self.state.remove_pending(self.chain.name, key)  # recorded before the check existed
            logger.info("Chain %s: resuming the pending request of %s", self.chain.name,
                        ", ".join(collect_uids(message.data)))
            self.on_announcement(message, key, from_catch_up=True)

    def _publish(self, message: messaging.Message) -> None:
        if self.publisher is None:
            return
        wait = self._publish_after - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        if self.publisher.send(message):
            self.metrics.messages_published.labels(self.chain.name, message_type_label(message.type)).inc()
        else:
            self.metrics.messages_dropped.labels(self.chain.name).inc()

    def heartbeat(self) -> None:
        if self.publisher is not None:
            self.publisher.heartbeat(30)


def _uri_entries(data: dict) -> list[dict]:
    entries = []
    if "uid" in data:
        entries.append(data)
    for container in ("dataset", "collection"):
        items = data.get(container)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    entries.extend(_uri_entries(item))
    return entries


def jsonable(value: Any) -> Any:
    """A message's data made JSON-serialisable (datetimes as ISO text), for the state store."""
    import datetime as dt

    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class Client:
    """The client service: chains, the state store and the scheduler."""

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
        self.workers_per_chain = workers_per_chain
        self.max_fetch_attempts = max_fetch_attempts
        self.scheduler = Scheduler("client-scheduler")
        self.chains: dict[str, FollowedChain] = {}
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def start(self) -> None:
        if self.state is None:
            self.state = StateStore(self._state_path)
        self.scheduler.start()
        for chain in self.config.chains:
            self._start_chain(chain)
        self._housekeeper = threading.Thread(target=self._housekeeping, name="client-housekeeping", daemon=True)
        self._housekeeper.start()
        self.ready.set()

    def _start_chain(self, chain: ClientChain) -> None:
        followed = FollowedChain(chain, self)
        try:
            followed.start()
        except OSError as exc:
            logger.error("Error starting chain %s: %s", chain.name, exc)
            followed.stop(1.0)
            return
        self.chains[chain.name] = followed
        followed.heartbeat()
        logger.info("Chain %s following %s on %s", chain.name, " ".join(str(p) for p in chain.providers),
                    chain.topic)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.scheduler.stop()
        for followed in list(self.chains.values()):
            followed.stop(timeout)
        self.chains.clear()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout)
        if self.state is not None:
            self.state.close()

    def reload(self, config: Config) -> None:
        """Rebuild changed chains, start new ones, stop removed ones; unchanged chains keep running."""
        reload_chains(self, config)

    def _housekeeping(self) -> None:
        while not self._stop.wait(1.0):
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
            chains[name] = {"listening": followed._thread is not None and followed._thread.is_alive(),
                            "pending": len(followed.pending),
                            "given_up": sum(1 for e in list(followed.pending.values()) if e.given_up),
                            "seconds_since_last_message": silent}
        return {"chains": chains, "ok": all(c["listening"] for c in chains.values())}

    def fatal_error(self) -> str | None:
        return None
