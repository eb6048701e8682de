"""s3downloader end to end against a real moto_server, with messages shaped like s3stalker's.

pytroll-collectors' s3stalker announces each new object as a ``file`` message
whose ``uri`` (and ``uid``) is ``s3://bucket/path/name``, with its fsspec
``filesystem`` and the fields parsed from the name; archives become ``dataset``
messages. The tests publish such messages with a real publisher and read what
the downloader announces on its own publisher.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess

import pytest

from tests.controller import DaemonProcess, console_script
from tests.daemons.helpers import Collector, Feed, load, running, sample, wait_for, write
from tests.servers import free_port
from trollmoves.config import RetrySettings
from trollmoves.s3downloader import (
    S3Downloader,
    S3DownloaderOptions,
    object_keys,
    object_location,
    published_data,
)

BUCKET = "atms-sdr"


def stalker_message(bucket: str, key: str, endpoint: str, **metadata) -> dict:
    """The data of an s3stalker ``file`` message (pytroll_collectors.fsspec_to_message)."""
    uri = f"s3://{bucket}/{key}"
    return {"filesystem": {"cls": "s3fs.core.S3FileSystem", "protocol": "s3", "args": [],
                           "client_kwargs": {"endpoint_url": endpoint}},
            "uri": uri, "uid": uri, **metadata}


@pytest.fixture
def bucket(s3_server):
    import boto3

    client = boto3.client("s3", **s3_server.boto3_kwargs())
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return client


def downloader_config(tmp_path, s3_server, feed, publish_port=0, name="s3dl.yaml"):
    return write(tmp_path / name, f"""
        subscribe-topic: [/s3/new-object]
        publish-topic: /s3/downloaded
        bucket: {BUCKET}
        download_destination: {tmp_path}/downloads
        subscriber_addresses: {feed.address}
        nameserver: false
        nameservers: false
        publish_port: {publish_port}
        trollmoves:
          state_directory: {tmp_path}/state
        s3_kwargs:
          anon: false
          key: {s3_server.key}
          secret: {s3_server.secret}
          client_kwargs:
            endpoint_url: {s3_server.endpoint_url}
            region_name: us-east-1
    """)


def test_locations_and_published_data():
    assert object_location("s3://atms-sdr/2024/05/06/SATMS_npp.h5", BUCKET) == (BUCKET, "2024/05/06/SATMS_npp.h5")
    assert object_location("s3://atms-sdr/dir/", BUCKET) is None
    # other uris: 0.19's key, the base name of the uri's path in the configured bucket
    assert object_location("/local/file", BUCKET) == (BUCKET, "file")
    assert object_location("zip://a.nc::s3://atms-sdr/x.zip", BUCKET) == (BUCKET, "x.zip")
    assert object_location("https://s3.example.com/atms-sdr/2024/a.h5", BUCKET) == (BUCKET, "a.h5")
    assert object_keys("s3://atms-sdr/2024/a.h5", BUCKET) == (BUCKET, ["2024/a.h5", "a.h5"])
    assert object_keys("s3://atms-sdr/a.h5", BUCKET) == (BUCKET, ["a.h5"])
    data = {"uri": "s3://b/k/name.h5", "uid": "s3://b/k/name.h5", "path": "b/k", "filename": "name.h5",
            "compress": "no", "tst": 1, "file_list": [], "platform_name": "npp", "filesystem": {"protocol": "s3"}}
    out = published_data(data, "/data/name.h5", 10, {"method": "xxh3_128", "value": "0"})
    assert out == {"platform_name": "npp", "filesystem": {"protocol": "s3"}, "uri": "/data/name.h5",
                   "uid": "name.h5", "size": 10, "checksum": {"method": "xxh3_128", "value": "0"}}


def test_downloads_announces_and_suppresses_duplicates_across_restarts(tmp_path, s3_server, bucket):
    start = dt.datetime(2024, 5, 6, 7, 8, 9)
    objects = {"2024/05/06/SATMS_npp_d20240506_t0708.h5": os.urandom(300_000),
               "2024/05/06/GATMO_npp_d20240506_t0708.h5": os.urandom(1000),
               "archive/part1.nc": b"one" * 100, "archive/part2.nc": b"two" * 100,
               "later/SATMS_j01.h5": os.urandom(5000)}
    for key, body in objects.items():
        bucket.put_object(Bucket=BUCKET, Key=key, Body=body)
    endpoint = s3_server.endpoint_url
    options = S3DownloaderOptions(publish_address="127.0.0.1",
                                  retry=RetrySettings(initial_delay=0.2, max_delay=0.5, max_age=60))
    downloads = tmp_path / "downloads"
    with Feed() as feed:
        cfg = load(downloader_config(tmp_path, s3_server, feed), "s3downloader")
        first = S3Downloader(cfg, options)
        with running(first):
            feed.wait_subscribed(first, "/s3/new-object/probe", "s3downloader")
            with Collector([f"tcp://127.0.0.1:{first.publisher.port}"], "/s3/downloaded") as seen:
                satms = stalker_message(BUCKET, "2024/05/06/SATMS_npp_d20240506_t0708.h5", endpoint,
                                        platform_name="npp", start_time=start, path="atms-sdr/2024/05/06")
                feed.send("/s3/new-object", "file", satms)
                feed.send("/s3/new-object", "file", stalker_message(
                    BUCKET, "2024/05/06/GATMO_npp_d20240506_t0708.h5", endpoint, platform_name="npp"))
                feed.send("/s3/new-object", "dataset", {
                    "platform_name": "noaa20", "dataset": [
                        {"uri": f"s3://{BUCKET}/archive/part1.nc", "uid": "part1.nc"},
                        {"uri": f"s3://{BUCKET}/archive/part2.nc", "uid": "part2.nc"}]})
                feed.send("/s3/new-object", "file", stalker_message(BUCKET, "missing/none.h5", endpoint))
                feed.send("/s3/new-object", "file", {"uri": "/local/path.h5", "uid": "path.h5"})
                wait_for(lambda: len(seen.of_type("file")) == 4, timeout=30, what="four downloads announced")
                feed.send("/s3/new-object", "file", satms)  # s3stalker's overlapping windows repeat objects
                wait_for(lambda: sample(first, "trollmoves_duplicates_skipped_total", chain="s3downloader") == 1,
                         what="the repeated announcement skipped")
                # the missing object, and the local path's 0.19 key (its base name in the bucket)
                wait_for(lambda: sample(first, "trollmoves_transfers_failed_total", chain="s3downloader",
                                        scheme="s3", reason="permanent") == 2, what="the missing objects reported")
        published = {m.data["uid"]: m for m in seen.of_type("file")}
        assert sorted(published) == ["GATMO_npp_d20240506_t0708.h5", "SATMS_npp_d20240506_t0708.h5",
                                     "part1.nc", "part2.nc"]
        for key in ("2024/05/06/SATMS_npp_d20240506_t0708.h5", "2024/05/06/GATMO_npp_d20240506_t0708.h5",
                    "archive/part1.nc", "archive/part2.nc"):
            name = os.path.basename(key)
            assert (downloads / name).read_bytes() == objects[key], name
            assert published[name].data["uri"] == str(downloads / name)
            assert published[name].subject == "/s3/downloaded"
        satms_out = published["SATMS_npp_d20240506_t0708.h5"].data
        assert satms_out["start_time"] == start and satms_out["platform_name"] == "npp"
        assert "path" not in satms_out and satms_out["size"] == 300_000
        assert satms_out["checksum"]["method"] == "xxh3_128"
        assert published["part2.nc"].data["platform_name"] == "noaa20"
        assert not [n for n in os.listdir(downloads) if n.startswith(".")], "temporary files left behind"
        assert sample(first, "trollmoves_retry_queue_length", chain="s3downloader") == 0

        # restart: the same announcements are duplicates, a new object is downloaded
        second = S3Downloader(cfg, options)
        with running(second):
            feed.wait_subscribed(second, "/s3/new-object/probe", "s3downloader")
            with Collector([f"tcp://127.0.0.1:{second.publisher.port}"], "/s3/downloaded") as seen_again:
                feed.send("/s3/new-object", "file", satms)
                feed.send("/s3/new-object", "file", stalker_message(BUCKET, "later/SATMS_j01.h5", endpoint))
                wait_for(lambda: len(seen_again.of_type("file")) == 1, what="the new object announced")
                wait_for(lambda: sample(second, "trollmoves_duplicates_skipped_total", chain="s3downloader") == 1,
                         what="the old object skipped after the restart")
                # the same key replaced by a new version is a new object
                bucket.put_object(Bucket=BUCKET, Key="2024/05/06/SATMS_npp_d20240506_t0708.h5", Body=b"v2")
                feed.send("/s3/new-object", "file", satms)
                wait_for(lambda: len(seen_again.of_type("file")) == 2, what="the replaced object announced")
    assert [m.data["uid"] for m in seen_again.of_type("file")] == ["SATMS_j01.h5", "SATMS_npp_d20240506_t0708.h5"]
    assert (downloads / "SATMS_npp_d20240506_t0708.h5").read_bytes() == b"v2"
    assert (downloads / "SATMS_j01.h5").read_bytes() == objects["later/SATMS_j01.h5"]


def test_console_script(tmp_path, s3_server, bucket):
    bucket.put_object(Bucket=BUCKET, Key="proc/SATMS_proc.h5", Body=b"x" * 4096)
    publish_port = free_port()
    with Feed() as feed:
        cfg = downloader_config(tmp_path, s3_server, feed, publish_port)
        checked = subprocess.run([console_script("trollmoves"), "check-config", cfg],
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0 and "s3downloader config" in checked.stdout, checked.stdout
        helped = subprocess.run([console_script("s3downloader.py"), "--help"],
                                capture_output=True, text=True, check=False)
        assert helped.returncode == 0 and "--config-file" in helped.stdout
        proc = DaemonProcess(["s3downloader.py", "-c", cfg, "-v"], tmp_path / "s3dl.log").start()
        try:
            proc.wait_log("Started")
            with Collector([f"tcp://127.0.0.1:{publish_port}"], "/s3/downloaded") as seen:
                message = stalker_message(BUCKET, "proc/SATMS_proc.h5", s3_server.endpoint_url, orbit=123)
                wait_for(lambda: feed.send("/s3/new-object", "file", message) or seen.of_type("file"),
                         timeout=20, interval=0.3, what="the download announced")
            data = seen.of_type("file")[0].data
            assert data["uri"] == str(tmp_path / "downloads" / "SATMS_proc.h5") and data["orbit"] == 123
            assert (tmp_path / "downloads" / "SATMS_proc.h5").read_bytes() == b"x" * 4096
        finally:
            proc.proc.send_signal(signal.SIGTERM)
            assert proc.stop() == 0, proc.log()[-3000:]
    assert "Traceback" not in proc.log()
    assert s3_server.secret not in proc.log()
