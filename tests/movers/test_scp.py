"""The conformance suite for ``scp://`` against the session's real OpenSSH sshd."""

import pytest
from tests.movers.conformance import MoverConformance, unique_prefix
from tests.movers.targets import SshTarget


class TestScpMover(MoverConformance):
    @pytest.fixture
    def target(self, sshd_server):
        return SshTarget(unique_prefix(), sshd_server, "scp")
