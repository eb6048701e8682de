"""Issue 15 item 7: no password leaks, whatever characters it holds.

A password written unencoded in a destination URL with ``#``, ``?`` or ``/`` ends the
URL's user-info early: ``urlsplit`` takes the rest for the port, path, query or fragment,
so ``strip_password`` saw no password and the client published it in ``push`` messages,
and the server logged and replied the part after a ``/``. check-config now refuses such
a destination, and every redaction finds the password anyway. Percent-encoded passwords
work end to end against the real FTP server and appear nowhere.
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from tests.controller import console_script
from tests.daemons.helpers import Collector, drop, load, new_server, running, sha256, wait_for, write
from trollmoves import messaging
from trollmoves.client import Client, compose_destination
from trollmoves.redact import clean_url, redact, strip_password
from trollmoves.state import StateStore

# Two halves that must never show: the head before the special character and the tail after it.
HEAD, TAIL = "Kq7vH", "Zx9wB"


@pytest.mark.parametrize("special", ["#", "?", "/"])
def test_check_config_refuses_an_unencoded_special_character_in_a_password(tmp_path, special):
    path = write(tmp_path / "client.ini", f"""
        [chain]
        providers = 127.0.0.1:9010
        destination = ftp://alice:{HEAD}{special}{TAIL}@host/dir/
        topic = /test
    """)
    result = subprocess.run([console_script("trollmoves"), "check-config", path],
                            capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "destination" in output and "percent-encode" in output, output
    assert HEAD not in output and TAIL not in output, output


@pytest.mark.parametrize("special", ["#", "?", "/"])
def test_every_redaction_hides_an_unencoded_password(special):
    url = f"ftp://alice:{HEAD}{special}{TAIL}@host:2121/dir/"
    for shown in (redact(f"push to {url} failed: refused"), strip_password(url), clean_url(url),
                  compose_destination(url, {}, None)[1]):
        assert HEAD not in shown and TAIL not in shown, shown
    assert strip_password(url) == "ftp://alice@host:2121/dir/"
    assert redact(f"push to {url} failed") == "push to ftp://alice@host:2121/dir/ failed"


def test_redaction_keeps_ordinary_urls():
    for url in ("http://host:8080/path/a@b.c", "ftp://host/dir/x@y", "sftp://bob@host:22/x"):
        assert redact(url) == url
        assert strip_password(url) == url


def test_a_push_with_a_slash_in_the_password_leaks_nothing(dirs, caplog):
    """The server's log and ``err`` reply hide both halves; a genuine push still works."""
    caplog.set_level(logging.DEBUG)
    server = new_server(dirs)
    target = dirs["dst"]
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/test") as seen:
        source = drop(dirs, 1)[0]
        wait_for(lambda: seen.of_type("file"), what="the announcement")
        address = server.request_address(server.config.chains[0])
        requester = messaging.Requester(address)
        try:
            data = {"uri": source, "uid": os.path.basename(source),
                    "destination": f"ftp://alice:{HEAD}/{TAIL}@127.0.0.1:1/dir/"}
            reply = requester.request(messaging.make_message("/test/files", "push", data), timeout=20)
            assert reply.type == "err", reply
            assert HEAD not in str(reply.data) and TAIL not in str(reply.data), reply.data
            assert requester.request(messaging.make_message("/test/files", "ping"), 5).type == "pong"
            data["destination"] = f"file://localhost{target}"
            genuine = requester.request(messaging.make_message("/test/files", "push", data), timeout=10)
        finally:
            requester.close()
    assert genuine.type == "file", genuine.data
    assert sha256(str(target / os.path.basename(source))) == sha256(source)
    assert HEAD not in caplog.text and TAIL not in caplog.text


def test_a_percent_encoded_password_works_and_appears_nowhere(dirs, ftp_server, caplog):
    """Server + client delivering to the real FTP server with every password character %-encoded."""
    caplog.set_level(logging.DEBUG)
    encoded = "".join(f"%{byte:02X}" for byte in ftp_server.password.encode())
    server = new_server(dirs)
    with running(server):
        config = load(write(dirs["state"] / "client.ini", f"""
            [chain]
            providers = 127.0.0.1:{server.publisher.port}
            destination = ftp://{ftp_server.user}:{encoded}@127.0.0.1:{ftp_server.port}/incoming/
            topic = /test/files
            publish_port = 0
            publish_address = 127.0.0.1
            nameservers = False
            transfer_req_timeout = 20
        """), "client")
        client = Client(config, state=StateStore(str(dirs["state"] / "c.db")))
        with running(client), Collector([f"tcp://127.0.0.1:{server.publisher.port}",
                                         f"tcp://127.0.0.1:{client.chains['chain'].publisher.port}"],
                                        "/test") as seen:
            source = drop(dirs, 1)[0]
            wait_for(lambda: seen.finals(), timeout=30, what="the file delivered over FTP")
            assert client.health()["ok"], client.health()
    delivered = ftp_server.root / "incoming" / os.path.basename(source)
    assert sha256(str(delivered)) == sha256(source)
    published = " ".join(messaging.encode(m.subject, m.type, m.data) for _, m in seen.messages)
    pushes = [m for _, m in seen.messages if m.type == "push"]
    assert pushes, "the client published no push message"
    assert {m.data["destination"] for m in pushes} == {f"ftp://127.0.0.1:{ftp_server.port}/incoming/"}
    for secret in (ftp_server.password, encoded):
        assert secret not in published
        assert secret not in caplog.text
