"""Fixtures for the WIS2 tests: a real mosquitto broker (see ``tests/wis2/mosquitto.py``).

The broker runs with a password file and :data:`~tests.wis2.mosquitto.DEFAULT_ACL` (users
``publisher``, ``subscriber``, ``limited``, random passwords). A missing mosquitto skips the tests,
or fails them under ``TROLLMOVES_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import secrets

import pytest

from tests import servers
from tests.wis2.mosquitto import DEFAULT_ACL, start_mosquitto

BROKER_USERS = ("publisher", "subscriber", "limited")


def _start_broker(base_dir, tls: bool = False):
    users = {name: f"pw-{name}-{secrets.token_urlsafe(9)}" for name in BROKER_USERS}
    try:
        return start_mosquitto(base_dir, users=users, acl=DEFAULT_ACL, tls=tls)
    except servers.ServerUnavailable as err:
        servers.require_or_skip(str(err))


@pytest.fixture
def mosquitto(tmp_path):
    """A fresh mosquitto for one test (it may restart or stop it): ``.url``, ``.users``, ``.restart()``."""
    broker = _start_broker(tmp_path / "mosquitto")
    yield broker
    broker.close()


@pytest.fixture(scope="module")
def module_mosquitto(tmp_path_factory):
    """One mosquitto shared by a module's tests that neither stop nor restart it."""
    broker = _start_broker(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.close()


@pytest.fixture(scope="module")
def tls_mosquitto(tmp_path_factory):
    """A mosquitto whose listener speaks TLS (``mqtts://``) with a throwaway CA in ``.ca_file``."""
    broker = _start_broker(tmp_path_factory.mktemp("mosquitto-tls"), tls=True)
    yield broker
    broker.close()


@pytest.fixture
def broker_settings():
    """``broker_settings(broker, user, **fields)`` -> ``BrokerSettings`` logging in as *user*."""
    from trollmoves.wis2.mqtt import BrokerSettings

    def make(broker, user: str | None = "publisher", **fields):
        if user is not None:
            fields.setdefault("username", user)
            fields.setdefault("password", broker.users[user])
        fields.setdefault("connect_timeout", 5)
        fields.setdefault("url", broker.url)
        return BrokerSettings(**fields)

    return make
