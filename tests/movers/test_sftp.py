"""The conformance suite for ``sftp://`` against the session's real OpenSSH sshd."""

import pytest
from tests.movers.conformance import MoverConformance, unique_prefix
from tests.movers.targets import SshTarget


class TestSftpMover(MoverConformance):
    @pytest.fixture
    def target(self, sshd_server):
        return SshTarget(unique_prefix(), sshd_server, "sftp")


@pytest.mark.parametrize("scheme", ["sftp", "scp"])
def test_openssh_accelerator_delivers_atomically_with_checksum(sshd_server, tmp_path, scheme, caplog):
    import hashlib
    import logging

    from trollmoves.movers import TransferService

    target = SshTarget(unique_prefix(), sshd_server, scheme)
    data = b"x" * 3_000_000
    (tmp_path / "big file.bin").write_bytes(data)
    caplog.set_level(logging.DEBUG, logger="trollmoves.movers.openssh")
    attrs = {**target.attrs(), "openssh_threshold": "1M", "checksum": "sha256"}
    with TransferService() as service:
        result = service.transfer(tmp_path / "big file.bin", target.url("acc/"), attrs)
    assert target.read("acc/big file.bin") == data and target.names("acc") == ["big file.bin"]
    assert result.checksum.value == hashlib.sha256(data).hexdigest()
    assert "Handing" in caplog.text


def test_unknown_host_key_is_rejected(sshd_server, tmp_path):
    from trollmoves.errors import PermanentTransferError
    from trollmoves.movers import TransferService

    target = SshTarget(unique_prefix(), sshd_server, "sftp")
    (tmp_path / "empty_known_hosts").write_text("")
    (tmp_path / "f").write_bytes(b"x")
    with TransferService() as service, pytest.raises(PermanentTransferError, match="known_hosts"):
        service.transfer(tmp_path / "f", target.url("hk/"),
                         {**target.attrs(), "known_hosts": str(tmp_path / "empty_known_hosts")})
    assert target.read("hk/f") is None
