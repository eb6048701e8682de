"""The message codec is posttroll's, byte for byte: encoded output identical, decoded messages equal.

Our codec builds each message once (posttroll validates and serialises it three
times) and decodes without re-validation; these tests hold it to posttroll's own
output for generated data, datetimes included. The one intended difference:
``uid`` and ``uri`` values stay the strings that were sent.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from posttroll.message import Message

from trollmoves import messaging

ISO_LIKE = st.sampled_from(["2024-01-01", "20240101", "20240101T1200", "2024-W01-1", "2024W01",
                            "2024-01-01 12:00:00Z", "2024", "2024-01", "2024001", "12345", " 2024-01-01",
                            "2024-01-01T12:00:00.123456+00:00", "noaa19", "２０２４-01-01"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                    st.text(max_size=20), ISO_LIKE,
                    st.datetimes(min_value=dt.datetime(1900, 1, 1)),
                    st.datetimes(min_value=dt.datetime(1900, 1, 2), timezones=st.just(dt.timezone.utc)))
data_strategy = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                             | st.dictionaries(st.text(max_size=8) | st.sampled_from(["uid", "uri", "start_time"]),
                                               children, max_size=5), max_leaves=15)
subjects = st.text(alphabet="abcdefghijklmnopqrstuvwxyz/_-0123456789", min_size=1, max_size=20)
types = st.sampled_from(["file", "dataset", "push", "ack", "info", "err", "beat"])
FAST = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


@given(subject=subjects, atype=types, data=data_strategy | st.text(max_size=30))
@FAST
def test_encoding_is_byte_identical_to_posttroll(subject, atype, data):
    ours = messaging.make_message(subject, atype, data)
    theirs = Message(subject, atype, data)
    theirs.time = ours.time
    assert messaging.wire(ours) == theirs.encode()


def _without_ids(value):
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in ("uid", "uri")}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


@given(subject=subjects, atype=types, data=data_strategy | st.text(max_size=30))
@FAST
def test_decoding_equals_posttroll(subject, atype, data):
    raw = Message(subject, atype, data).encode()
    ours = messaging.decode(raw)
    theirs = Message.decode(raw)
    assert (ours.subject, ours.type, ours.sender, ours.time, ours.version, ours.binary) == \
        (theirs.subject, theirs.type, theirs.sender, theirs.time, theirs.version, theirs.binary)
    assert _without_ids(ours.data) == _without_ids(theirs.data)
    assert repr(_without_ids(ours.data)) == repr(_without_ids(theirs.data)), "types differ"


def test_ids_stay_strings_where_posttroll_makes_datetimes():
    raw = messaging.encode("/x", "file", {"uid": "20240101", "uri": "/d/20240101", "when": "20240101",
                                          "dataset": [{"uid": "2024-01-01", "uri": "2024-01-01T00:00"}]})
    data = messaging.decode(raw).data
    assert data["uid"] == "20240101" and data["uri"] == "/d/20240101"
    assert data["when"] == dt.datetime(2024, 1, 1)
    assert data["dataset"][0] == {"uid": "2024-01-01", "uri": "2024-01-01T00:00"}


@given(st.text(alphabet="0123456789-WT:+Z. ", min_size=0, max_size=12))
@settings(max_examples=2000, deadline=None)
def test_the_iso_precheck_never_skips_a_string_fromisoformat_accepts(text):
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return
    assert len(text) >= 7 and text[:4].isdigit(), text
