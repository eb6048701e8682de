"""WIS2 Notification Messages (WNM): build and encode ours, parse and check theirs.

Why one pure module: both directions of the bridge must agree on what a valid WNM is, and that is
what the peers check, not only the schema (wis2-notification-message-bundled.json, WNM 1.x):
pywis-pubsub reads ``length`` of the first canonical/update/deletion link without a default and
Sarracenia reads ``links[0]`` only, so we publish exactly one link, first, always with an integer
``length``; a message is at most 8192 bytes, inline ``content`` under 4096 characters.

Choices (also in docs/wis2.md):

* No data time gives ``"datetime": null`` as the WNM standard says (/req/core/temporal D); pubtime
  would claim a data time we do not know.  The schema and pywis-pubsub accept null.
* A geometry that is not valid WGS 84 lon/lat (out of range, not finite, an open ring, a box across
  the antimeridian) is published as ``null``: it only helps filtering, the file is still announced.
* Extra pytroll properties never take a WNM or Sarracenia field name (Sarracenia copies every
  property into its message, so ``size`` would replace the length it checks): RESERVED_PROPERTIES.

Problems are :class:`NotificationError` with a ``reason`` from :data:`NOTIFICATION_ERROR_REASONS`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import numbers
import re
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trollmoves.errors import ReasonedError

logger = logging.getLogger(__name__)

CORE_CONFORMANCE = "http://wis.wmo.int/spec/wnm/1/conf/core"
LEGACY_VERSION = "v04"
MAX_MESSAGE_BYTES = 8192
MAX_INLINE_CHARS = 4096
INTEGRITY_METHODS = ("sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512")  # the schema's enum
DEFAULT_INTEGRITY_METHOD = "sha512"
LINK_RELS = ("canonical", "update", "deletion")
_REL_URIS = {"http://def.wmo.int/def/rel/wnm/-/update": "update",
             "http://def.wmo.int/def/rel/wnm/-/deletion": "deletion"}
"""The long spellings WNM 1.0 gives for update and deletion, accepted when parsing."""
HREF_SCHEMES = ("http", "https", "ftp", "sftp")
DEFAULT_PROPERTIES = ("platform_name", "sensor", "orbit_number", "format", "data_processing_level", "product")
MAX_CONTENT_BYTES = 1 << 20
"""Bound on inline content once decoded (gzip could otherwise inflate a small message to gigabytes)."""

WNM_PROPERTIES = frozenset({"pubtime", "data_id", "metadata_id", "producer", "global-cache", "datetime",
                            "start_datetime", "end_datetime", "cache", "integrity", "content"})
SARRACENIA_FIELDS = frozenset({
    "size", "relPath", "baseUrl", "retrievePath", "retPath", "identity", "blocks", "parts", "pubTime", "mtime",
    "atime", "mode", "fileOp", "source", "topic", "subtopic", "exchange", "report", "rename", "from_cluster",
    "to_clusters", "contentType", "links", "geometry", "id", "sum", "local_offset"})
RESERVED_PROPERTIES = WNM_PROPERTIES | SARRACENIA_FIELDS
"""Names an extra property may not have (nor any name starting with ``_``, ``new_`` or ``post_``)."""
_RESERVED_PREFIXES = ("_", "new_", "post_")

NOTIFICATION_ERROR_REASONS = frozenset({"json", "schema", "fields", "conformance", "link", "href",
                                        "integrity", "size", "time"})

_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64, "sha3_256": 32, "sha3_384": 48, "sha3_512": 64}
_METHOD = re.compile(r"sha-?(?:2-?)?(256|384|512)|sha-?3-?(256|384|512)")
_TIME = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})[Tt ](\d{2}):?(\d{2}):?(\d{2})(?:[.,](\d+))?"
                   r"(?:[Zz]|([+-])(\d{2}):?(\d{2}))?")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


class NotificationError(ReasonedError, ValueError):
    """A WNM cannot be built, encoded or accepted; ``reason`` is in :data:`NOTIFICATION_ERROR_REASONS`."""

    REASONS = NOTIFICATION_ERROR_REASONS


# ---- Integrity, times, hrefs, data_id -------------------------------------------------------


def normalise_integrity_method(name: Any) -> str:
    """The hashlib name of a WNM integrity method in any usual spelling, else NotificationError("integrity").

    ``sha-512``, ``SHA512`` -> ``sha512``; ``sha3-256``, ``sha3_256`` -> ``sha3_256``; md5 and the rest
    are refused: WNM allows the six SHA-2/3 names only."""
    match = _METHOD.fullmatch(name.strip().lower().replace("_", "-")) if isinstance(name, str) else None
    if match is None:
        raise NotificationError("integrity", f"integrity method {name!r}: expected one of "
                                             f"{', '.join(INTEGRITY_METHODS)}")
    return f"sha{match.group(1)}" if match.group(1) else f"sha3_{match.group(2)}"


def wnm_integrity_method(hashlib_name: str) -> str:
    """The WNM spelling to publish (``sha3_256`` -> ``sha3-256``)."""
    return normalise_integrity_method(hashlib_name).replace("_", "-")


def _digest(method: str, value: Any) -> bytes:
    """The digest bytes of a base64 ``value`` for hashlib ``method``; refuses hex and wrong lengths."""
    try:
        digest = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != _DIGEST_SIZES[method]:
        raise NotificationError("integrity", f"integrity value for {method} must be the base64 of a "
                                             f"{_DIGEST_SIZES[method]}-byte digest, got {str(value)[:100]!r}")
    return digest


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` (naive = UTC): ``2024-05-01T10:00:00Z``, microseconds when not 0."""
    value = parse_time(value)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds" if value.microsecond else "seconds") + "Z"


