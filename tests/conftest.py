"""Shared pytest configuration and fixtures for the trollmoves tests.

Real servers (sshd, pyftpdlib, moto_server, posttroll nameserver) come from ``tests/servers.py``
and run once per session on 127.0.0.1; see that module for why and how. A server whose software is
missing skips its tests, or fails them under ``TROLLMOVES_REQUIRE_SERVERS=1`` (CI).
Helpers live in plain modules (``tests/controller.py``, ``tests/daemons/helpers.py``, ...): this file
holds only fixtures and hooks.
"""

from __future__ import annotations

import os
import sys

from tests import servers

# posttroll reads its fixed ports from the environment once, when it is first imported, and every
# process that talks to the test nameserver (this one, the nameserver, daemon subprocesses that
# inherit os.environ) must agree on them.  So they are exported here, at conftest import, before
# any test module can import posttroll.  Values already set (e.g. by CI) are kept.
for _name, _value in servers.posttroll_port_env().items():
    os.environ.setdefault(_name, _value)
if "posttroll" in sys.modules:  # pragma: no cover - a plugin imported it before us
    import warnings

    warnings.warn("posttroll was imported before tests/conftest.py set the POSTTROLL_*_PORT "
                  "variables; nameserver tests may talk to the wrong ports", stacklevel=1)

import pytest

SERVER_MARKERS = {
    "sshd_server": ("sshd", "needs the real OpenSSH sshd fixture"),
    "ftp_server": ("ftp", "needs the real pyftpdlib FTP server fixture"),
    "s3_server": ("s3", "needs the real moto_server S3 fixture"),
    "nameserver": ("nameserver", "needs the real posttroll nameserver fixture"),
}
"""fixture name -> (marker, description).  Tests using a fixture get its marker automatically."""


def pytest_configure(config: pytest.Config) -> None:
    for marker, description in SERVER_MARKERS.values():
        config.addinivalue_line("markers", f"{marker}: {description}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture, so ``-m "not sshd"`` etc. select by server."""
    for item in items:
        for fixture_name, (marker, _) in SERVER_MARKERS.items():
            if fixture_name in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


def _start(starter, *args, **kwargs):
    """Start a server; when its software is not installed, skip (fail under TROLLMOVES_REQUIRE_SERVERS=1)."""
    try:
        return starter(*args, **kwargs)
    except servers.ServerUnavailable as err:
        servers.require_or_skip(str(err))


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory):
    """A real OpenSSH sshd on 127.0.0.1 (key auth only), see :class:`servers.SshdServer`."""
    server = _start(servers.start_sshd, tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory):
    """A real pyftpdlib FTP server on 127.0.0.1, see :class:`servers.FtpServer`."""
    server = _start(servers.start_ftp, tmp_path_factory.mktemp("ftp"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real moto_server (S3 API) on 127.0.0.1, see :class:`servers.S3Server`."""
    server = _start(servers.start_s3, tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nameserver(tmp_path_factory: pytest.TempPathFactory):
    """A real posttroll ``nameserver --no-multicast`` on this session's POSTTROLL_* ports.

    Talk to it with ``nameservers=["localhost"]`` (or ``nameserver.host``); the ports are
    already in ``os.environ`` for this process and its children.
    """
    server = _start(servers.start_nameserver, tmp_path_factory.mktemp("nameserver"),
                    servers.PosttrollPorts.from_env(os.environ))
    yield server
    server.stop()


# --- other fixtures below ---


@pytest.fixture
def dirs(tmp_path):
    """``{"src", "dst", "state", "other"}`` -> fresh directories in ``tmp_path`` (daemon tests)."""
    made = {}
    for name in ("src", "dst", "state", "other"):
        made[name] = tmp_path / name
        made[name].mkdir()
    return made


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@pytest.fixture(scope="session")
def require_extensions() -> bool:
    """``TROLLMOVES_REQUIRE_EXTENSIONS=1`` (CI, releases): a compiled module that does not import
    is then a test failure, not a skip."""
    return _env_flag("TROLLMOVES_REQUIRE_EXTENSIONS")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--no-c-extensions", action="store_true", default=False,
                     help="skip the tests of the compiled trollmoves._speedups (marker c_extension); "
                          "the pure-Python twin is still tested")


@pytest.fixture(autouse=True)
def _skip_c_extension_tests(request: pytest.FixtureRequest) -> None:
    """``--no-c-extensions`` skips every test (or fixture parameter) marked ``c_extension``."""
    if request.node.get_closest_marker("c_extension") and request.config.getoption("--no-c-extensions"):
        pytest.skip("--no-c-extensions given")
