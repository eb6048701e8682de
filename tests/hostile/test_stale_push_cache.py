"""Issue 15 item 8: the server's "already pushed" cache never answers for a copy that is gone.

Push a file, delete the delivered copy, push again: the second push must transfer again (the
reply ``file`` must mean the file is there). A resent request while the copy is still there
is still answered from the cache (one transfer), and a remote destination's cache entry expires.
"""

from __future__ import annotations

import os

from tests.daemons.helpers import Collector, drop, new_server, request_push, running, sha256, wait_for
from trollmoves import messaging


def _succeeded(server, scheme="file"):
    return server.metrics.registry.get_sample_value("trollmoves_transfers_succeeded_total",
                                                    {"chain": "chain", "scheme": scheme}) or 0.0


def _ping(server):
    requester = messaging.Requester(server.request_address(server.config.chains[0]))
    return requester.request(messaging.make_message("/test/files", "ping"), 5).type


def _announcement(server, dirs):
    """Drop one file into the server's origin; return its path and the announcement's data."""
    with Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        source = drop(dirs, 1)[0]
        wait_for(lambda: seen.of_type("file"), what="an announcement")
        return source, seen.of_type("file")[0].data


def test_repush_after_the_delivered_copy_vanished_transfers_again(dirs):
    server = new_server(dirs)
    destination = f"file://{dirs['dst']}/"
    with running(server):
        source, data = _announcement(server, dirs)
        delivered = dirs["dst"] / os.path.basename(source)
        assert request_push(server, data, destination).type == "file"
        assert sha256(str(delivered)) == sha256(source)
        # copy still there: answered from the cache
        assert request_push(server, data, destination).type == "file"
        assert _succeeded(server) == 1
        delivered.unlink()
        reply = request_push(server, data, destination)
        assert reply.type == "file", reply.data
        assert delivered.exists(), "the reply said 'file' but nothing was delivered"
        assert sha256(str(delivered)) == sha256(source)
        assert _succeeded(server) == 2
        assert _ping(server) == "pong"


def test_remote_cache_entry_expires(dirs, ftp_server):
    server = new_server(dirs)
    destination = f"ftp://{ftp_server.user}:{ftp_server.password}@127.0.0.1:{ftp_server.port}/incoming/"
    with running(server):
        chain = server.chains["chain"]
        chain.pushed_cache_ttl = 1.0
        source, data = _announcement(server, dirs)
        delivered = os.path.join(ftp_server.root, "incoming", os.path.basename(source))
        assert request_push(server, data, destination).type == "file"
        assert sha256(delivered) == sha256(source)
        os.remove(delivered)
        wait_for(lambda: request_push(server, data, destination).type == "file" and os.path.exists(delivered),
                 10, 0.5, what="a re-push after the cache entry expired to transfer again")
        assert sha256(delivered) == sha256(source)
        assert _succeeded(server, "ftp") == 2
        assert _ping(server) == "pong"