def parse_time(value: Any) -> datetime:
    """Aware UTC datetime from a datetime (naive = UTC) or RFC 3339 text (lenient: nanoseconds, no offset = UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    match = _TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {str(value)[:64]!r}")
    *fields, fraction, sign, off_h, off_m = match.groups()
    delta = timedelta(hours=int(off_h), minutes=int(off_m)) if sign else timedelta(0)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    zone = timezone(-delta if sign == "-" else delta)
    return datetime(*map(int, fields), micro, zone).astimezone(timezone.utc)


def check_href(href: Any, *, allow_userinfo: bool = True) -> str:
    """``href`` if it is an http/https/ftp/sftp URL with a host; NotificationError(reason="href") if not."""
    try:
        parts = urlsplit(href) if isinstance(href, str) and not any(c.isspace() or ord(c) < 32 for c in href) else None
        host = parts and parts.hostname
    except ValueError:
        parts = host = None
    if not parts or parts.scheme.lower() not in HREF_SCHEMES or not host:
        raise NotificationError("href", f"link href {str(href)[:200]!r} must be an {'/'.join(HREF_SCHEMES)} URL "
                                        "with a host and without spaces")
    if not allow_userinfo and "@" in parts.netloc:
        raise NotificationError("href", f"link href for {parts.hostname} must not carry a user name or password "
                                        "(it would be published to the world)")
    return href


def check_data_id(data_id: Any) -> str:
    """``data_id`` if it is a safe relative path (no leading /, no empty, . or .. level, no whitespace)."""
    if (not isinstance(data_id, str) or not data_id or data_id.startswith("/") or "\\" in data_id
            or any(c.isspace() or ord(c) < 32 for c in data_id)
            or any(level in ("", ".", "..") for level in data_id.split("/"))):
        raise NotificationError("fields", f"data_id {str(data_id)[:200]!r} must be a relative path without "
                                          "whitespace, empty, '.' or '..' levels")
    return data_id


# ---- Building ---------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _position(value: Any) -> list[float] | None:
    """[lon, lat(, height)] as floats when lon is in [-180, 180] and lat in [-90, 90], else None."""
    position = [_number(item) for item in value] if isinstance(value, (list, tuple)) and len(value) in (2, 3) else []
    ok = position and None not in position and -180 <= position[0] <= 180 and -90 <= position[1] <= 90
    return position if ok else None


def _ring(ring: Any) -> list[list[float]] | None:
    positions = [_position(item) for item in ring] if isinstance(ring, (list, tuple)) and len(ring) >= 4 else [None]
    return None if None in positions or positions[0] != positions[-1] else positions


def _bbox_geometry(bbox: Any) -> dict[str, Any] | None:
    """A counter-clockwise closed Polygon from [west, south, east, north] (a Point when it is one)."""
    values = [_number(item) for item in bbox] if isinstance(bbox, (list, tuple)) and len(bbox) == 4 else [None]
    if None in values or not (_position(values[:2]) and _position(values[2:])):
        return None
    west, south, east, north = values
    if west == east and south == north:
        return {"type": "Point", "coordinates": [west, south]}
    if west >= east or south >= north:
        return None  # a line, or across the antimeridian: no simple WGS 84 polygon
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def geometry_from(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """GeoJSON from ``geometry`` (Point/Polygon), else ``lon``+``lat``, else ``bbox``/``area_extent_ll``; or None."""
    geometry = metadata.get("geometry")
    if isinstance(geometry, Mapping):
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        if kind == "Point":
            point = _position(coordinates)
            return None if point is None else {"type": "Point", "coordinates": point}
        rings = [_ring(ring) for ring in coordinates] if isinstance(coordinates, (list, tuple)) else []
        return {"type": "Polygon", "coordinates": rings} if kind == "Polygon" and rings and None not in rings else None
    if metadata.get("lon") is not None and metadata.get("lat") is not None:
        point = _position([metadata["lon"], metadata["lat"]])
        return None if point is None else {"type": "Point", "coordinates": point}
    bbox = next((metadata[key] for key in ("bbox", "area_extent_ll") if metadata.get(key) is not None), None)
    return None if bbox is None else _bbox_geometry(bbox)


_SKIP = object()


def _jsonable(value: Any, nested: bool = False) -> Any:
    """A JSON scalar (datetimes as RFC 3339) or a list of them, else _SKIP (mappings, odd objects)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _SKIP if _number(value) is None else float(value)
    if isinstance(value, (list, tuple, set, frozenset)) and not nested:
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        converted = [_jsonable(item, True) for item in items]
        return _SKIP if _SKIP in converted or None in converted else converted
    return _SKIP


