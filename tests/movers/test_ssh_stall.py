"""A frozen SSH server: transfers fail within the stall timeout, and closing the service ends them.

The server is frozen for real: the per-connection processes of a dedicated OpenSSH sshd
(children of its listener: the privilege-separation monitor, the session process and, for
SCP, ``scp -t``) are SIGSTOPped mid-transfer, which is what a hung server host or a network
silently dropping packets looks like from the client: TCP stays open, nothing is answered.
The listener itself keeps running, so new sessions still work. Everything is SIGCONTed
afterwards (the processes then see their client gone and exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
from tests import servers

from trollmoves.errors import TransientTransferError
from trollmoves.movers import TransferService
from trollmoves.movers.base import DriverCache
from trollmoves.movers.destination import parse_destination
from trollmoves.movers.options import TransferOptions
from trollmoves.movers.source import Source
from trollmoves.movers.ssh import STALL_MARGIN

STALL_TIMEOUT = 2.0
MARGIN = 1.5
"""What "within the timeout" allows on a loaded 2-core CI runner."""
BIG = 512 << 20
"""Sparse, so it costs no disk; far more than is sent before the freeze."""


@pytest.fixture(scope="module")
def own_sshd(tmp_path_factory):
    """An sshd of our own: freezing its connections cannot disturb another test's session."""
    try:
        server = servers.start_sshd(tmp_path_factory.mktemp("stall-sshd"))
    except servers.ServerUnavailable as err:
        servers.require_or_skip(str(err))
    yield server
    server.stop()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


@contextlib.contextmanager
def frozen(server: servers.SshdServer):
    """SIGSTOP every per-connection process of ``server`` (not the listener); SIGCONT on exit."""
    pids = _descendants(server.pid)
    assert pids, "no sshd connection process to freeze"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _attrs(server: servers.SshdServer, **extra) -> dict:
    return {"ssh_key_filename": str(server.client_key), "known_hosts": str(server.known_hosts),
            "ssh_allow_agent": "false", "timeout": STALL_TIMEOUT, "connect_timeout": STALL_TIMEOUT,
            "retries": 0, **extra}


def _url(server: servers.SshdServer, scheme: str, rel: str) -> str:
    return f"{scheme}://{server.user}@{server.host}:{server.port}{server.root}/{rel}"


def _big_file(tmp_path) -> str:
    path = tmp_path / "frozen.bin"
    with open(path, "wb") as stream:
        stream.truncate(BIG)
    return str(path)


