"""Dispatcher end to end: posttroll messages in, files out on real FTP, SFTP, S3 and local targets.

Messages come from a real posttroll-compatible publisher (``trollmoves.messaging``),
files land on the session's pyftpdlib, sshd and moto_server, and the result
messages are read from the dispatcher's own publisher. The retry tests stop and
restart an FTP server of their own on one fixed port.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.controller import DaemonProcess, console_script
from tests.daemons.helpers import (
    Collector,
    Feed,
    load,
    make_file,
    running,
    sample,
    sha256,
    subscriber_yaml,
    wait_for,
    write,
)
from tests.servers import free_port
from trollmoves.conditions import check_conditions, parse_comparison
from trollmoves.config import RetrySettings
from trollmoves.dispatcher import (
    Dispatcher,
    DispatcherOptions,
    apply_aliases,
    compose_destination,
    file_items,
    first_match,
)
from trollmoves.retrying import RetryQueue, next_due, retry_delay
from trollmoves.state import StateStore

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def start_ftp_on(port: int, root, user: str, password: str) -> subprocess.Popen:
    """A pyftpdlib server on a fixed port (the session fixture picks its own): stopped and restarted
    on the same port, it plays a customer's FTP server going down and coming back."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(port), "-w",
                             "-d", str(root), "-u", user, f"--password={password}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import socket

    def accepting():
        assert proc.poll() is None, "pyftpdlib exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_for(accepting, 15, 0.05, f"pyftpdlib on port {port}")
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------------------------------
# Pure logic: conditions, aliases, destinations, message splitting
# --------------------------------------------------------------------------------------------------

def test_conditions_or_and_lists_except_and_numbers(caplog):
    conditions = [
        {"product": ["green_snow", "true_color"], "sensor": "viirs"},
        {"product": ("green_snow", "overview"), "sensor": "avhrr", "sun_zenith_angle": "<90",
         "except": {"platform_name": "NOAA-15"}},
    ]
    viirs = {"product": "true_color", "sensor": "viirs"}
    avhrr = {"product": "overview", "sensor": "avhrr", "sun_zenith_angle": 45.0, "platform_name": "NOAA-19"}
    assert check_conditions(viirs, conditions)
    assert check_conditions(avhrr, conditions)
    assert not check_conditions(dict(avhrr, platform_name="NOAA-15"), conditions)
    assert not check_conditions(dict(avhrr, sun_zenith_angle="95"), conditions)
    assert not check_conditions(dict(viirs, product="overview"), conditions)
    assert check_conditions({"anything": 1}, ())
    for value, number, expected in (("<=5", 5, True), (">=5", 4.9, False), ("!=3", 3, False), ("!3", 4, True),
                                    ("==2", "2", True), ("=2", 2.0, True), (">50", "50.5", True)):
        assert check_conditions({"x": number}, [{"x": value}]) is expected, value
    caplog.clear()
    assert not check_conditions({"sensor": "viirs"}, [{"sensor": "viirs", "coverage": ">50"}])
    assert "missing metadata 'coverage'" in caplog.text
    assert not check_conditions({"coverage": "lots"}, [{"coverage": ">50"}])
    assert not check_conditions({"sensor": "avhrr"}, [{"sensor": "avhrr", "except": {"platform_name": "x"}}])
    with pytest.raises(ValueError):
        parse_comparison("<__import__('os').system('false')")


def test_aliases_both_forms_never_change_the_config():
    aliases = {"product": {"green_snow": "gs"},
               "platform_name": [{"NOAA-20": "n20", "_alias_name": "short_platform"}]}
    snapshot = repr(aliases)
    data = {"product": "green_snow", "platform_name": "NOAA-20", "sensor": "viirs"}
    for _ in range(3):  # the original broke from the second message on (§7.6)
        metadata = apply_aliases(data, aliases)
        assert metadata["product"] == "gs" and metadata["short_platform"] == "n20"
        assert metadata["platform_name"] == "NOAA-20"
    assert repr(aliases) == snapshot
    assert data == {"product": "green_snow", "platform_name": "NOAA-20", "sensor": "viirs"}
    assert apply_aliases({"product": ["a", "b"]}, aliases)["product"] == ["a", "b"]


