"""One conformance suite that every mover runs against its real server.

A protocol's test module subclasses ``MoverConformance`` and provides a
``target`` fixture returning a ``Target``: how to build a destination URL on
the real server, how to read back what arrived, and how to make a bad login,
a server that is down, and a backup target. Every test asserts what a user
sees: the bytes at the destination, the error type and text, the pool's
counters. Nothing here is mocked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import xxhash

from trollmoves.errors import PermanentTransferError, TransientTransferError
from trollmoves.movers import TransferService, move_it

FAST_RETRIES = {"retries": 2, "retry_delay": 0.05, "retry_backoff": 2, "connect_timeout": 5, "timeout": 15}
PLANTED = "Pl4nted-Secret-7c1e9"
MULTI_CHUNK = 9 * (1 << 20) + 12345
"""Several 1 MiB buffers, and not a multiple of any buffer or request size."""

HASHERS = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "md5": hashlib.md5,
    "xxh3_64": xxhash.xxh3_64,
    "xxh3_128": xxhash.xxh3_128,
}


class Target:
    """How one protocol's server is reached and inspected. Subclassed per protocol."""

    scheme = ""
    has_hosts = True
    """False for the local file system: no login, no server to be down, no backup hosts."""

    def __init__(self, prefix: str):
        self.prefix = prefix  # unique per test, so tests never see each other's files

    def url(self, rel: str, password: str | None = None) -> str:
        raise NotImplementedError

    def attrs(self) -> dict:
        return dict(FAST_RETRIES)

    def read(self, rel: str) -> bytes | None:
        """The bytes stored at ``rel``, or None when nothing is there."""
        raise NotImplementedError

    def names(self, rel_dir: str) -> list[str]:
        """Entry names in directory (or key prefix) ``rel_dir``."""
        raise NotImplementedError

    def bad_login(self, rel: str) -> tuple[str, dict]:
        raise NotImplementedError

    def down(self, rel: str, port: int | None = None) -> tuple[str, dict]:
        """A URL to ``port`` (default: a port where nothing listens)."""
        raise NotImplementedError

    def backup(self, rel: str) -> tuple[str, dict, list[str], str]:
        """(primary URL that fails, attrs, backup_targets, text expected in the destination used)."""
        raise NotImplementedError

    def planted(self, rel: str, works: bool) -> tuple[str, dict]:
        """URL and attrs carrying ``PLANTED`` as a password or secret; they fail unless ``works``."""
        raise NotImplementedError


def make_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


