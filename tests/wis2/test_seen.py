"""The subscriber's SQLite dedup/outbox store: decisions, restarts (also after kill -9), TTL, threads."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from trollmoves.wis2.seen import OUTCOMES, SeenStore, SeenStoreError

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
TTL = 3600.0
NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    with SeenStore(str(tmp_path / "state" / "seen.sqlite")) as opened:
        yield opened


def classify(store, notification_id, data_id, rel, pubtime=T0, now=NOW):
    return store.classify(notification_id=notification_id, data_id=data_id, rel=rel, pubtime=pubtime, ttl=TTL,
                          now=now)


def stored(store, notification_id, data_id, pubtime=T0, path="/data/wis2/f.nc", now=NOW):
    return store.record_stored(notification_id=notification_id, data_id=data_id, pubtime=pubtime, path=path,
                               announcement=json.dumps({"uid": data_id, "id": notification_id}), now=now)


def test_every_outcome(store):
    outcomes = set()

    def check(expected, *args, **kwargs):
        assert classify(store, *args, **kwargs) == expected
        outcomes.add(expected)

    check("new", "id-1", "wis2/a/f1", "canonical")
    check("update", "id-1", "wis2/a/f1", "update")  # unknown data_id: an update stores it
    check("delete_unknown", "id-1", "wis2/a/f1", "deletion")
    stored(store, "id-1", "wis2/a/f1")
    check("duplicate_id", "id-1", "wis2/a/f1", "canonical")
    check("duplicate_id", "id-1", "wis2/a/f1", "update", pubtime=T0 + timedelta(hours=1))
    check("duplicate_data_id", "id-2", "wis2/a/f1", "canonical")
    check("stale_update", "id-2", "wis2/a/f1", "update", pubtime=T0)
    check("stale_update", "id-2", "wis2/a/f1", "update", pubtime=T0 - timedelta(seconds=1))
    check("update", "id-2", "wis2/a/f1", "update", pubtime=T0 + timedelta(microseconds=1))
    check("delete", "id-3", "wis2/a/f1", "deletion")
    assert outcomes == OUTCOMES
    with pytest.raises(ValueError, match="rel must be one of"):
        classify(store, "id-4", "wis2/a/f1", "via")


def test_update_replaces_the_file_row(store):
    stored(store, "id-1", "wis2/a/f1", path="/d/old.nc")
    newer = T0 + timedelta(minutes=5)
    stored(store, "id-2", "wis2/a/f1", pubtime=newer, path="/d/new.nc")
    assert store.stored("wis2/a/f1") == ("/d/new.nc", newer)
    assert classify(store, "id-3", "wis2/a/f1", "update", pubtime=newer) == "stale_update"
    assert store.stats() == {"ids": 2, "files": 1, "outbox": 2}


def test_naive_and_offset_pubtimes_compare_as_utc(store):
    stored(store, "id-1", "wis2/a/f1", pubtime=datetime(2024, 5, 1, 12, 0))  # naive: UTC
    same_instant = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert classify(store, "id-2", "wis2/a/f1", "update", pubtime=same_instant) == "stale_update"
    assert classify(store, "id-2", "wis2/a/f1", "update", pubtime="2024-05-01T12:00:01Z") == "update"


def test_deletion_forgets_the_file_and_remembers_the_id(store):
    stored(store, "id-1", "wis2/a/f1")
    store.record_deleted(notification_id="id-del", data_id="wis2/a/f1", now=NOW)
    assert store.stored("wis2/a/f1") is None
    assert classify(store, "id-del", "wis2/a/f1", "deletion") == "duplicate_id"
    assert classify(store, "id-again", "wis2/a/f1", "deletion") == "delete_unknown"
    assert classify(store, "id-new", "wis2/a/f1", "canonical") == "new"


def test_record_seen_makes_an_id_a_duplicate(store):
    store.record_seen("id-dup", now=NOW)
    assert classify(store, "id-dup", "wis2/a/never-stored", "canonical") == "duplicate_id"
    assert store.stats() == {"ids": 1, "files": 0, "outbox": 0}


def test_ids_expire_after_the_ttl_but_files_stay(store):
    stored(store, "id-1", "wis2/a/f1", now=NOW)
    store.record_seen("id-2", now=NOW + 100)
    assert classify(store, "id-1", "wis2/a/other", "canonical", now=NOW + TTL) == "duplicate_id"
    # older than the TTL: no longer a duplicate id, even before expire() removed it
    assert classify(store, "id-1", "wis2/a/other", "canonical", now=NOW + TTL + 1) == "new"
    assert store.expire(TTL, now=NOW + TTL + 1) == 1
    assert store.stats() == {"ids": 1, "files": 1, "outbox": 1}
    assert classify(store, "id-2", "wis2/a/other", "canonical", now=NOW + TTL + 1) == "duplicate_id"
    # data_id dedup is permanent
    assert classify(store, "id-1", "wis2/a/f1", "canonical", now=NOW + 100 * TTL) == "duplicate_data_id"


def test_outbox_is_oldest_first_and_announced_rows_go(store):
    rows = [stored(store, f"id-{n}", f"wis2/a/f{n}") for n in range(5)]
    assert rows == sorted(rows) and len(set(rows)) == 5
    pending = store.pending_announcements()
    assert [row for row, _ in pending] == rows
    assert [json.loads(text)["uid"] for _, text in pending] == [f"wis2/a/f{n}" for n in range(5)]
    store.announced(rows[2])
    store.announced(rows[0])
    assert [row for row, _ in store.pending_announcements()] == [rows[1], rows[3], rows[4]]
    assert store.stats()["outbox"] == 3


def test_restart_keeps_ids_files_and_outbox(tmp_path):
    path = str(tmp_path / "seen.sqlite")
    first = SeenStore(path)
    row = stored(first, "id-1", "wis2/a/f1", path="/d/f1.nc")
    done = stored(first, "id-2", "wis2/a/f2")
    first.announced(done)
    first.record_seen("id-3", now=NOW)
    first.close()
    first.close()  # idempotent

    with SeenStore(path) as second:
        assert classify(second, "id-1", "wis2/a/x", "canonical") == "duplicate_id"
        assert classify(second, "id-3", "wis2/a/x", "canonical") == "duplicate_id"
        assert classify(second, "id-9", "wis2/a/f1", "canonical") == "duplicate_data_id"
        assert second.stored("wis2/a/f1") == ("/d/f1.nc", T0)
        assert [r for r, _ in second.pending_announcements()] == [row]
        assert second.stats() == {"ids": 3, "files": 2, "outbox": 1}
        # row ids are never reused, even for the rows already announced
        assert stored(second, "id-4", "wis2/a/f4") > done


_KILLED_WRITER = """
import json, sys, time
from datetime import datetime, timezone
from trollmoves.wis2.seen import SeenStore
store = SeenStore(sys.argv[1])
row = store.record_stored(notification_id="id-k", data_id="wis2/a/k", pubtime=datetime.now(timezone.utc),
                          path="/d/k.nc", announcement=json.dumps({"uid": "k.nc"}))
