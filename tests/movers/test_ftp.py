"""The conformance suite for ``ftp://`` against the session's real pyftpdlib server."""

import pytest
from tests.movers.conformance import MoverConformance, unique_prefix
from tests.movers.targets import FtpTarget


class TestFtpMover(MoverConformance):
    @pytest.fixture
    def target(self, ftp_server):
        return FtpTarget(unique_prefix(), ftp_server)


def test_credentials_from_netrc(ftp_server, tmp_path):
    from trollmoves.movers import TransferService

    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {ftp_server.host} login {ftp_server.user} password {ftp_server.password}\n")
    netrc.chmod(0o600)
    (tmp_path / "n.dat").write_bytes(b"netrc")
    prefix = unique_prefix()
    with TransferService() as service:
        service.transfer(tmp_path / "n.dat", f"ftp://{ftp_server.host}:{ftp_server.port}/{prefix}/",
                         {"netrc_file": str(netrc)})
    assert (ftp_server.root / prefix / "n.dat").read_bytes() == b"netrc"
