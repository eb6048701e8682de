"""move_it.py end to end: watched directories, files copied to local, SFTP and FTP destinations.

Real files, real sshd and pyftpdlib, messages read from the ``-p`` publisher;
the console script runs as a process with polling (``-w``).
"""

from __future__ import annotations

import bz2
import os
import signal
import subprocess

from tests.controller import DaemonProcess, console_script
from tests.daemons.helpers import Collector, load, running, sample, sha256, wait_for, write
from tests.servers import free_port
from trollmoves.move_it import MoveIt, MoveItOptions, as_directory, message_data, names_a_file


def test_destinations_are_directories_and_message_shape(tmp_path):
    assert as_directory("/tmp/unpack") == "/tmp/unpack/"
    assert as_directory("ftp://u:p@host/in/") == "ftp://u:p@host/in/"
    assert as_directory("s3://bucket") == "s3://bucket/"
    # 0.19's movers: a trailing slash, a bare bucket or an existing local directory is a directory
    assert not names_a_file("ftp://u:p@host/in/") and not names_a_file("s3://bucket")
    assert not names_a_file(str(tmp_path)) and not names_a_file(f"file://{tmp_path}")
    assert names_a_file(f"{tmp_path}/missing") and names_a_file("s3://bucket/name")
    cfg = load(write(tmp_path / "m.ini", """
        [hrit]
        origin = /data/in/{platform_name}_{segment:3d}.dat
        destinations = /data/out sftp://archive.example.com/hrit/
        topic = /1b/hrit
        info = sensor=seviri;stations=a,b
        request_port = 9999
        request_address = 10.0.0.1
    """), "move_it")
    chain = cfg.chains[0]
    data = message_data(chain, {"platform_name": "MSG4", "segment": 7}, "sftp://archive.example.com/hrit/",
                        "/tmp/work/MSG4_007.dat")
    assert data == {"sensor": "seviri", "stations": ["a", "b"], "platform_name": "MSG4", "segment": 7,
                    "uri": "/hrit/MSG4_007.dat", "uid": "MSG4_007.dat", "request_address": "10.0.0.1:9999"}


def test_copies_to_every_destination_publishes_and_deletes(tmp_path, sshd_server, ftp_server):
    src, packed = tmp_path / "src", tmp_path / "packed"
    src.mkdir()
    packed.mkdir()
    local_dst = tmp_path / "local-dst"
    sftp_dir = f"{sshd_server.root}/move_it"
    before = src / "NOAA19_001.dat"
    before.write_bytes(os.urandom(10_000))  # present at start: the backlog copies it
    before_sum = sha256(str(before))
    cfg = load(write(tmp_path / "move_it.ini", f"""
        [avhrr]
        origin = {src}/{{platform_name}}_{{number:03d}}.dat
        destinations = file://{local_dst}/
                       sftp://{sshd_server.user}@127.0.0.1:{sshd_server.port}{sftp_dir}/
        connection_parameters__ssh_private_key_file = {sshd_server.client_key}
        connection_parameters__known_hosts = {sshd_server.known_hosts}
        topic = /avhrr/l0
        info = sensor=avhrr;stations=norrkoping,kiruna
        request_port = 9123
        request_address = 127.0.0.1
        delete = true

        [packed]
        origin = {packed}/{{name}}.bz2
        destinations = ftp://{ftp_server.user}:{ftp_server.password}@127.0.0.1:{ftp_server.port}/unpacked/
        compression = bzip
        working_directory = {tmp_path}/work
        topic = /packed
    """), "move_it")
    service = MoveIt(cfg, MoveItOptions(publish_port=0, publish_address="127.0.0.1"))
    with running(service), Collector([f"tcp://127.0.0.1:{service.publisher.port}"], "/") as seen:
        wait_for(lambda: not before.exists(), what="the backlog file copied and deleted")
        new = []
        for number in (2, 3):
            path = src / f"NOAA19_{number:03d}.dat"
            path.write_bytes(os.urandom(200_000))
            new.append((path.name, sha256(str(path))))
        (src / "unrelated.txt").write_bytes(b"not matching")
        payload = os.urandom(50_000)
        (packed / "bundle.dat.bz2").write_bytes(bz2.compress(payload))
        # the backlog file was copied before this subscription could see its messages: 5 messages here
        wait_for(lambda: len([m for m in seen.of_type("file") if "001" not in m.data["uid"]]) == 5,
                 what="five file messages")
        wait_for(lambda: not any(src.glob("NOAA19_*")), what="the sources deleted")
    for name, digest in [("NOAA19_001.dat", before_sum)] + new:
        assert sha256(str(local_dst / name)) == digest, name
        assert sha256(os.path.join(sftp_dir, name)) == digest, name
    assert (src / "unrelated.txt").exists()
    with open(os.path.join(ftp_server.root, "unpacked", "bundle.dat"), "rb") as stream:
        assert stream.read() == payload
    assert (packed / "bundle.dat.bz2").exists(), "delete is off for this chain"
    assert not os.listdir(tmp_path / "work"), "the decompressed temporary file is removed"
    avhrr = [m for m in seen.of_type("file") if m.subject == "/avhrr/l0" and "001" not in m.data["uid"]]
    assert sorted(m.data["uri"] for m in avhrr) == sorted(
        [f"{local_dst}/{n}" for n in ("NOAA19_002.dat", "NOAA19_003.dat")]
        + [f"{sftp_dir}/{n}" for n in ("NOAA19_002.dat", "NOAA19_003.dat")])
    first = avhrr[0].data
    assert list(first)[:7] == ["sensor", "stations", "platform_name", "number", "uri", "uid", "request_address"]
    assert first["stations"] == ["norrkoping", "kiruna"] and first["platform_name"] == "NOAA19"
    assert first["request_address"] == "127.0.0.1:9123" and first["uid"] == os.path.basename(first["uri"])
    packed_msg = next(m for m in seen.of_type("file") if m.subject == "/packed").data
    assert packed_msg["uri"] == "/unpacked/bundle.dat" and "request_address" not in packed_msg
    assert ftp_server.password not in "".join(m.encode() for _, m in seen.messages)
    assert sample(service, "trollmoves_transfers_succeeded_total", chain="avhrr", scheme="sftp") == 3


