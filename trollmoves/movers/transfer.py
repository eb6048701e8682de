"""The transfer service: one object per daemon that owns the connection pool.

``TransferService.transfer()`` is what daemons call for each file: it parses the
destination, picks the mover, tries the primary host and then each backup
target, retries transient failures with bounded exponential backoff, delivers
atomically over a pooled connection and returns a ``TransferResult`` (size,
checksum, duration, destination actually used). ``close()`` closes the pool and
interrupts the transfers still running.

``move_it()`` keeps trollmoves 0.19's function for programs that import it; it
uses a short-lived service, so it pays a connection per call, as 0.19 did.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import ParseResult, urlparse

from trollmoves.errors import PermanentTransferError, TransferError, TransientTransferError
from trollmoves.movers.base import DriverCache, Mover
from trollmoves.movers.checksum import Checksum
from trollmoves.movers.delivery import deliver
from trollmoves.movers.destination import Destination, parse_destination
from trollmoves.movers.options import TransferOptions
from trollmoves.movers.pool import ConnectionPool, PoolStats
from trollmoves.movers.registry import MoverRegistry
from trollmoves.movers.retry import RetryPolicy, with_retries
from trollmoves.movers.source import Source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferResult:
    """What a successful transfer produced. ``destination`` never holds a password."""

    source: str
    destination: str
    size: int
    checksum: Checksum | None
    duration: float
    attempts: int
    backup_used: bool = False

    @property
    def url(self) -> ParseResult:
        """The destination as a ParseResult (0.19's ``move_it`` return type)."""
        return urlparse(self.destination)

    def as_dict(self) -> dict[str, Any]:
        """Fields for messages: ``size`` and ``checksum`` ({method, value}) as the spec adds them."""
        data: dict[str, Any] = {"destination": self.destination, "size": self.size}
        if self.checksum is not None:
            data["checksum"] = self.checksum.as_dict()
        return data


class TransferService:
    """Transfers files; owns a connection pool and a mover registry. Thread-safe.

    Create one per daemon (``with TransferService() as service:``) and call
    ``transfer()`` from any number of worker threads; ``close()`` on stop.
    Setting ``cancel`` makes running transfers and backoff pauses give up at
    the next chunk with a TransientTransferError. ``on_retry(scheme, error)`` is
    called at every retry, so that a daemon can count retries where they happen.

    ``interrupt()`` also breaks off the uploads blocked in the network (their
    connections are aborted); ``close()`` interrupts, sets ``cancel`` when the
    service created it itself, and refuses further transfers.
    """

    def __init__(self, registry: MoverRegistry | None = None, pool: ConnectionPool | None = None,
                 cancel: threading.Event | None = None, max_idle: int = 16,
                 on_retry: Callable[[str, TransferError], None] | None = None):
        self.registry = registry or MoverRegistry()
        self.pool = pool or ConnectionPool(max_idle=max_idle)
        self._owns_cancel = cancel is None
        self.cancel = threading.Event() if cancel is None else cancel
        self._closed = threading.Event()
        self.on_retry = on_retry
        self.cache = DriverCache()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool and interrupt the transfers in progress (they fail soon, transiently)."""
        self._closed.set()
        if self._owns_cancel:
            self.cancel.set()
        self.pool.close()
        self.cache.close()

    def interrupt(self) -> None:
        """Abort the connections lent to running transfers; the service stays usable.

        For a daemon that set ``cancel`` after its drain timeout: a transfer
        blocked on a frozen server gives up now instead of at its timeout.
        """
        self.pool.interrupt()

    def _stopping(self) -> bool:
        return self._closed.is_set() or self.cancel.is_set()

    def stats(self) -> PoolStats:
        return self.pool.stats()

    def transfer(self, source: str, destination: str | ParseResult | Destination,
                 attrs: Mapping[str, Any] | None = None, *, rel_path: str | None = None,
                 backup_targets: list[str] | None = None, mover: type[Mover] | None = None,
                 options: TransferOptions | None = None,
                 progress: Callable[[int], None] | None = None) -> TransferResult:
        """Deliver ``source`` to ``destination``; raise Transient/PermanentTransferError on failure."""
        started = time.monotonic()
        source = os.fspath(source)
        dest = parse_destination(destination, rel_path)
        mover = mover or self.registry.get(dest.scheme)
        options = options or TransferOptions.from_attrs(attrs)
        mover.check_options(options)
        targets = [dest]
        if dest.scheme not in ("file", ""):
            targets += [dest.with_target(str(target)) for target in backup_targets or ()]
        policy = RetryPolicy(options.retries, options.retry_delay, options.retry_backoff, options.retry_delay_max)
        attempts = 0
        errors: list[TransferError] = []
        with Source(source, options.checksum, options.buffer_size, self.cancel, progress) as src:
            for index, target in enumerate(targets):
                if index:
                    logger.info("Trying backup target %s for %s", target.safe_url(""), source)

                def attempt(number: int, target: Destination = target) -> tuple[str, Any]:
                    nonlocal attempts
                    attempts += 1
                    if attempts > 1:
                        src.rewind()
                    return self._attempt(mover, target, src, options)

                def retried(error: TransferError, scheme: str = dest.scheme) -> None:
                    if self.on_retry is not None:
                        self.on_retry(scheme, error)

                try:
                    final, delivered = with_retries(attempt, policy, f"transfer of {source} to {target}",
                                                    self.cancel, retried, self._stopping)
                except TransferError as err:
                    errors.append(err)
                    if self._stopping():
                        break
                    logger.warning("Transfer of %s to %s failed: %s", source,
                                   target.safe_url(mover.remote_path(target, source)), err)
                    continue
                result = TransferResult(source, target.safe_url(final), delivered.size, delivered.checksum,
                                        time.monotonic() - started, attempts, backup_used=index > 0)
                logger.debug("Transferred %s to %s: %d bytes in %.3f s", source, result.destination,
                             result.size, result.duration)
                return result
        raise _final_error(errors, dest, len(targets), attempts)

    def _attempt(self, mover: type[Mover], target: Destination, src: Source,
                 options: TransferOptions) -> tuple[str, Any]:
        """One try over a pooled connection; a stale reused connection gets one free retry."""
        final = mover.remote_path(target, src.path)
        key = mover.pool_key(target, options)
        for fresh_retry_allowed in (True, False):
            with self.pool.lease(key, lambda: mover.connect(target, options, self.cache), options.connection_uptime) as lease:
                try:
                    return final, deliver(lease.connection, src, final, options)
                except TransientTransferError:
                    lease.discard = True
                    if not (lease.reused and fresh_retry_allowed) or self._stopping():
                        raise
                    logger.debug("Reused connection to %s failed; retrying on a new one", target.safe_url(""))
            src.rewind()
        raise AssertionError("unreachable")  # pragma: no cover


def _final_error(errors: list[TransferError], dest: Destination, hosts: int, attempts: int) -> TransferError:
    last = errors[-1]
    if hosts == 1:
        return last
    kind = PermanentTransferError if all(isinstance(e, PermanentTransferError) for e in errors) \
        else TransientTransferError
    return kind(f"transfer failed after {attempts} attempts to primary and {hosts - 1} backup host(s); "
                f"last error: {last}", dest.safe_url(), last)


def move_it(pathname: str, destination: str | ParseResult, attrs: Mapping[str, Any] | None = None,
            hook: Callable[[str, ParseResult], Any] | None = None, rel_path: str | None = None,
            backup_targets: list[str] | None = None) -> ParseResult:
    """trollmoves 0.19's entry point: copy ``pathname`` to ``destination``.

    Returns the destination actually used (backup host and resolved file name)
    as a ParseResult without password; ``hook(pathname, that)`` is called after
    success. Errors are logged (without secrets) and re-raised.
    """
    with TransferService() as service:
        try:
            result = service.transfer(pathname, destination, attrs, rel_path=rel_path,
                                      backup_targets=backup_targets)
        except TransferError as err:
            logger.error("Something went wrong during copy of %s: %s", pathname, err)
            raise
    if hook:
        hook(pathname, result.url)
    logger.info("Successfully copied %s to %s", pathname, result.destination)
    return result.url
