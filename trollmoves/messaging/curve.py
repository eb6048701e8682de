"""CURVE authentication with ZeroMQ directly (posttroll 1.13 has it only process-wide).

Key files are named in the config; this module turns them into authenticated
sockets, one ZAP authenticator per binding object, so that one service stopping
never disables another's authentication. ``publisher_curve`` and ``request_curve``
pick the keys of a daemon or chain from its config (read duck-typed, so that
messaging imports no config or daemon module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zmq
from posttroll.backends.zmq import get_context


@dataclass(frozen=True)
class CurveServerKeys:
    """A binding socket that requires CURVE: its own key pair and the directory of allowed client keys."""

    secret_key_file: str
    clients_directory: str


@dataclass(frozen=True)
class CurveClientKeys:
    """A connecting socket that authenticates with CURVE: its key pair and the server's public key."""

    secret_key_file: str
    server_public_key_file: str


class SecureBinding:
    """An own zmq context with its own ZAP authenticator, for the CURVE sockets of one object.

    posttroll shares one authenticator per process and stops it with the first
    publisher that stops (its pitfall); owning context and authenticator here
    means one service's stop never disables another's authentication.
    """

    def __init__(self, keys: CurveServerKeys):
        from zmq.auth import load_certificate
        from zmq.auth.thread import ThreadAuthenticator

        self.context = zmq.Context()
        self.authenticator = ThreadAuthenticator(self.context)
        self.authenticator.start()
        self.authenticator.configure_curve(domain="*", location=keys.clients_directory)
        self.public, self.secret = load_certificate(keys.secret_key_file)
        if self.secret is None:
            raise ValueError(f"{keys.secret_key_file} holds no secret key")

    def socket(self, socket_type: int, address: str, options: dict, port_range: tuple[int, int]):
        sock = self.context.socket(socket_type)
        for option, value in options.items():
            sock.setsockopt(option, value)
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        parts = address.rsplit(":", 1)
        if parts[1] == "0":
            port = sock.bind_to_random_port(parts[0], min_port=port_range[0], max_port=port_range[1])
        else:
            sock.bind(address)
            port = int(parts[1])
        return sock, port

    def close(self) -> None:
        self.authenticator.stop()
        self.context.term()


def curve_client_socket(socket_type: int, address: str, options: dict, keys: CurveClientKeys):
    """A connecting socket with CURVE client keys (posttroll's context; no authenticator needed)."""
    from zmq.auth import load_certificate

    sock = get_context().socket(socket_type)
    for option, value in options.items():
        sock.setsockopt(option, value)
    public, secret = load_certificate(keys.secret_key_file)
    server_public, _ = load_certificate(keys.server_public_key_file)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public
    sock.connect(address)
    return sock


def publisher_curve(config: Any) -> CurveServerKeys | None:
    """CURVE keys of a daemon's publisher: ``config.daemon``'s key pair and clients directory, else none."""
    daemon = config.daemon
    if daemon.curve_secret_key_file and daemon.curve_clients_directory:
        return CurveServerKeys(daemon.curve_secret_key_file, daemon.curve_clients_directory)
    return None


def request_curve(chain: Any, config: Any) -> CurveServerKeys | None:
    """CURVE keys of a chain's request port: the chain's own, else the daemon's, else none."""
    if getattr(chain, "curve_secret_key_file", None):
        return CurveServerKeys(chain.curve_secret_key_file, chain.curve_clients_directory)
    return publisher_curve(config)