class Transfer(threading.Thread):
    """One ``service.transfer`` in a thread; ``sent`` counts bytes read from the source."""

    def __init__(self, service: TransferService, *args, **kwargs):
        super().__init__(daemon=True)
        self.service, self.args, self.kwargs = service, args, kwargs
        self.sent = 0
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def _progress(self, count: int) -> None:
        self.sent += count

    def run(self) -> None:
        try:
            self.service.transfer(*self.args, progress=self._progress, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - examined by the test
            self.error = exc
        self.ended_at = time.monotonic()

    def wait_for_bytes(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < count and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.sent >= count and self.is_alive(), f"transfer not in progress: {self.sent} B, {self.error!r}"


@pytest.mark.parametrize("scheme", ["sftp", "scp"])
def test_upload_to_a_frozen_server_fails_within_the_timeout(own_sshd, tmp_path, scheme):
    service = TransferService()
    transfer = Transfer(service, _big_file(tmp_path), _url(own_sshd, scheme, "stall/"), _attrs(own_sshd))
    try:
        transfer.start()
        transfer.wait_for_bytes(4 << 20)
        with frozen(own_sshd):
            frozen_at = time.monotonic()
            transfer.join(STALL_TIMEOUT + STALL_MARGIN + 10)
            assert not transfer.is_alive(), "the upload is still blocked on the frozen server"
        elapsed = transfer.ended_at - frozen_at
        assert elapsed < STALL_TIMEOUT + MARGIN, f"took {elapsed:.2f} s for a {STALL_TIMEOUT} s timeout"
        error = transfer.error
        assert isinstance(error, TransientTransferError), repr(error)
        text = str(error)
        assert "stopped responding" in text and f"no progress for {STALL_TIMEOUT:g} s" in text
        assert f"{scheme}://{own_sshd.user}@{own_sshd.host}:{own_sshd.port}/" in text and "frozen.bin" in text
        stats = service.stats()
        assert stats.idle == 0 and stats.leased == 0 and stats.closed == stats.opened == 1  # discarded
    finally:
        service.close()
        transfer.join(10)


@pytest.mark.parametrize("scheme", ["sftp", "scp"])
def test_a_pooled_session_frozen_between_files_costs_one_timeout(own_sshd, tmp_path, scheme):
    """The stale session is dropped after one timeout (not one per clean-up step); a new one delivers."""
    (tmp_path / "a.txt").write_bytes(b"a" * 1000)
    (tmp_path / "b.txt").write_bytes(b"b" * 1000)
    url = _url(own_sshd, scheme, "between/")
    with TransferService() as service:
        service.transfer(tmp_path / "a.txt", url, _attrs(own_sshd))
        with frozen(own_sshd):
            started = time.monotonic()
            result = service.transfer(tmp_path / "b.txt", url, _attrs(own_sshd))
            elapsed = time.monotonic() - started
        stats = service.stats()
    assert (own_sshd.root / "between" / "b.txt").read_bytes() == b"b" * 1000
    assert result.attempts == 1 and stats.opened == 2 and stats.reused == 1
    assert elapsed < STALL_TIMEOUT + MARGIN, f"took {elapsed:.2f} s for a {STALL_TIMEOUT} s timeout"


@pytest.mark.parametrize("scheme", ["sftp", "scp"])
def test_closing_the_service_ends_a_transfer_blocked_on_a_frozen_server(own_sshd, tmp_path, scheme):
    service = TransferService()
    attrs = _attrs(own_sshd, timeout=60, retries=3, retry_delay=5)
    transfer = Transfer(service, _big_file(tmp_path), _url(own_sshd, scheme, "close/"), attrs)
    try:
        transfer.start()
        transfer.wait_for_bytes(4 << 20)
        with frozen(own_sshd):
            time.sleep(0.3)  # let the upload block on the frozen server
            closing = time.monotonic()
            service.close()
            close_took = time.monotonic() - closing
            transfer.join(10)
            assert not transfer.is_alive(), "close() did not interrupt the transfer"
        assert close_took < 1.0 and transfer.ended_at - closing < 1.0
        assert isinstance(transfer.error, TransientTransferError), repr(transfer.error)
        assert "closing" in str(transfer.error) or "closed" in str(transfer.error)
        assert service.stats().leased == 0 and service.stats().idle == 0
    finally:
        service.close()
        transfer.join(10)


def test_watchdog_ends_a_wait_paramiko_does_not_time_out(own_sshd, tmp_path):
    """paramiko has no timeout on some waits (full TCP buffer, exec/subsystem replies): the watchdog closes them.

    Stands in for them by taking the channel timeout off the SFTP channel before freezing.
    """
    from trollmoves.movers.sftp import SftpMover

    endpoint = parse_destination(_url(own_sshd, "sftp", "watchdog/"))
    options = TransferOptions.from_attrs(_attrs(own_sshd))
    cache = DriverCache()
    connection = SftpMover.connect(endpoint, options, cache)
    outcome: dict = {}
    path = _big_file(tmp_path)

    def upload():
        with Source(path, None, options.buffer_size) as source:
            try:
                connection.upload(source, f"{own_sshd.root}/wd.bin")
            except BaseException as exc:  # noqa: BLE001 - examined below
                outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    try:
        connection.makedirs(f"{own_sshd.root}/watchdog")
        connection.sftp.get_channel().settimeout(None)
        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while connection.sftp.get_channel().out_window_size > 0 and time.monotonic() < deadline:
            time.sleep(0.001)  # the window is used up within the first megabytes
        with frozen(own_sshd):
            frozen_at = time.monotonic()
            thread.join(STALL_TIMEOUT + STALL_MARGIN + 10)
            assert not thread.is_alive(), "the upload is still blocked without the watchdog"
        elapsed = outcome["ended"] - frozen_at
        assert elapsed < STALL_TIMEOUT + STALL_MARGIN + MARGIN, f"took {elapsed:.2f} s"
        assert isinstance(outcome.get("error"), TransientTransferError), repr(outcome.get("error"))
        assert "stopped responding" in str(outcome["error"]) and not connection.alive()
    finally:
        connection.close()
        cache.close()