def check_property_names(names: Sequence[str]) -> None:
    """NotificationError(reason="fields") for an extra property name that WNM or Sarracenia already uses."""
    for name in names:
        if not isinstance(name, str) or not name or name in RESERVED_PROPERTIES or name.startswith(_RESERVED_PREFIXES):
            raise NotificationError("fields", f"extra property {name!r} is a WNM or Sarracenia field name "
                                              "(or empty) and cannot be published")


def _extra_properties(metadata: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    check_property_names(names)
    extra = {}
    for name in names:
        value = _jsonable(metadata.get(name))
        if value is _SKIP:
            logger.debug("property %s: %s is not a JSON scalar or list of them, left out",
                         name, type(metadata.get(name)).__name__)
        elif value is not None:
            extra[name] = value
    return extra


def _temporal(metadata: Mapping[str, Any]) -> dict[str, Any]:
    try:
        start, end = (None if metadata.get(key) is None else parse_time(metadata[key])
                      for key in ("start_time", "end_time"))
    except ValueError as err:
        raise NotificationError("time", f"start_time/end_time: {err}") from None
    if start is not None and end is not None and end < start:
        raise NotificationError("time", f"end_time {format_time(end)} is before start_time {format_time(start)}")
    if start is not None and end is not None and start != end:
        return {"start_datetime": format_time(start), "end_datetime": format_time(end)}
    instant = start if start is not None else end
    return {"datetime": None if instant is None else format_time(instant)}


def build(*, data_id: str, href: str, length: int, media_type: str, integrity: tuple[str, str],
          rel: str = "canonical", metadata: Mapping[str, Any] | None = None,
          properties: Sequence[str] = DEFAULT_PROPERTIES, content: bytes | None = None,
          now: datetime | None = None, notification_id: str | None = None,
          metadata_id: str | None = None) -> dict[str, Any]:
    """One WNM as a dict for :func:`encode`; NotificationError when an argument breaks a rule.

    ``integrity`` is ``(method, base64 value)``; ``content`` (the whole file, matching ``length`` and
    the digest) is inlined when its base64 is under 4096 characters.  ``metadata`` gives
    ``start_time``/``end_time``, the geometry (:func:`geometry_from`) and the extra ``properties``."""
    metadata = metadata or {}
    check_data_id(data_id)
    check_href(href, allow_userinfo=False)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise NotificationError("fields", f"link length must be a non-negative integer, got {length!r}")
    if not isinstance(media_type, str) or not media_type or any(c.isspace() for c in media_type):
        raise NotificationError("fields", f"link type must be a media type, got {media_type!r}")
    rel = _REL_URIS.get(rel, rel)
    if rel not in LINK_RELS:
        raise NotificationError("link", f"link rel must be one of {', '.join(LINK_RELS)}, got {rel!r}")
    if not isinstance(integrity, (tuple, list)) or len(integrity) != 2:
        raise NotificationError("integrity", "integrity must be (method, base64 value)")
    method = normalise_integrity_method(integrity[0])
    digest = _digest(method, integrity[1])
    try:
        notification_id = str(uuid.uuid4() if notification_id is None else uuid.UUID(str(notification_id)))
    except ValueError:
        raise NotificationError("fields", f"notification id must be a UUID, got {notification_id!r}") from None
    props: dict[str, Any] = {"pubtime": format_time(now or datetime.now(timezone.utc)), "data_id": data_id}
    if metadata_id is not None:
        props["metadata_id"] = str(metadata_id)
    props.update(_temporal(metadata))
    props["integrity"] = {"method": method.replace("_", "-"), "value": base64.b64encode(digest).decode("ascii")}
    if content is not None:
        content = bytes(content)
        if len(content) != length:
            raise NotificationError("fields", f"inline content is {len(content)} bytes but length says {length}")
        if hashlib.new(method, content).digest() != digest:
            raise NotificationError("integrity", f"inline content of {data_id} does not match its {method} digest")
        value = base64.b64encode(content).decode("ascii")
        if len(value) < MAX_INLINE_CHARS:
            props["content"] = {"encoding": "base64", "value": value, "size": len(content)}
    props.update(_extra_properties(metadata, properties))
    link = {"href": href, "rel": rel, "type": media_type, "length": length}
    return {"id": notification_id, "conformsTo": [CORE_CONFORMANCE], "type": "Feature",
            "geometry": geometry_from(metadata), "properties": props, "links": [link]}


def encode(notification: Mapping[str, Any], *, drop_content_if_large: bool = False) -> bytes:
    """Compact UTF-8 JSON; NotificationError(reason="size") above :data:`MAX_MESSAGE_BYTES`, unless
    ``drop_content_if_large`` and leaving out ``properties.content`` makes it fit (the dict is not modified)."""
    try:
        data = json.dumps(notification, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise NotificationError("fields", f"notification cannot be encoded as JSON: {err}") from None
    props = notification.get("properties") if isinstance(notification.get("properties"), Mapping) else {}
    if len(data) > MAX_MESSAGE_BYTES and drop_content_if_large and "content" in props:
        return encode(dict(notification, properties={k: v for k, v in props.items() if k != "content"}))
    if len(data) > MAX_MESSAGE_BYTES:
        raise NotificationError("size", f"notification for {props.get('data_id')!r} is {len(data)} bytes; WIS2 "
                                        f"allows at most {MAX_MESSAGE_BYTES}")
    return data


# ---- Parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """A received WNM, checked: what the subscriber needs to dedup, download, verify and announce."""

    id: str
    data_id: str
    pubtime: datetime
    rel: str
    """``canonical``, ``update`` or ``deletion`` (the long WNM 1.0 URIs are shortened)."""
    href: str
    media_type: str | None
    length: int | None
    integrity_method: str | None
    """A hashlib name (``sha512``, ``sha3_256``), or None when the message has no integrity."""
    integrity_digest: bytes | None
    content: bytes | None = field(repr=False)
    """Inline content, decoded and checked against its ``size``; not yet against the digest."""
    start_time: datetime | None
    end_time: datetime | None
    properties: dict[str, Any] = field(repr=False)
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def metadata(self) -> dict[str, Any]:
        """The properties that are not WNM's own (``platform_name``, ``sensor``, ... from pytroll peers)."""
        return {key: value for key, value in self.properties.items() if key not in WNM_PROPERTIES}


def _first_link(links: Any) -> tuple[dict[str, Any], str]:
    """The first canonical/update/deletion link wherever it is (pywis-pubsub picks the same one)."""
    for link in links if isinstance(links, list) else []:
        rel = link.get("rel") if isinstance(link, dict) else None
        if isinstance(rel, str) and _REL_URIS.get(rel, rel) in LINK_RELS:
            return link, _REL_URIS.get(rel, rel)
    raise NotificationError("link", "no link with rel canonical, update or deletion")


def _content(content: Any) -> bytes | None:
    """Inline content decoded (utf-8, base64, or base64 of gzip), checked against its ``size``."""
    if content is None:
        return None
    encoding, value, size = (content.get(key) for key in ("encoding", "value", "size")) \
        if isinstance(content, dict) else (None, None, None)
    if encoding not in ("utf-8", "base64", "gzip") or not isinstance(value, str):
        raise NotificationError("fields", f"properties.content needs a string value and encoding utf-8, base64 or "
                                          f"gzip, got {str(encoding)[:40]!r}")
    try:
        data = encoded = value.encode("utf-8") if encoding == "utf-8" else base64.b64decode(value, validate=True)
        if encoding == "gzip":
            inflater = zlib.decompressobj(wbits=31)
            data = inflater.decompress(encoded, MAX_CONTENT_BYTES + 1)
            if len(data) > MAX_CONTENT_BYTES or not inflater.eof:
                raise ValueError(f"gzip content is truncated or larger than {MAX_CONTENT_BYTES} bytes")
    except (ValueError, binascii.Error, zlib.error) as err:
        raise NotificationError("integrity", f"properties.content cannot be decoded: {err}") from None
    if size is not None and size not in (len(data), len(encoded)):
        raise NotificationError("integrity", f"properties.content has {len(data)} bytes but its size says {size}")
    return data


def _times(props: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """(start, end) from ``start_datetime``/``end_datetime``, else (``datetime``, None)."""
    try:
        if props.get("start_datetime") is not None or props.get("end_datetime") is not None:
            return parse_time(props.get("start_datetime")), parse_time(props.get("end_datetime"))
        return (None if props.get("datetime") is None else parse_time(props["datetime"])), None
    except ValueError as err:
        raise NotificationError("time", f"data time: {err}") from None


def parse(payload: bytes | str, *, validator: Callable[[dict[str, Any]], None] | None = None) -> Incoming:
    """A received WNM as :class:`Incoming`, else NotificationError; ``validator`` runs first, once decoded."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as err:
        raise NotificationError("json", f"message is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise NotificationError("json", f"message is JSON {type(doc).__name__}, not an object")
    if validator is not None:
        validator(doc)
    props = doc.get("properties")
    if not isinstance(doc.get("id"), str) or not doc["id"] or not isinstance(props, dict):
        raise NotificationError("fields", "message has no string id or no properties object")
    if not isinstance(props.get("data_id"), str) or not props["data_id"] or props.get("pubtime") is None:
        raise NotificationError("fields", f"message {doc['id']}: properties.data_id or pubtime missing")
    try:
        pubtime = parse_time(props["pubtime"])
    except ValueError as err:
        raise NotificationError("time", f"message {doc['id']}: pubtime: {err}") from None
    conforms = doc.get("conformsTo")
    if not (isinstance(conforms, list) and CORE_CONFORMANCE in conforms) and doc.get("version") != LEGACY_VERSION:
        raise NotificationError("conformance", f"message {doc['id']}: neither conformsTo {CORE_CONFORMANCE} "
                                               f"nor version {LEGACY_VERSION}")
    link, rel = _first_link(doc.get("links"))
    check_href(link.get("href"))
    length = link.get("length")
    length = int(length) if isinstance(length, float) and length.is_integer() else length  # JSON Schema integer
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
        raise NotificationError("fields", f"message {doc['id']}: link length must be a non-negative integer")
    if link.get("type") is not None and not isinstance(link["type"], str):
        raise NotificationError("fields", f"message {doc['id']}: link type must be a string")
    method = digest = None
    if props.get("integrity") is not None:
        if not isinstance(props["integrity"], dict):
            raise NotificationError("integrity", f"message {doc['id']}: properties.integrity is not an object")
        method = normalise_integrity_method(props["integrity"].get("method"))
        digest = _digest(method, props["integrity"].get("value"))
    start, end = _times(props)
    return Incoming(id=doc["id"], data_id=props["data_id"], pubtime=pubtime, rel=rel, href=link["href"],
                    media_type=link.get("type"), length=length, integrity_method=method, integrity_digest=digest,
                    content=_content(props.get("content")), start_time=start, end_time=end,
                    properties=dict(props), raw=doc)


# ---- Schema validation ------------------------------------------------------------------------


def load_validator(schema_path: str | Path) -> Callable[[dict[str, Any]], None]:
    """A function raising NotificationError("schema") for a WNM the schema at ``schema_path`` refuses.

    No network: ``$ref`` resolves inside the bundled file only.  Formats (uuid, date-time) are asserted."""
    try:
        import jsonschema
        import referencing
        import referencing.exceptions
    except ImportError:
        raise NotificationError("schema", "WNM schema validation needs the 'jsonschema' package, which is not "
                                          "installed: pip install trollmoves[wis2]") from None
    path = Path(schema_path)
    try:
        schema = json.loads(path.read_bytes())
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
    except (OSError, ValueError, AttributeError, jsonschema.SchemaError) as err:
        raise NotificationError("schema", f"WNM schema {path}: not a readable JSON schema ({err})") from None

    def no_retrieval(uri: str) -> Any:
        raise referencing.exceptions.NoSuchResource(ref=uri)

    def is_rfc3339(value: Any) -> bool:
        if isinstance(value, str) and not (_RFC3339.fullmatch(value) and parse_time(value)):
            raise ValueError(f"{value!r} is not an RFC 3339 date-time")
        return True  # formats apply to strings only

    checker = jsonschema.FormatChecker()
    if "date-time" not in checker.checkers:  # without rfc3339-validator installed
        checker.checks("date-time", raises=ValueError)(is_rfc3339)
    validator = cls(schema, registry=referencing.Registry(retrieve=no_retrieval), format_checker=checker)

    def validate(document: dict[str, Any]) -> None:
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        except referencing.exceptions.Unresolvable as err:
            raise NotificationError("schema", f"{path.name}: unresolvable $ref {err}") from None
        if error is not None and error.validator in ("oneOf", "anyOf"):  # say why, not the whole document
            detail = "; ".join(sorted({sub.message for sub in error.context})) or "matches more than one choice"
            raise NotificationError("schema", f"{path.name}: {error.json_path}: {error.validator}: {detail[:300]}")
        if error is not None:
            raise NotificationError("schema", f"{path.name}: {error.json_path}: {error.message[:300]}")

    return validate
