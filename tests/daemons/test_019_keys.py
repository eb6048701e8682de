"""Keys and options of trollmoves 0.19 that used to be parsed and then ignored (issue 13).

Each test runs the real service (or console script) and asserts what a user sees:
the messages on the wire, the bytes delivered, the reply to a request, the exit
code and its text. The expected shapes come from 0.19.0's code (reference §3.2,
§3.6, §4) and, for the standalone archive message, from running 0.19's
``extract_local_files_to_message_for_remote_use`` on the same archive.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tarfile
import time

import pytest

from tests.controller import DaemonProcess, console_script
from tests.daemons.helpers import Collector, Feed, load, running, sha256, wait_for, write
from tests.servers import free_port
from trollmoves import messaging
from trollmoves.move_it import MoveIt, MoveItOptions
from trollmoves.server import Server, ServerOptions


def make_server(tmp_path, body, **options):
    cfg = load(write(tmp_path / "server.ini", body), "server")
    return Server(cfg, ServerOptions(publish_port=0, publish_address="127.0.0.1", **options))


# --------------------------------------------------------------------------------------------------
# trollmoves.movers.MOVERS
# --------------------------------------------------------------------------------------------------

def test_movers_mapping_is_back(tmp_path):
    from trollmoves.movers import MOVERS, FileMover, FtpMover, S3Mover, ScpMover, SftpMover

    assert dict(MOVERS) == {"": FileMover, "file": FileMover, "ftp": FtpMover, "scp": ScpMover,
                            "sftp": SftpMover, "s3": S3Mover}
    with pytest.raises(KeyError):
        MOVERS["gopher"]
    source = tmp_path / "a.dat"
    source.write_bytes(b"payload")
    MOVERS["file"](str(source), f"file://{tmp_path}/out/").copy()  # how 0.19 programs call it
    assert (tmp_path / "out" / "a.dat").read_bytes() == b"payload"


# --------------------------------------------------------------------------------------------------
# Server: standalone unpack, info over every chain, listen-chain subscription keys
# --------------------------------------------------------------------------------------------------

def test_standalone_unpack_tar_announces_the_members_as_a_dataset(tmp_path):
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    (work / "sub").mkdir(parents=True)
    (work / "a.txt").write_text("a")
    (work / "sub" / "b.txt").write_text("bb")
    server = make_server(tmp_path, f"""
        [sa]
        origin = {src}/{{platform}}_{{number:d}}.tar
        topic = /sa
        info = sensor=avhrr;stations=a,b
        unpack = tar
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/sa") as seen:
        archive = src / "noaa19_7.tar"
        with tarfile.open(tmp_path / "tmp.tar", "w") as tar:
            tar.add(work / "a.txt", "a.txt")
            tar.add(work / "sub", "sub")
        os.rename(tmp_path / "tmp.tar", archive)
        wait_for(lambda: seen.of_type("dataset"), what="the dataset announcement")
        time.sleep(0.3)
    assert not seen.of_type("file"), "an unpacked archive is announced as a dataset only"
    message = seen.of_type("dataset")[0]
    host = socket.gethostname()
    filesystem = {"cls": "fsspec.implementations.tar:TarFileSystem", "protocol": "tar", "args": [],
                  "fo": str(archive), "target_protocol": "ssh", "target_options": {"host": host}}
    assert message.subject == "/sa"
    assert message.data == {
        "dataset": [{"filesystem": filesystem, "uri": f"tar://a.txt::ssh://{host}{archive}", "uid": "tar://a.txt"},
                    {"filesystem": filesystem, "uri": f"tar://sub/b.txt::ssh://{host}{archive}",
                     "uid": "tar://sub/b.txt"}],
        "sensor": "avhrr", "stations": ["a", "b"], "platform": "noaa19", "number": 7}


