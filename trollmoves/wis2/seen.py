"""What the WIS2 subscriber has seen and stored, and what it still has to announce: SQLite.

pywis-pubsub deduplicates by "the file exists" and Sarracenia by an in-memory cache; both forget
or mistake things across restarts. This store remembers, on disk:

* ``ids``: notification ids seen, with the time, forgotten after a TTL (``expire``) - the same WNM
  relayed by several Global Brokers arrives several times;
* ``files``: one row per stored ``data_id`` (its ``pubtime``, local path and notification id),
  kept until a deletion - a ``canonical`` for a stored ``data_id`` is a duplicate whatever its id,
  an ``update`` counts only when its ``pubtime`` is newer;
* ``outbox``: posttroll announcements committed but not yet confirmed as published.

Crash reasoning (why acknowledging after the commit is enough):

* The bridge acknowledges an MQTT message only after ``record_stored`` (or ``record_seen`` for a
  message that needs no storage) has committed. A ``kill -9`` before that commit leaves the message
  unacknowledged: the broker redelivers it to the persistent session after the restart, ``classify``
  finds neither its id nor its ``data_id``, and the file is fetched again into the same name (the
  verified rename replaces identical bytes; a temporary left by the kill is overwritten).
* ``record_stored`` writes the file row, the seen id and the outbox row in ONE transaction, so no
  crash can leave a stored file that is not announced, or an announcement for an unrecorded file.
  After the commit the caller publishes and then calls ``announced``; a kill in between publishes
  the row again at start (``pending_announcements``): an announcement is never lost, at worst
  repeated once.
* A kill after the commit but before the MQTT acknowledgement gets the message redelivered; its id
  is in ``ids`` now, so ``classify`` says ``duplicate_id`` and nothing is fetched twice.

Durability: WAL journal with ``synchronous=FULL``, so a commit survives a power cut too (the
acknowledgement that follows it must not outlive it). One connection per store, guarded by a lock,
shared by the bridge's threads; short transactions only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone

from trollmoves.errors import TrollmovesError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ids_seen_at ON ids(seen_at);
CREATE TABLE IF NOT EXISTS files (data_id TEXT PRIMARY KEY, pubtime TEXT NOT NULL, path TEXT NOT NULL,
                                  notification_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (rowid INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL,
                                   announcement TEXT NOT NULL);
"""
OUTCOMES = frozenset({"duplicate_id", "duplicate_data_id", "new", "stale_update", "update", "delete",
                      "delete_unknown"})
"""Every value ``classify`` returns (usable as a metric label)."""
RELS = ("canonical", "update", "deletion")


