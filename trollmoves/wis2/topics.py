"""WIS2 topics: levels made from metadata, publication templates, subscription filters.

Why a module of its own: a topic we publish on is checked by every Global Broker against the WIS2
Topic Hierarchy (WTH), and a message on a refused topic is silently lost. So the rules that
pywis-topics 0.4.0 applies for publication (``TopicHierarchy.validate(topic, publication=True)``,
strict mode) are applied here, once when the template is configured and again for every composed
topic, and a refusal names what is wrong:

* the topic is ``origin/a/wis2/<centre-id>/data/<core|recommended>/<earth-system-discipline>/...``
  with at least 8 levels (stricter than pywis-topics, which also takes ``cache``, ``metadata`` and
  a discipline alone: we publish data notifications, on origin, below a discipline);
* every level is lowercase ASCII letters, digits and ``-``: no dots, no wildcards (``+``, ``#``),
  no empty level (pywis-topics' baseline rules, which it logs but does not enforce: we do);
* the centre-id is ``<tld>-<name>`` (pywis-topics splits it at the first ``-``);
* with the WTH tables (``tables=``: the folder holding ``wis2-topic-hierarchy/``, as pywis-topics
  takes it, or that folder itself), exactly what pywis-topics' strict mode checks: the centre-id is
  in ``centre-id.csv`` or ends in ``-test``, and the whole subtopic after the policy
  (``weather/space-based-observations/metop-b/avhrr-3``) is a row of ``earth-system-discipline.csv``
  or contains ``/experimental``.  A product level below the instrument is therefore refused by
  pywis-topics' publication validation; put it in ``data_id`` instead.

Nothing here does I/O except :func:`load_tables` (read once, at configuration time).  Problems are
:class:`TopicError` with a ``reason`` from :data:`TOPIC_ERROR_REASONS` (a metric label).
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trollmoves.errors import ReasonedError

__all__ = [
    "MIN_PUBLICATION_LEVELS",
    "POLICIES",
    "TOPIC_ERROR_REASONS",
    "TopicError",
    "TopicTables",
    "TopicTemplate",
    "check_publication_topic",
    "check_subscription_filter",
    "check_subscription_filters",
    "load_tables",
    "normalise_level",
]

PUBLICATION_PREFIX = ("origin", "a", "wis2")
SUBSCRIPTION_CHANNELS = ("origin", "cache")
MIN_PUBLICATION_LEVELS = 8
"""``origin/a/wis2/<centre-id>/data/<policy>/<discipline>/<subtopic>``: pywis-topics needs the subtopic."""
POLICIES = ("core", "recommended")
NOTIFICATION_TYPE = "data"
MAX_TOPIC_BYTES = 65535
"""MQTT's limit on a topic name or filter (a UTF-8 string with a two-byte length)."""

TOPIC_ERROR_REASONS = frozenset({
    "level",      # a level is empty, or has characters outside [a-z0-9-]
    "field",      # a template field is missing from the message (or ambiguous)
    "template",   # the template itself is malformed
    "prefix",     # not origin/a/wis2/... (or for a filter, origin|cache/a/wis2/...)
    "depth",      # fewer than 8 levels, or longer than MQTT allows
    "wildcard",   # + or # in a publication topic
    "notification_type",  # level 5 is not "data"
    "centre_id",  # not <tld>-<name>, or not in the WTH table
    "policy",     # not core or recommended
    "discipline",  # subtopic not in the WTH table
    "filter",     # a subscription filter breaks MQTT or WIS2 syntax
    "tables",     # the WTH tables cannot be read
})

_LEVEL = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_CENTRE_ID = re.compile(r"[a-z]{2,63}-[a-z0-9]+(?:-[a-z0-9]+)*")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NOT_LEVEL_CHARS = re.compile(r"[^a-z0-9]+")
_SHARE_GROUP = re.compile(r"[^/+#\x00]+")