print(row, flush=True)
time.sleep(600)
"""


def test_a_commit_survives_kill_9(tmp_path):
    path = str(tmp_path / "seen.sqlite")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, path], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        row = int(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with SeenStore(path) as store:
        assert store.pending_announcements() == [(row, json.dumps({"uid": "k.nc"}))]
        assert classify(store, "id-k", "wis2/a/k", "canonical", now=None) == "duplicate_id"
        assert store.stored("wis2/a/k")[0] == "/d/k.nc"


def test_concurrent_record_stored_from_threads(store):
    errors = []
    results: list[int] = []
    lock = threading.Lock()

    def worker(number):
        try:
            for index in range(40):
                row = stored(store, f"id-{number}-{index}", f"wis2/a/{number}/{index}")
                classify(store, f"id-{number}-{index}", "x", "canonical")
                with lock:
                    results.append(row)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 320
    assert store.stats() == {"ids": 320, "files": 320, "outbox": 320}
    assert [row for row, _ in store.pending_announcements()] == sorted(results)


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "seen.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SeenStoreError) as info:
        SeenStore(str(bad))
    assert info.value.reason == "open" and str(bad) in str(info.value)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "seen.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SeenStoreError, match="newer trollmoves"):
        SeenStore(str(path))


def test_unwritable_location_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(SeenStoreError) as info:
        SeenStore(str(tmp_path / "file" / "seen.sqlite"))
    assert info.value.reason == "open" and str(tmp_path / "file") in str(info.value)


def test_in_memory_store_works():
    with SeenStore(":memory:") as store:
        stored(store, "id-1", "wis2/a/f1")
        assert classify(store, "id-2", "wis2/a/f1", "canonical") == "duplicate_data_id"
