"""Nameserver: publishers looked up by service name; posttroll's nameserver in a thread (for the demo).

Multicast is never required: publishers register with listed nameservers (see
``pubsub.Publisher``), subscribers look services up here by name; tests use the
real ``nameserver`` process.
"""

from __future__ import annotations

import logging
import threading

import zmq

logger = logging.getLogger(__name__)


def lookup_addresses(service: str, nameserver: str = "localhost", timeout: float = 10.0) -> list[str]:
    """Publisher addresses (``tcp://host:port``) registered for ``service`` ("" = all) on a nameserver."""
    from posttroll.ns import get_pub_address

    try:
        found = get_pub_address(service, timeout=timeout, nameserver=nameserver)
    except (TimeoutError, zmq.ZMQError) as exc:
        logger.warning("Nameserver %s did not answer for service %r: %s", nameserver, service, exc)
        return []
    return [entry["URI"] for entry in found or [] if isinstance(entry, dict) and "URI" in entry]


class NameServerThread:
    """posttroll's own NameServer, without multicast, in a thread we can stop."""

    def __init__(self, bind_address: str = "127.0.0.1"):
        from posttroll.ns import NameServer

        self._ns = NameServer(multicast_enabled=False)
        self._bind_address = bind_address
        self._thread = threading.Thread(target=self._run, name="nameserver", daemon=True)

    def _run(self) -> None:
        try:
            self._ns.run(nameserver_address=self._bind_address)
        except Exception:  # pragma: no cover - logged for the operator
            logger.exception("Nameserver stopped with an error")

    def start(self) -> NameServerThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._ns.stop()
        self._thread.join(timeout)
