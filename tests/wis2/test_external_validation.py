"""Our WNMs and topics judged by the tools the rest of WIS2 uses, not by our own reading of the spec.

* ``pywis-pubsub ets validate FILE`` (pywis-pubsub 0.12.0 in its own venv, HOME in the test's tmp
  dir with the shared WNM schema) passes every kind of message we build: with and without
  geometry, instant or range or no time, inline content, update and deletion, extra properties,
  each integrity method.  Its exit code is the number of failed tests; a schema failure stops it
  with a non-zero code too (checked with a broken message, so a pass cannot be vacuous).
* Many more combinations go through the same test suite in one interpreter (``WNMTestSuite``).
* pywis-topics 0.4.0's publication validation (``TopicHierarchy(tables=<wis2 data>)``) accepts
  every topic our templates compose, and never refuses a topic that we accept.
* ``load_validator`` (jsonschema, in process) accepts ours and refuses broken ones, as pywis does.

Skipped when the pywis venv is missing (failed under ``TROLLMOVES_REQUIRE_SERVERS=1``) or the WIS2
reference data is absent (always a skip: it is not part of the project, see tests/wis2/reference.py).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import uuid
from datetime import datetime, timezone

import pytest

from tests.wis2 import reference
from trollmoves.wis2 import notification as wnm
from trollmoves.wis2.topics import TopicError, TopicTemplate, check_publication_topic, load_tables

DATA = b"CCSDS or HRPT or whatever\n" * 20
TEMPLATE = "origin/a/wis2/{centre_id}/data/{policy}/weather/space-based-observations/{platform_name}/{sensor}"
ALIASES = {"platform_name": {"Suomi-NPP": "snpp", "Meteosat-11": "meteosat-11"},
           "sensor": {"avhrr/3": "avhrr-3", "avhrr-3": "avhrr-3"}}


@pytest.fixture(scope="module")
def wis2_data():
    return reference.require_wis2_data()


@pytest.fixture(scope="module")
def pywis_home(wis2_data, tmp_path_factory):
    reference.require_pywis()
    return reference.pywis_home(tmp_path_factory.mktemp("pywis"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def notification(*, method="sha512", rel="canonical", metadata=None, content=False, properties=None, **extra):
    digest = hashlib.new(wnm.normalise_integrity_method(method), DATA).digest()
    return wnm.build(data_id="wis2/se-smhi/data/core/weather/space-based-observations/metop-b/avhrr-3/x.nc",
                     href="https://data.example.org/out/x.nc", length=len(DATA), media_type="application/x-netcdf",
                     integrity=(method, b64(digest)), rel=rel, metadata=metadata or {},
                     content=DATA if content else None, properties=properties or wnm.DEFAULT_PROPERTIES, **extra)


START, END = datetime(2024, 5, 1, 10, 0), datetime(2024, 5, 1, 10, 1, 30, 250000, tzinfo=timezone.utc)
PYTROLL = {"platform_name": "Metop-B", "sensor": ["avhrr-3"], "orbit_number": 62000, "format": "NetCDF4",
           "data_processing_level": "1b", "product": "avhrr_l1b"}
CASES = {
    "null-geometry-no-time": dict(),
    "point-instant": dict(metadata={"lon": 18.06, "lat": 59.33, "start_time": START}),
    "polygon-range": dict(metadata={"area_extent_ll": [-10, 50, 40, 75], "start_time": START, "end_time": END}),
    "geojson-polygon": dict(metadata={"geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], [[2, 2], [3, 3], [2, 3], [2, 2]]]}}),
    "inline-content": dict(content=True, metadata={"start_time": START}),
    "update": dict(rel="update", metadata={"start_time": START, "end_time": END}),
    "deletion": dict(rel="deletion"),
    "pytroll-properties": dict(metadata=dict(PYTROLL, start_time=START, end_time=END)),
    "datetime-property": dict(metadata={"creation": END}, properties=["creation"]),
    "sha3-256": dict(method="sha3-256"),
    "sha384": dict(method="sha384"),
    "metadata-id": dict(metadata_id="urn:wmo:md:se-smhi:avhrr-l1b"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pywis_pubsub_ets_validate_passes_our_messages(case, pywis_home, tmp_path):
    path = tmp_path / f"{case}.json"
    path.write_bytes(wnm.encode(notification(**CASES[case])))
    code, report, output = reference.ets_validate(path, pywis_home)
    assert code == 0, output
    summary = report["ets-report"]["summary"]
    assert summary["FAILED"] == 0 and summary["PASSED"] > 0 and "Stopping ETS" not in output, output


def test_pywis_pubsub_ets_validate_fails_a_broken_message(pywis_home, tmp_path):
    """The control: the same command, the same HOME, a message the schema refuses -> a failure."""
    message = notification()
    message["properties"]["integrity"]["method"] = "md5"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(message))
    code, _, output = reference.ets_validate(path, pywis_home)
    assert code != 0 and "integrity" in output, output


def variants() -> dict[str, dict]:
    """Every combination of geometry x time x content x rel x method x extras (216 messages)."""
    geometries = {"none": {}, "point": {"lon": -75.5, "lat": 45.4}, "box": {"bbox": [-180, -90, 180, 90]}}
    times = {"none": {}, "instant": {"start_time": START}, "range": {"start_time": START, "end_time": END}}
    extras = {"none": {}, "pytroll": PYTROLL}
    found = {}
    for (g, geo), (t, time), (e, extra), content, rel, method in itertools.product(
            geometries.items(), times.items(), extras.items(), (False, True), wnm.LINK_RELS,
            ("sha512", "sha3-512")):
        key = f"{g}-{t}-{e}-{'content' if content else 'link'}-{rel}-{method}"
        found[key] = notification(method=method, rel=rel, content=content, metadata={**geo, **time, **extra})
    return found


def test_the_pywis_test_suite_passes_every_combination(pywis_home):
    messages = {key: json.loads(wnm.encode(message)) for key, message in variants().items()}
    _, failures = reference.pywis_batch(pywis_home, messages=messages)
    assert set(failures) == set(messages)
    assert {key: failed for key, failed in failures.items() if failed} == {}


def broken_messages() -> dict[str, tuple[dict, bool]]:
    """name -> (a message the schema refuses, whether pywis' suite notices it too)."""
    def changed(change):
        message = notification(metadata={"start_time": START, "end_time": END})
        change(message)
        return message

    return {
        "md5": (changed(lambda m: m["properties"]["integrity"].update(method="md5")), True),
        "no-links": (changed(lambda m: m.pop("links")), True),
        "empty-links": (changed(lambda m: m.update(links=[])), True),
        "link-without-href": (changed(lambda m: m["links"][0].pop("href")), True),
        "string-length": (changed(lambda m: m["links"][0].update(length="63")), True),
        "no-conformance": (changed(lambda m: m.pop("conformsTo")), True),
        "datetime-and-range": (changed(lambda m: m["properties"].update(datetime="2024-05-01T10:00:00Z")), True),
        "no-time": (changed(lambda m: [m["properties"].pop(k) for k in ("start_datetime", "end_datetime")]), True),
        "no-data-id": (changed(lambda m: m["properties"].pop("data_id")), True),
        "linestring": (changed(lambda m: m.update(geometry={"type": "LineString", "coordinates": [[0, 0]]})), True),
        "big-content": (changed(lambda m: m["properties"].update(content={"encoding": "base64", "value": "A" * 4100,
                                                                           "size": 3075})), True),
        "feature-collection": (changed(lambda m: m.update(type="FeatureCollection")), True),
        "id-not-uuid": (changed(lambda m: m.update(id="not-a-uuid")), True),
        "pubtime-not-rfc3339": (changed(lambda m: m["properties"].update(pubtime="yesterday")), False),
    }


def test_load_validator_accepts_ours_and_refuses_what_pywis_refuses(wis2_data, pywis_home):
    validate = wnm.load_validator(reference.schema_path())
    for message in itertools.chain(variants().values(), (notification(**case) for case in CASES.values())):
        validate(json.loads(wnm.encode(message)))
    broken = broken_messages()
    for name, (message, _) in broken.items():
        with pytest.raises(wnm.NotificationError) as info:
            validate(message)
        assert info.value.reason == "schema", name
        with pytest.raises(wnm.NotificationError):
            wnm.parse(json.dumps(message), validator=validate)
    _, failures = reference.pywis_batch(pywis_home, messages={name: message for name, (message, _) in broken.items()})
    assert {name for name, failed in failures.items() if failed} == {name for name, (_, pywis) in broken.items()
                                                                    if pywis}


def test_load_validator_alone_needs_only_the_data(wis2_data):
    """Without the pywis venv: the in-process validator on the shared schema, no network."""
    validate = wnm.load_validator(reference.schema_path())
    validate(notification(metadata={"start_time": START}))
    with pytest.raises(wnm.NotificationError, match="integrity"):
        validate(broken_messages()["md5"][0])


# --------------------------------------------------------------------------------------------
# Topics


PYTROLL_PLATFORMS = [("Metop-B", "avhrr/3"), ("Metop-C", "avhrr-3"), ("Metop-B", "iasi"), ("NOAA-20", "viirs"),
                     ("NOAA-21", "VIIRS"), ("Suomi-NPP", "viirs"), ("NOAA-19", "avhrr/3"), ("NOAA 18", "mhs"),
                     ("Meteosat-11", "seviri"), ("Sentinel-3A", "slstr"), ("Metop-C", ["avhrr-3"])]


def test_pywis_topics_accepts_every_topic_our_template_composes(wis2_data, pywis_home):
    tables = load_tables(wis2_data)
    composed = []
    for centre_id, policy in (("se-smhi", "core"), ("int-eumetsat", "recommended"), ("xx-trollmoves-test", "core")):
        template = TopicTemplate(TEMPLATE, ALIASES, constants={"centre_id": centre_id, "policy": policy},
                                 tables=tables)
        composed += [template.compose({"platform_name": platform, "sensor": sensor})
                     for platform, sensor in PYTROLL_PLATFORMS]
    assert "origin/a/wis2/se-smhi/data/core/weather/space-based-observations/metop-b/avhrr-3" in composed
    verdicts, _ = reference.pywis_batch(pywis_home, topics=composed)
    assert verdicts == {topic: True for topic in composed}


def candidate_topics(tables) -> list[str]:
    """Every space-based weather row of the real table (first), then variations of some that break a rule."""
    rows = sorted(row for row in tables.disciplines if row.startswith("weather/space-based-observations/"))
    topics = [f"origin/a/wis2/se-smhi/data/core/{row}" for row in rows]
    for row in rows[::40]:
        topics += [f"origin/a/wis2/se-smhi/data/core/{row}/l1b", f"origin/a/wis2/se-smhi/data/core/{row}-x",
                   f"origin/a/wis2/se-nobody/data/core/{row}", f"origin/a/wis2/se-nobody-test/data/recommended/{row}",
                   f"cache/a/wis2/se-smhi/data/core/{row}", f"origin/a/wis2/se-smhi/metadata/core/{row}",
                   f"origin/a/wis2/se-smhi/data/open/{row}", f"origin/a/wis2/se-smhi/data/core/{row.upper()}",
                   f"origin/a/wis2/se-smhi/data/core/{row}/+", f"origin/a/wis2/se-smhi/data/core/{row}/#",
                   f"origin/a/wis2/se-smhi/data/core/{row.replace('-', '.')}"]
    topics += ["origin/a/wis2/se-smhi/data/core/weather", "origin/a/wis2/se-smhi/data/core/weather/experimental/x",
               "origin/a/wis2/se-smhi/data/core/weather/experimental/Odd.Level",
               "origin/a/wis2/smhi/data/core/weather/x"]
    return topics


def test_we_never_accept_a_topic_pywis_topics_refuses(wis2_data, pywis_home):
    tables = load_tables(wis2_data)
    topics = candidate_topics(tables)
    ours = {}
    for topic in topics:
        try:
            check_publication_topic(topic, tables)
            ours[topic] = True
        except TopicError:
            ours[topic] = False
    verdicts, _ = reference.pywis_batch(pywis_home, topics=topics)
    accepted_by_us_only = sorted(topic for topic in topics if ours[topic] and not verdicts[topic])
    assert accepted_by_us_only == []
    table_rows = topics[:sum(row.startswith("weather/space-based-observations/") for row in tables.disciplines)]
    assert len(table_rows) > 600 and all(ours[topic] and verdicts[topic] for topic in table_rows)
    # Where we are stricter it is by the rules we document: the baseline rules pywis-topics logs but
    # does not enforce (lowercase, no dots), publishing data on origin only, at least 8 levels.
    stricter = {topic for topic in topics if verdicts[topic] and not ours[topic]}
    assert stricter == {topic for topic in stricter if topic.startswith("cache/") or "." in topic
                        or "/metadata/" in topic or topic.count("/") < 7 or topic != topic.lower()}


def test_the_issue_example_topic_passes_both(wis2_data, pywis_home):
    """The example topic of issue 18 passes our check and pywis-topics, on the shared tables."""
    topic = "origin/a/wis2/se-smhi/data/core/weather/space-based-observations/metop-b/avhrr-3"
    check_publication_topic(topic, load_tables(wis2_data))
    verdicts, _ = reference.pywis_batch(pywis_home, topics=[topic])
    assert verdicts == {topic: True}


def test_data_from_a_v04_peer_is_understood_after_pywis_accepts_it(pywis_home):
    """A Sarracenia-style v04 message that pywis' suite passes parses with the integrity it carries."""
    message = copy.deepcopy(json.loads(wnm.encode(notification(metadata={"start_time": START}))))
    message.pop("conformsTo")
    message["version"] = "v04"
    message["id"] = str(uuid.uuid4())
    _, failures = reference.pywis_batch(pywis_home, messages={"v04": message})
    assert failures == {"v04": []}
    incoming = wnm.parse(json.dumps(message))
    assert incoming.integrity_digest == hashlib.sha512(DATA).digest()