def test_a_failed_destination_keeps_the_source(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    cfg = load(write(tmp_path / "m.ini", f"""
        [chain]
        origin = {src}/{{name}}.dat
        destinations = {dst}/ ftp://nobody:x@127.0.0.1:{free_port()}/in/
        connection_parameters__retries = 0
        connection_parameters__connect_timeout = 2
        delete = true
    """), "move_it")
    service = MoveIt(cfg, MoveItOptions())
    with running(service):
        (src / "kept.dat").write_bytes(b"precious")
        wait_for(lambda: sample(service, "trollmoves_transfers_failed_total", chain="chain", scheme="ftp",
                                reason="transient") == 1, what="the FTP copy failing")
        assert (dst / "kept.dat").read_bytes() == b"precious"
        assert (src / "kept.dat").exists(), "a file not copied everywhere must not be deleted"


def test_console_script_with_polling(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    publish_port = free_port()
    cfg = write(tmp_path / "move_it.ini", f"""
        [chain]
        origin = {src}/{{name}}.dat
        destinations = {dst}/a/ file://{dst}/b/
        topic = /moved
        delete = True
        watchdog_timeout = 0.2
    """)
    checked = subprocess.run([console_script("trollmoves"), "check-config", cfg],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "move_it config" in checked.stdout, checked.stdout
    helped = subprocess.run([console_script("move_it.py"), "--help"],
                            capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "--disable-backlog" in helped.stdout
    proc = DaemonProcess(["move_it.py", "-w", "-p", str(publish_port), "--publish-address", "127.0.0.1",
                          "-v", cfg], tmp_path / "move_it.log").start()
    try:
        proc.wait_log("Chain chain watching")
        with Collector([f"tcp://127.0.0.1:{publish_port}"], "/moved") as seen:
            (src / "polled.dat").write_bytes(b"p" * 5000)
            wait_for(lambda: len(seen.of_type("file")) == 2, what="two messages")
            wait_for(lambda: not (src / "polled.dat").exists(), what="the source deleted")
        assert sorted(m.data["uri"] for m in seen.of_type("file")) == [f"{dst}/a/polled.dat", f"{dst}/b/polled.dat"]
        assert (dst / "a" / "polled.dat").read_bytes() == (dst / "b" / "polled.dat").read_bytes() == b"p" * 5000
    finally:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.stop() == 0, proc.log()[-3000:]
    log = proc.log()
    assert "Traceback" not in log and "(polling)" in log


def test_reload_and_a_directory_that_appears_later(tmp_path):
    later, dst = tmp_path / "later", tmp_path / "dst"

    def config(*sections):
        text = "".join(f"\n[{name}]\norigin = {tmp_path}/{name}/{{name}}.dat\ndestinations = {dst}/{name}/\n"
                       for name in sections)
        return load(write(tmp_path / "m.ini", text), "move_it")

    (tmp_path / "first").mkdir()
    service = MoveIt(config("first", "later"), MoveItOptions())
    with running(service):
        assert service.health()["chains"]["later"]["watching"] is False
        later.mkdir()
        service.check_chains()  # what the housekeeping does every chain_check_interval
        assert service.health()["ok"]
        (later / "a.dat").write_bytes(b"a")
        wait_for(lambda: (dst / "later" / "a.dat").exists(), what="the file of the late directory")
        (tmp_path / "third").mkdir()
        first = service.chains["first"]
        service.reload(config("first", "third"))
        assert sorted(service.chains) == ["first", "third"] and service.chains["first"] is first, \
            "an unchanged chain keeps running"
        (tmp_path / "third" / "c.dat").write_bytes(b"c")
        (later / "b.dat").write_bytes(b"b")
        wait_for(lambda: (dst / "third" / "c.dat").exists(), what="the file of the added chain")
    assert not (dst / "later" / "b.dat").exists(), "the removed chain still copies"