def test_destinations_and_dataset_splitting(tmp_path):
    cfg = load(write(tmp_path / "d.yaml", """
        t:
          host: ftp://user:secret@ftp.example.com:2121
          directory: /in/{sensor}
          filepattern: '{platform_name}_{start_time:%Y%m%d%H%M}.{format}'
          dispatch_configs:
            - topics: [/level2/viirs]
            - topics: [/level2]
              directory: /other
              filepattern: null
        local:
          directory: /data/{sensor}
          dispatch_configs: [{topics: [/]}]
    """), "dispatcher")
    target, local = cfg.chains
    source = make_file(tmp_path, "odd{name}.nc")
    data = {"sensor": "viirs", "platform_name": "NOAA-20", "format": "nc", "uri": source,
            "start_time": dt.datetime(2024, 1, 2, 3, 4)}
    first = first_match(target, "/level2/viirs/x", data)
    assert compose_destination(target, first, data, source) == \
        "ftp://user:secret@ftp.example.com:2121/in/viirs/NOAA-20_202401020304.nc"
    second = first_match(target, "/level2/avhrr", data)
    assert compose_destination(target, second, data, source) == \
        "ftp://user:secret@ftp.example.com:2121/other/NOAA-20_202401020304.nc"
    assert compose_destination(local, local.dispatch_configs[0], data, source) == "/data/viirs/odd{name}.nc"
    assert first_match(target, "/level3", data) is None
    dataset = {"sensor": "avhrr", "dataset": [{"uri": "/a/1", "uid": "1"}, {"uri": "/a/2", "uid": "2", "x": 1}]}
    assert file_items("dataset", dataset) == [{"sensor": "avhrr", "uri": "/a/1", "uid": "1"},
                                              {"sensor": "avhrr", "uri": "/a/2", "uid": "2", "x": 1}]
    collection = {"sensor": "avhrr", "collection": [{"dataset": [{"uri": "/b/1", "uid": "1"}], "area": "e"},
                                                    {"uri": "/b/2", "uid": "2"}]}
    assert [f["uri"] for f in file_items("collection", collection)] == ["/b/1", "/b/2"]
    assert file_items("collection", collection)[0]["area"] == "e"
    assert file_items("file", {"no": "uri"}) == [] and file_items("dataset", {"dataset": "x"}) == []


def test_retry_backoff_and_give_up():
    settings = RetrySettings(initial_delay=5, max_delay=60, max_age=300)
    assert [retry_delay(n, settings) for n in (1, 2, 3, 4, 5, 50)] == [5, 10, 20, 40, 60, 60]
    assert next_due(1, first_at=1000.0, now=1000.0, settings=settings) == 1005.0
    assert next_due(9, first_at=1000.0, now=1290.0, settings=settings) == 1300.0, "the last try at max_age"
    assert next_due(9, first_at=1000.0, now=1300.0, settings=settings) is None


def test_retry_rows_survive_and_are_handed_out_once(tmp_path):
    store = StateStore(str(tmp_path / "state.sqlite"))
    handed = []
    queue = RetryQueue(store, RetrySettings(initial_delay=0, max_delay=0), lambda item: handed.append(item) or True)
    fresh = queue.journal("t", {"message": "m1"})
    assert queue.poll_once() == 0, "a job being tried is not handed out again"
    assert queue.stats("t") == (0, 0.0)
    assert queue.failed(fresh, "refused") is not None
    assert queue.poll_once() == 1 and handed[0]["payload"] == {"message": "m1"} and handed[0]["attempts"] == 2
    assert queue.poll_once() == 0
    store.close()
    reopened = StateStore(str(tmp_path / "state.sqlite"))
    again = RetryQueue(reopened, RetrySettings(initial_delay=0, max_delay=0), lambda item: handed.append(item) or True)
    assert again.poll_once() == 1, "a new process takes over the queued job"
    again.done(handed[-1])
    assert again.poll_once() == 0 and reopened.retry_stats("t") == (0, 0.0)
    reopened.close()


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------