def test_unpack_other_than_tar_or_zip_is_refused_at_load(tmp_path):
    cfg = write(tmp_path / "server.ini", f"""
        [sa]
        origin = {tmp_path}/{{name}}.rar
        topic = /sa
        unpack = rar
    """)
    checked = subprocess.run([console_script("trollmoves"), "check-config", cfg],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 1
    assert "[sa] unpack: expected one of tar, zip, got 'rar'" in checked.stdout


def test_info_lists_the_files_of_every_chain_most_recent_first(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    port = free_port()
    server = make_server(tmp_path, f"""
        [first]
        origin = {first}/{{name}}.dat
        topic = /hrit/first
        request_port = {port}
        request_address = 127.0.0.1

        [second]
        origin = {second}/{{name}}.dat
        topic = /hrit/second
        request_port = {free_port()}
        request_address = 127.0.0.1

        [standalone]
        origin = {second}/{{name}}.sa
        topic = /hrit/standalone
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/hrit") as seen:
        for path in (first / "one.dat", second / "two.dat", first / "three.dat", second / "four.sa"):
            before = len(seen.messages)
            path.write_bytes(b"x")
            wait_for(lambda n=before: len(seen.messages) > n, what=f"{path.name} announced")
        requester = messaging.Requester(f"tcp://127.0.0.1:{port}")
        try:
            everything = requester.request(messaging.make_message("/hrit", "info"), 5)
            second_only = requester.request(messaging.make_message("/hrit/second", "info"), 5)
            capped = requester.request(messaging.make_message("/hrit", "info", {"max_count": 2}), 5)
        finally:
            requester.close()
    # as 0.19's process-wide file cache: every chain's entries, most recent first, filtered by prefix;
    # standalone announcements carry no request address and were never in that cache
    assert everything.data["files"] == ["/hrit/first/three.dat", "/hrit/second/two.dat", "/hrit/first/one.dat"]
    assert second_only.data["files"] == ["/hrit/second/two.dat"]
    assert capped.data["files"] == ["/hrit/first/three.dat", "/hrit/second/two.dat"]
    assert capped.data["max_count"] == 2 and everything.data["max_count"] == 2256


@pytest.mark.parametrize("addr_listener", [True, False])
def test_listen_chain_follows_new_publishers_only_with_addr_listener(tmp_path, nameserver, addr_listener):
    product = tmp_path / "product.nc"
    product.write_bytes(b"nc")
    server = make_server(tmp_path, f"""
        [relay]
        listen = /products
        services = late_producer_{addr_listener}
        nameserver = {nameserver.host}
        timeout = 1
        addr_listener = {addr_listener}
        topic = /relayed
        request_port = {free_port()}
        request_address = 127.0.0.1
    """)
    with running(server), Collector([f"tcp://127.0.0.1:{server.publisher.port}"], "/relayed") as seen:
        time.sleep(2.0)  # the chain's start-up look-up (timeout = 1 s) is over: the producer starts later
        with Feed(f"late_producer_{addr_listener}", nameservers=[nameserver.host]) as feed:
            def relayed():
                feed.send("/products/x", "file", {"uri": str(product), "uid": "product.nc"})
                return seen.of_type("file")
            if addr_listener:
                wait_for(relayed, timeout=20, interval=0.5, what="the late publisher followed")
            else:
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    assert not relayed(), "addr_listener = false must not follow a publisher started later"
                    time.sleep(0.5)
    if addr_listener:
        data = seen.of_type("file")[0].data
        assert data["uri"] == str(product) and data["request_address"].startswith("127.0.0.1:")


# --------------------------------------------------------------------------------------------------
# move_it: destinations as 0.19's movers read them; health-check options
# --------------------------------------------------------------------------------------------------

def test_move_it_destination_without_slash_names_the_file(tmp_path, s3_server):
    import boto3

    client = boto3.client("s3", **s3_server.boto3_kwargs())
    client.create_bucket(Bucket="move-it-names")
    src, existing = tmp_path / "src", tmp_path / "existing"
    src.mkdir()
    existing.mkdir()
    cfg = load(write(tmp_path / "m.ini", f"""
        [chain]
        origin = {src}/{{name}}.dat
        destinations = file://{tmp_path}/named.bin {existing} {tmp_path}/dir/ s3://move-it-names/object-name
        connection_parameters__client_kwargs__endpoint_url = {s3_server.endpoint_url}
        connection_parameters__key = {s3_server.key}
        connection_parameters__secret = {s3_server.secret}
        topic = /moved
    """), "move_it")
    service = MoveIt(cfg, MoveItOptions(publish_port=0, publish_address="127.0.0.1"))
    with running(service), Collector([f"tcp://127.0.0.1:{service.publisher.port}"], "/moved") as seen:
        time.sleep(0.7)  # the subscription reaches the publisher before the first message
        (tmp_path / "first.tmp").write_bytes(os.urandom(5000))
        digest = sha256(str(tmp_path / "first.tmp"))
        os.rename(tmp_path / "first.tmp", src / "first.dat")
        wait_for(lambda: len(seen.of_type("file")) == 4, what="four file messages")
    assert sha256(str(tmp_path / "named.bin")) == digest, "no trailing slash, not a directory: the file's name"
    assert sha256(str(existing / "first.dat")) == digest, "an existing directory keeps the file's name"
    assert sha256(str(tmp_path / "dir" / "first.dat")) == digest
    body = client.get_object(Bucket="move-it-names", Key="object-name")["Body"].read()
    assert body == (src / "first.dat").read_bytes(), "s3://bucket/name writes the object name (0.19)"
    uris = sorted(m.data["uri"] for m in seen.of_type("file"))
    assert uris == sorted([f"{tmp_path}/named.bin", f"{existing}/first.dat", f"{tmp_path}/dir/first.dat",
                           "/object-name"]), "each uri names what was written"


def test_move_it_stops_after_max_notifier_restarts(tmp_path):
    cfg = write(tmp_path / "m.ini", f"""
        [never]
        origin = {tmp_path}/missing/{{name}}.dat
        destinations = {tmp_path}/out/
    """)
    proc = DaemonProcess(["move_it.py", "--chain-check-interval", "0.2", "--max-notifier-restarts", "3",
                          cfg], tmp_path / "move_it.log").start()
    try:
        code = proc.proc.wait(30)
    finally:
        proc.stop()
    log = proc.log()
    assert code == 1, log[-2000:]
    assert "chain never could not be restarted after 3 attempts" in log


# --------------------------------------------------------------------------------------------------
# s3downloader: 0.19's key for any uri; the logging keys
# --------------------------------------------------------------------------------------------------

def test_s3downloader_takes_019_keys_and_logging_section(tmp_path, s3_server):
    import boto3

    from tests.daemons.test_s3downloader import BUCKET

    client = boto3.client("s3", **s3_server.boto3_kwargs())
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    client.put_object(Bucket=BUCKET, Key="at-root.h5", Body=b"root object")
    client.put_object(Bucket=BUCKET, Key="deep/in/bucket.h5", Body=b"deep object")
    downloads, log = tmp_path / "downloads", tmp_path / "s3dl.log"
    publish_port = free_port()
    with Feed() as feed:
        cfg = write(tmp_path / "s3dl.yaml", f"""
            logging:
              log_rotation_days: 2
              log_rotation_backup: 4
              logging_mode: DEBUG
            subscribe-topic: /s3/new
            publish-topic: /s3/downloaded
            bucket: {BUCKET}
            download_destination: {downloads}
            subscriber_addresses: {feed.address}
            nameserver: false
            nameservers: false
            publish_port: {publish_port}
            trollmoves:
              state_directory: {tmp_path}/state
            s3_kwargs:
              key: {s3_server.key}
              secret: {s3_server.secret}
              client_kwargs:
                endpoint_url: {s3_server.endpoint_url}
                region_name: us-east-1
        """)
        proc = DaemonProcess(["s3downloader.py", "-c", cfg, "-l", str(log)], tmp_path / "stderr.log").start()
        try:
            wait_for(lambda: log.exists() and "subscribed to" in log.read_text(), what="the subscription")
            with Collector([f"tcp://127.0.0.1:{publish_port}"], "/s3/downloaded") as seen:
                def announced():
                    if not seen.of_type("file"):
                        # an https URL (0.19: basename in the configured bucket); an s3 uri whose key is
                        # at the bucket root (0.19's key, tried after the full path)
                        feed.send("/s3/new", "file", {"uri": f"https://s3.example.com/{BUCKET}/at-root.h5"})
                        feed.send("/s3/new", "file", {"uri": f"s3://{BUCKET}/deep/in/bucket.h5"})
                    return len(seen.of_type("file")) >= 2
                wait_for(announced, timeout=30, interval=0.5, what="two downloads announced")
        finally:
            proc.stop()
    assert (downloads / "at-root.h5").read_bytes() == b"root object"
    assert (downloads / "bucket.h5").read_bytes() == b"deep object"
    text = log.read_text()
    assert "DEBUG" in text, "logging_mode: DEBUG logs at DEBUG"
    assert not log.with_name(log.name + ".1").exists()
    assert "Traceback" not in text


def test_s3downloader_logging_keys_are_checked(tmp_path):
    cfg = write(tmp_path / "s3dl.yaml", """
        logging:
          log_rotation_days: lots
          log_rotaton_backup: 3
        subscribe-topic: /s3/new
        bucket: b
    """)
    checked = subprocess.run([console_script("trollmoves"), "check-config", "--kind", "s3downloader", cfg],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 1, checked.stdout
    assert "logging.log_rotation_days: expected an integer, got 'lots'" in checked.stdout
    assert "logging.log_rotaton_backup: unknown logging key" in checked.stdout


def test_rotating_handler_follows_the_logging_keys(tmp_path):
    """What -l FILE builds from the keys (interval in days, backups, UTC midnight), read back from logging."""
    import logging
    import logging.handlers

    from trollmoves.program import apply_s3downloader_logging as apply_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        apply_logging({"log_rotation_days": 3, "log_rotation_backup": 5, "logging_mode": "INFO"},
                      str(tmp_path / "x.log"))
        handler = root.handlers[0]
        assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
        assert (handler.when, handler.interval, handler.backupCount, handler.utc) == ("MIDNIGHT", 3 * 86400, 5,
                                                                                    True)
        assert root.level == logging.INFO
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


# --------------------------------------------------------------------------------------------------
# mirror: options 0.19's mirror never had are refused
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", [["-w"], ["--disable-backlog"], ["--chain-check-interval", "5"],
                                    ["--max-notifier-restarts", "3"]])
def test_mirror_refuses_watching_options(tmp_path, option):
    proc = subprocess.run([console_script("move_it_mirror.py"), *option, str(tmp_path / "mirror.ini")],
                          capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 2
    assert f"unrecognized arguments: {option[0]}" in proc.stderr


def test_mirror_pulls_under_ftp_root_and_honours_create_target_directory(tmp_path, ftp_server):
    """ftp_root + destination path is where pulled files land (0.19's create_local_dir); with
    create_target_directory = false a missing directory is an error reply, not a silent mkdir."""
    from trollmoves.mirror import Mirror

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    inside_req, inside_pub = free_port(), free_port()
    inside = Server(load(write(tmp_path / "server.ini", f"""
        [hrit]
        origin = {src}/{{name}}.dat
        topic = /inside
        request_port = {inside_req}
        request_address = 127.0.0.1
    """), "server"), ServerOptions(publish_port=inside_pub, publish_address="127.0.0.1", backlog=False))
    ftp = f"ftp://{ftp_server.user}:{ftp_server.password}@127.0.0.1:{ftp_server.port}"
    ports = {name: free_port() for name in ("ftp", "nodir")}
    mirror = Mirror(load(write(tmp_path / "mirror.ini", f"""
        [trollmoves]
        state_directory = {tmp_path}/state

        [ftp]
        providers = 127.0.0.1:{inside_pub}
        client_topic = /inside
        destination = {ftp}/mirror-{ports["ftp"]}/
        ftp_root = {ftp_server.root}
        origin = /unused/{{name}}
        request_port = {ports["ftp"]}
        request_address = 127.0.0.1
        topic = /outside/ftp

        [nodir]
        providers = 127.0.0.1:{inside_pub}
        client_topic = /inside
        destination = file://{tmp_path}/missing/
        create_target_directory = false
        origin = /unused/{{name}}
        request_port = {ports["nodir"]}
        request_address = 127.0.0.1
        topic = /outside/nodir
    """), "mirror"), ServerOptions(publish_port=0, publish_address="127.0.0.1"))
    with running(inside), running(mirror), \
            Collector([f"tcp://127.0.0.1:{mirror.publisher.port}"], "/outside") as seen:
        time.sleep(1.0)
        (src / "one.dat").write_bytes(b"one" * 1000)
        wait_for(lambda: len(seen.of_type("file")) == 2, what="both mirror chains re-announcing")
        replies = {}
        for message in seen.of_type("file"):
            chain = message.subject.rsplit("/", 1)[1]
            request = dict(message.data, destination=f"file://{dst}/{chain}/")
            requester = messaging.Requester(f"tcp://127.0.0.1:{ports[chain]}")
            try:
                replies[chain] = requester.request(messaging.make_message(message.subject, "push", request), 30)
            finally:
                requester.close()
    assert replies["ftp"].type == "file", replies["ftp"].data
    assert (dst / "ftp" / "one.dat").read_bytes() == b"one" * 1000
    assert os.path.exists(os.path.join(ftp_server.root, f"mirror-{ports['ftp']}", "one.dat"))
    assert replies["nodir"].type == "err"
    assert f"{tmp_path}/missing/ does not exist (create_target_directory is false)" in replies["nodir"].data
    assert not (tmp_path / "missing").exists()
