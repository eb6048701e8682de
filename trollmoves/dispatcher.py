"""The dispatcher (dispatcher.py): push the files of matching posttroll messages to customers' targets.

Flow: a receive thread subscribes to the union of the targets' ``topics`` (direct
``subscribe_addresses`` and, unless ``nameserver`` is False, the publishers that
the nameserver knows for ``subscribe_services``); each ``file`` message, and each
file of a ``dataset`` or ``collection`` message, is routed to every target whose
first matching ``dispatch_configs`` item accepts its subject and metadata
(``trollmoves.conditions``); the destination is composed from ``host``,
``directory`` and ``filepattern`` (default: the file's base name) with the
message metadata, ``aliases`` and ``file_creation_time``; a bounded worker pool
copies the file with the transfer service; each successful target gets one
``file`` message (``publish_topic``, ``uri`` = destination path) on the ``-p``
publisher named ``dispatcher`` (reference §1.7, §2.7, §3.9).

What we fix (reference §7.6, §7.20): aliases are applied to a copy (the
original popped ``_alias_name`` from its config and broke from the second
message on); numeric conditions are parsed, never ``eval``-ed; a compose error,
a non-local ``uri``, a malformed message or two matching ``dispatch_configs``
(the first wins) never end the dispatcher; transfers run in a pool, not in the
receive loop.

What we add: every dispatch is journaled in the on-disk retry queue
(``trollmoves.retrying``) before it is tried, so a failed one is retried with
exponential backoff (``retry: initial_delay .. max_delay``) until ``max_age``,
also after a restart or a ``kill -9``; a permanent error (bad login, missing
source, permission) is reported once and not retried.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trollsift import compose

from trollmoves import confine, messaging
from trollmoves.conditions import check_conditions, matches_topics
from trollmoves.config import Config, DispatchConfig, DispatchTarget, RetrySettings, SubscriberSettings
from trollmoves.destinations import local_path
from trollmoves.errors import MessageDecodeError, TransferError
from trollmoves.listening import QueuedService, QueueOptions, file_items
from trollmoves.metrics import Metrics, scheme_label
from trollmoves.redact import strip_password
from trollmoves.retrying import RetryItem, state_path
from trollmoves.state import StateStore

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "dispatcher"
COMPOSE_ERRORS = (KeyError, ValueError, TypeError, IndexError, AttributeError)


@dataclass(frozen=True)
class DispatcherOptions(QueueOptions):
    """Command-line level options: ``-p`` (None: no publisher, 0: a random port) and ``-n``."""

    publish_port: int | None = None
    publish_nameservers: Sequence[str] | bool | None = None
    publish_address: str = "*"


# --------------------------------------------------------------------------------------------------
# Pure helpers: messages to files, routing, destinations
# --------------------------------------------------------------------------------------------------

def first_match(target: DispatchTarget, subject: str, data: Mapping[str, Any]) -> DispatchConfig | None:
    """The target's first ``dispatch_configs`` item accepting the message (one destination per target)."""
    for dispatch_config in target.dispatch_configs:
        if matches_topics(subject, dispatch_config.topics) and check_conditions(data, dispatch_config.conditions):
            return dispatch_config
    return None


def apply_aliases(data: Mapping[str, Any], aliases: Any) -> dict[str, Any]:
    """Metadata for file naming with the aliases applied (the message data is not changed).

    ``aliases`` is ``{field: {value: alias}}``; a field may also hold a list of such
    mappings, each with an optional ``_alias_name: new_field`` that writes the alias
    to a new field instead of replacing the value. The config is never modified
    (the original popped ``_alias_name`` from it, §7.6).
    """
    metadata = dict(data)
    groups = aliases if isinstance(aliases, (list, tuple)) else [aliases or {}]
    for group in groups:
        if not isinstance(group, Mapping):
            continue
        for field_name, spec in group.items():
            for alias in [spec] if isinstance(spec, Mapping) else list(spec or ()):
                if not isinstance(alias, Mapping) or field_name not in data:
                    continue
                new_field = alias.get("_alias_name", field_name)
                mapping = {key: name for key, name in alias.items() if key != "_alias_name"}
                value = data[field_name]
                try:
                    metadata[new_field] = mapping.get(value, value)
                except TypeError:  # an unhashable value (a list) has no alias
                    metadata[new_field] = value
    return metadata


