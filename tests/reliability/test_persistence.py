"""The on-disk state store: survives kill -9, stays bounded, refuses an unwritable place clearly.

(The end-to-end form of "survives kill -9" is test_kill_restart.py: a client killed
during a flow neither loses nor re-transfers a file.)
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from tests.controller import DaemonProcess, console_script
from tests.daemons.helpers import load, write
from tests.reliability.helpers import client_chain, mount_tmpfs, unmount, write_ini
from tests.servers import free_port
from trollmoves.client import Client
from trollmoves.errors import ConfigError
from trollmoves.state import StateStore, file_key


def handled_keys(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT key FROM handled")}


def test_bounded_by_row_count(tmp_path):
    store = StateStore(str(tmp_path / "state.db"), max_rows=100)
    keys = [file_key([f"file{i:05d}"]) for i in range(2500)]
    for index, key in enumerate(keys):
        store.mark_handled("chain", key, [f"file{index:05d}"])
    assert store.handled_count("chain") <= 100 + 1000, "not pruned while writing"
    store.prune()
    assert store.handled_count("chain") == 100
    assert all(store.is_handled("chain", key) for key in keys[-100:]), "the newest records must be kept"
    assert not store.is_handled("chain", keys[0])
    store.close()


def test_bounded_by_age(tmp_path):
    store = StateStore(str(tmp_path / "state.db"), max_age=1.0)
    store.mark_handled("chain", "old", ["old.dat"])
    store.add_pending("chain", "stale", {"subject": "/x", "type": "file", "data": {"uid": "stale.dat"}})
    time.sleep(1.3)
    store.mark_handled("chain", "new", ["new.dat"])
    store.add_pending("chain", "fresh", {"subject": "/x", "type": "file", "data": {"uid": "fresh.dat"}})
    store.prune()
    assert not store.is_handled("chain", "old") and store.is_handled("chain", "new")
    assert [key for key, _ in store.pending("chain")] == ["fresh"]
    store.close()


def test_file_size_stays_bounded(tmp_path):
    """Freed pages are reused: the database does not grow with the number of files ever handled."""
    path = tmp_path / "state.db"
    store = StateStore(str(path), max_rows=2000)
    sizes = []
    for round_ in range(8):
        for index in range(5000):
            name = f"r{round_}-{index:05d}.dat"
            store.mark_handled("chain", file_key([name]), [name])
        store.prune()
        sizes.append(sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p)))
    store.close()
    assert sizes[-1] <= sizes[2] * 1.10, f"database and WAL sizes per round: {sizes}"


WRITER = textwrap.dedent("""
    import sys
    from trollmoves.state import StateStore, file_key

    store = StateStore(sys.argv[1])
    index = 0
    while True:
        name = f"file{index:06d}.dat"
        store.add_pending("chain", file_key([name]), {"subject": "/x", "type": "file", "data": {"uid": name}})
        store.mark_handled("chain", file_key([name]), [name])
        print(index, flush=True)
        index += 1
