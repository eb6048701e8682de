"""The one walker over payload entries (``messaging.walk_entries``) answers as each of the four it replaced.

Each shape of payload (file, dataset, collection of datasets, nested collections,
odd values) is checked for the three views the daemons use; a Hypothesis test then
holds the walker to the original walkers, copied below as they were before issue 16,
on generated payloads.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trollmoves import messaging
from trollmoves.listening import file_items
from trollmoves.messaging import walk_entries

# --------------------------------------------------------------------------------------------------
# The walkers before issue 16, verbatim: the behaviour each caller keeps
# --------------------------------------------------------------------------------------------------


def old_entries_with(data: Any, key: str) -> list[dict]:
    """messaging.entries_with (also server.file_entries with key "uri")."""
    found: list[dict] = []
    if isinstance(data, dict):
        if key in data:
            found.append(data)
        for value in data.values():
            if isinstance(value, (dict, list)):
                found.extend(old_entries_with(value, key))
    elif isinstance(data, list):
        for item in data:
            found.extend(old_entries_with(item, key))
    return found


def old_uri_entries(data: dict) -> list[dict]:
    """client._uri_entries."""
    entries = []
    if "uid" in data:
        entries.append(data)
    for container in ("dataset", "collection"):
        items = data.get(container)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    entries.extend(old_uri_entries(item))
    return entries


def old_file_items(atype: str, data: Any) -> list[dict]:
    """listening.file_items."""
    if not isinstance(data, dict):
        return []
    if atype == "file":
        return [dict(data)] if "uri" in data else []
    container = "dataset" if atype == "dataset" else "collection"
    items = data.get(container)
    if not isinstance(items, list):
        return []
    base = {key: value for key, value in data.items() if key != container}
    files: list[dict] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        merged = {**base, **{key: value for key, value in item.items() if key != "dataset"}}
        if "dataset" in item:
            files.extend(old_file_items("dataset", {**merged, "dataset": item["dataset"]}))
        elif "uri" in item:
            files.append(merged)
    return files


# The calls the callers make (client._uri_entries and server.file_entries become these).
def uid_entries(data: dict) -> list[dict]:
    return walk_entries(data, "uid", ("dataset", "collection"))


def uri_anywhere(data: Any) -> list[dict]:
    return walk_entries(data, "uri")


def same_objects(found: list, expected: list) -> bool:
    return len(found) == len(expected) and all(a is b for a, b in zip(found, expected))


# --------------------------------------------------------------------------------------------------
# Payload shapes
# --------------------------------------------------------------------------------------------------

FILE = {"uri": "/d/a.dat", "uid": "a.dat", "sensor": "avhrr"}
DATASET = {"sensor": "avhrr", "platform": "n19",
           "dataset": [{"uri": "/d/1", "uid": "1"}, {"uri": "/d/2", "uid": "2", "sensor": "mhs"}]}
COLLECTION = {"area": "euro", "collection": [
    {"start": 1, "dataset": [{"uri": "/c/1", "uid": "c1"}, {"uri": "/c/2", "uid": "c2"}]},
    {"start": 2, "dataset": [{"uri": "/c/3", "uid": "c3"}]},
]}
NESTED_COLLECTIONS = {"area": "euro", "collection": [
    {"uri": "/n/0", "uid": "n0", "collection": [{"uri": "/n/1", "uid": "n1"}]},
    {"start": 2, "dataset": [{"uri": "/n/2", "uid": "n2", "dataset": [{"uri": "/n/3", "uid": "n3"}]}]},
]}


def test_a_file_is_its_own_entry():
    assert same_objects(uri_anywhere(FILE), [FILE])
    assert same_objects(uid_entries(FILE), [FILE])
    files = file_items("file", FILE)
    assert files == [FILE] and files[0] is not FILE


def test_dataset_entries_in_order():
    assert [e["uid"] for e in uri_anywhere(DATASET)] == ["1", "2"]
    assert same_objects(uid_entries(DATASET), DATASET["dataset"])
    assert file_items("dataset", DATASET) == [
        {"sensor": "avhrr", "platform": "n19", "uri": "/d/1", "uid": "1"},
        {"sensor": "mhs", "platform": "n19", "uri": "/d/2", "uid": "2"},  # the file's own value wins
    ]


def test_collection_of_datasets():
    assert [e["uid"] for e in uri_anywhere(COLLECTION)] == ["c1", "c2", "c3"]
    assert [e["uid"] for e in uid_entries(COLLECTION)] == ["c1", "c2", "c3"]
    assert file_items("collection", COLLECTION) == [
        {"area": "euro", "start": 1, "uri": "/c/1", "uid": "c1"},
        {"area": "euro", "start": 1, "uri": "/c/2", "uid": "c2"},
        {"area": "euro", "start": 2, "uri": "/c/3", "uid": "c3"},
    ]


def test_nested_collections_where_the_views_differ():
    # anywhere, and through dataset/collection: an entry holding a container is one, and so is what it holds
    assert [e["uid"] for e in uri_anywhere(NESTED_COLLECTIONS)] == ["n0", "n1", "n2", "n3"]
    assert [e["uid"] for e in uid_entries(NESTED_COLLECTIONS)] == ["n0", "n1", "n2", "n3"]
    # files with metadata: a collection item's own collection is metadata, a dataset is a container
    files = file_items("collection", NESTED_COLLECTIONS)
    assert [f["uid"] for f in files] == ["n0", "n3"]
    assert files[0]["collection"] == [{"uri": "/n/1", "uid": "n1"}]
    assert files[1] == {"area": "euro", "start": 2, "uri": "/n/3", "uid": "n3"}


def test_only_named_containers_are_walked_through():
    data = {"uid": "top", "extra": {"uid": "hidden"}, "dataset": {"uid": "not-a-list"},
            "collection": [[{"uid": "in-a-list-of-lists"}], "text", 3, {"uid": "item"}]}
    assert [e["uid"] for e in walk_entries(data, "uid")] == ["top", "hidden", "not-a-list",
                                                              "in-a-list-of-lists", "item"]
    assert [e["uid"] for e in uid_entries(data)] == ["top", "item"]


@pytest.mark.parametrize("data", [None, "text", 3, [], {}, {"dataset": "x"}, {"dataset": None},
                                  {"dataset": [1, "a", None, []]}, {"collection": {"uri": "/x"}}])
def test_odd_values_have_no_entries(data):
    assert walk_entries(data, "uri", ("dataset", "collection")) == []
    assert file_items("dataset", data) == [] and file_items("collection", data) == []


def test_odd_values_as_each_caller_saw_them():
    assert uri_anywhere({"collection": {"uri": "/x"}}) == [{"uri": "/x"}]  # any dict value is walked
    assert uri_anywhere([{"uri": "/a"}, [{"uri": "/b"}], "c"]) == [{"uri": "/a"}, {"uri": "/b"}]
    assert file_items("file", {"no": "uri"}) == [] and file_items("file", ["x"]) == []
    # a dataset message's own uri is not a file; an item holding "dataset" is a container, whatever its value
    assert file_items("dataset", {"uri": "/top", "dataset": [{"uri": "/in", "dataset": "x"}]}) == []
    # an atype other than file or dataset reads the collection
    assert file_items("other", COLLECTION) == file_items("collection", COLLECTION)


def test_inherit_needs_containers():
    with pytest.raises(ValueError):
        walk_entries({"uri": "/a"}, "uri", inherit={})


def test_deep_nesting():
    depth = 5_000  # far deeper than a decoded message can be: the walk is not recursive
    data: dict = {"uri": "/leaf", "uid": "leaf"}
    for level in range(depth):
        data = {"uid": str(level), "dataset": [data]}
    assert len(walk_entries(data, "uid")) == depth + 1
    assert len(uid_entries(data)) == depth + 1
    assert walk_entries(data["dataset"], "uri", ("dataset",), inherit={"a": 1}) == [
        {"a": 1, "uid": "leaf", "uri": "/leaf"}]
    shallow = data
    for _ in range(depth - 400):
        shallow = shallow["dataset"][0]
    # where the recursive originals still answer, the same answers
    assert same_objects(walk_entries(shallow, "uid"), old_entries_with(shallow, "uid"))
    assert file_items("dataset", shallow) == old_file_items("dataset", shallow)


def test_entries_with_is_the_walker():
    assert same_objects(messaging.entries_with(COLLECTION, "uid"), walk_entries(COLLECTION, "uid"))


# --------------------------------------------------------------------------------------------------
# Differential: generated payloads, the walker against the originals
# --------------------------------------------------------------------------------------------------

KEYS = st.sampled_from(["uri", "uid", "dataset", "collection", "sensor", "start"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["/a", "b", ""]))
payloads = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(KEYS, children, max_size=5), max_leaves=30)
ATYPES = st.sampled_from(["file", "dataset", "collection", "other"])
FAST = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))


@given(data=payloads, key=st.sampled_from(["uri", "uid"]))
@FAST
def test_anywhere_equals_entries_with(data, key):
    assert same_objects(walk_entries(data, key), old_entries_with(data, key))


@given(data=st.dictionaries(KEYS, payloads, max_size=5))
@FAST
def test_named_containers_equal_uri_entries(data):
    assert same_objects(uid_entries(data), old_uri_entries(data))


@given(atype=ATYPES, data=payloads)
@FAST
def test_file_items_unchanged(atype, data):
    assert file_items(atype, data) == old_file_items(atype, data)
    # the same key order too (it is the order of the keys in the messages the dispatcher publishes)
    assert [list(f) for f in file_items(atype, data)] == [list(f) for f in old_file_items(atype, data)]
