"""Socket set-up shared by publishers, subscribers and request ports: plain through posttroll, or CURVE.

A binding socket without CURVE is posttroll's (its port range and options); with
CURVE it lives in its own context (``curve.SecureBinding``). A connecting socket is
posttroll's, or a CURVE client socket on posttroll's context.
"""

from __future__ import annotations

import zmq
from posttroll import config as posttroll_config
from posttroll.backends.zmq.socket import set_up_client_socket, set_up_server_socket
from posttroll.publisher import get_own_ip

from trollmoves.messaging.curve import CurveClientKeys, CurveServerKeys, SecureBinding, curve_client_socket

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # bytes; zmq.MAXMSGSIZE of every receiving socket


def own_ip() -> str:
    """This host's outward address, as posttroll computes it."""
    return str(get_own_ip())


def port_range() -> tuple[int, int]:
    """posttroll's configured range for random ports (``pub_min_port``, ``pub_max_port``)."""
    return (int(posttroll_config.get("pub_min_port", 49152)), int(posttroll_config.get("pub_max_port", 65536)))


def tcp_address(host: str, port: int | str) -> str:
    """``tcp://host:port`` (``host`` may already carry the ``tcp://``)."""
    if host.startswith("tcp://"):
        return f"{host}:{port}"
    return f"tcp://{host}:{port}"


def server_socket(socket_type: int, address: str, options: dict, curve: CurveServerKeys | None):
    """(socket, port, secure binding or None): through posttroll, or with our own CURVE context."""
    if curve is None:
        sock, port, _ = set_up_server_socket(socket_type, address, options, port_range())
        return sock, port, None
    binding = SecureBinding(curve)
    try:
        sock, port = binding.socket(socket_type, address, options, port_range())
    except zmq.ZMQError:
        binding.close()
        raise
    return sock, port, binding


def client_socket(socket_type: int, address: str, options: dict, curve: CurveClientKeys | None):
    """A connected socket: posttroll's, or one with CURVE client keys."""
    if curve is None:
        return set_up_client_socket(socket_type, address, options)
    return curve_client_socket(socket_type, address, options, curve)
