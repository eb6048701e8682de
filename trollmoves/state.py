"""On-disk state: handled files, pending requests, known providers, retry queues.

A ``kill -9`` must neither lose nor duplicate a file, so what a daemon has to
remember lives in SQLite in WAL mode (each change is one short transaction; a
killed process loses nothing committed). The store is bounded by age and by row
count, and an unwritable location is a clear start-up error, not a surprise later. A write that
fails later (disk full, file system remounted read-only) is counted and raised; ``writable()``
says at scrape time whether writes work now (``trollmoves_state_store_writable``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from trollmoves.errors import ConfigError

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (chain TEXT NOT NULL, key TEXT NOT NULL, uids TEXT NOT NULL,
                                    at REAL NOT NULL, PRIMARY KEY (chain, key));
CREATE INDEX IF NOT EXISTS handled_at ON handled(at);
CREATE TABLE IF NOT EXISTS pending (chain TEXT NOT NULL, key TEXT NOT NULL, payload TEXT NOT NULL,
                                    at REAL NOT NULL, PRIMARY KEY (chain, key));
CREATE TABLE IF NOT EXISTS providers (chain TEXT NOT NULL, request_address TEXT NOT NULL,
                                      last_seen REAL NOT NULL, PRIMARY KEY (chain, request_address));
CREATE TABLE IF NOT EXISTS retries (id INTEGER PRIMARY KEY AUTOINCREMENT, chain TEXT NOT NULL,
                                    payload TEXT NOT NULL, first_at REAL NOT NULL, due REAL NOT NULL,
                                    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE INDEX IF NOT EXISTS retries_due ON retries(due);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, chain TEXT NOT NULL,
                                   payload TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS announcements (chain TEXT NOT NULL, key TEXT NOT NULL, payload TEXT NOT NULL,
                                          at REAL NOT NULL, PRIMARY KEY (chain, key));
CREATE INDEX IF NOT EXISTS announcements_at ON announcements(at);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""
_PROBE_LOCK_WAIT = 1.0  # s writable() waits for the store's lock before it skips its test write


def file_key(uids: Iterable[str]) -> str:
    """The identity of an announcement: a hash of its sorted uids (as the original's uid hash)."""
    return hashlib.md5("".join(sorted(uids)).encode("utf-8"), usedforsecurity=False).hexdigest()


def default_state_path(config_path: str, kind: str) -> str:
    """A per-config state file under $XDG_STATE_HOME (or ~/.local/state)/trollmoves."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    digest = hashlib.sha1(os.path.abspath(config_path).encode(), usedforsecurity=False).hexdigest()[:12]
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join(base, "trollmoves", f"{kind}-{name}-{digest}.sqlite")


class StateStore:
    """Thread-safe SQLite store; ``path=None`` keeps it in memory (tests of pure logic)."""

    def __init__(self, path: str | None, max_age: float = 7 * 86400, max_rows: int = 1_000_000):
        self.path = path
        self.max_age = max_age
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._writes = 0
        self.write_errors = 0
        """Writes that failed (sqlite3.Error) since the store was opened: trollmoves_state_store_errors_total."""
        self._write_failed = False
        if path is not None:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
                probe = os.path.join(directory, f".write-test-{os.getpid()}")
                with open(probe, "w", encoding="utf-8"):
                    pass
                os.unlink(probe)
            except OSError as exc:
                raise ConfigError(f"state store {path}: directory is not writable ({exc.strerror})") from None
        try:
            self._db = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None,
                                       timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"state store {path}: cannot open ({exc})") from None

    def _execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            if sql.lstrip().upper().startswith("SELECT"):
                return self._db.execute(sql, params).fetchall()
            with self._writing():
                rows = self._db.execute(sql, params).fetchall()
                if sql.lstrip().upper().startswith(("INSERT", "REPLACE", "UPDATE")):
                    self._writes += 1
                    if self._writes % 1000 == 0:
                        self._prune_locked()
            return rows

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around a write, under the lock: a failure is counted, its transaction rolled back, and raised.

        The first failure after a success is logged once (with the file); the callers report
        what could not be recorded.
        """
        try:
            yield
        except sqlite3.Error as exc:
            self.write_errors += 1
            if not self._write_failed:
                logger.error("State store %s: a write failed: %s", self.path or ":memory:", exc)
            self._write_failed = True
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise
        self._write_failed = False

    def writable(self) -> bool:
        """Whether writes work now: the file and its directory are writable and the last write did not fail.

        Run at scrape time. After a failed write (disk full, say) it tries one small write
        itself (not counted as an error), so that the state recovers when the cause is gone,
        also while the daemon has nothing else to write.
        """
        if self.path is not None:
            try:
                with open(self.path, "r+b"):
                    pass
                descriptor, probe = tempfile.mkstemp(prefix=".write-test-", dir=os.path.dirname(
                    os.path.abspath(self.path)))
                os.close(descriptor)
                os.unlink(probe)
            except OSError:
                return False
        if self._write_failed and self._lock.acquire(timeout=_PROBE_LOCK_WAIT):
            try:  # not counted in write_errors: those are the daemon's writes that failed
                self._db.execute("INSERT OR REPLACE INTO probe VALUES (1, ?)", (time.time(),))
                self._write_failed = False
            except sqlite3.Error:
                pass
            finally:
                self._lock.release()
        return not self._write_failed

    # handled files --------------------------------------------------------------------------------
    def is_handled(self, chain: str, key: str) -> bool:
        return bool(self._execute("SELECT 1 FROM handled WHERE chain=? AND key=?", (chain, key)))

    def mark_handled(self, chain: str, key: str, uids: Iterable[str]) -> None:
        """Record a file as handled and drop its pending entry, in one transaction."""
        self.mark_handled_with_outbox(chain, key, uids, [])

    def mark_handled_with_outbox(self, chain: str, key: str, uids: Iterable[str],
                                 messages: list[dict[str, Any]]) -> list[int]:
        """Record a file as handled and queue the messages that announce it, in one transaction.

        The messages are published after the commit and then removed with
        ``outbox_done``; a process killed in between publishes them again at
        start (``outbox``), so a final ``file`` message is never lost (at worst
        repeated once, when the kill falls between the send and the removal).
        """
        now = time.time()
        with self._lock, self._writing():
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO handled VALUES (?, ?, ?, ?)",
                             (chain, key, json.dumps(sorted(uids)), now))
            self._db.execute("DELETE FROM pending WHERE chain=? AND key=?", (chain, key))
            ids = [int(self._db.execute("INSERT INTO outbox (chain, payload, at) VALUES (?, ?, ?)",
                                        (chain, json.dumps(message, default=str), now)).lastrowid)
                   for message in messages]
            self._db.execute("COMMIT")
            self._writes += 1
            if self._writes % 1000 == 0:
                self._prune_locked()
        return ids

    def outbox(self, chain: str) -> list[tuple[int, dict[str, Any]]]:
        """Messages queued but not confirmed as sent, oldest first."""
        rows = self._execute("SELECT id, payload FROM outbox WHERE chain=? ORDER BY id", (chain,))
        return [(item_id, json.loads(payload)) for item_id, payload in rows]

    def outbox_done(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            with self._lock, self._writing():
                self._db.executemany("DELETE FROM outbox WHERE id=?", [(item_id,) for item_id in ids])

    def handled_count(self, chain: str) -> int:
        return self._execute("SELECT COUNT(*) FROM handled WHERE chain=?", (chain,))[0][0]

    # pending requests -----------------------------------------------------------------------------
    def add_pending(self, chain: str, key: str, payload: dict[str, Any]) -> None:
        """Record a requested file, unless it is handled already.

        The client records a pending request after handing it to a worker (the
        commit is off the file's path); a worker that finished first has already
        marked it handled, and a pending row written after that would be stale.
        """
        self._execute("INSERT OR REPLACE INTO pending SELECT ?, ?, ?, ? WHERE NOT EXISTS "
                      "(SELECT 1 FROM handled WHERE chain=? AND key=?)",
                      (chain, key, json.dumps(payload, default=str), time.time(), chain, key))

    def remove_pending(self, chain: str, key: str) -> None:
        self._execute("DELETE FROM pending WHERE chain=? AND key=?", (chain, key))

    def pending(self, chain: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._execute("SELECT key, payload FROM pending WHERE chain=? ORDER BY at, rowid", (chain,))
        return [(key, json.loads(payload)) for key, payload in rows]

    # providers ------------------------------------------------------------------------------------
    def touch_provider(self, chain: str, request_address: str, when: float | None = None) -> None:
        self._execute("INSERT OR REPLACE INTO providers VALUES (?, ?, ?)",
                      (chain, request_address, when if when is not None else time.time()))

    def providers(self, chain: str) -> dict[str, float]:
        rows = self._execute("SELECT request_address, last_seen FROM providers WHERE chain=?", (chain,))
        return dict(rows)

    # retry queue ----------------------------------------------------------------------------------
    def add_retry(self, chain: str, payload: dict[str, Any], due: float, error: str = "") -> int:
        now = time.time()
        with self._lock, self._writing():
            cursor = self._db.execute(
                "INSERT INTO retries (chain, payload, first_at, due, attempts, last_error) VALUES (?,?,?,?,1,?)",
                (chain, json.dumps(payload, default=str), now, due, error))
            return int(cursor.lastrowid)

    def reschedule_retry(self, item_id: int, due: float, error: str) -> None:
        self._execute("UPDATE retries SET due=?, attempts=attempts+1, last_error=? WHERE id=?",
                      (due, error, item_id))

    def remove_retry(self, item_id: int) -> None:
        self._execute("DELETE FROM retries WHERE id=?", (item_id,))

    def due_retries(self, now: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._execute("SELECT id, chain, payload, first_at, due, attempts, last_error FROM retries "
                             "WHERE due<=? ORDER BY due LIMIT ?", (now if now is not None else time.time(), limit))
        return [{"id": r[0], "chain": r[1], "payload": json.loads(r[2]), "first_at": r[3], "due": r[4],
                 "attempts": r[5], "last_error": r[6]} for r in rows]

    def retry_stats(self, chain: str) -> tuple[int, float]:
        """(queue length, enqueue time of the oldest item or 0)."""
        count, oldest = self._execute("SELECT COUNT(*), MIN(first_at) FROM retries WHERE chain=?", (chain,))[0]
        return int(count), float(oldest or 0.0)

    # announcements (a mirror's record of what it relayed) ------------------------------------------
    def remember_announcement(self, chain: str, key: str, payload: dict[str, Any]) -> None:
        """Keep an announcement (subject, type, data, ...) under ``key``; the newest wins."""
        self._execute("INSERT OR REPLACE INTO announcements VALUES (?, ?, ?, ?)",
                      (chain, key, json.dumps(payload, default=str), time.time()))

    def announcements(self, chain: str, limit: int | None = None) -> list[tuple[str, dict[str, Any], float]]:
        """The kept announcements of a chain, oldest first: (key, payload, time kept); the newest ``limit``."""
        rows = self._execute("SELECT key, payload, at FROM (SELECT rowid AS r, key, payload, at FROM announcements "
                             "WHERE chain=? ORDER BY at DESC, r DESC LIMIT ?) ORDER BY at, r",
                             (chain, -1 if limit is None else limit))
        return [(key, json.loads(payload), at) for key, payload, at in rows]

    def forget_announcements(self, chain: str, keep: int) -> None:
        """Drop all but the newest ``keep`` announcements of a chain."""
        self._execute("DELETE FROM announcements WHERE chain=? AND rowid NOT IN (SELECT rowid FROM announcements "
                      "WHERE chain=? ORDER BY at DESC, rowid DESC LIMIT ?)", (chain, chain, keep))

    # housekeeping ---------------------------------------------------------------------------------
    def prune(self) -> None:
        with self._lock, self._writing():
            self._prune_locked()

    def _prune_locked(self) -> None:
        cutoff = time.time() - self.max_age
        self._db.execute("DELETE FROM handled WHERE at < ?", (cutoff,))
        self._db.execute("DELETE FROM pending WHERE at < ?", (cutoff,))
        self._db.execute("DELETE FROM outbox WHERE at < ?", (cutoff,))
        self._db.execute("DELETE FROM announcements WHERE at < ?", (cutoff,))
        count = self._db.execute("SELECT COUNT(*) FROM handled").fetchone()[0]
        if count > self.max_rows:
            self._db.execute("DELETE FROM handled WHERE rowid IN (SELECT rowid FROM handled ORDER BY at LIMIT ?)",
                             (count - self.max_rows,))

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