class TopicError(ReasonedError, ValueError):
    """A topic, template or filter breaks a WIS2 rule; ``reason`` is one of :data:`TOPIC_ERROR_REASONS`."""

    REASONS = TOPIC_ERROR_REASONS


# --------------------------------------------------------------------------------------------
# Levels


def normalise_level(value: Any) -> str:
    """One topic level from a metadata value: ``Metop-B`` -> ``metop-b``, ``avhrr/3`` -> ``avhrr-3``.

    ``str(value)`` is case-folded and NFKD-decomposed with its combining marks dropped, so
    ``Météo`` gives ``meteo`` and ``Straße`` ``strasse``.  Every run of characters other than
    ASCII letters and digits (``/``, ``_``, ``.``, spaces, ``+``, ``#``, ...) becomes one ``-``,
    and ``-`` at either end is stripped.

    A letter or digit that is still not ASCII after that (``Ω``, ``北``) is refused rather than
    dropped: dropping it could map two different platforms to the same level (``Ω1`` and ``1``),
    and a topic must never silently change meaning.  ``None`` and a value that leaves nothing
    (``""``, ``"--"``) are refused too: TopicError(reason="level").
    """
    if value is None:
        raise TopicError("level", "a topic level cannot be made from None")
    text = unicodedata.normalize("NFKD", str(value).casefold())
    text = "".join(char for char in text if not unicodedata.combining(char))
    stranger = next((char for char in text if not char.isascii() and char.isalnum()), None)
    if stranger is not None:
        raise TopicError("level", f"topic level from {value!r}: {stranger!r} has no ASCII spelling; "
                                  "add an alias for this value")
    level = _NOT_LEVEL_CHARS.sub("-", text).strip("-")
    if not level:
        raise TopicError("level", f"topic level from {value!r} is empty once normalised")
    return level


def _check_level(level: str, position: int, topic: str) -> None:
    if level == "":
        raise TopicError("level", f"topic {topic!r}: level {position + 1} is empty")
    if level in ("+", "#") or "+" in level or "#" in level:
        raise TopicError("wildcard", f"topic {topic!r}: wildcards (+, #) are not allowed when publishing")
    if not _LEVEL.fullmatch(level):
        raise TopicError("level", f"topic {topic!r}: level {level!r} must be lowercase ASCII letters, digits "
                                  "and single '-' (no dots, no '_', no spaces)")


# --------------------------------------------------------------------------------------------
# WTH tables


@dataclass(frozen=True)
class TopicTables:
    """The WIS2 Topic Hierarchy tables that pywis-topics' strict validation reads."""

    centre_ids: frozenset[str]
    disciplines: frozenset[str]
    """Every row of ``earth-system-discipline.csv``: whole subtopics, ``weather/space-based-observations/...``."""
    source: str = ""


def _table_dir(path: str | os.PathLike[str]) -> Path:
    base = Path(path)
    if (base / "wis2-topic-hierarchy").is_dir():
        return base / "wis2-topic-hierarchy"
    return base