""")


def test_survives_kill_9_mid_write(tmp_path):
    """Everything committed before a kill -9 is there afterwards, and the database is intact."""
    path = tmp_path / "state.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    last = -1
    try:
        for line in writer.stdout:
            last = int(line)
            if last >= 3000:
                break
    finally:
        os.kill(writer.pid, 9)
        writer.wait(10)
        writer.stdout.close()
    assert last >= 3000
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = StateStore(str(path))
    keys = {file_key([f"file{i:06d}.dat"]) for i in range(last + 1)}
    assert keys <= handled_keys(path), "a record committed before the kill is missing"
    assert len(store.pending("chain")) <= 1, "pending entries of handled files were left behind"
    store.mark_handled("chain", "after", ["after.dat"])  # and it is writable again
    store.close()


@pytest.fixture(params=["read-only file system", "a file in the way"])
def unwritable(request, tmp_path):
    if request.param == "a file in the way":
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        yield blocker / "state"
        return
    try:
        mount_point = mount_tmpfs(tmp_path / "readonly", "ro,size=1m")
    except OSError as exc:
        pytest.skip(f"{exc} (needs root)")
    try:
        yield mount_point / "state"
    finally:
        unmount(mount_point)


def client_ini(tmp_path, state_directory):
    return write_ini(tmp_path / "client.ini", {
        "trollmoves": {"state_directory": state_directory},
        "chain": client_chain(f"127.0.0.1:{free_port()}", f"file://{tmp_path}/dst/", "/reliability/state")})


def dispatcher_yaml(tmp_path, state_directory):
    return write(tmp_path / "dispatcher.yaml", f"""
        posttroll_subscriber:
          subscribe_addresses: [tcp://127.0.0.1:{free_port()}]
          nameserver: false
        trollmoves:
          state_directory: {state_directory}
        archive:
          host: ""
          directory: {tmp_path}/archive
          dispatch_configs:
            - topics: [/product]
    """)


def s3downloader_yaml(tmp_path, state_directory):
    return write(tmp_path / "s3downloader.yaml", f"""
        subscribe-topic: [/s3/new-object]
        publish-topic: /s3/downloaded
        bucket: reliability
        download_destination: {tmp_path}/downloads
        subscriber_addresses: tcp://127.0.0.1:{free_port()}
        nameserver: false
        nameservers: false
        publish_port: 0
        trollmoves:
          state_directory: {state_directory}
        s3_kwargs:
          anon: true
          client_kwargs:
            endpoint_url: http://127.0.0.1:{free_port()}
    """)


PROGRAMS = {
    "move_it_client.py": lambda tmp_path, state: [client_ini(tmp_path, state)],
    "dispatcher.py": lambda tmp_path, state: [dispatcher_yaml(tmp_path, state)],
    "s3downloader.py": lambda tmp_path, state: ["-c", s3downloader_yaml(tmp_path, state)],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_unwritable_state_directory_stops_the_daemon_with_a_clear_error(program, tmp_path, unwritable):
    daemon = DaemonProcess([console_script(program), *PROGRAMS[program](tmp_path, unwritable)],
                           tmp_path / "daemon.log").start()
    try:
        code = daemon.proc.wait(30)
    finally:
        daemon.stop()
    log = daemon.log()
    assert code != 0
    assert f"{unwritable}/" in log and "not writable" in log, log
    assert "Traceback" not in log, log


def test_unwritable_state_directory_in_process(tmp_path, unwritable):
    client = Client(load(client_ini(tmp_path, unwritable), "client"))
    with pytest.raises(ConfigError, match=f"state store {unwritable}/.*not writable"):
        client.start()
    client.stop(1.0)


def test_a_final_message_queued_before_a_kill_is_sent_after_the_restart(tmp_path):
    """A client killed between the commit of a handled file and the send of its `file` message
    sends that message when it starts again (the outbox), once, and does not transfer the file again."""
    from tests.daemons.helpers import Collector, running
    from trollmoves import messaging

    publish_port = free_port()
    ini = write_ini(tmp_path / "client.ini", {"chain": client_chain(
        f"127.0.0.1:{free_port()}", f"file://{tmp_path}/dst/", "/reliability/outbox", publish_port=publish_port)})
    store = StateStore(str(tmp_path / "state.db"))
    final = messaging.make_message("/reliability/outbox", "file",
                                   {"uid": "queued.dat", "uri": str(tmp_path / "dst" / "queued.dat"),
                                    "origin": "127.0.0.1:9"})
    key = file_key(["queued.dat"])
    store.mark_handled_with_outbox("chain", key, ["queued.dat"], [{"wire": messaging.wire(final)}])
    with Collector([f"tcp://127.0.0.1:{publish_port}"], "/reliability") as collector:
        with running(Client(load(ini, "client"), state=store)):
            deadline = time.monotonic() + 15
            while not collector.finals() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # a second copy would arrive now
            assert store.outbox("chain") == []
    finals = collector.finals()
    assert [m.data["uid"] for m in finals] == ["queued.dat"]
    assert finals[0].data["uri"] == str(tmp_path / "dst" / "queued.dat")
