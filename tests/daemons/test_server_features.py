"""Server features beyond the basic transfer: polling, nested directories, decompression,
standalone mode, listen chains, backlog, health-check restart, moved-in files."""

from __future__ import annotations

import bz2
import os
import shutil
import stat
import time

from tests.daemons.helpers import Collector, load, running, sha256, wait_for, write
from tests.servers import free_port
from trollmoves import messaging
from trollmoves.server import Server, ServerOptions


def make_server(tmp_path, body, **options):
    cfg = load(write(tmp_path / "server.ini", body), "server")
    return Server(cfg, ServerOptions(publish_port=0, publish_address="127.0.0.1", **options))


def announcements(seen):
    return seen.of_type("file", with_key="uri")


def test_polling_mode_announces_complete_files_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    server = make_server(tmp_path, f"""
        [poll]
        origin = {src}/{{name}}.dat
        topic = /poll
        request_port = {free_port()}
        request_address = 127.0.0.1
        watchdog_timeout = 0.2
    """, polling=True)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/poll") as seen:
        with open(src / "growing.dat", "wb") as stream:
            for _ in range(10):  # the writer never pauses for a whole polling interval
                stream.write(b"x" * 500)
                stream.flush()
                time.sleep(0.08)
        wait_for(lambda: announcements(seen), what="an announcement in polling mode")
        time.sleep(0.6)
    sizes = [m.data["size"] for m in announcements(seen)]
    assert sizes[-1] == 5000
    assert all(size == 5000 for size in sizes), f"announced while still growing: {sizes}"