def _read_names(path: Path) -> frozenset[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            next(rows, None)  # the header: Name,Description,...
            return frozenset(row[0].strip() for row in rows if row and row[0].strip())
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TopicError("tables", f"WIS2 topic hierarchy table {path}: cannot be read ({err})") from None


def load_tables(path: str | os.PathLike[str]) -> TopicTables:
    """Read ``centre-id.csv`` and ``earth-system-discipline.csv`` from the WTH folder ``path``.

    ``path`` is what pywis-topics takes (the folder holding ``wis2-topic-hierarchy/``) or that
    folder itself.  Read once at configuration time and pass the result on: nothing is cached here.
    """
    folder = _table_dir(path)
    return TopicTables(centre_ids=_read_names(folder / "centre-id.csv"),
                       disciplines=_read_names(folder / "earth-system-discipline.csv"),
                       source=str(folder))


def _as_tables(tables: TopicTables | str | os.PathLike[str] | None) -> TopicTables | None:
    if tables is None or isinstance(tables, TopicTables):
        return tables
    return load_tables(tables)


# --------------------------------------------------------------------------------------------
# Publication topics


def check_publication_topic(topic: str, tables: TopicTables | str | os.PathLike[str] | None = None) -> None:
    """Raise TopicError unless ``topic`` may be published on (the module docstring lists the rules).

    Without ``tables`` only the syntactic rules are checked; with them (a :class:`TopicTables`, or a
    path for :func:`load_tables`) also the centre-id and the subtopic, as pywis-topics does.
    """
    if not isinstance(topic, str):
        raise TopicError("level", f"a topic must be a string, got {type(topic).__name__}")
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise TopicError("depth", f"topic is longer than MQTT's {MAX_TOPIC_BYTES} bytes")
    levels = topic.split("/")
    if tuple(levels[:3]) != PUBLICATION_PREFIX:
        raise TopicError("prefix", f"topic {topic!r} must start with {'/'.join(PUBLICATION_PREFIX)}/")
    if len(levels) < MIN_PUBLICATION_LEVELS:
        raise TopicError("depth", f"topic {topic!r} has {len(levels)} levels; WIS2 needs at least "
                                  f"{MIN_PUBLICATION_LEVELS}: origin/a/wis2/<centre-id>/data/<policy>/"
                                  "<discipline>/<subtopic>")
    for position, level in enumerate(levels):
        _check_level(level, position, topic)
    centre_id, notification_type, policy = levels[3], levels[4], levels[5]
    if not _CENTRE_ID.fullmatch(centre_id):
        raise TopicError("centre_id", f"topic {topic!r}: centre-id {centre_id!r} must be <tld>-<name>, "
                                      "e.g. se-smhi or int-eumetsat")
    if notification_type != NOTIFICATION_TYPE:
        raise TopicError("notification_type", f"topic {topic!r}: level 5 must be {NOTIFICATION_TYPE!r}, "
                                              f"got {notification_type!r}")
    if policy not in POLICIES:
        raise TopicError("policy", f"topic {topic!r}: data policy must be core or recommended, got {policy!r}")
    known = _as_tables(tables)
    if known is None:
        return
    if centre_id not in known.centre_ids and not centre_id.endswith("-test"):
        raise TopicError("centre_id", f"topic {topic!r}: centre-id {centre_id!r} is not in the WIS2 topic "
                                      f"hierarchy ({known.source}/centre-id.csv); a centre that is not yet "
                                      "registered may test with a centre-id ending in -test")
    subtopic = "/".join(levels[6:])
    if subtopic not in known.disciplines and "/experimental" not in subtopic:
        raise TopicError("discipline", f"topic {topic!r}: {subtopic!r} is not in the WIS2 topic hierarchy "
                                       f"({known.source}/earth-system-discipline.csv); Global Brokers refuse it")


# --------------------------------------------------------------------------------------------
# Templates


def _single(field: str, value: Any) -> Any:
    """A metadata value as one item: pytroll's ``sensor`` is often a one-element list."""
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        if len(items) != 1:
            raise TopicError("field", f"topic template field {field!r} has {len(items)} values "
                                      f"({items!r}); a topic level needs exactly one")
        return items[0]
    return value


class TopicTemplate:
    """A publication topic with ``{field}`` levels filled from each message's metadata.

    ``aliases`` maps a field to ``{raw value: level}`` (``{"platform_name": {"Metop-B": "metop-b"}}``),
    applied to ``str(raw value)`` before :func:`normalise_level`.  ``constants`` fill fields that do
    not come from the message (``centre_id``, ``policy``); they are substituted at once, so a bad
    centre-id or policy is refused here, at configuration time.  ``tables`` (see
    :func:`check_publication_topic`) are applied to the literal discipline level now and to every
    composed topic.
    """

    def __init__(self, template: str, aliases: Mapping[str, Mapping[str, str]] | None = None, *,
                 constants: Mapping[str, Any] | None = None,
                 tables: TopicTables | str | os.PathLike[str] | None = None):
        self.template = template
        self._tables = _as_tables(tables)
        self._aliases = {field: {str(raw): str(level) for raw, level in mapping.items()}
                         for field, mapping in (aliases or {}).items()}
        levels = self._parse(template)
        self.fields: tuple[str, ...] = tuple(name for kind, name in levels if kind == "field")
        """Every ``{field}`` of the template, in order, constants included."""
        unknown = sorted(set(self._aliases) - set(self.fields))
        if unknown:
            raise TopicError("template", f"topic template {template!r}: aliases for {', '.join(unknown)}, "
                                         "which the template does not have")
        unknown = sorted(set(constants or {}) - set(self.fields))
        if unknown:
            raise TopicError("template", f"topic template {template!r}: constants for {', '.join(unknown)}, "
                                         "which the template does not have")
        self._levels = [("text", self._level_for(name, constants[name])) if kind == "field" and
                        name in (constants or {}) else (kind, name) for kind, name in levels]
        self.metadata_fields: tuple[str, ...] = tuple(name for kind, name in self._levels if kind == "field")
        """The fields each message must provide (those not given as constants)."""
        self._check_fixed_levels()

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r})"

    def _parse(self, template: str) -> list[tuple[str, str]]:
        if not isinstance(template, str) or not template:
            raise TopicError("template", f"topic template must be a non-empty string, got {template!r}")
        if "+" in template or "#" in template:
            raise TopicError("wildcard", f"topic template {template!r}: wildcards (+, #) are not allowed "
                                         "when publishing")
        levels: list[tuple[str, str]] = []
        seen: set[str] = set()
        for position, level in enumerate(template.split("/")):
            match = _PLACEHOLDER.fullmatch(level)
            if match:
                if match.group(1) in seen:
                    raise TopicError("template", f"topic template {template!r}: field {{{match.group(1)}}} "
                                                 "appears twice")
                seen.add(match.group(1))
                levels.append(("field", match.group(1)))
            elif "{" in level or "}" in level:
                raise TopicError("template", f"topic template {template!r}: level {level!r} must be a whole "
                                             "{field} or plain text, not a mix")
            else:
                _check_level(level, position, template)
                levels.append(("text", level))
        if tuple(name for _, name in levels[:3]) != PUBLICATION_PREFIX or any(k != "text" for k, _ in levels[:3]):
            raise TopicError("prefix", f"topic template {template!r} must start with "
                                       f"{'/'.join(PUBLICATION_PREFIX)}/")
        if len(levels) < MIN_PUBLICATION_LEVELS:
            raise TopicError("depth", f"topic template {template!r} has {len(levels)} levels; WIS2 needs at "
                                      f"least {MIN_PUBLICATION_LEVELS}")
        return levels

    def _check_fixed_levels(self) -> None:
        """Check what is already known (literal levels and constants) with placeholders standing in."""
        stand_ins = {3: "xx-stand-in", 4: NOTIFICATION_TYPE, 5: POLICIES[0]}
        probe = [text if kind == "text" else stand_ins.get(position, "stand-in")
                 for position, (kind, text) in enumerate(self._levels)]
        check_publication_topic("/".join(probe))
        if self._tables is None:
            return
        kind, text = self._levels[3]
        if kind == "text":
            check_publication_topic("/".join(probe[:6] + ["weather", "experimental"]), self._tables)
        kind, text = self._levels[6]
        if kind == "text" and text not in {entry.split("/")[0] for entry in self._tables.disciplines}:
            raise TopicError("discipline", f"topic template {self.template!r}: earth system discipline "
                                           f"{text!r} is not in the WIS2 topic hierarchy ({self._tables.source})")

    def _level_for(self, field: str, raw: Any) -> str:
        raw = _single(field, raw)
        alias = self._aliases.get(field, {}).get(str(raw))
        try:
            return normalise_level(raw if alias is None else alias)
        except TopicError as err:
            raise TopicError("level", f"topic template field {field!r}: {err}") from None

    def compose(self, metadata: Mapping[str, Any]) -> str:
        """The topic for one message; TopicError when a field is missing or the result is refused."""
        levels = []
        for kind, text in self._levels:
            if kind == "text":
                levels.append(text)
                continue
            value = metadata.get(text)
            if value is None or (isinstance(value, (str, list, tuple, set, frozenset)) and not value):
                raise TopicError("field", f"topic template field {text!r} is missing from the message")
            levels.append(self._level_for(text, value))
        topic = "/".join(levels)
        check_publication_topic(topic, self._tables)
        return topic

    @staticmethod
    def leaf(topic: str) -> str:
        """The levels after ``<policy>`` (``weather/space-based-observations/metop-b/avhrr-3``), for data_id."""
        levels = topic.split("/")
        if tuple(levels[:3]) != PUBLICATION_PREFIX or len(levels) < MIN_PUBLICATION_LEVELS:
            raise TopicError("prefix", f"topic {topic!r} is not a WIS2 publication topic")
        return "/".join(levels[6:])