class SeenStoreError(TrollmovesError):
    """The store's database cannot be opened, read or written; the message names the file.

    ``reason`` is ``"open"`` (at start: unwritable place, not a database, newer schema) or ``"io"``.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _utc(pubtime: datetime | str) -> datetime:
    """An aware UTC datetime; a naive one (or an ISO text without offset) is taken as UTC."""
    if isinstance(pubtime, str):
        pubtime = datetime.fromisoformat(pubtime.strip().replace("z", "Z"))
    if not isinstance(pubtime, datetime):
        raise TypeError(f"pubtime must be a datetime, got {type(pubtime).__name__}")
    if pubtime.tzinfo is None:
        return pubtime.replace(tzinfo=timezone.utc)
    return pubtime.astimezone(timezone.utc)


def _iso(pubtime: datetime | str) -> str:
    """Fixed-width ISO 8601 in UTC with ``Z`` (so texts also sort as times)."""
    return _utc(pubtime).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SeenStore:
    """The subscriber's dedup and outbox store in one SQLite file (``":memory:"`` for tests)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        if path != ":memory:":
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as err:
                raise SeenStoreError("open", f"seen store {path}: cannot create {directory} "
                                             f"({err.strerror or err})") from None
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as err:
            raise SeenStoreError("open", f"seen store {path}: cannot open ({err})") from None
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SeenStoreError("open", f"seen store {path}: schema version {version} was written by a "
                                             f"newer trollmoves (this one knows {SCHEMA_VERSION})")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as err:
            self._db.close()
            raise SeenStoreError("open", f"seen store {path}: cannot use it ({err})") from None
        except SeenStoreError:
            self._db.close()
            raise

    # ------------------------------------------------------------------------------------------
    # plumbing

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise SeenStoreError("io", f"seen store {self.path}: read failed ({err})") from None

    def _write(self, statements: list[tuple[str, tuple]]) -> int | None:
        """Run ``statements`` in one transaction; return the last INSERT's row id."""
        with self._lock:
            last = None
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in statements:
                        cursor = self._db.execute(sql, params)
                        if sql.lstrip().upper().startswith("INSERT"):
                            last = cursor.lastrowid
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise SeenStoreError("io", f"seen store {self.path}: write failed ({err})") from None
            return last

    def close(self) -> None:
        """Close the database (idempotent); committed work is on disk already."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SeenStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    # decisions

    def classify(self, *, notification_id: str, data_id: str, rel: str, pubtime: datetime, ttl: float,
                 now: float | None = None) -> str:
        """What to do with a notification; one of :data:`OUTCOMES`.

        ``duplicate_id``: its id was seen within ``ttl`` seconds (whatever the rel). Otherwise, for
        ``canonical``: ``duplicate_data_id`` when the data_id is stored, else ``new``; for
        ``update``: ``stale_update`` when the stored pubtime is the same or newer, else ``update``
        (also for an unknown data_id); for ``deletion``: ``delete`` when stored, else
        ``delete_unknown``.
        """
        if rel not in RELS:
            raise ValueError(f"rel must be one of {', '.join(RELS)}, got {rel!r}")
        now = time.time() if now is None else now
        seen = self._read("SELECT seen_at FROM ids WHERE id=?", (notification_id,))
        if seen and seen[0][0] >= now - ttl:
            return "duplicate_id"
        rows = self._read("SELECT pubtime FROM files WHERE data_id=?", (data_id,))
        if rel == "canonical":
            return "duplicate_data_id" if rows else "new"
        if rel == "deletion":
            return "delete" if rows else "delete_unknown"
        if rows and _utc(rows[0][0]) >= _utc(pubtime):
            return "stale_update"
        return "update"

    def stored(self, data_id: str) -> tuple[str, datetime] | None:
        """(local path, pubtime) of a stored data_id, or None: what a deletion removes."""
        rows = self._read("SELECT path, pubtime FROM files WHERE data_id=?", (data_id,))
        return (rows[0][0], _utc(rows[0][1])) if rows else None

    # ------------------------------------------------------------------------------------------
    # records

    def record_stored(self, *, notification_id: str, data_id: str, pubtime: datetime, path: str,
                      announcement: str, now: float | None = None) -> int:
        """A file is in place: record it, its notification id and its announcement in one transaction.

        Returns the outbox row id; publish the announcement, then call ``announced(row_id)``.
        """
        now = time.time() if now is None else now
        row = self._write([
            ("INSERT INTO files (data_id, pubtime, path, notification_id) VALUES (?, ?, ?, ?) "
             "ON CONFLICT(data_id) DO UPDATE SET pubtime=excluded.pubtime, path=excluded.path, "
             "notification_id=excluded.notification_id",
             (data_id, _iso(pubtime), str(path), notification_id)),
            ("INSERT OR REPLACE INTO ids (id, seen_at) VALUES (?, ?)", (notification_id, now)),
            ("INSERT INTO outbox (created, announcement) VALUES (?, ?)", (now, announcement)),
        ])
        return int(row)

    def record_seen(self, notification_id: str, now: float | None = None) -> None:
        """Remember an id that needed no storage (a duplicate, a refused or ignored message)."""
        now = time.time() if now is None else now
        self._write([("INSERT OR REPLACE INTO ids (id, seen_at) VALUES (?, ?)", (notification_id, now))])

    def record_deleted(self, *, notification_id: str, data_id: str, now: float | None = None) -> None:
        """A deletion was handled: forget the file row and remember the id, in one transaction."""
        now = time.time() if now is None else now
        self._write([
            ("DELETE FROM files WHERE data_id=?", (data_id,)),
            ("INSERT OR REPLACE INTO ids (id, seen_at) VALUES (?, ?)", (notification_id, now)),
        ])

    # ------------------------------------------------------------------------------------------
    # outbox

    def pending_announcements(self) -> list[tuple[int, str]]:
        """Announcements committed but not confirmed as published, oldest first."""
        return [(int(row), text) for row, text in
                self._read("SELECT rowid, announcement FROM outbox ORDER BY rowid")]

    def announced(self, row_id: int) -> None:
        """The announcement of ``row_id`` was published: drop it from the outbox."""
        self._write([("DELETE FROM outbox WHERE rowid=?", (int(row_id),))])

    # ------------------------------------------------------------------------------------------
    # housekeeping

    def expire(self, ttl: float, now: float | None = None) -> int:
        """Forget ids seen more than ``ttl`` seconds ago; return how many. File rows are kept."""
        now = time.time() if now is None else now
        with self._lock:
            try:
                cursor = self._db.execute("DELETE FROM ids WHERE seen_at < ?", (now - ttl,))
            except sqlite3.Error as err:
                raise SeenStoreError("io", f"seen store {self.path}: write failed ({err})") from None
            return cursor.rowcount

    def stats(self) -> dict[str, int]:
        """Row counts for health and metrics: ``{"ids": n, "files": n, "outbox": n}``."""
        row = self._read("SELECT (SELECT COUNT(*) FROM ids), (SELECT COUNT(*) FROM files), "
                         "(SELECT COUNT(*) FROM outbox)")[0]
        return {"ids": int(row[0]), "files": int(row[1]), "outbox": int(row[2])}
