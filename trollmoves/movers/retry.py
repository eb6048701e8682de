"""Transient or permanent: classify failures, and retry the transient ones.

A transient failure (refused, reset, timed out, throttled) is worth another try
after a growing pause; a permanent one (authentication, permission, no such
bucket, disk full, missing source) is reported at once. Protocol modules map
their library's exceptions first and fall back on ``classify`` here for plain
``OSError``s. The pause waits on an Event, so a stopping daemon is not held up.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from trollmoves.errors import PermanentTransferError, TransferError, TransientTransferError
from trollmoves.redact import redact

logger = logging.getLogger(__name__)

TRANSIENT_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET, errno.EPIPE, errno.EAGAIN, errno.EHOSTDOWN,
    errno.EINTR, errno.EBUSY, errno.ENOTCONN, errno.ESHUTDOWN,
})
PERMANENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS, errno.EISDIR,
    errno.ENOTDIR, errno.ENAMETOOLONG, errno.EFBIG, errno.EINVAL, errno.ELOOP, errno.EXDEV,
})


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description of an exception."""
    text = redact(str(exc)).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def classify(exc: BaseException, destination: str, what: str = "transfer failed") -> TransferError:
    """Turn any exception into a Transient- or PermanentTransferError (already-typed ones pass through)."""
    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransientTransferError(f"{what}: timed out ({describe(exc)})", destination, exc)
    if isinstance(exc, socket.gaierror):
        return TransientTransferError(f"{what}: name resolution failed ({describe(exc)})", destination, exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in PERMANENT_ERRNOS:
            return PermanentTransferError(f"{what}: {describe(exc)}", destination, exc)
        return TransientTransferError(f"{what}: {describe(exc)}", destination, exc)
    if isinstance(exc, (ConnectionError, EOFError, OSError)):
        return TransientTransferError(f"{what}: {describe(exc)}", destination, exc)
    return PermanentTransferError(f"{what}: {describe(exc)}", destination, exc)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: ``retries`` more tries after the first, pauses growing by ``backoff``."""

    retries: int = 2
    delay: float = 1.0
    backoff: float = 2.0
    delay_max: float = 30.0

    def delays(self):
        """The pauses before each retry."""
        delay = self.delay
        for _ in range(self.retries):
            yield min(delay, self.delay_max)
            delay *= self.backoff


def wait(seconds: float, cancel: threading.Event | None) -> bool:
    """Sleep unless cancelled; return True if cancelled."""
    if cancel is None:
        time.sleep(seconds)
        return False
    return cancel.wait(seconds)


def with_retries(attempt: Callable[[int], object], policy: RetryPolicy, what: str,
                 cancel: threading.Event | None = None,
                 on_retry: Callable[[TransferError], None] | None = None,
                 give_up: Callable[[], bool] | None = None) -> object:
    """Call ``attempt(n)`` until it succeeds, a permanent error occurs or the retries are spent.

    ``attempt`` must raise TransferError subclasses only. The last transient error is
    re-raised after the final try; a cancel during a pause re-raises it at once, and so
    does a true ``give_up()`` after a failed try (the transfer service is closing).
    ``on_retry(error)`` is called beside the "Retrying" log line (for a daemon's metric).
    """
    delays = policy.delays()
    number = 0
    while True:
        number += 1
        try:
            return attempt(number)
        except PermanentTransferError:
            raise
        except TransientTransferError as err:
            delay = next(delays, None)
            if delay is None or give_up is not None and give_up():
                raise
            logger.warning("Retrying %s in %.1f s (attempt %d failed: %s)", what, delay, number, err)
            if on_retry is not None:
                on_retry(err)
            if wait(delay, cancel):
                raise
