"""The announcement history of a serving chain (trollmoves.services.announcing), without sockets."""

import pytest

from trollmoves.push_plan import BadRequest
from trollmoves.services.announcing import AnnouncementHistory, announced_files, info_reply_data


def _data(name, request_address="host:9011"):
    data = {"uri": f"/out/{name}", "uid": name}
    if request_address:
        data["request_address"] = request_address
    return data


def test_files_pushed_out_of_the_history_stay_servable_while_they_exist(tmp_path):
    history = AnnouncementHistory("/t", 2)
    paths = [tmp_path / f"{index}.dat" for index in range(3)]
    for path in paths:
        path.write_bytes(b"x")
        history.remember(str(path), "file", _data(path.name))
    assert list(history.entries) == [str(p) for p in paths[1:]]
    assert history.servable(str(paths[0])) and not history.announced(str(paths[0]))
    history.forget_vanished()
    assert history.servable(str(paths[0])), "still there"
    paths[0].unlink()
    history.forget_vanished()
    assert not history.servable(str(paths[0]))


def test_a_file_gone_before_it_leaves_the_history_is_not_servable_after():
    history = AnnouncementHistory("/t", 1)
    history.remember("/nowhere/a", "file", _data("a"))
    history.remember("/nowhere/b", "file", _data("b"))
    assert not history.servable("/nowhere/a") and history.servable("/nowhere/b")


def test_remember_at_a_given_time_and_again_moves_to_the_end():
    history = AnnouncementHistory("/t", 10)
    history.remember("/a", "file", _data("a"), when=5.0)
    history.remember("/b", "file", _data("b"), when=6.0)
    history.remember("/a", "file", _data("a"), when=7.0)
    assert list(history.entries) == ["/b", "/a"]
    assert history.get("/a").time == 7.0 and history.get("/a").subject == "/t"
    assert len(history) == 2


def test_catch_up_lists_the_last_requestable_announcements_after_since():
    history = AnnouncementHistory("/t", 10)
    for index, name in enumerate(["a", "b", "c", "d"]):
        history.remember(f"/{name}", "file", _data(name, None if name == "c" else "h:1"), when=float(index))
    assert [a["data"]["uid"] for a in history.since(0.5, 10)] == ["b", "d"]
    assert [a["data"]["uid"] for a in history.since(-1, 2)] == ["b", "d"]
    assert history.since(-1, 0) == []
    assert history.since(0.5, 10)[0] == {"subject": "/t", "type": "file", "data": _data("b", "h:1"), "time": 1.0}


def test_announced_files_lists_every_chain_newest_first_under_the_subject():
    first, second = AnnouncementHistory("/a/x", 10), AnnouncementHistory("/b/y", 10)
    first.remember("/1", "file", _data("one"), when=1.0)
    second.remember("/2", "file", _data("two"), when=2.0)
    first.remember("/3", "file", _data("three", None), when=3.0)  # standalone: not listed
    assert announced_files([first, second], "/", 10) == ["/b/y/two", "/a/x/one"]
    assert announced_files([first, second], "/a", 10) == ["/a/x/one"]
    assert announced_files([first, second], "/", 1) == ["/b/y/two"]


def test_info_reply_data():
    history = AnnouncementHistory("/t", 10)
    history.remember("/a", "file", _data("a"), when=1.0)
    asked = []

    def files(subject, max_count):
        asked.append((subject, max_count))
        return ["/t/a"]

    reply = info_reply_data(history, "/t", {"max_count": 3}, files, 0.0)
    assert asked == [("/t", 3)] and reply["files"] == ["/t/a"] and "announcements" not in reply
    assert info_reply_data(history, "/t", "not a dict", files, 0.0)["max_count"] == 2256
    assert info_reply_data(history, "/t", {"max_count": "x"}, files, 0.0)["max_count"] == 2256
    reply = info_reply_data(history, "/t", {"catch_up": {"since": 0}}, files, 0.0)
    assert [a["data"]["uid"] for a in reply["announcements"]] == ["a"]
    with pytest.raises(BadRequest, match="catch_up.since"):
        info_reply_data(history, "/t", {"catch_up": {"since": "yesterday"}}, files, 0.0)
