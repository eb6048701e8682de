"""The exception hierarchy of trollmoves.

Every error a user can meet derives from ``TrollmovesError``, so a daemon can tell
its own, explained failures from bugs. Transfer errors are split into transient
(worth a retry with backoff) and permanent (fail at once, never retried for ever).
"""

from __future__ import annotations


class TrollmovesError(Exception):
    """Base class of all trollmoves errors."""


class ReasonedError(TrollmovesError):
    """An error with a ``reason``: one word of the class's ``REASONS``, usable as a metric label.

    The WIS2 modules report what went wrong this way, so that the bridge counts failures by
    reason without parsing messages; an unknown reason is a programming error.
    """

    REASONS: frozenset[str] = frozenset()

    def __init__(self, reason: str, message: str):
        if reason not in self.REASONS:
            raise ValueError(f"unknown {type(self).__name__} reason {reason!r}")
        self.reason = reason
        super().__init__(message)


class ConfigError(TrollmovesError):
    """A configuration file is unreadable or invalid.

    ``problems`` holds every problem found (each naming file, section and key), so
    that ``check-config`` can print them all at once instead of the first only.
    """

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class MessageDecodeError(TrollmovesError):
    """A received posttroll message could not be decoded."""


class RequestError(TrollmovesError):
    """A request to a server failed (error reply, timeout, unreachable peer)."""


class TransferError(TrollmovesError):
    """A transfer failed. ``destination`` is always credential-free."""

    def __init__(self, message: str, destination: str = "", cause: BaseException | None = None):
        self.destination = destination
        self.cause = cause
        text = f"{message} ({destination})" if destination else message
        super().__init__(text)


class TransientTransferError(TransferError):
    """Refused, reset, timed out, throttled: retrying later may succeed."""


class PermanentTransferError(TransferError):
    """Authentication, permission, missing bucket, disk full: retrying will not help."""
