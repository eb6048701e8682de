"""The state store's outbox and announcement record (pure logic on an on-disk SQLite file)."""

from __future__ import annotations

from trollmoves.state import StateStore, file_key


def test_outbox_is_committed_with_the_handled_record_and_survives_reopening(tmp_path):
    path = str(tmp_path / "state.db")
    store = StateStore(path)
    key = file_key(["a.dat"])
    store.add_pending("chain", key, {"subject": "/x", "type": "file", "data": {"uid": "a.dat"}})
    ids = store.mark_handled_with_outbox("chain", key, ["a.dat"],
                                         [{"subject": "/x", "type": "file", "data": {"uid": "a.dat"}}])
    store.close()

    reopened = StateStore(path)
    assert reopened.is_handled("chain", key)
    assert reopened.pending("chain") == []
    assert reopened.outbox("chain") == [(ids[0], {"subject": "/x", "type": "file", "data": {"uid": "a.dat"}})]
    assert reopened.outbox("other") == []
    reopened.outbox_done(ids)
    assert reopened.outbox("chain") == []
    reopened.close()


def test_announcements_keep_the_newest_per_key_and_are_bounded(tmp_path):
    store = StateStore(str(tmp_path / "state.db"))
    for index in range(10):
        store.remember_announcement("chain", f"/in/file{index}", {"subject": "/x", "n": index})
    store.remember_announcement("chain", "/in/file3", {"subject": "/x", "n": 33})
    assert [payload["n"] for _, payload, _ in store.announcements("chain", limit=3)] == [8, 9, 33]
    store.forget_announcements("chain", keep=4)
    assert [key for key, _, _ in store.announcements("chain")] == ["/in/file7", "/in/file8", "/in/file9",
                                                                   "/in/file3"]
    assert store.announcements("other") == []
    store.close()