class MoverConformance:
    """The behaviour every mover must show. Subclasses provide the ``target`` fixture."""

    @pytest.fixture
    def silent_port(self):
        """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            yield listener.getsockname()[1]

    @pytest.fixture
    def service(self):
        with TransferService() as service:
            yield service

    # -- bytes arrive whole ------------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1000, MULTI_CHUNK], ids=["empty", "small", "multi-chunk"])
    def test_file_arrives_whole_with_checksum(self, target, service, tmp_path, size):
        data = make_file(tmp_path / "data.bin", size)
        result = service.transfer(tmp_path / "data.bin", target.url("in/"), target.attrs())
        assert target.read("in/data.bin") == data
        assert result.size == size
        assert result.checksum.method == "xxh3_128"
        assert result.checksum.value == xxhash.xxh3_128(data).hexdigest()
        assert result.destination.endswith("in/data.bin")

    @pytest.mark.parametrize("method", sorted(HASHERS))
    def test_checksum_methods(self, target, service, tmp_path, method):
        data = make_file(tmp_path / "c.bin", 300_000)
        attrs = {**target.attrs(), "checksum": method, "verify": "true"}
        result = service.transfer(tmp_path / "c.bin", target.url("sum/"), attrs)
        assert result.checksum.as_dict() == {"method": method, "value": HASHERS[method](data).hexdigest()}
        assert target.read("sum/c.bin") == data

    @pytest.mark.parametrize("name", ["with space.txt", "ünïcødé ✓ – data.dat", "semi;colon's $x.txt"])
    def test_odd_names(self, target, service, tmp_path, name):
        data = make_file(tmp_path / name, 4321)
        service.transfer(tmp_path / name, target.url("odd dir/"), target.attrs())
        assert target.read(f"odd dir/{name}") == data

    def test_missing_directories_are_created(self, target, service, tmp_path):
        data = make_file(tmp_path / "deep.bin", 10)
        service.transfer(tmp_path / "deep.bin", target.url("a/b/c/"), target.attrs())
        assert target.read("a/b/c/deep.bin") == data

    def test_destination_without_slash_names_the_file(self, target, service, tmp_path):
        data = make_file(tmp_path / "orig.bin", 10)
        result = service.transfer(tmp_path / "orig.bin", target.url("named/renamed.bin"), target.attrs())
        assert target.read("named/renamed.bin") == data
        assert result.destination.endswith("named/renamed.bin")

    def test_overwrite_leaves_only_the_new_file(self, target, service, tmp_path):
        make_file(tmp_path / "o.bin", 5000)
        service.transfer(tmp_path / "o.bin", target.url("ow/"), target.attrs())
        new = make_file(tmp_path / "o.bin", 700)
        service.transfer(tmp_path / "o.bin", target.url("ow/"), target.attrs())
        assert target.read("ow/o.bin") == new
        assert target.names("ow") == ["o.bin"]

    def test_verify_off_and_tmp_off_still_deliver(self, target, service, tmp_path):
        data = make_file(tmp_path / "plain.bin", 2000)
        attrs = {**target.attrs(), "verify": "False", "use_tmp_on_transfer": "false", "checksum": "none"}
        result = service.transfer(tmp_path / "plain.bin", target.url("plain/"), attrs)
        assert target.read("plain/plain.bin") == data
        assert result.checksum is None

    def test_custom_tmp_prefix_and_suffix_leave_nothing_behind(self, target, service, tmp_path):
        data = make_file(tmp_path / "t.bin", 2000)
        attrs = {**target.attrs(), "tmp_prefix": "tmp-", "tmp_suffix": ".part"}
        service.transfer(tmp_path / "t.bin", target.url("tmp/"), attrs)
        assert target.read("tmp/t.bin") == data
        assert target.names("tmp") == ["t.bin"]

    def test_move_it_returns_the_destination_used(self, target, tmp_path):
        make_file(tmp_path / "m.bin", 10)
        calls = []
        used = move_it(str(tmp_path / "m.bin"), target.url("mv/"), target.attrs(), hook=lambda *a: calls.append(a),
                       rel_path="sub/")
        assert used.path.endswith("mv/sub/m.bin")
        assert used.password is None
        assert calls == [(str(tmp_path / "m.bin"), used)]
        assert target.read("mv/sub/m.bin") is not None

    def test_missing_source_is_permanent(self, target, service, tmp_path):
        with pytest.raises(PermanentTransferError, match="does not exist"):
            service.transfer(tmp_path / "nothere.bin", target.url("x/"), target.attrs())

    # -- a reader never sees a partial file ------------------------------------------------------

    def test_killed_transfer_leaves_no_file_at_the_final_name(self, target, tmp_path):
        make_file(tmp_path / "big.bin", MULTI_CHUNK)
        attrs = {**target.attrs(), "hardlink": False, "s3_multipart_threshold": "5M",
                 "s3_multipart_chunksize": "5M"}
        attrs = {k: v for k, v in attrs.items() if target.scheme == "s3" or not k.startswith("s3_")}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "big.bin"), target.url("kill/"),
                                  json.dumps(attrs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            started = child.stdout.readline()
            assert started == b"started\n", child.stderr.read().decode()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.communicate()
        assert target.read("kill/big.bin") is None

    def test_cancelled_transfer_leaves_no_file(self, target, tmp_path):
        make_file(tmp_path / "big.bin", MULTI_CHUNK)
        cancel = threading.Event()
        attrs = {**target.attrs(), "hardlink": False}
        with TransferService(cancel=cancel) as service, pytest.raises(TransientTransferError, match="cancelled"):
            service.transfer(tmp_path / "big.bin", target.url("cancel/"), attrs, progress=lambda done: cancel.set())
        assert target.read("cancel/big.bin") is None
        assert target.names("cancel") == []

    # -- failures ----------------------------------------------------------------------------------

    def test_bad_login_is_permanent(self, target, service, tmp_path, caplog):
        if not target.has_hosts:
            pytest.skip("no login on the local file system")
        make_file(tmp_path / "f.bin", 10)
        url, attrs = target.bad_login("denied/")
        with pytest.raises(PermanentTransferError) as err:
            service.transfer(tmp_path / "f.bin", url, attrs)
        assert "Retrying" not in caplog.text
        assert err.value.destination.startswith(f"{target.scheme}://")

    def test_server_down_is_transient_after_bounded_retries(self, target, service, tmp_path, caplog):
        if not target.has_hosts:
            pytest.skip("no server on the local file system")
        make_file(tmp_path / "f.bin", 10)
        url, attrs = target.down("down/")
        caplog.set_level(logging.WARNING, logger="trollmoves")
        with pytest.raises(TransientTransferError):
            service.transfer(tmp_path / "f.bin", url, attrs)
        retries = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
        assert len(retries) == FAST_RETRIES["retries"]

    def test_silent_server_times_out_as_transient(self, target, tmp_path, silent_port):
        if not target.has_hosts:
            pytest.skip("no server on the local file system")
        make_file(tmp_path / "f.bin", 10)
        url, attrs = target.down("silent/", port=silent_port)
        retried = []
        attrs = {**attrs, "connect_timeout": 1, "timeout": 1, "retries": 1}
        with TransferService(on_retry=lambda scheme, err: retried.append(scheme)) as service, \
                pytest.raises(TransientTransferError):
            service.transfer(tmp_path / "f.bin", url, attrs)
        assert retried == [target.scheme]

    def test_concurrent_transfers_share_the_pool(self, target, service, tmp_path):
        sources = [tmp_path / f"c{index}.bin" for index in range(12)]
        data = {path.name: make_file(path, 5000 + index) for index, path in enumerate(sources)}
        errors = []

        def worker(paths):
            try:
                for path in paths:
                    service.transfer(path, target.url("conc/"), target.attrs())
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=worker, args=(sources[i::3],)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {name: target.read(f"conc/{name}") for name in data} == data
        assert service.stats().opened <= 3

    def test_backup_target_is_used_when_primary_fails(self, target, service, tmp_path):
        if not target.has_hosts:
            pytest.skip("no hosts on the local file system")
        data = make_file(tmp_path / "b.bin", 1234)
        url, attrs, backups, expected = target.backup("bk/")
        result = service.transfer(tmp_path / "b.bin", url, attrs, backup_targets=backups)
        assert result.backup_used
        assert expected in result.destination
        assert target.read("bk/b.bin") == data

    # -- connections are pooled --------------------------------------------------------------------

    def test_connections_are_reused(self, target, service, tmp_path):
        for index in range(5):
            make_file(tmp_path / f"r{index}.bin", 100 + index)
            service.transfer(tmp_path / f"r{index}.bin", target.url("reuse/"), target.attrs())
        stats = service.stats()
        assert (stats.opened, stats.reused) == (1, 4)
        assert sorted(target.names("reuse")) == [f"r{index}.bin" for index in range(5)]

    def test_two_services_share_nothing(self, target, tmp_path):
        make_file(tmp_path / "s.bin", 10)
        with TransferService() as first, TransferService() as second:
            first.transfer(tmp_path / "s.bin", target.url("two/"), target.attrs())
            second.transfer(tmp_path / "s.bin", target.url("two/"), target.attrs())
            assert first.stats().opened == second.stats().opened == 1

    # -- secrets -------------------------------------------------------------------------------------

    def test_secrets_never_leak(self, target, service, tmp_path, caplog):
        if not target.has_hosts:
            pytest.skip("no credentials on the local file system")
        caplog.set_level(logging.DEBUG)
        make_file(tmp_path / "s.bin", 10)
        url, attrs = target.planted("sec/", works=True)
        result = service.transfer(tmp_path / "s.bin", url, attrs)
        texts = [str(result), repr(result), result.destination]
        url, attrs = target.planted("sec/", works=False)
        with pytest.raises(PermanentTransferError) as err:
            service.transfer(tmp_path / "s.bin", url, attrs)
        texts += [str(err.value), repr(err.value), str(err.value.destination), str(err.value.cause)]
        with pytest.raises(PermanentTransferError) as err2:
            move_it(str(tmp_path / "s.bin"), url, attrs)
        texts += [str(err2.value), repr(err2.value)]
        for text in texts + [caplog.text]:
            assert PLANTED not in text


_CHILD = r"""
import json, sys, time
from trollmoves.movers import TransferService

def progress(done, _seen=[]):
    if not _seen:
        _seen.append(done)
        print("started", flush=True)
        time.sleep(120)

source, url, attrs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with TransferService() as service:
    service.transfer(source, url, attrs, progress=progress)
print("finished", flush=True)
"""


def unique_prefix() -> str:
    return uuid.uuid4().hex[:12]
