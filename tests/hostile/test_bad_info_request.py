"""Issue 15 item 12: a bad ``info`` request is one WARNING line and an ``err`` reply, no traceback.

Values a client sends are its mistakes, not the server's bugs: they must not
fill the log with tracebacks. After them the server answers a ping and
delivers a genuine file.
"""

from __future__ import annotations

import logging
import os

import pytest

from tests.daemons.helpers import Collector, drop, new_server, running, sha256, wait_for
from trollmoves import messaging


@pytest.mark.parametrize("data", [
    {"catch_up": {"since": "yesterday"}},
    {"catch_up": {"since": 0, "max_count": "x"}},
    {"catch_up": {"since": [1, 2]}},
    {"catch_up": {"since": 10 ** 400}},
    {"catch_up": {"max_count": None}},
    {"catch_up": {"since": "y" * 100_000}},
], ids=["since-word", "max_count-word", "since-list", "since-huge", "max_count-null", "since-long"])
def test_bad_catch_up_is_one_warning_and_an_err_reply(dirs, caplog, data):
    server = new_server(dirs)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        requester = messaging.Requester(server.request_address(server.config.chains[0]))
        with caplog.at_level(logging.INFO, logger="trollmoves"):
            caplog.clear()
            reply = requester.request(messaging.make_message("/test/files", "info", data), 10)
            records = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert reply.type == "err", (reply.type, reply.data)
        assert len(str(reply.data)) < 400, "the reply must not echo a long value"
        assert len(records) == 1, [r.getMessage()[:200] for r in records]
        assert records[0].levelno == logging.WARNING and records[0].exc_info is None
        assert "catch_up" in records[0].getMessage() and len(records[0].getMessage()) < 500
        good = requester.request(messaging.make_message("/test/files", "info", {"catch_up": {"since": 0}}),
                                 10)
        assert good.type == "info" and good.data["announcements"] == []
        assert requester.request(messaging.make_message("/test/files", "ping"), 5).type == "pong"
        source = drop(dirs, 1)[0]
        wait_for(lambda: seen.of_type("file"), what="the announcement")
        target = dirs["dst"]
        push = {"uri": source, "uid": os.path.basename(source), "destination": f"file://localhost{target}"}
        delivered = requester.request(messaging.make_message("/test/files", "push", push), timeout=10)
        requester.close()
    assert delivered.type == "file", delivered.data
    assert sha256(str(target / os.path.basename(source))) == sha256(source)


def test_catch_up_max_count_zero_returns_nothing_and_limits_apply(dirs):
    """``max_count`` 0 means none (a slice ``[-0:]`` would return every announcement)."""
    server = new_server(dirs)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        drop(dirs, 3)
        wait_for(lambda: len(seen.of_type("file")) == 3, what="three announcements")
        requester = messaging.Requester(server.request_address(server.config.chains[0]))
        for count, expected in ((0, 0), (2, 2), (-1, 0), (10, 3)):
            reply = requester.request(messaging.make_message(
                "/test/files", "info", {"catch_up": {"since": 0, "max_count": count}}), 10)
            assert reply.type == "info" and len(reply.data["announcements"]) == expected, (count, reply.data)
        requester.close()