# --------------------------------------------------------------------------------------------
# Subscription filters


def check_subscription_filter(topic_filter: str) -> None:
    """Raise TopicError(reason="filter" or "prefix") unless ``topic_filter`` is a usable WIS2 subscription.

    MQTT syntax: ``+`` fills a whole level, ``#`` is the whole last level; an optional
    ``$share/<group>/`` prefix (MQTT 5 shared subscription).  WIS2: the filter starts with
    ``origin/a/wis2/`` or ``cache/a/wis2/``, and its other levels follow the topic level rules
    (lowercase ASCII, no dots, none empty), since a filter breaking them can never match.
    """
    if not isinstance(topic_filter, str) or not topic_filter:
        raise TopicError("filter", f"subscription filter must be a non-empty string, got {topic_filter!r}")
    if len(topic_filter.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise TopicError("filter", f"subscription filter is longer than MQTT's {MAX_TOPIC_BYTES} bytes")
    levels = topic_filter.split("/")
    if levels[0] == "$share":
        if len(levels) < 3 or not _SHARE_GROUP.fullmatch(levels[1]):
            raise TopicError("filter", f"subscription filter {topic_filter!r}: a shared subscription is "
                                       "$share/<group>/<filter>, the group without /, + or #")
        levels = levels[2:]
    if levels[0] not in SUBSCRIPTION_CHANNELS or tuple(levels[1:3]) != PUBLICATION_PREFIX[1:] or len(levels) < 4:
        raise TopicError("prefix", f"subscription filter {topic_filter!r} must start with origin/a/wis2/ or "
                                   "cache/a/wis2/ (after an optional $share/<group>/)")
    for position, level in enumerate(levels):
        if level == "#":
            if position != len(levels) - 1:
                raise TopicError("filter", f"subscription filter {topic_filter!r}: # must be the last level")
        elif level == "+":
            continue
        elif "+" in level or "#" in level:
            raise TopicError("filter", f"subscription filter {topic_filter!r}: a wildcard must fill a whole "
                                       f"level, got {level!r}")
        elif not _LEVEL.fullmatch(level):
            raise TopicError("filter", f"subscription filter {topic_filter!r}: level {level!r} must be "
                                       "lowercase ASCII letters, digits and '-' (WIS2 topics have no other)")


def check_subscription_filters(filters: Iterable[str]) -> None:
    """:func:`check_subscription_filter` for each filter (config loading checks a list at once)."""
    for topic_filter in filters:
        check_subscription_filter(topic_filter)
