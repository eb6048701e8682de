"""Request and reply: a ROUTER request port (``RequestServer``), a DEALER ``Requester`` (REQ envelope).

Both talk to the original's REQ clients and ROUTER servers unchanged; request
sockets refuse messages above ``max_message_size`` (zmq drops the sender's
connection before anything is decoded) and every reply or request goes through the
one decode path, so a malformed one is an error value, never an exception that
ends a loop or loses the other requests of a batch.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

import zmq
from posttroll.backends.zmq.socket import close_socket
from posttroll.message import Message

from trollmoves.errors import MessageDecodeError, RequestError
from trollmoves.messaging.codec import decode, wire
from trollmoves.messaging.curve import CurveClientKeys, CurveServerKeys, SecureBinding
from trollmoves.messaging.sockets import DEFAULT_MAX_MESSAGE_SIZE, client_socket, server_socket, tcp_address

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One request received by a RequestServer; reply with ``server.reply(request, message)``."""

    identity: bytes
    raw: bytes
    message: Message | None
    error: MessageDecodeError | None = None


class RequestServer:
    """A ROUTER socket answering REQ (and DEALER) clients, as the original's request port.

    ``poll`` runs in the thread that owns the socket; ``reply`` may be called from any
    thread (worker pools): replies are queued and a pipe wakes the owner's poll.
    """

    def __init__(self, port: int, bind_address: str = "*", rcvhwm: int = 10_000,
                 curve: CurveServerKeys | None = None, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.requested_port = port
        self.max_message_size = max_message_size
        self.curve = curve
        self._binding: SecureBinding | None = None
        self.bind_address = bind_address or "*"
        self.rcvhwm = rcvhwm
        self.port: int | None = None
        self._socket = None
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = -1, -1
        self._poller = zmq.Poller()
        self._owner: int | None = None

    def start(self) -> RequestServer:
        options = {zmq.RCVHWM: self.rcvhwm, zmq.LINGER: 100, zmq.ROUTER_MANDATORY: 0,
                   zmq.MAXMSGSIZE: self.max_message_size}
        try:
            self._socket, self.port, self._binding = server_socket(
                zmq.ROUTER, tcp_address(self.bind_address, self.requested_port), options, self.curve)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind request port {self.bind_address}:{self.requested_port}: "
                                     f"{exc}") from None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        return self

    def poll(self, timeout: float = 1.0) -> list[Request]:
        """Send queued replies, wait up to ``timeout`` s, return the requests received."""
        self._owner = threading.get_ident()
        self._flush_replies()
        events = dict(self._poller.poll(int(timeout * 1000)))
        if self._wake_r in events:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            self._flush_replies()
        requests: list[Request] = []
        if self._socket in events:
            while True:
                try:
                    frames = self._socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                requests.append(self._parse(frames))
        return requests

    @staticmethod
    def _parse(frames: list[bytes]) -> Request:
        identity = frames[0]
        if len(frames) != 3 or frames[1] != b"":
            err = MessageDecodeError(f"invalid request: {len(frames)} frames, expected identity, empty, payload")
            return Request(identity, b"", None, err)
        try:
            return Request(identity, frames[2], decode(frames[2]))
        except MessageDecodeError as exc:
            return Request(identity, frames[2], None, exc)

    def reply(self, request: Request | bytes, message: Message | str) -> None:
        identity = request.identity if isinstance(request, Request) else request
        raw = wire(message)
        self._replies.put((identity, raw.encode("utf-8")))
        if threading.get_ident() == self._owner:
            self._flush_replies()
        elif self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except (BlockingIOError, OSError):
                pass

    def _flush_replies(self) -> None:
        while True:
            try:
                identity, raw = self._replies.get_nowait()
            except queue.Empty:
                return
            try:
                self._socket.send_multipart([identity, b"", raw], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.warning("Could not send a reply on port %s: %s", self.port, exc)

    def close(self) -> None:
        if self._socket is not None:
            self._flush_replies()
            self._poller.unregister(self._socket)
            close_socket(self._socket)
            self._socket = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._binding is not None:
            self._binding.close()
            self._binding = None


class Requester:
    """Send requests to a server's request port and wait for the replies.

    Uses DEALER sockets with the REQ envelope, so it talks to the original
    server's ROUTER as a REQ socket would. A request is resent on the same socket
    after ``resend_after`` s (our server answers duplicates of an in-flight push
    without starting a second transfer); the first reply wins.

    With ``pooled``, a socket that got exactly one reply to exactly one request is
    kept for the next request (no new TCP connection and handshake per file);
    any other socket (timed out, resent, malformed reply) is closed, so a late
    reply can never be taken for the answer to another request. Thread-safe.

    ``cancel()`` (or ``close()``), from any thread, makes the requests waiting for
    a reply and every later one raise ``RequestError`` ("cancelled") at once: a
    stopping client is not held up for the reply timeout. A request waits on its
    socket and on a wake-up pipe (created with the first request, closed by
    ``close()`` once no request uses it, or when the requester is collected).
    """

    def __init__(self, address: str, curve: CurveClientKeys | None = None, pooled: bool = False,
                 max_idle: int = 8, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.address = address if address.startswith("tcp://") else f"tcp://{address}"
        self.max_message_size = max_message_size
        self.curve = curve
        self.pooled = pooled
        self.max_idle = max_idle
        self._idle: list = []
        self._lock = threading.Lock()
        self._cancelled = False
        self._closed = False
        self._active = 0
        self._pipe: list[int] = []  # [read fd, write fd] once a request made it

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _cancelled_error(self, message: Message) -> RequestError:
        return RequestError(f"{message.type!r} request to {self.address} cancelled: the requester was closed")

    def _enter(self, message: Message) -> int:
        """Count a request in; return the wake-up pipe's read end. Raises when cancelled."""
        with self._lock:
            if self._cancelled:
                raise self._cancelled_error(message)
            if not self._pipe:
                import weakref

                read_fd, write_fd = os.pipe()
                os.set_blocking(write_fd, False)
                self._pipe[:] = [read_fd, write_fd]
                weakref.finalize(self, Requester._close_pipe, self._pipe)
            self._active += 1
            return self._pipe[0]

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._closed and not self._active:
                Requester._close_pipe(self._pipe)

    @staticmethod
    def _close_pipe(pipe: list[int]) -> None:
        while pipe:
            try:
                os.close(pipe.pop())
            except OSError:
                pass

    def _checkout(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        options = {zmq.LINGER: 0, zmq.MAXMSGSIZE: self.max_message_size}
        return client_socket(zmq.DEALER, self.address, options, self.curve)

    def _checkin(self, sock, reusable: bool) -> None:
        if reusable and self.pooled:
            with self._lock:
                if len(self._idle) < self.max_idle and not self._cancelled:
                    self._idle.append(sock)
                    return
        close_socket(sock)

    def request(self, message: Message, timeout: float, resend_after: float | None = None) -> Message:
        """Send ``message``, return the reply; RequestError on timeout, bad reply or ``cancel()``."""
        raw = wire(message).encode("utf-8")
        wake = self._enter(message)
        try:
            sock = self._checkout()
            reusable = False
            try:
                poller = zmq.Poller()
                poller.register(sock, zmq.POLLIN)
                poller.register(wake, zmq.POLLIN)
                sock.send_multipart([b"", raw])
                sends = 1
                deadline = time.monotonic() + timeout
                next_resend = time.monotonic() + resend_after if resend_after else None
                while True:
                    now = time.monotonic()
                    if now >= deadline:
                        raise RequestError(f"no reply from {self.address} within {timeout:g} s "
                                           f"to a {message.type!r} request")
                    wait = deadline - now
                    if next_resend is not None:
                        wait = min(wait, max(0.0, next_resend - now))
                    events = dict(poller.poll(int(wait * 1000) + 1))
                    if wake in events:
                        raise self._cancelled_error(message)
                    if sock in events:
                        frames = sock.recv_multipart()
                        try:
                            reply = decode(frames[-1])
                        except MessageDecodeError as exc:
                            raise RequestError(f"malformed reply from {self.address}: {exc}") from None
                        reusable = sends == 1 and len(frames) == 2 and frames[0] == b""
                        return reply
                    if next_resend is not None and time.monotonic() >= next_resend:
                        sock.send_multipart([b"", raw])
                        sends += 1
                        next_resend = time.monotonic() + resend_after
            finally:
                self._checkin(sock, reusable)
        finally:
            self._leave()

    def cancel(self) -> None:
        """Wake every waiting request (it raises RequestError "cancelled"); refuse later ones. Any thread."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            if self._pipe:
                try:
                    os.write(self._pipe[1], b"x")  # stays readable: wakes every waiter, now and later
                except OSError:
                    pass

    def close(self) -> None:
        """Cancel waiting requests, close the idle sockets (and the wake-up pipe once unused)."""
        self.cancel()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            if not self._active:
                Requester._close_pipe(self._pipe)
        for sock in idle:
            close_socket(sock)