def _four_targets_config(tmp_path, feed, ftp_server, sshd_server, s3_server, bucket):
    return load(write(tmp_path / "dispatch.yaml", subscriber_yaml(feed, f"""
        retry:
          initial_delay: 0.5
          max_delay: 1
          state_directory: {tmp_path}/state""") + f"""
        ftp-customer:
          host: ftp://{ftp_server.user}:{ftp_server.password}@127.0.0.1:{ftp_server.port}
          directory: /in/{{sensor}}
          filepattern: '{{platform_name}}_{{start_time:%Y%m%d%H%M}}.{{format}}'
          publish_topic: /dispatched/ftp/{{sensor}}
          dispatch_configs:
            - topics: [/level2/viirs]
              conditions:
                - product: [green_snow, true_color]
                  sensor: viirs
        sftp-customer:
          host: sftp://{sshd_server.user}@127.0.0.1:{sshd_server.port}
          directory: {sshd_server.root}/dispatch/{{platform_name}}
          connection_parameters:
            ssh_private_key_file: {sshd_server.client_key}
            known_hosts: {sshd_server.known_hosts}
          publish_topic: /dispatched/sftp
          dispatch_configs:
            - topics: [/level2/avhrr]
              conditions:
                - sensor: avhrr
                  except:
                    platform_name: NOAA-15
        s3-customer:
          host: s3://{bucket}
          directory: /products/{{sensor}}
          connection_parameters:
            key: {s3_server.key}
            secret: {s3_server.secret}
            client_kwargs:
              endpoint_url: {s3_server.endpoint_url}
              region_name: us-east-1
          publish_topic: /dispatched/s3
          dispatch_configs:
            - topics: [/level2]
              conditions:
                - sun_zenith_angle: '<90'
                  coverage: '>=50'
        local-archive:
          host: ""
          directory: {tmp_path}/archive/{{sensor}}
          filepattern: '{{prod}}_{{uid}}'
          aliases:
            product:
              - green_snow: gs
                overview: ovw
                _alias_name: prod
          publish_topic: /dispatched/local/{{sensor}}
          dispatch_configs:
            - topics: [/level2]
              conditions:
                - product: [green_snow, overview]
    """), "dispatcher")


