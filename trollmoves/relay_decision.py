"""The mirror's relay decision: which upstream announcements it re-announces.

Pure: an upstream announcement is refused when its uids or the fields the mirror
composes its destination from would leave that destination (a path escape); it is
keyed by the path of its first file (no file: nothing to relay); an announcement of
a file already known is not announced again, but another upstream's copy of it is
kept as an alternative source to pull from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from trollmoves import confine, messaging
from trollmoves.announcements import collect_uids


@dataclass(frozen=True)
class RelayDecision:
    """``refused``: why the announcement is refused (None: it is not); ``key``: the path of its first file."""

    refused: str | None
    key: str | None


def upstream_path(data: Any) -> str | None:
    """The key of an upstream announcement: the path of its first file (None: no file in it)."""
    entries = messaging.entries_with(data, "uri")
    return urlsplit(str(entries[0]["uri"])).path if entries else None


def relay_decision(data: dict, destination_fields: Any) -> RelayDecision:
    """Is an upstream announcement confined to the mirror's destination, and what is its key?

    ``destination_fields``: ``confine.template_fields(destination)``, the fields the
    mirror composes its destination from (it joins the uids to it).
    """
    try:
        confine.check_announcement(collect_uids(data), data, destination_fields)
    except confine.ConfinementError as exc:
        return RelayDecision(str(exc)[:400], None)
    return RelayDecision(None, upstream_path(data))


def source_news(alternatives: Sequence[messaging.Message] | None, request_address: Any) -> tuple[bool, bool]:
    """(known, added): is the file known already, and is this upstream a source of it not seen before?

    ``alternatives``: the upstream announcements kept for the file (None: the file is new).
    """
    known = alternatives is not None
    added = all(m.data.get("request_address") != request_address for m in alternatives or ())
    return known, added