def file_creation_time(path: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(os.path.getctime(path))
    except OSError:
        return None


def compose_destination(target: DispatchTarget, dispatch_config: DispatchConfig, data: Mapping[str, Any],
                        path: str) -> str:
    """The destination URL of one file for one target; raises KeyError/ValueError on a bad template
    (and confine.ConfinementError, a ValueError, for a field holding ``..`` or a leading ``/``).

    ``host``, ``directory`` and ``filepattern`` come from the target, overridden by the
    matching dispatch config. The default file name is the source's base name, used
    as it is (never read as a template, in case it contains braces).
    """
    host = dispatch_config.host if dispatch_config.host is not None else target.host
    directory = dispatch_config.directory if dispatch_config.directory is not None else target.directory
    filepattern = dispatch_config.filepattern if dispatch_config.filepattern is not None else target.filepattern
    metadata = apply_aliases(data, target.aliases)
    created = file_creation_time(path)
    if created is not None:
        metadata["file_creation_time"] = created
    for template in (directory, filepattern):  # a message field must not move the file out of the target
        for field in confine.template_fields(template or ""):
            confine.check_field(metadata.get(field), f"field {field!r}")
    directory_part = compose(directory, metadata) if directory else ""
    name = compose(filepattern, metadata) if filepattern else os.path.basename(path)
    full_path = os.path.join(directory_part, name)
    parts = urlsplit(host or "")
    return urlunsplit((parts.scheme, parts.netloc, full_path, parts.query, parts.fragment))


def result_data(data: Mapping[str, Any], destination: str, result=None) -> dict[str, Any]:
    """Data of the message published after a dispatch: the file's metadata, ``uri`` = destination path."""
    info = dict(data)
    info["uri"] = urlsplit(destination).path
    if result is not None:
        info["size"] = result.size
        if result.checksum is not None:
            info["checksum"] = result.checksum.as_dict()
    return info


def local_destination(target: DispatchTarget) -> str | None:
    """The directory template of a target writing to this host (empty ``host`` or ``file://``), else None.

    The target's own ``host``/``directory``, or those of its first dispatch config that sets a
    directory: what ``trollmoves_destination_free_bytes`` measures.
    """
    candidates = [(target.host, target.directory)] + [
        (dc.host if dc.host is not None else target.host, dc.directory) for dc in target.dispatch_configs]
    for host, directory in candidates:
        if directory and urlsplit(host or "").scheme in ("", "file"):
            return directory
    return None


def subscription_topics(targets: Sequence[DispatchTarget]) -> list[str]:
    topics: list[str] = []
    for target in targets:
        for dispatch_config in target.dispatch_configs:
            for topic in dispatch_config.topics:
                if topic not in topics:
                    topics.append(topic)
    return topics


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class Dispatcher(QueuedService):
    """The dispatcher service: subscription, retry queue, worker pool, result publisher."""

    kind = "dispatcher"
    label = "dispatcher"

    def __init__(self, config: Config, options: DispatcherOptions | None = None, metrics: Metrics | None = None,
                 state: StateStore | None = None, transfers=None):
        from trollmoves.movers import TransferService

        super().__init__(config, options or DispatcherOptions(), metrics, state)
        self.transfers = transfers or TransferService(cancel=self._cancel)
        self._own_transfers = transfers is None
        self._targets: dict[str, DispatchTarget] = {}
        self._lock = threading.Lock()
        self._warned_topic: set[str] = set()
        self.metrics.watch_state_store(lambda: self._state)

    # service protocol -----------------------------------------------------------------------------
    def start(self) -> None:
        retry = self._retry_settings(self.config)
        self._set_targets(self.config)
        publisher = None
        if self.options.publish_port is not None:
            publisher = messaging.Publisher(PUBLISHER_NAME, self.options.publish_port, self.options.publish_address,
                                            nameservers=self.options.publish_nameservers).start()
        self._configure_subscription(self.config)
        self._run_queue(state_path(self.config, self.kind, retry.state_directory), retry, publisher)

    def _close(self) -> None:
        if self._own_transfers:
            self.transfers.close()

    def reload(self, config: Config) -> None:
        """New targets, conditions and subscriptions apply at once; queued retries follow the new targets."""
        old = set(self._targets)
        self._set_targets(config)
        for name in old - set(self._targets):
            logger.info("Target %s removed (its queued retries are dropped when due)", name)
            self.metrics.remove_chain(name)
        for name in set(self._targets) - old:
            logger.info("Target %s added", name)
        if self.retries is not None:
            self.retries.settings = self._retry_settings(config)
        if self._configure_subscription(config):
            logger.info("Dispatcher: subscription changed, resubscribing")
        self.config = config
        self.metrics.reloads.labels("success").inc()

    def health(self) -> dict[str, Any]:
        health = super().health()
        health["targets"] = {}
        for name in self.queue_chains():
            waiting, oldest = self.retries.stats(name) if self.retries is not None else (0, 0.0)
            health["targets"][name] = {"retry_queue": waiting, "oldest_retry": oldest}
        return health

    def queue_chains(self) -> list[str]:
        with self._lock:
            return list(self._targets)

    # configuration --------------------------------------------------------------------------------
    @staticmethod
    def _retry_settings(config: Config) -> RetrySettings:
        return config.extra.get("retry") or RetrySettings()

    def _set_targets(self, config: Config) -> None:
        targets = {target.name: target for target in config.chains}
        for name, target in targets.items():
            self.metrics.init_chain(name)
            self.metrics.watch_destination(name, local_destination(target))
        with self._lock:
            self._targets = targets

    def _configure_subscription(self, config: Config) -> bool:
        settings: SubscriberSettings = config.extra.get("subscriber") or SubscriberSettings()
        return self.subscription.configure(settings.subscribe_addresses, subscription_topics(config.chains),
                                           settings.nameserver, settings.subscribe_services)

    def target(self, name: str) -> DispatchTarget | None:
        with self._lock:
            return self._targets.get(name)

    # routing (receive thread) ---------------------------------------------------------------------
    def accept(self, subject: str, data: dict) -> None:
        """Queue one file for every target whose first matching dispatch config wants it."""
        with self._lock:
            targets = list(self._targets.values())
        routes = [(target, dispatch_config) for target in targets
                  if (dispatch_config := first_match(target, subject, data)) is not None]
        if not routes:
            logger.debug("No target for %s on %s", data.get("uri"), subject)
            return
        if local_path(data.get("uri")) is None:
            logger.error("Cannot dispatch %s (%s): the uri is not a file on this host", data.get("uri"), subject)
            for target, _ in routes:
                self.metrics.transfers_failed.labels(target.name, "file", "refused").inc()
            return
        for target, dispatch_config in routes:
            if not self.queue(target.name, subject, data, (subject, data, dispatch_config)):
                return

    # dispatching (workers) ------------------------------------------------------------------------
    def process(self, item: RetryItem, prepared: tuple | None = None) -> None:
        """Try one (file, target) dispatch and settle its queue row."""
        name = item["chain"]
        target = self.target(name)
        if target is None:
            logger.warning("Dropping a queued dispatch to %s: the target is no longer configured", name)
            self.retries.done(item)
            return
        if prepared is None:
            message = self.queued_message(item)
            if message is None:
                return
            subject, data = message.subject, message.data
            dispatch_config = first_match(target, subject, data)
            if dispatch_config is None:
                logger.info("Dropping a queued dispatch of %s to %s: the target no longer wants it",
                            data.get("uri"), name)
                self.retries.done(item)
                return
        else:
            subject, data, dispatch_config = prepared
        path = local_path(data.get("uri"))
        if path is None:
            logger.error("Dropping a queued dispatch to %s: %s is not a file on this host", name, data.get("uri"))
            self.retries.done(item)
            return
        try:
            destination = compose_destination(target, dispatch_config, data, path)
        except COMPOSE_ERRORS as exc:
            logger.error("Target %s: cannot compose the destination of %s: %s %s", name, data.get("uri"),
                         type(exc).__name__, exc)
            self.metrics.transfers_failed.labels(name, scheme_label(urlsplit(target.host).scheme), "error").inc()
            self.retries.done(item)
            return
        self._transfer(item, target, data, path, destination)

    def _transfer(self, item: RetryItem, target: DispatchTarget, data: dict, path: str, destination: str) -> None:
        name = target.name
        scheme = scheme_label(urlsplit(destination).scheme)
        self.metrics.transfers_started.labels(name, scheme).inc()
        try:
            result = self.transfers.transfer(path, destination, options=target.transfer_options)
        except TransferError as exc:
            self.settle_failure(item, exc, name, scheme, f"dispatch {path} to {strip_password(destination)}")
            return
        self.retries.done(item)
        self.metrics.transfers_succeeded.labels(name, scheme).inc()
        self.metrics.transferred_bytes.labels(name, scheme).inc(result.size)
        self.metrics.transfer_duration.labels(name, scheme).observe(result.duration)
        self.metrics.last_transfer.labels(name).set(time.time())
        self.metrics.files_done(name)
        logger.info("Dispatched %s to %s (%d bytes, %.3f s)", path, result.destination, result.size,
                    result.duration)
        self.publish_result(target, data, destination, result)

    def publish_result(self, target: DispatchTarget, data: dict, destination: str, result=None) -> None:
        """One ``file`` message per successful target, as the original's PublisherReporter."""
        if self.publisher is None:
            return
        if not target.publish_topic:
            if target.name not in self._warned_topic:
                self._warned_topic.add(target.name)
                logger.error("Publish topic not configured for '%s': nothing published for it", target.name)
            return
        info = result_data(data, destination, result)
        try:
            subject = compose(target.publish_topic, info)
            message = messaging.make_message(subject, "file", info)
        except (*COMPOSE_ERRORS, MessageDecodeError) as exc:
            logger.error("Target %s: cannot compose the publish topic %r: %s %s", target.name,
                         target.publish_topic, type(exc).__name__, exc)
            return
        if self.publisher.send(message):
            self.metrics.messages_published.labels(target.name, "file").inc()
        else:
            self.metrics.messages_dropped.labels(target.name).inc()


__all__ = ["Dispatcher", "DispatcherOptions", "apply_aliases", "compose_destination", "file_items", "first_match",
           "local_path", "result_data"]