def test_routing_to_ftp_sftp_s3_and_local(tmp_path, ftp_server, sshd_server, s3_server):
    import boto3

    bucket = "dispatch-products"
    s3 = boto3.client("s3", **s3_server.boto3_kwargs())
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "src"
    src.mkdir()
    start = dt.datetime(2024, 5, 6, 7, 8)
    files = {name: make_file(src, f"{name}.nc") for name in
             ("viirs_gs", "avhrr_19", "avhrr_15", "viirs_tc_night", "ds_1", "ds_2", "no_coverage")}
    messages = [
        ("/level2/viirs", "file", {"uri": files["viirs_gs"], "uid": "viirs_gs.nc", "sensor": "viirs",
                                   "product": "green_snow", "platform_name": "NOAA-20", "format": "nc",
                                   "start_time": start, "sun_zenith_angle": 45.0, "coverage": 80}),
        ("/level2/avhrr", "file", {"uri": f"file://{files['avhrr_19']}", "uid": "avhrr_19.nc", "sensor": "avhrr",
                                   "product": "overview", "platform_name": "NOAA-19", "sun_zenith_angle": 95,
                                   "coverage": 100}),
        ("/level2/avhrr", "file", {"uri": files["avhrr_15"], "uid": "avhrr_15.nc", "sensor": "avhrr",
                                   "product": "ch4", "platform_name": "NOAA-15"}),
        ("/level2/viirs", "file", {"uri": files["viirs_tc_night"], "uid": "viirs_tc_night.nc", "sensor": "viirs",
                                   "product": "true_color", "platform_name": "NOAA-21", "format": "nc",
                                   "start_time": start, "sun_zenith_angle": "120", "coverage": 90}),
        ("/level2/avhrr", "dataset", {"sensor": "avhrr", "product": "overview", "platform_name": "NOAA-18",
                                      "sun_zenith_angle": 10, "coverage": 50,
                                      "dataset": [{"uri": files["ds_1"], "uid": "ds_1.nc"},
                                                  {"uri": files["ds_2"], "uid": "ds_2.nc"}]}),
        ("/level2/avhrr", "file", {"uri": "ssh://elsewhere.invalid/data/x.nc", "uid": "x.nc", "sensor": "avhrr",
                                   "product": "overview", "platform_name": "NOAA-19"}),
        ("/level2/viirs", "file", {"uri": files["no_coverage"], "uid": "no_coverage.nc", "sensor": "viirs",
                                   "product": "fog", "platform_name": "NOAA-20", "sun_zenith_angle": 10}),
    ]
    with Feed() as feed:
        cfg = _four_targets_config(tmp_path, feed, ftp_server, sshd_server, s3_server, bucket)
        dispatcher = Dispatcher(cfg, DispatcherOptions(publish_port=0, publish_address="127.0.0.1",
                                                       publish_nameservers=False))
        with running(dispatcher):
            feed.wait_subscribed(dispatcher, "/level2/probe", "dispatcher")
            with Collector([f"tcp://127.0.0.1:{dispatcher.publisher.port}"], "/dispatched") as seen:
                feed.send_raw("pytroll://level2/viirs file broken")
                for subject, atype, data in messages:
                    feed.send(subject, atype, data)
                wait_for(lambda: len(seen.of_type("file")) >= 12, timeout=30, what="twelve result messages")
                time.sleep(0.5)
            assert dispatcher.health()["ok"]
    arrived = {
        "ftp": os.path.join(ftp_server.root, "in", "viirs", "NOAA-20_202405060708.nc"),
        "ftp night": os.path.join(ftp_server.root, "in", "viirs", "NOAA-21_202405060708.nc"),
        "sftp 19": os.path.join(sshd_server.root, "dispatch", "NOAA-19", "avhrr_19.nc"),
        "sftp ds1": os.path.join(sshd_server.root, "dispatch", "NOAA-18", "ds_1.nc"),
        "sftp ds2": os.path.join(sshd_server.root, "dispatch", "NOAA-18", "ds_2.nc"),
        "local gs": str(tmp_path / "archive" / "viirs" / "gs_viirs_gs.nc"),
        "local 19": str(tmp_path / "archive" / "avhrr" / "ovw_avhrr_19.nc"),
        "local ds1": str(tmp_path / "archive" / "avhrr" / "ovw_ds_1.nc"),
        "local ds2": str(tmp_path / "archive" / "avhrr" / "ovw_ds_2.nc"),
    }
    sources = {"ftp": "viirs_gs", "ftp night": "viirs_tc_night", "sftp 19": "avhrr_19", "sftp ds1": "ds_1", "sftp ds2": "ds_2",
               "local gs": "viirs_gs", "local 19": "avhrr_19", "local ds1": "ds_1", "local ds2": "ds_2"}
    for what, path in arrived.items():
        assert sha256(path) == sha256(files[sources[what]]), what
    assert not os.path.exists(os.path.join(sshd_server.root, "dispatch", "NOAA-15")), "except ignored"
    keys = sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert keys == ["products/avhrr/ds_1.nc", "products/avhrr/ds_2.nc", "products/viirs/viirs_gs.nc"]
    with open(files["viirs_gs"], "rb") as stream:
        assert s3.get_object(Bucket=bucket, Key="products/viirs/viirs_gs.nc")["Body"].read() == stream.read()
    results = {(m.subject, m.data["uri"]) for m in seen.of_type("file")}
    expected = {
        ("/dispatched/ftp/viirs", "/in/viirs/NOAA-20_202405060708.nc"),
        ("/dispatched/ftp/viirs", "/in/viirs/NOAA-21_202405060708.nc"),
        ("/dispatched/sftp", arrived["sftp 19"]), ("/dispatched/sftp", arrived["sftp ds1"]),
        ("/dispatched/sftp", arrived["sftp ds2"]),
        ("/dispatched/s3", "/products/viirs/viirs_gs.nc"), ("/dispatched/s3", "/products/avhrr/ds_1.nc"),
        ("/dispatched/s3", "/products/avhrr/ds_2.nc"),
        ("/dispatched/local/viirs", arrived["local gs"]), ("/dispatched/local/avhrr", arrived["local 19"]),
        ("/dispatched/local/avhrr", arrived["local ds1"]), ("/dispatched/local/avhrr", arrived["local ds2"]),
    }
    assert results == expected
    ftp_result = next(m.data for m in seen.of_type("file") if m.subject == "/dispatched/ftp/viirs"
                      and m.data["uid"] == "viirs_gs.nc")
    assert ftp_result["product"] == "green_snow" and ftp_result["start_time"] == start
    assert ftp_result["size"] == 2000 and ftp_result["checksum"]["method"] == "xxh3_128"
    assert ftp_server.password not in "".join(m.encode() for _, m in seen.messages)
    assert sample(dispatcher, "trollmoves_transfers_failed_total", chain="sftp-customer", scheme="file",
                  reason="refused") == 1, "the non-local uri is refused, not a crash"
    assert sample(dispatcher, "trollmoves_messages_malformed_total", chain="dispatcher") == 1
    assert sample(dispatcher, "trollmoves_transfers_succeeded_total", chain="local-archive", scheme="file") == 4