def test_moved_in_files_and_temporary_names(tmp_path):
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    server = make_server(tmp_path, f"""
        [mv]
        origin = {src}/{{name}}.dat
        topic = /mv
        request_port = {free_port()}
        request_address = 127.0.0.1
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/mv") as seen:
        (elsewhere / "moved.dat").write_bytes(b"m" * 10)
        os.rename(elsewhere / "moved.dat", src / "moved.dat")
        (src / ".partial.dat").write_bytes(b"p" * 10)
        (src / "empty.dat").write_bytes(b"")
        (src / "other.txt").write_bytes(b"o")
        wait_for(lambda: announcements(seen), what="the moved-in file")
        time.sleep(0.5)
    assert [m.data["uid"] for m in announcements(seen)] == ["moved.dat"]


def test_directories_created_later_with_skip_levels(tmp_path):
    base = tmp_path / "aapp"
    base.mkdir()
    server = make_server(tmp_path, f"""
        [aapp]
        origin = {base}/{{platform_name}}_{{orbit:05d}}/hrpt_{{platform_name}}_{{orbit:05d}}.l1b
        origin_inotify_base_dir_skip_levels = -1
        topic = /aapp
        request_port = {free_port()}
        request_address = 127.0.0.1
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/aapp") as seen:
        directory = base / "noaa19_12345"
        directory.mkdir()
        (directory / "hrpt_noaa19_12345.l1b").write_bytes(b"l1b" * 100)
        wait_for(lambda: announcements(seen), what="a file in a directory created after start")
    data = announcements(seen)[0].data
    assert data["platform_name"] == "noaa19" and data["orbit"] == 12345


def test_server_side_bzip_decompression(tmp_path):
    src, work, dst = tmp_path / "src", tmp_path / "work", tmp_path / "dst"
    for directory in (src, work, dst):
        directory.mkdir()
    payload = os.urandom(50_000)
    server = make_server(tmp_path, f"""
        [bz]
        origin = {src}/{{name}}.dat.bz2
        topic = /bz
        request_port = {free_port()}
        request_address = 127.0.0.1
        compression = bzip
        working_directory = {work}
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/bz") as seen:
        (src / "packed.dat.bz2").write_bytes(bz2.compress(payload))
        wait_for(lambda: announcements(seen), what="the decompressed file's announcement")
        data = dict(announcements(seen)[0].data)
        assert data["uri"] == str(work / "packed.dat") and data["uid"] == "packed.dat"
        data["destination"] = f"file://{dst}/"
        reply = messaging.Requester(data["request_address"]).request(messaging.make_message("/bz", "push", data), 10)
        assert reply.type == "file"
    assert (dst / "packed.dat").read_bytes() == payload


def test_server_side_xrit_decompression_with_prog(tmp_path):
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    prog = tmp_path / "xRITDecompress"
    prog.write_text('#!/bin/sh\nname=$(basename "$1")\ncp "$1" "$(echo "$name" | sed \'s/C_$/__/\')"\n')
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    server = make_server(tmp_path, f"""
        [xrit]
        origin = {src}/H-000-{{segment}}-C_
        topic = /xrit
        request_port = {free_port()}
        request_address = 127.0.0.1
        compression = xrit
        prog = {prog}
        working_directory = {work}
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/xrit") as seen:
        (src / "H-000-000001___-C_").write_bytes(b"xrit" * 100)
        wait_for(lambda: announcements(seen), what="the decompressed segment")
    assert announcements(seen)[0].data["uid"] == "H-000-000001___-__"


def test_standalone_mode_announces_fsspec_uris(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    server = make_server(tmp_path, f"""
        [sa]
        origin = {src}/{{platform}}_{{start_time:%Y%m%d%H%M}}.dat
        topic = /sa
        info = sensor=avhrr;stations=a,b
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/sa") as seen:
        (src / "noaa19_202401011200.dat").write_bytes(b"sa")
        wait_for(lambda: announcements(seen), what="a standalone announcement")
    data = announcements(seen)[0].data
    assert data["filesystem"]["protocol"] == "ssh" and data["filesystem"]["cls"].endswith("SFTPFileSystem")
    assert data["uri"].startswith("ssh://") and data["uri"].endswith(f"{src}/noaa19_202401011200.dat")
    assert data["uid"] == data["uri"] and "request_address" not in data
    assert data["stations"] == ["a", "b"]


def test_listen_chain_relays_local_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "product.nc").write_bytes(b"nc")
    upstream = messaging.Publisher("upstream", 0, "127.0.0.1").start()
    try:
        server = make_server(tmp_path, f"""
            [relay]
            listen = /products
            addresses = tcp://127.0.0.1:{upstream.port}
            nameserver = False
            topic = /relayed
            request_port = {free_port()}
            request_address = 127.0.0.1
            info = station=here
        """)
        with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/relayed") as seen:
            time.sleep(0.5)

            def send_and_check():
                upstream.send(messaging.make_message("/products/x", "file",
                                                     {"uri": str(src / "product.nc"), "uid": "product.nc"}))
                upstream.send(messaging.make_message("/products/x", "file",
                                                     {"uri": "ftp://elsewhere/remote.nc", "uid": "remote.nc"}))
                return seen.of_type("file")
            wait_for(send_and_check, interval=0.3, what="a relayed message")
    finally:
        upstream.stop()
    relayed = seen.of_type("file")[0]
    assert relayed.subject == "/relayed" and relayed.data["station"] == "here"
    assert relayed.data["request_address"].startswith("127.0.0.1:")
    assert all(m.data["uid"] == "product.nc" for m in seen.of_type("file"))


def test_backlog_and_health_check_restart(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.dat").write_bytes(b"old")
    body = f"""
        [bl]
        origin = {src}/{{name}}.dat
        topic = /bl
        request_port = {free_port()}
        request_address = 127.0.0.1
    """
    server = make_server(tmp_path, body, chain_check_interval=0.3)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/bl") as seen:
        wait_for(lambda: str(src / "old.dat") in server.chains["bl"].history, what="the backlog announced")
        shutil.rmtree(src)
        wait_for(lambda: not server.health()["ok"], what="the chain reported unhealthy")
        src.mkdir()
        wait_for(lambda: server.health()["ok"], what="the watcher restarted")
        (src / "new.dat").write_bytes(b"new")
        wait_for(lambda: any(m.data["uid"] == "new.dat" for m in announcements(seen)),
                 what="an announcement after the restart")


def test_disable_backlog_still_serves_existing_files(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "present.dat").write_bytes(b"present")
    request_port = free_port()
    server = make_server(tmp_path, f"""
        [nb]
        origin = {src}/{{name}}.dat
        topic = /nb
        request_port = {request_port}
        request_address = 127.0.0.1
    """, backlog=False)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/nb") as seen:
        time.sleep(0.5)
        assert not announcements(seen)
        data = {"uri": str(src / "present.dat"), "uid": "present.dat", "destination": f"file://{dst}/"}
        reply = messaging.Requester(f"127.0.0.1:{request_port}").request(
            messaging.make_message("/nb", "push", data), 10)
    assert reply.type == "file"
    assert sha256(str(dst / "present.dat")) == sha256(str(src / "present.dat"))
