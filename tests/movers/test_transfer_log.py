"""The "Transfer of X to Y failed" line names the whole destination file, never a password."""

import logging

import pytest
from tests import servers
from tests.movers.conformance import PLANTED

from trollmoves.errors import TransferError
from trollmoves.movers import TransferService


def _failure_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "trollmoves.movers.transfer" and r.getMessage().startswith("Transfer of")]


def test_failed_local_transfer_names_the_destination_file(tmp_path, caplog):
    source = tmp_path / "granule.nc"
    source.write_bytes(b"x")
    (tmp_path / "blocker").write_bytes(b"a file where a directory is needed")
    caplog.set_level(logging.WARNING, logger="trollmoves")
    with TransferService() as service, pytest.raises(TransferError):
        service.transfer(source, f"file://{tmp_path}/blocker/sub/", {"retries": 0})
    lines = _failure_lines(caplog)
    assert len(lines) == 1
    assert f"to file://{tmp_path}/blocker/sub/granule.nc failed" in lines[0]


def test_failed_remote_transfer_names_host_and_file_without_password(tmp_path, caplog):
    source = tmp_path / "granule.nc"
    source.write_bytes(b"x")
    port = servers.free_port()
    caplog.set_level(logging.WARNING, logger="trollmoves")
    with TransferService() as service, pytest.raises(TransferError):
        service.transfer(source, f"ftp://user:{PLANTED}@127.0.0.1:{port}/in/", {"retries": 0, "connect_timeout": 2})
    lines = _failure_lines(caplog)
    assert len(lines) == 1
    assert f"to ftp://user@127.0.0.1:{port}/in/granule.nc failed" in lines[0]
    assert PLANTED not in caplog.text