def _ftp_target_config(tmp_path, feed, port, user, password, connect_timeout=2):
    return load(write(tmp_path / "ftp-dispatch.yaml", subscriber_yaml(feed, """
        retry:
          initial_delay: 0.3
          max_delay: 1
          max_age: 120""") + f"""
        trollmoves:
          state_directory: {tmp_path}/state
        customer:
          host: ftp://{user}:{password}@127.0.0.1:{port}
          directory: /incoming
          publish_topic: /dispatched
          connection_parameters:
            retries: 0
            connect_timeout: {connect_timeout}
          dispatch_configs:
            - topics: [/product]
    """), "dispatcher")


def test_target_down_gets_its_files_when_back_also_after_a_restart(tmp_path):
    """FTP down during dispatch: queued on disk, delivered when it is back, even by a new dispatcher."""
    port, user, password = free_port(), "customer", "pw-down-test"
    ftp_root = tmp_path / "ftp"
    src = tmp_path / "src"
    src.mkdir()
    first = [make_file(src, f"first_{i}.dat") for i in range(2)]
    later = [make_file(src, f"later_{i}.dat") for i in range(2)]
    options = DispatcherOptions(publish_port=0, publish_address="127.0.0.1", publish_nameservers=False)
    ftp = None
    with Feed() as feed:
        cfg = _ftp_target_config(tmp_path, feed, port, user, password)
        dispatcher = Dispatcher(cfg, options)
        with running(dispatcher):
            feed.wait_subscribed(dispatcher, "/product/probe", "dispatcher")
            for path in first:
                feed.send("/product/x", "file", {"uri": path, "uid": os.path.basename(path)})
            wait_for(lambda: sample(dispatcher, "trollmoves_retries_total", chain="customer") >= 2,
                     what="two failed dispatches queued for a retry")
            assert sample(dispatcher, "trollmoves_retry_queue_length", chain="customer") == 2 or wait_for(
                lambda: sample(dispatcher, "trollmoves_retry_queue_length", chain="customer") == 2)
            assert dispatcher.health()["targets"]["customer"]["retry_queue"] == 2
            with Collector([f"tcp://127.0.0.1:{dispatcher.publisher.port}"], "/dispatched") as seen:
                ftp = start_ftp_on(port, ftp_root, user, password)
                wait_for(lambda: len(seen.of_type("file")) == 2, timeout=20, what="results after the FTP came back")
            for path in first:
                assert sha256(str(ftp_root / "incoming" / os.path.basename(path))) == sha256(path)
            wait_for(lambda: sample(dispatcher, "trollmoves_retry_queue_length", chain="customer") == 0,
                     what="an empty retry queue")
            # the target goes down again; the dispatcher is stopped while files wait for it
            stop_process(ftp)
            failures_before = sample(dispatcher, "trollmoves_transfers_failed_total", chain="customer",
                                     scheme="ftp", reason="transient")
            for path in later:
                feed.send("/product/x", "file", {"uri": path, "uid": os.path.basename(path)})
            wait_for(lambda: sample(dispatcher, "trollmoves_messages_received_total", chain="dispatcher",
                                    type="file") == 4, what="the later messages received")
            wait_for(lambda: sample(dispatcher, "trollmoves_transfers_failed_total", chain="customer", scheme="ftp",
                                    reason="transient") >= 2 + failures_before, what="the later files failing")
        restarted = Dispatcher(cfg, options)
        try:
            with running(restarted):
                assert restarted.health()["targets"]["customer"]["retry_queue"] == 2
                with Collector([f"tcp://127.0.0.1:{restarted.publisher.port}"], "/dispatched") as seen:
                    ftp = start_ftp_on(port, ftp_root, user, password)
                    wait_for(lambda: len(seen.of_type("file")) == 2, timeout=20,
                             what="the queued files delivered by the new dispatcher")
                    time.sleep(0.5)
                assert sorted(m.data["uri"] for m in seen.of_type("file")) == \
                    [f"/incoming/{os.path.basename(p)}" for p in later]
                assert sample(restarted, "trollmoves_transfers_succeeded_total", chain="customer",
                              scheme="ftp") == 2
        finally:
            stop_process(ftp)
    for path in first + later:
        assert sha256(str(ftp_root / "incoming" / os.path.basename(path))) == sha256(path)
    assert sorted(os.listdir(ftp_root / "incoming")) == sorted(os.path.basename(p) for p in first + later)


