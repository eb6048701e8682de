"""ProviderFeed: one thread receiving the announcements of a chain's providers.

A client chain and a mirror chain both follow a list of providers (``host:port``,
each optionally with its own ``/topic``): one subscriber connected to all of them,
polled by one thread that hands each message to the chain. A message whose
handling fails is logged and the feed goes on: one bad announcement never stops a
chain from receiving. Between polls ``after_poll(subscriber)`` lets the chain
watch heartbeats and resubscribe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from trollmoves import messaging

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # s a receive waits: how soon a stop is noticed


class ProviderFeed:
    """Subscribe to ``providers`` on ``topics`` and pass every message to ``on_message(address, message)``.

    ``provider_topics(provider)`` gives a provider's own topics (None: the feed's
    ``topics``). ``error_text`` starts the log line of a message whose handling
    raised; ``name`` names the thread.
    """

    def __init__(self, name: str, providers: Sequence[Any], topics: Sequence[str],
                 on_message: Callable[[str, messaging.Message], None],
                 on_malformed: Callable[[Exception], None], *,
                 provider_topics: Callable[[Any], list[str] | None] = lambda provider: None,
                 curve: Any = None, after_poll: Callable[[messaging.Subscriber], None] | None = None,
                 error_text: str = "error handling a message"):
        self.name = name
        self.providers = list(providers)
        self.topics = list(topics)
        self.on_message = on_message
        self.on_malformed = on_malformed
        self.provider_topics = provider_topics
        self.curve = curve
        self.after_poll = after_poll
        self.error_text = error_text
        self.subscriber: messaging.Subscriber | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, ready_timeout: float = 10.0) -> None:
        """Start receiving; returns once the subscriptions are made (or after ``ready_timeout``)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(ready_timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        subscriber = messaging.Subscriber((), self.topics, on_malformed=self.on_malformed, curve=self.curve)
        self.subscriber = subscriber
        for provider in self.providers:
            subscriber.add(provider.address, self.provider_topics(provider))
        self._ready.set()
        try:
            while not self._stop.is_set():
                for address, message in subscriber.recv(POLL_INTERVAL):
                    try:
                        self.on_message(address, message)
                    except Exception:  # noqa: BLE001 - a bad message never stops the feed
                        logger.exception("%s: %s %s message from %s", self.name, self.error_text,
                                         messaging.shorten(str(message.type), 40), address)
                if self.after_poll is not None:
                    self.after_poll(subscriber)
        finally:
            subscriber.close()
