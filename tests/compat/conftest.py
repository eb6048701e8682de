"""Fixtures of the differential suite: the shared real servers and the server/client scenario run.

The run is session-scoped: every server/client scenario of ``scenarios_server_client.py`` is executed once,
grouped so that scenarios share daemons, and each test item then compares one scenario's outcomes.
"""

from __future__ import annotations

import pytest

from tests import servers
from tests.compat import harness


def pytest_collection_modifyitems(config, items):
    """Mark the suite ``compat``: it runs in one process (daemons are shared), pytest-xdist is not needed."""
    for item in items:
        if "tests/compat/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.compat)


@pytest.fixture(scope="session", autouse=True)
def _original_019():
    """Every test here compares with trollmoves 0.19: skip without its venv (a failure under
    TROLLMOVES_REQUIRE_SERVERS=1). Session-scoped and autouse: it runs before the servers are started.
    """
    if not harness.HAVE_ORIGINAL:
        servers.require_or_skip(harness.SKIP_REASON)


@pytest.fixture(scope="session")
def compat_servers(sshd_server, ftp_server, s3_server):
    """The real sshd, FTP and S3 servers shared by all scenarios."""
    return {"sshd": sshd_server, "ftp": ftp_server, "s3": s3_server}


@pytest.fixture(scope="session")
def server_client_results(compat_servers, tmp_path_factory):
    """``{scenario_id: {"019": outcomes, "ours": outcomes}}`` for every server/client scenario."""
    from tests.compat import scenarios_server_client as sc

    return harness.run_groups(sc.GROUPS, sc.SCENARIOS, compat_servers, str(tmp_path_factory.mktemp("compat")))


def pytest_configure(config):
    config.addinivalue_line("markers", "compat: differential scenario against trollmoves 0.19.0 (one process)")