def test_permanent_error_is_reported_once_and_not_retried(tmp_path, ftp_server, caplog):
    src = tmp_path / "src"
    src.mkdir()
    path = make_file(src, "refused.dat")
    with Feed() as feed:
        # pyftpdlib answers a bad login after 3 s: a shorter timeout would make it a (transient) time-out
        cfg = _ftp_target_config(tmp_path, feed, ftp_server.port, ftp_server.user, "not-the-password", 10)
        dispatcher = Dispatcher(cfg, DispatcherOptions())
        with running(dispatcher):
            feed.wait_subscribed(dispatcher, "/product/probe", "dispatcher")
            feed.send("/product/x", "file", {"uri": path, "uid": "refused.dat"})
            wait_for(lambda: sample(dispatcher, "trollmoves_transfers_failed_total", chain="customer",
                                    scheme="ftp", reason="permanent") == 1, timeout=20, what="a permanent failure")
            time.sleep(1.5)  # three retry periods: nothing may be tried again
            assert sample(dispatcher, "trollmoves_transfers_started_total", chain="customer", scheme="ftp") == 1
            assert sample(dispatcher, "trollmoves_retry_queue_length", chain="customer") == 0
            assert dispatcher.state.retry_stats("customer")[0] == 0
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "refused.dat" in r.getMessage()]
    assert len(errors) == 1 and "not retried" in errors[0].getMessage()
    assert "not-the-password" not in caplog.text


def test_subscription_through_the_nameserver(tmp_path, nameserver):
    src = tmp_path / "src"
    src.mkdir()
    path = make_file(src, "found.dat")
    cfg = load(write(tmp_path / "ns.yaml", f"""
        posttroll_subscriber:
          nameserver: localhost
          subscribe_services: [l2producer]
        local:
          directory: {tmp_path}/out
          dispatch_configs:
            - topics: [/product]
    """), "dispatcher")
    with Feed("l2producer", nameservers=["localhost"]) as feed:
        dispatcher = Dispatcher(cfg, DispatcherOptions(lookup_interval=0.5, lookup_timeout=2))
        with running(dispatcher):
            feed.wait_subscribed(dispatcher, "/product/probe", "dispatcher", timeout=30)
            assert feed.address in dispatcher.health()["subscribed"]
            feed.send("/product/x", "file", {"uri": path, "uid": "found.dat"})
            wait_for(lambda: os.path.exists(tmp_path / "out" / "found.dat"), what="the file via the nameserver")
    assert sha256(str(tmp_path / "out" / "found.dat")) == sha256(path)


