"""WIS2 Notification Messages: build, encode, parse, and the in-process schema validator's mechanics.

Pure logic: unit tests plus Hypothesis round trips (build -> encode -> parse gives back what was
put in).  What pywis-pubsub and the official schema think of our messages is checked in
test_external_validation.py.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trollmoves.errors import TrollmovesError
from trollmoves.wis2 import notification as wnm
from trollmoves.wis2.notification import NotificationError

NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
DATA = b"some satellite bytes\n" * 3
HREF = "https://data.example.org/out/avhrr_20240501_1000.nc"
DATA_ID = "wis2/se-smhi/data/core/weather/space-based-observations/metop-b/avhrr-3/avhrr_20240501_1000.nc"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha512(data: bytes = DATA) -> tuple[str, str]:
    return "sha512", b64(hashlib.sha512(data).digest())


def make(**overrides):
    """A valid notification for DATA, with any build() argument overridden."""
    arguments = dict(data_id=DATA_ID, href=HREF, length=len(DATA), media_type="application/x-netcdf",
                     integrity=sha512(), now=NOW)
    arguments.update(overrides)
    return wnm.build(**arguments)


def reason_of(call, *args, **kwargs) -> str:
    with pytest.raises(NotificationError) as info:
        call(*args, **kwargs)
    assert str(info.value)
    return info.value.reason


def payload(message) -> bytes:
    return json.dumps(message).encode()


# --------------------------------------------------------------------------------------------
# Building


def test_build_gives_the_wnm_core_shape():
    message = make(metadata={"start_time": datetime(2024, 5, 1, 10, 0)})
    assert list(message) == ["id", "conformsTo", "type", "geometry", "properties", "links"]
    assert uuid.UUID(message["id"]).version == 4
    assert message["conformsTo"] == [wnm.CORE_CONFORMANCE] and "version" not in message
    assert message["type"] == "Feature" and message["geometry"] is None
    props = message["properties"]
    assert props["pubtime"] == "2024-05-01T12:00:00.123456Z"
    assert props["data_id"] == DATA_ID and props["datetime"] == "2024-05-01T10:00:00Z"
    assert props["integrity"] == {"method": "sha512", "value": sha512()[1]}
    assert message["links"] == [{"href": HREF, "rel": "canonical", "type": "application/x-netcdf",
                                 "length": len(DATA)}]


def test_each_notification_gets_a_fresh_id_unless_given():
    assert make()["id"] != make()["id"]
    given_id = str(uuid.uuid4())
    assert make(notification_id=given_id)["id"] == given_id
    assert reason_of(make, notification_id="not-a-uuid") == "fields"


def test_pubtime_defaults_to_now_in_utc_with_z():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    pubtime = wnm.parse_time(make(now=None)["properties"]["pubtime"])
    assert before <= pubtime <= datetime.now(timezone.utc)
    assert make(now=datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))["properties"]["pubtime"] \
        == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize("rel", ["canonical", "update", "deletion"])
def test_the_one_link_carries_the_rel(rel):
    assert make(rel=rel)["links"][0]["rel"] == rel


def test_long_rel_uris_are_published_short():
    assert make(rel="http://def.wmo.int/def/rel/wnm/-/update")["links"][0]["rel"] == "update"


def test_metadata_id_is_published_when_given():
    assert make(metadata_id="urn:wmo:md:se-smhi:avhrr")["properties"]["metadata_id"] == "urn:wmo:md:se-smhi:avhrr"
    assert "metadata_id" not in make()["properties"]


# Times


@pytest.mark.parametrize("metadata, expected", [
    ({}, {"datetime": None}),
    ({"start_time": datetime(2024, 5, 1, 10)}, {"datetime": "2024-05-01T10:00:00Z"}),
    ({"end_time": datetime(2024, 5, 1, 10)}, {"datetime": "2024-05-01T10:00:00Z"}),
    ({"start_time": datetime(2024, 5, 1, 10), "end_time": datetime(2024, 5, 1, 10)},
     {"datetime": "2024-05-01T10:00:00Z"}),
    ({"start_time": datetime(2024, 5, 1, 10), "end_time": datetime(2024, 5, 1, 10, 5, 0, 500)},
     {"start_datetime": "2024-05-01T10:00:00Z", "end_datetime": "2024-05-01T10:05:00.000500Z"}),
    ({"start_time": datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))), "end_time": None},
     {"datetime": "2024-05-01T10:00:00Z"}),
    ({"start_time": "2024-05-01T10:00:00", "end_time": "2024-05-01T12:05:00+02:00"},
     {"start_datetime": "2024-05-01T10:00:00Z", "end_datetime": "2024-05-01T10:05:00Z"}),
])
def test_data_time_is_an_instant_or_a_range_never_both(metadata, expected):
    props = make(metadata=metadata)["properties"]
    assert {key: props[key] for key in ("datetime", "start_datetime", "end_datetime") if key in props} == expected


@pytest.mark.parametrize("metadata", [
    {"start_time": datetime(2024, 5, 1, 10), "end_time": datetime(2024, 5, 1, 9)},
    {"start_time": "yesterday"}, {"end_time": 12}, {"start_time": "2024-13-01T00:00:00Z"},
])
def test_bad_data_times_are_refused(metadata):
    assert reason_of(make, metadata=metadata) == "time"


# Geometry


def ring_area(ring) -> float:
    """Shoelace: positive for a counter-clockwise ring."""
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:])) / 2


@pytest.mark.parametrize("key", ["bbox", "area_extent_ll"])
def test_a_lon_lat_box_becomes_a_closed_counter_clockwise_polygon(key):
    geometry = make(metadata={key: [-10, 50, 30.5, 72]})["geometry"]
    assert geometry["type"] == "Polygon"
    (ring,) = geometry["coordinates"]
    assert len(ring) == 5 and ring[0] == ring[-1] and ring_area(ring) > 0
    assert {tuple(position) for position in ring} == {(-10, 50), (30.5, 50), (30.5, 72), (-10, 72)}


@pytest.mark.parametrize("metadata, geometry", [
    ({"lon": 18.0, "lat": 59.3}, {"type": "Point", "coordinates": [18.0, 59.3]}),
    ({"lon": 18, "lat": -90}, {"type": "Point", "coordinates": [18.0, -90.0]}),
    ({"bbox": [5, 5, 5, 5]}, {"type": "Point", "coordinates": [5.0, 5.0]}),
    ({"geometry": {"type": "Point", "coordinates": [1, 2, 3]}}, {"type": "Point", "coordinates": [1.0, 2.0, 3.0]}),
    ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},
     {"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]}),
])
def test_geometries_from_metadata(metadata, geometry):
    assert make(metadata=metadata)["geometry"] == geometry


@pytest.mark.parametrize("metadata", [
    {"lon": 200, "lat": 10}, {"lon": 10, "lat": -91}, {"lon": float("nan"), "lat": 1}, {"lon": True, "lat": 1},
    {"lon": "18", "lat": "59"}, {"bbox": [170, -10, -170, 10]}, {"bbox": [0, 10, 5, 0]}, {"bbox": [0, 0, 0, 5]},
    {"bbox": [0, 0, 5]}, {"bbox": "0,0,5,5"}, {"area_extent_ll": [0, 0, 5, float("inf")]},
    {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}},
    {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}},
    {"geometry": {"type": "Polygon", "coordinates": []}},
    {"geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
    {"geometry": {"type": "Point", "coordinates": [1]}}, {"geometry": {"type": "Point"}},
])
def test_invalid_geometry_gives_null_not_a_crash(metadata):
    assert make(metadata=metadata)["geometry"] is None


# Inline content


def test_small_content_is_inlined_as_base64():
    props = make(content=DATA)["properties"]
    assert props["content"] == {"encoding": "base64", "value": b64(DATA), "size": len(DATA)}


@pytest.mark.parametrize("size, inlined", [(3069, True), (3070, False), (3072, False), (100_000, False)])
def test_content_is_inlined_only_under_4096_characters(size, inlined):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    message = make(content=data, length=size, integrity=sha512(data))
    assert ("content" in message["properties"]) is inlined
    if inlined:
        assert len(message["properties"]["content"]["value"]) < wnm.MAX_INLINE_CHARS


def test_content_must_be_the_file_the_link_describes():
    assert reason_of(make, content=DATA + b"x") == "fields"
    assert reason_of(make, content=DATA.upper()) == "integrity"


# Extra properties


def test_pytroll_metadata_becomes_extra_properties():
    metadata = {"platform_name": "Metop-B", "sensor": ["avhrr-3"], "orbit_number": 62000, "format": "NetCDF4",
                "product": {"nested": 1}, "data_processing_level": None, "uid": "not listed",
                "start_time": datetime(2024, 5, 1, 10)}
    props = make(metadata=metadata)["properties"]
    assert {key: props[key] for key in wnm.DEFAULT_PROPERTIES if key in props} == {
        "platform_name": "Metop-B", "sensor": ["avhrr-3"], "orbit_number": 62000, "format": "NetCDF4"}
    assert "uid" not in props


def test_extra_property_values_are_made_json_scalars():
    metadata = {"when": datetime(2024, 5, 1, 10, 30), "ratio": 0.5, "flag": True, "many": {"b", "a"},
                "nan": float("nan"), "deep": [[1]], "mixed": [1, None], "obj": object()}
    props = make(metadata=metadata, properties=list(metadata))["properties"]
    assert props["when"] == "2024-05-01T10:30:00Z" and props["ratio"] == 0.5 and props["flag"] is True
    assert props["many"] == ["a", "b"]
    assert not {"nan", "deep", "mixed", "obj"} & set(props)


@pytest.mark.parametrize("name", ["data_id", "pubtime", "integrity", "content", "size", "relPath", "mtime",
                                  "_private", "new_dir", "post_baseUrl", ""])
def test_extra_properties_never_take_a_wnm_or_sarracenia_name(name):
    assert reason_of(make, metadata={name: "x"}, properties=[name]) == "fields"
    assert reason_of(wnm.check_property_names, [name]) == "fields"


# Argument refusals


@pytest.mark.parametrize("data_id", ["", "/abs/x", "a/../b", "a//b", "a/b/", "./a", "a/./b", "a b", "a\tb",
                                     "a\\b", "a\nb", None, 5])
def test_data_id_must_be_a_safe_relative_path(data_id):
    assert reason_of(make, data_id=data_id) == "fields"


@pytest.mark.parametrize("href", ["file:///data/x.nc", "/data/x.nc", "gopher://h/x", "http://", "s3://bucket/key",
                                  "https://exa mple.org/x", "https://user:secret@data.example.org/x", None,
                                  "http://[::1/x"])
def test_href_must_be_a_downloadable_url_without_credentials(href):
    assert reason_of(make, href=href) == "href"


def test_a_refused_href_with_credentials_does_not_repeat_the_password():
    with pytest.raises(NotificationError) as info:
        make(href="https://user:secret@data.example.org/x")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("href", ["http://h/x", "ftp://h/x", "sftp://h/x", "HTTPS://H/x"])
def test_the_four_link_schemes_are_accepted(href):
    assert make(href=href)["links"][0]["href"] == href


@pytest.mark.parametrize("overrides", [{"length": -1}, {"length": True}, {"length": 1.5}, {"length": "12"},
                                       {"media_type": ""}, {"media_type": "text/plain; x"}, {"media_type": None}])
def test_length_and_media_type_are_checked(overrides):
    assert reason_of(make, **overrides) == "fields"


def test_rel_must_be_canonical_update_or_deletion():
    assert reason_of(make, rel="alternate") == "link"


@pytest.mark.parametrize("integrity", [
    ("md5", b64(hashlib.md5(DATA).digest())), ("sha1", b64(hashlib.sha1(DATA).digest())),
    ("sha512", hashlib.sha512(DATA).hexdigest()), ("sha256", b64(hashlib.sha512(DATA).digest())),
    ("sha512", "not base64!"), ("sha512", None), "sha512", ("sha512",),
])
def test_integrity_must_be_a_wnm_method_with_a_base64_digest(integrity):
    assert reason_of(make, integrity=integrity) == "integrity"


@pytest.mark.parametrize("method, hashlib_name, wnm_name", [
    ("sha512", "sha512", "sha512"), ("SHA512", "sha512", "sha512"), ("sha-512", "sha512", "sha512"),
    ("sha_512", "sha512", "sha512"), ("sha2-256", "sha256", "sha256"), ("sha384", "sha384", "sha384"),
    ("sha3-256", "sha3_256", "sha3-256"), ("sha3_384", "sha3_384", "sha3-384"), ("SHA3-512", "sha3_512", "sha3-512"),
    (" sha-3-512 ", "sha3_512", "sha3-512"),
])
def test_integrity_method_spellings(method, hashlib_name, wnm_name):
    assert wnm.normalise_integrity_method(method) == hashlib_name
    assert wnm.wnm_integrity_method(method) == wnm_name
    assert hashlib.new(hashlib_name)  # a name hashlib knows


@pytest.mark.parametrize("method", ["md5", "sha1", "sha224", "sha3-224", "xxh3_128", "", None, "sha512x", 512])
def test_other_integrity_methods_are_refused(method):
    assert reason_of(wnm.normalise_integrity_method, method) == "integrity"


def test_the_wnm_method_names_are_the_schemas():
    assert {wnm.wnm_integrity_method(name) for name in wnm.INTEGRITY_METHODS} == set(wnm.INTEGRITY_METHODS)


@pytest.mark.parametrize("name", wnm.INTEGRITY_METHODS)
def test_every_method_builds(name):
    digest = hashlib.new(wnm.normalise_integrity_method(name), DATA).digest()
    assert make(integrity=(name, b64(digest)))["properties"]["integrity"] == {"method": name, "value": b64(digest)}


# --------------------------------------------------------------------------------------------
# Encoding


def test_encode_is_compact_utf8_json():
    message = make(metadata={"platform_name": "Météo-1"}, properties=["platform_name"])
    data = wnm.encode(message)
    assert b'": ' not in data and b", " not in data
    assert "Météo-1".encode() in data
    assert json.loads(data) == message


def big_message(content: bool):
    data = bytes(3000)
    return make(content=data if content else None, length=len(data), integrity=sha512(data),
                metadata={"product": "x" * 5000}, properties=["product"])


def test_a_message_over_8192_bytes_is_refused():
    message = big_message(content=True)
    assert len(json.dumps(message)) > wnm.MAX_MESSAGE_BYTES
    assert reason_of(wnm.encode, message) == "size"


def test_dropping_inline_content_can_make_it_fit_without_touching_the_dict():
    message = big_message(content=True)
    data = wnm.encode(message, drop_content_if_large=True)
    assert len(data) <= wnm.MAX_MESSAGE_BYTES
    assert "content" not in json.loads(data)["properties"] and "content" in message["properties"]


def test_a_message_too_big_even_without_content_is_refused():
    message = make(metadata={"product": "x" * 9000}, properties=["product"])
    assert reason_of(wnm.encode, message, drop_content_if_large=True) == "size"


def test_exactly_8192_bytes_is_allowed():
    message = make(metadata={"product": ""}, properties=["product"])
    message["properties"]["product"] = "x" * (wnm.MAX_MESSAGE_BYTES - len(wnm.encode(message)))
    assert len(wnm.encode(message)) == wnm.MAX_MESSAGE_BYTES
    message["properties"]["product"] += "x"
    assert reason_of(wnm.encode, message) == "size"


def test_unencodable_values_are_refused():
    assert reason_of(wnm.encode, {"properties": {"x": float("nan")}}) == "fields"
    assert reason_of(wnm.encode, {"properties": {"x": object()}}) == "fields"


# --------------------------------------------------------------------------------------------
# Parsing


def test_parse_gives_back_what_build_put_in():
    message = make(rel="update", content=DATA, metadata={
        "start_time": datetime(2024, 5, 1, 10), "end_time": datetime(2024, 5, 1, 10, 5), "platform_name": "Metop-B"})
    incoming = wnm.parse(wnm.encode(message))
    assert (incoming.id, incoming.data_id, incoming.rel, incoming.href) == (message["id"], DATA_ID, "update", HREF)
    assert incoming.pubtime == NOW and incoming.media_type == "application/x-netcdf"
    assert incoming.length == len(DATA) and incoming.content == DATA
    assert incoming.integrity_method == "sha512" and incoming.integrity_digest == hashlib.sha512(DATA).digest()
    assert incoming.start_time == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert incoming.end_time == datetime(2024, 5, 1, 10, 5, tzinfo=timezone.utc)
    assert incoming.metadata == {"platform_name": "Metop-B"}
    assert incoming.properties["data_id"] == DATA_ID and incoming.raw == message
    assert "some satellite" not in repr(incoming)  # the file's bytes stay out of logs


def test_parse_accepts_str_payloads_and_a_single_datetime():
    incoming = wnm.parse(json.dumps(make(metadata={"start_time": datetime(2024, 5, 1, 10)})))
    assert incoming.start_time == datetime(2024, 5, 1, 10, tzinfo=timezone.utc) and incoming.end_time is None
    assert wnm.parse(payload(make())).start_time is None


def sarracenia_v04() -> dict:
    """What Sarracenia (post_format wis) and early WIS2 nodes send: version v04, no conformsTo."""
    return {"id": str(uuid.uuid4()), "version": "v04", "type": "Feature", "geometry": None,
            "properties": {"pubtime": "2024-05-01T12:00:00.123456789Z", "data_id": "x/y.bufr",
                           "datetime": "2024-05-01T12:00:00Z", "integrity": {"method": "sha-512",
                                                                             "value": sha512()[1]}},
            "links": [{"href": "http://h/y.bufr", "rel": "canonical", "length": len(DATA)}]}


def test_version_v04_messages_are_accepted():
    incoming = wnm.parse(payload(sarracenia_v04()))
    assert incoming.integrity_method == "sha512" and incoming.pubtime.microsecond == 123456
    assert incoming.media_type is None


def test_the_first_canonical_update_or_deletion_link_is_used_wherever_it_is():
    message = make()
    message["links"] = [{"href": "https://h/about", "rel": "alternate"}, {"href": "http://h/a", "rel": "item"},
                        {"href": "https://h/new", "rel": "http://def.wmo.int/def/rel/wnm/-/deletion"},
                        {"href": "https://h/other", "rel": "canonical"}]
    incoming = wnm.parse(payload(message))
    assert (incoming.rel, incoming.href, incoming.length) == ("deletion", "https://h/new", None)


def test_optional_fields_may_be_absent():
    message = make()
    del message["properties"]["integrity"], message["links"][0]["length"], message["links"][0]["type"]
    incoming = wnm.parse(payload(message))
    assert incoming.integrity_method is None and incoming.integrity_digest is None
    assert incoming.length is None and incoming.media_type is None and incoming.content is None


def test_an_integral_float_length_is_an_integer():
    message = make()
    message["links"][0]["length"] = 63.0
    assert wnm.parse(payload(message)).length == 63


@pytest.mark.parametrize("content, expected", [
    ({"encoding": "utf-8", "value": "héllo", "size": 6}, "héllo".encode()),
    ({"encoding": "base64", "value": b64(DATA)}, DATA),
    ({"encoding": "gzip", "value": b64(gzip.compress(DATA)), "size": len(DATA)}, DATA),
])
def test_inline_content_encodings(content, expected):
    message = make()
    message["properties"]["content"] = content
    assert wnm.parse(payload(message)).content == expected


def broken(change) -> bytes:
    message = make()
    change(message)
    return payload(message)


def set_in(path, value):
    def change(message):
        target = message
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def delete(*path):
    def change(message):
        target = message
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


PARSE_REFUSALS = [
    ("json", b"{not json"), ("json", b"[1, 2]"), ("json", b'"text"'), ("json", b"\xff\xfe\x00"), ("json", b""),
    ("json", b"[" * 100_000),
    ("fields", broken(delete("id"))), ("fields", broken(set_in(["id"], 5))), ("fields", broken(set_in(["id"], ""))),
    ("fields", broken(delete("properties"))), ("fields", broken(set_in(["properties"], []))),
    ("fields", broken(delete("properties", "data_id"))), ("fields", broken(delete("properties", "pubtime"))),
    ("fields", broken(set_in(["links", 0, "length"], -1))), ("fields", broken(set_in(["links", 0, "length"], "12"))),
    ("fields", broken(set_in(["links", 0, "length"], True))), ("fields", broken(set_in(["links", 0, "type"], 5))),
    ("fields", broken(set_in(["properties", "content"], {"encoding": "zip", "value": "x"}))),
    ("fields", broken(set_in(["properties", "content"], "inline"))),
    ("time", broken(set_in(["properties", "pubtime"], "yesterday"))),
    ("time", broken(set_in(["properties", "datetime"], "2024-02-30T00:00:00Z"))),
    ("time", broken(set_in(["properties", "start_datetime"], "2024-05-01T00:00:00Z"))),
    ("conformance", broken(delete("conformsTo"))), ("conformance", broken(set_in(["conformsTo"], ["x"]))),
    ("conformance", broken(lambda message: message.update(conformsTo=None, version="v03"))),
    ("link", broken(delete("links"))), ("link", broken(set_in(["links"], []))),
    ("link", broken(set_in(["links"], {"rel": "canonical"}))),
    ("link", broken(set_in(["links", 0, "rel"], "alternate"))), ("link", broken(set_in(["links", 0], "x"))),
    ("href", broken(set_in(["links", 0, "href"], "file:///etc/passwd"))),
    ("href", broken(set_in(["links", 0, "href"], "s3://bucket/x"))),
    ("href", broken(delete("links", 0, "href"))),
    ("integrity", broken(set_in(["properties", "integrity"], {"method": "md5", "value": b64(bytes(16))}))),
    ("integrity", broken(set_in(["properties", "integrity", "value"], "%%%"))),
    ("integrity", broken(set_in(["properties", "integrity", "value"], b64(bytes(32))))),
    ("integrity", broken(set_in(["properties", "integrity", "value"], hashlib.sha512(DATA).hexdigest()))),
    ("integrity", broken(set_in(["properties", "integrity"], "sha512=abc"))),
    ("integrity", broken(delete("properties", "integrity", "method"))),
    ("integrity", broken(set_in(["properties", "content"], {"encoding": "base64", "value": "%%"}))),
    ("integrity", broken(set_in(["properties", "content"], {"encoding": "base64", "value": b64(DATA), "size": 3}))),
    ("integrity", broken(set_in(["properties", "content"], {"encoding": "gzip", "value": b64(DATA)}))),
]


@pytest.mark.parametrize("reason, data", PARSE_REFUSALS)
def test_parse_refusals(reason, data):
    assert reason_of(wnm.parse, data) == reason


def test_parse_accepts_credentials_in_a_peers_href():
    message = make()
    message["links"][0]["href"] = "ftp://anonymous:guest@ftp.example.org/x"
    assert wnm.parse(payload(message)).href == "ftp://anonymous:guest@ftp.example.org/x"


def test_a_validator_runs_before_our_checks():
    seen = []

    def validator(document):
        seen.append(document["id"])
        raise NotificationError("schema", "refused by the schema")

    assert reason_of(wnm.parse, payload(make()), validator=validator) == "schema"
    assert len(seen) == 1


def test_every_refusal_reason_is_exercised():
    reasons = {reason for reason, _ in PARSE_REFUSALS} | {"schema", "size"}
    assert reasons == wnm.NOTIFICATION_ERROR_REASONS
    assert isinstance(NotificationError("json", "x"), TrollmovesError)
    with pytest.raises(ValueError):
        NotificationError("other", "x")


# --------------------------------------------------------------------------------------------
# Round trips


SEGMENT = st.text(st.characters(codec="ascii", categories=("L", "N"), include_characters="-_.~"), min_size=1,
                  max_size=12).filter(lambda text: text not in (".", ".."))
TIMES = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.one_of(st.none(), st.just(timezone.utc),
                                         st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-720, 720))))


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@settings(max_examples=300, deadline=None)
@given(data_id=st.lists(SEGMENT, min_size=1, max_size=8).map("/".join),
       host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5}){0,2}", fullmatch=True),
       path=st.lists(SEGMENT, max_size=4).map("/".join),
       scheme=st.sampled_from(["http", "https", "ftp", "sftp"]),
       method=st.sampled_from(wnm.INTEGRITY_METHODS), length=st.integers(0, 2 ** 50),
       rel=st.sampled_from(wnm.LINK_RELS), start=st.one_of(st.none(), TIMES), end=st.one_of(st.none(), TIMES),
       seed=st.binary(max_size=64))
def test_build_encode_parse_round_trip(data_id, host, path, scheme, method, length, rel, start, end, seed):
    if start is not None and end is not None and utc(end) < utc(start):
        start, end = end, start
    digest = hashlib.new(wnm.normalise_integrity_method(method), seed).digest()
    href = f"{scheme}://{host}/{path}"
    message = wnm.build(data_id=data_id, href=href, length=length, media_type="application/octet-stream",
                        integrity=(method, b64(digest)), rel=rel, metadata={"start_time": start, "end_time": end})
    incoming = wnm.parse(wnm.encode(message))
    assert (incoming.data_id, incoming.href, incoming.length, incoming.rel) == (data_id, href, length, rel)
    assert (incoming.integrity_method, incoming.integrity_digest) == (wnm.normalise_integrity_method(method), digest)
    times = sorted(utc(value) for value in (start, end) if value is not None)
    if len(set(times)) == 2:
        assert (incoming.start_time, incoming.end_time) == tuple(times)
    else:
        assert (incoming.start_time, incoming.end_time) == ((times[0] if times else None), None)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=4000))
def test_content_round_trip(data):
    message = make(content=data, length=len(data), integrity=sha512(data))
    incoming = wnm.parse(wnm.encode(message, drop_content_if_large=True))
    assert incoming.content == (data if len(b64(data)) < wnm.MAX_INLINE_CHARS else None)
    assert incoming.length == len(data)


@given(st.binary(max_size=3000))
def test_parse_never_fails_with_anything_but_a_notification_error(data):
    try:
        wnm.parse(data)
    except NotificationError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(
                        st.sampled_from(["id", "properties", "links", "rel", "href", "pubtime", "data_id",
                                         "conformsTo", "integrity", "method", "value", "content", "length"]),
                        children, max_size=5), max_leaves=20))
def test_parse_refuses_odd_documents_cleanly(document):
    try:
        wnm.parse(json.dumps(document))
    except NotificationError:
        pass


# --------------------------------------------------------------------------------------------
# load_validator mechanics (the real WNM schema is in test_external_validation.py)


def write_schema(tmp_path, schema) -> str:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    return str(path)


def test_validator_asserts_formats(tmp_path):
    validate = wnm.load_validator(write_schema(tmp_path, {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "properties": {"id": {"format": "uuid"}, "pubtime": {"format": "date-time"}}}))
    validate({"id": str(uuid.uuid4()), "pubtime": "2024-05-01T12:00:00.5+02:00"})
    for bad in ({"id": "x"}, {"pubtime": "yesterday"}, {"pubtime": "2024-05-01T12:00:00"},
                {"pubtime": "2024-02-30T00:00:00Z"}):
        with pytest.raises(NotificationError, match="schema.json") as info:
            validate(bad)
        assert info.value.reason == "schema"


def test_a_one_of_refusal_says_which_choices_failed(tmp_path):
    validate = wnm.load_validator(write_schema(tmp_path, {"oneOf": [{"required": ["conformsTo"]},
                                                                    {"required": ["version"]}]}))
    with pytest.raises(NotificationError, match="'conformsTo' is a required property; 'version' is a required"):
        validate({"id": "x" * 1000})
    with pytest.raises(NotificationError, match="more than one"):
        validate({"conformsTo": [], "version": "v04"})


def test_validator_never_fetches_a_remote_ref(tmp_path):
    validate = wnm.load_validator(write_schema(tmp_path, {"$ref": "https://schemas.invalid/other.json"}))
    with pytest.raises(NotificationError, match="unresolvable") as info:
        validate({})
    assert info.value.reason == "schema"


@pytest.mark.parametrize("content", ["{not json", json.dumps({"type": 5}), json.dumps([1])])
def test_a_bad_schema_file_is_named(tmp_path, content):
    path = tmp_path / "schema.json"
    path.write_text(content)
    with pytest.raises(NotificationError, match="schema.json") as info:
        wnm.load_validator(path)
    assert info.value.reason == "schema"


def test_a_missing_schema_file_is_named(tmp_path):
    with pytest.raises(NotificationError, match="nothing.json"):
        wnm.load_validator(tmp_path / "nothing.json")


def test_without_jsonschema_the_error_says_what_to_install(tmp_path):
    script = ("import sys; sys.modules['jsonschema'] = None\n"
              "from trollmoves.wis2.notification import load_validator, NotificationError\n"
              "try:\n    load_validator(sys.argv[1])\nexcept NotificationError as err:\n"
              "    print(err.reason, err)\n")
    result = subprocess.run([sys.executable, "-c", script, write_schema(tmp_path, {})],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("schema ") and "pip install trollmoves[wis2]" in result.stdout, result.stderr
