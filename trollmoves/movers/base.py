"""The mover core: what a protocol must provide (a session and a driver), and nothing above it.

A protocol lives in one module with two classes:

* a ``Connection``: one open session to one endpoint (what the pool keeps).
  Required: ``upload``, ``rename``, ``remove``, ``makedirs``; optional
  capabilities (``remote_size``, ``atomic_put``, ``remote_checksum``) are
  declared in ``capabilities`` and read once by the shared delivery code,
  which falls back when one is absent.
* a ``Mover`` subclass: the protocol's driver (``connect``, ``pool_key``,
  ``remote_path``, ``check_options``). The built-in drivers subclass
  ``per_file.PerFileMover``, which adds, for programs written against
  trollmoves 0.19, the old ``Mover(origin, destination, attrs).copy()`` API.

Movers hold no connections and start no threads of their own: pooling, retries,
atomic delivery and checksums are shared code (``pool``, ``retry``, ``delivery``,
``transfer``). A driver needing a helper thread (the SSH stall watchdog) keeps it
in the service's ``DriverCache``, which the service closes with the pool.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Callable, Hashable
from typing import Any

from trollmoves.errors import TransferError
from trollmoves.movers.destination import Destination, target_path
from trollmoves.movers.options import TransferOptions
from trollmoves.movers.retry import classify

logger = logging.getLogger(__name__)

RENAME = "rename"
REMOTE_SIZE = "remote_size"
ATOMIC_PUT = "atomic_put"
REMOTE_CHECKSUM = "remote_checksum"


class Connection:
    """One open session to an endpoint. Subclasses translate library errors in ``translate``."""

    capabilities: frozenset[str] = frozenset({RENAME, REMOTE_SIZE})

    def __init__(self, endpoint: Destination, options: TransferOptions):
        self.endpoint = endpoint
        self.options = options
        self._known_dirs: set[str] = set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.safe_url('')}>"

    # required ------------------------------------------------------------------------------
    def upload(self, source: Any, remote: str) -> int:
        """Send ``source`` (a ``movers.source.Source``) to ``remote``; return the number of bytes sent.

        Typed ``Any`` here so that the core imports nothing above it; drivers annotate ``Source``.
        """
        raise NotImplementedError

    def rename(self, old: str, new: str) -> None:
        """Rename, replacing an existing ``new``."""
        raise NotImplementedError

    def remove(self, path: str) -> None:
        raise NotImplementedError

    def _mkdirs(self, path: str) -> None:
        """Create ``path`` and its parents (existing ones are fine)."""
        raise NotImplementedError

    def alive(self) -> bool:
        """Cheap local check (no round trip) that the session can still be used."""
        return True

    def close(self) -> None:
        """Close the session; must not raise."""

    def abort(self, reason: str = "transfer interrupted") -> None:
        """Interrupt, from another thread, whatever the session is doing; must not raise.

        The operation in progress then fails soon with a TransientTransferError
        and the session is no longer ``alive`` (the pool drops it). The pool calls
        this on connections still lent when it is closed. Default: nothing (the
        operation ends at its own timeout).
        """

    # optional ------------------------------------------------------------------------------
    def size(self, path: str) -> int | None:
        """Size of the remote file, or None when the protocol cannot tell."""
        return None

    def remote_checksum(self, path: str, method: str) -> str | None:
        """Hex digest computed by the server, or None when not supported for ``method``."""
        return None

    # shared --------------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        """Create ``path`` unless this session already made or saw it."""
        if not path or path in self._known_dirs:
            return
        self._mkdirs(path)
        self._known_dirs.add(path)

    def walk_mkdirs(self, path: str, exists: Callable[[str], bool], mkdir: Callable[[str], Any]) -> None:
        """Create the missing part of ``path`` top-down with the protocol's ``exists`` and ``mkdir``.

        A ``mkdir`` that fails because another writer made the directory meanwhile is fine;
        any other failure is re-raised.
        """
        missing = []
        while path and path not in ("/", ".") and not exists(path):
            missing.append(path)
            path = posixpath.dirname(path)
        for directory in reversed(missing):
            try:
                mkdir(directory)
            except Exception:
                if not exists(directory):
                    raise
            self._known_dirs.add(directory)

    def forget_dir(self, path: str) -> bool:
        """Drop ``path`` from the made-directories cache; True if it was there."""
        if path in self._known_dirs:
            self._known_dirs.discard(path)
            return True
        return False

    def translate(self, exc: BaseException, what: str, path: str | None = None) -> TransferError:
        """Map an exception to a Transient/PermanentTransferError naming the safe destination."""
        return classify(exc, self.endpoint.safe_url(path), what)

    def call(self, what: str, path: str | None, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)``, translating whatever it raises."""
        try:
            return function(*args)
        except TransferError:
            raise
        except Exception as exc:
            raise self.translate(exc, what, path) from exc


class DriverCache:
    """Objects a protocol driver reuses across connections, owned by one transfer service."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._items: dict[Hashable, Any] = {}

    def get(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        with self.lock:
            if key not in self._items:
                self._items[key] = factory()
            return self._items[key]

    def close(self) -> None:
        """Forget every item, calling ``close()`` on those that have one (helper threads stop)."""
        with self.lock:
            items, self._items = list(self._items.values()), {}
        for item in items:
            close = getattr(item, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as err:  # noqa: BLE001 - closing is best effort
                    logger.debug("Error closing %r: %s", item, err)


class Mover:
    """Base of the protocol drivers: how to reach an endpoint and where a file goes there.

    Only class methods: the transfer service calls them with an endpoint and options.
    The 0.19 per-file constructor and ``copy()``/``move()`` are in ``per_file``, which
    the built-in drivers subclass.
    """

    schemes: tuple[str, ...] = ()
    default_port: int | None = None

    # driver --------------------------------------------------------------------------------
    @classmethod
    def connect(cls, endpoint: Destination, options: TransferOptions,
                cache: DriverCache | None = None) -> Connection:
        """Open a session to ``endpoint``; raise Transient/PermanentTransferError on failure.

        ``cache`` belongs to the transfer service: objects worth keeping between
        connections (a boto3 session and its loaded service model) go there.
        """
        raise NotImplementedError

    @classmethod
    def pool_key(cls, endpoint: Destination, options: TransferOptions) -> tuple:
        """(scheme, host, port, user, settings digest): sessions with equal keys are interchangeable."""
        user = endpoint.user or options.username
        return (endpoint.scheme, endpoint.host, endpoint.port or cls.default_port, user,
                options.fingerprint(endpoint.password, options.password, cls.connection_settings(options)))

    @classmethod
    def connection_settings(cls, options: TransferOptions) -> tuple:
        """Options that change how a session is opened (part of the pool key)."""
        return (options.connect_timeout, options.timeout)

    @classmethod
    def remote_path(cls, endpoint: Destination, source: str) -> str:
        """Where the file goes on the endpoint (a directory-like path keeps the source name)."""
        return target_path(endpoint.path, source)

    @classmethod
    def check_options(cls, options: TransferOptions) -> None:
        """Reject options this protocol cannot honour (raise InvalidSettingError)."""
