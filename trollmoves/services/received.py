"""Files a server has pushed here: checked against their announcement, described, unpacked.

Once a server answers a client's ``push`` request, the client checks each delivered
file it can see against its announced checksum (``verify_arrival``), and composes
the message it publishes about them as trollmoves 0.19 does (``final_message``): the
reply's destination, checked to stay within the client's own (``reply_destination``),
each file's URI there, its archives unpacked (``unpack_entries``), its metadata
replaced per config (``replace_metadata``). Kept apart from the chain that follows
the servers: this is what happens to a file after it arrived, not how it was asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from trollmoves import confine, messaging
from trollmoves.announcements import ANNOUNCEMENT_TYPES, collect_uids
from trollmoves.destinations import compose_destination, is_local_host, local_directory, make_uri
from trollmoves.matching import Composer
from trollmoves.movers.checksum import file_checksum
from trollmoves.redact import strip_password
from trollmoves.unpack import UnpackError, unpack, wants_unpacking

logger = logging.getLogger(__name__)


def verify_arrival(data: dict, destination: str, ftp_root: str, method: str) -> str | None:
    """Check each delivered file on this host against its announced checksum: the mismatch, or None.

    The client's ``checksum`` key (default xxh3_128; ``none`` switches verification off) names
    the method it verifies with: an announcement carrying a checksum of that method (our
    servers' default) is verified on arrival when the delivered file is visible here: a
    ``file://`` destination, or FTP to a local name with ``ftp_root`` set (the local directory the
    FTP server serves, as 0.19 uses it for unpacking). SFTP/SCP paths may be chrooted, so they are
    not read here. A corrupt copy is removed so that it is never taken for the file;
    announcements from 0.19 servers carry no checksum.
    """
    if not method or method == "none":
        return None
    parts = urlsplit(destination)
    if parts.scheme == "ftp":
        if ftp_root in ("", "/") or not is_local_host(parts.hostname):
            return None
    elif parts.scheme not in ("", "file"):
        return None
    root = ftp_root if parts.scheme == "ftp" else "/"
    for entry in messaging.entries_with(data, "uid"):
        announced = entry.get("checksum")
        if not isinstance(announced, dict) or announced.get("method") != method:
            continue
        path = os.path.join(root, os.path.join(parts.path, str(entry["uid"])).lstrip("/"))
        try:
            found = file_checksum(path, method).value
        except FileNotFoundError:
            # already taken by a consumer (moved or deleted as soon as it appeared): it arrived, and
            # requesting it again would only fail against a server that deleted its source
            logger.debug("%s was taken before it could be verified", path)
            continue
        except OSError as exc:
            return f"cannot verify {path}: {exc.strerror or exc}"
        if found != announced.get("value"):
            try:
                os.remove(path)
            except OSError:
                pass
            return f"{path} arrived with {method} {found}, announced {announced.get('value')} (copy removed)"
    return None


def with_backup_targets(data: dict, backup_targets: Sequence[str]) -> dict:
    """A copy of announcement data with the chain's ``backup_targets``: 0.19 adds them to the message itself,
    so its published ``push``, ``ack`` and final messages all carry them (and the server gets them)."""
    data = dict(data)
    if backup_targets:
        data["backup_targets"] = list(backup_targets)
    return data


def final_message(chain: Any, composer: Composer, source: messaging.Message,
                  reply: messaging.Message) -> tuple[str, dict | None]:
    """The final message (type, data) of received files: URIs at the destination, ``origin`` = the server.

    Unpacked if the chain's ``compression`` says so; an archive that cannot be unpacked is
    logged and leaves no final message (None). Raises ``confine.ConfinementError`` when the
    reply's destination or a uid leaves the chain's destination (``reply_destination``).
    """
    data = dict(reply.data) if isinstance(reply.data, dict) else dict(source.data)
    destination = reply_destination(composer, source.data, data)
    origin = data.pop("request_address", None) or source.data.get("request_address")
    if not chain.backup_targets:
        data.pop("backup_targets", None)
    atype = reply.type if reply.type in ANNOUNCEMENT_TYPES else source.type
    entries = messaging.walk_entries(data, "uid", ("dataset", "collection"))  # rewritten in place
    for entry in entries:
        entry["uri"] = make_uri(destination, str(entry["uid"]))
    if chain.compression:
        try:
            atype = unpack_entries(data, entries, destination, atype, chain)
        except (UnpackError, OSError) as exc:
            logger.error("Chain %s: cannot unpack %s: %s", chain.name, ", ".join(collect_uids(data)), exc)
            return atype, None
    data["origin"] = origin
    replace_metadata(data, dict(chain.replace_mda))
    return atype, data


def reply_destination(composer: Composer, announced: dict, reply_data: dict) -> str:
    """The reply's destination (without password), popped from ``reply_data``, once it and every uid stay in ours.

    A provider's reply decides where the client looks for, unpacks and deletes files; a rogue
    one could name ``/elsewhere/victim.tar``, ``../x.tar`` or another destination
    (``confine.ConfinementError``).
    """
    own = strip_password(compose_destination(composer, announced, None)[1])
    destination = reply_data.pop("destination", None) or own
    if not isinstance(destination, str):
        raise confine.ConfinementError(f"reply destination {str(destination)[:200]!r} is not a URL")
    destination = strip_password(destination)
    no_lookup = frozenset()  # only the paths are compared: no host-name look-up per file
    if not confine.within_path(
            confine.location(destination, local=no_lookup).path, confine.location(own, local=no_lookup).path):
        raise confine.ConfinementError(f"reply destination {str(destination)[:200]!r} leaves {own}")
    for entry in messaging.entries_with(reply_data, "uid"):
        confine.check_relative(str(entry["uid"]), "uid")
    return destination


def unpack_entries(data: dict, entries: list[dict], destination: str, atype: str, chain: Any) -> str:
    """Unpack each entry's archive at the destination as the chain's ``compression`` says; the message type.

    An archive unpacking to one file becomes that file; to several, a ``dataset`` of them
    (a top-level ``file`` message then becomes a ``dataset`` message). Raises
    ``UnpackError`` or ``OSError`` (a bomb, an escape, a broken archive).
    """
    directory = local_directory(destination, chain.ftp_root) or ""
    for entry in entries:
        uid = str(entry["uid"])
        if not wants_unpacking(uid, chain.compression):
            continue
        results = unpack(confine.confined_join(directory, uid, "uid"), chain.compression,
                         xritdecompressor=chain.xritdecompressor, block_size=chain.block_size,
                         delete=chain.delete, max_ratio=chain.unpack_max_ratio,
                         max_size=chain.unpack_max_size)
        if len(results) == 1:
            entry["uid"] = os.path.basename(results[0])
            entry["uri"] = make_uri(destination, os.path.relpath(results[0], directory))
        else:
            names = [os.path.relpath(r, directory) for r in results]
            entry.pop("uid", None)
            entry.pop("uri", None)
            entry["dataset"] = [{"uid": n, "uri": make_uri(destination, n)} for n in names]
            if entry is data:
                atype = "dataset" if atype == "file" else atype
    return atype


def replace_metadata(data: dict, replacements: dict[str, str]) -> None:
    """Original ``replace_mda``: config keys override message values, with ``from:to|…`` maps."""
    for key_name, value in replacements.items():
        if key_name not in data:
            continue
        if ":" in value:
            mapping = dict(item.split(":", 1) for item in value.split("|") if ":" in item)
            if str(data[key_name]) in mapping:
                data[key_name] = mapping[str(data[key_name])]
        else:
            data[key_name] = value