def test_console_script_survives_bad_messages_and_validates(tmp_path):
    publish_port = free_port()
    src = tmp_path / "src"
    src.mkdir()
    with Feed() as feed:
        cfg = write(tmp_path / "dispatch.yaml", f"""
            posttroll_subscriber:
              subscribe_addresses: [{feed.address}]
              nameserver: false
            trollmoves:
              state_directory: {tmp_path}/state
            archive:
              directory: {tmp_path}/out/{{sensor}}
              filepattern: '{{platform_name}}-{{uid}}'
              publish_topic: /archived/{{sensor}}
              dispatch_configs:
                - topics: [/product]
        """)
        checked = subprocess.run([console_script("trollmoves"), "check-config", cfg],
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("OK ") and "dispatcher config" in checked.stdout
        assert "(archive)" in checked.stdout
        helped = subprocess.run([console_script("dispatcher.py"), "--help"],
                                capture_output=True, text=True, check=False)
        assert helped.returncode == 0 and "--publish-port" in helped.stdout
        proc = DaemonProcess(["dispatcher.py", "-p", str(publish_port), "-n", "-v", cfg],
                             tmp_path / "dispatcher.log").start()
        try:
            proc.wait_log("dispatcher subscribed to /product")
            with Collector([f"tcp://127.0.0.1:{publish_port}"], "/archived") as seen:
                probe = make_file(src, "probe.dat")
                wait_for(lambda: (feed.send("/product/p", "file", {"uri": probe, "uid": "probe.dat", "sensor": "x",
                                                                   "platform_name": "p"})
                                  or os.path.exists(tmp_path / "out" / "x" / "p-probe.dat")),
                         timeout=20, interval=0.2, what="the probe file dispatched")
                bad = make_file(src, "bad.dat")
                feed.send("/product/p", "file", {"uri": bad, "uid": "bad.dat"})  # no sensor: compose error
                feed.send("/product/p", "dataset", {"dataset": "not a list"})
                feed.send_raw("pytroll://product/p file garbage")
                good = make_file(src, "good.dat")
                feed.send("/product/p", "file", {"uri": good, "uid": "good.dat", "sensor": "avhrr",
                                                 "platform_name": "NOAA-19"})
                wait_for(lambda: any(m.data["uid"] == "good.dat" for m in seen.of_type("file")), timeout=20,
                         what="the good file's result message")
            result = next(m for m in seen.of_type("file") if m.data["uid"] == "good.dat")
            assert result.subject == "/archived/avhrr"
            assert result.data["uri"] == str(tmp_path / "out" / "avhrr" / "NOAA-19-good.dat")
            assert sha256(result.data["uri"]) == sha256(good)
            assert "cannot compose the destination" in proc.log()
        finally:
            proc.proc.send_signal(signal.SIGTERM)
            assert proc.stop() == 0, proc.log()[-3000:]
    assert "Traceback" not in proc.log()


def test_reload_changes_targets_and_subscription(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with Feed() as feed:
        def config(topic, target):
            return load(write(tmp_path / "reload.yaml", f"""
                posttroll_subscriber:
                  subscribe_addresses: [{feed.address}]
                  nameserver: false
                {target}:
                  directory: {tmp_path}/{target}
                  dispatch_configs:
                    - topics: [{topic}]
            """), "dispatcher")
        dispatcher = Dispatcher(config("/old", "first"), DispatcherOptions())
        with running(dispatcher):
            feed.wait_subscribed(dispatcher, "/old/probe", "dispatcher")
            dispatcher.reload(config("/new", "second"))
            feed.wait_subscribed(dispatcher, "/new/probe", "dispatcher")
            path = make_file(src, "reloaded.dat")
            feed.send("/old/x", "file", {"uri": path, "uid": "reloaded.dat"})
            feed.send("/new/x", "file", {"uri": path, "uid": "reloaded.dat"})
            wait_for(lambda: os.path.exists(tmp_path / "second" / "reloaded.dat"), what="the new target's file")
            time.sleep(0.3)
    assert not os.path.exists(tmp_path / "first"), "the removed target got a file"


def test_kill_9_loses_no_queued_dispatch(tmp_path):
    """A dispatcher killed with SIGKILL while its target is down: the next one delivers everything."""
    port, user, password = free_port(), "customer", "pw-kill-test"
    src = tmp_path / "src"
    src.mkdir()
    files = [make_file(src, f"killed_{i}.dat") for i in range(3)]
    probe = make_file(src, "probe.dat", 10)
    with Feed() as feed:
        cfg = _ftp_target_config(tmp_path, feed, port, user, password).path
        first = DaemonProcess(["dispatcher.py", "-v", cfg], tmp_path / "first.log").start()
        ftp = None
        try:
            first.wait_log("dispatcher subscribed to /product")
            wait_for(lambda: feed.send("/product/p", "file", {"uri": probe, "uid": "probe.dat"})
                     or "Could not dispatch " + probe in first.log(), timeout=20, interval=0.3,
                     what="the dispatcher receiving")
            for path in files:
                feed.send("/product/x", "file", {"uri": path, "uid": os.path.basename(path)})
            for path in files:
                first.wait_log(f"Could not dispatch {path}")
            first.kill(signal.SIGKILL)
            ftp = start_ftp_on(port, tmp_path / "ftp", user, password)
            second = DaemonProcess(["dispatcher.py", "-v", cfg], tmp_path / "second.log").start()
            try:
                wait_for(lambda: all((tmp_path / "ftp" / "incoming" / os.path.basename(p)).exists() for p in files),
                         timeout=30, what="every queued file delivered after the SIGKILL")
            finally:
                second.proc.send_signal(signal.SIGTERM)
                assert second.stop() == 0, second.log()[-3000:]
        finally:
            first.stop()
            if ftp is not None:
                stop_process(ftp)
    for path in files:
        assert sha256(str(tmp_path / "ftp" / "incoming" / os.path.basename(path))) == sha256(path)
