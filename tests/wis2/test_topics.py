"""WIS2 topics: levels from metadata, publication templates and checks, subscription filters.

Pure logic, so plain unit tests and Hypothesis; the WTH tables used here are small ones written in
the test's tmp dir (the real tables, and pywis-topics' own verdicts, are in
test_external_validation.py).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trollmoves.errors import TrollmovesError
from trollmoves.wis2.topics import (
    TOPIC_ERROR_REASONS,
    TopicError,
    TopicTables,
    TopicTemplate,
    check_publication_topic,
    check_subscription_filter,
    check_subscription_filters,
    load_tables,
    normalise_level,
)

LEVEL = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
TEMPLATE = "origin/a/wis2/{centre_id}/data/{policy}/weather/space-based-observations/{platform_name}/{sensor}"
GOOD = "origin/a/wis2/se-smhi/data/core/weather/space-based-observations/metop-b/avhrr-3"
ALIASES = {"platform_name": {"Metop-B": "metop-b"}, "sensor": {"avhrr/3": "avhrr-3"}}
CONSTANTS = {"centre_id": "se-smhi", "policy": "core"}
DISCIPLINES = ("weather", "weather/experimental", "weather/space-based-observations",
               "weather/space-based-observations/metop-b", "weather/space-based-observations/metop-b/avhrr-3",
               "weather/space-based-observations/noaa-20/viirs")


@pytest.fixture
def tables(tmp_path):
    """Small WTH tables in pywis-topics' layout: <dir>/wis2-topic-hierarchy/*.csv."""
    folder = tmp_path / "wth" / "wis2-topic-hierarchy"
    folder.mkdir(parents=True)
    (folder / "centre-id.csv").write_text("Name,Description,Source,Status\nse-smhi,SMHI,,Operational\n"
                                          "int-eumetsat,EUMETSAT,,Operational\n")
    (folder / "earth-system-discipline.csv").write_text(
        "Name,Description,Source,Status\n" + "".join(f"{row},x,,Operational\n" for row in DISCIPLINES))
    return tmp_path / "wth"


def reason_of(call, *args, **kwargs) -> str:
    with pytest.raises(TopicError) as info:
        call(*args, **kwargs)
    assert str(info.value)  # every refusal says what is wrong
    return info.value.reason


# --------------------------------------------------------------------------------------------
# Levels


@pytest.mark.parametrize("value, level", [
    ("Metop-B", "metop-b"), ("avhrr/3", "avhrr-3"), ("NOAA 20", "noaa-20"), ("NOAA-20", "noaa-20"),
    ("a__b..c", "a-b-c"), ("--x--", "x"), (20, "20"), ("Météo-France", "meteo-france"), ("Straße", "strasse"),
    ("ﬁre", "fire"), ("S-NPP", "s-npp"), ("seviri+", "seviri"), ("x#y", "x-y"), ("a\u2013b", "a-b"),
])
def test_normalise_level_examples(value, level):
    assert normalise_level(value) == level


@pytest.mark.parametrize("value", ["", "---", " ", None, "Ω1", "北京", "./"])
def test_normalise_level_refuses_what_has_no_ascii_level(value):
    assert reason_of(normalise_level, value) == "level"


def test_a_non_ascii_letter_is_named_in_the_refusal():
    with pytest.raises(TopicError, match="add an alias"):
        normalise_level("Fengyun-Ω")


@given(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False)))
def test_normalise_level_output_always_passes_the_level_rules(value):
    try:
        level = normalise_level(value)
    except TopicError as err:
        assert err.reason == "level"
        return
    assert LEVEL.fullmatch(level)
    assert normalise_level(level) == level  # idempotent
    check_publication_topic(f"origin/a/wis2/se-smhi/data/core/weather/{level}")


def test_topic_error_is_a_value_error_and_a_trollmoves_error():
    err = TopicError("level", "x")
    assert isinstance(err, ValueError) and isinstance(err, TrollmovesError)
    with pytest.raises(ValueError):
        TopicError("not-a-reason", "x")


# --------------------------------------------------------------------------------------------
# Publication topics


@pytest.mark.parametrize("topic", [
    GOOD, "origin/a/wis2/se-smhi/data/recommended/weather/prediction",
    "origin/a/wis2/int-eumetsat/data/core/weather/space-based-observations/metop-c/avhrr-3",
])
def test_publication_topics_that_pass_without_tables(topic):
    check_publication_topic(topic)


@pytest.mark.parametrize("topic, reason", [
    ("cache/a/wis2/se-smhi/data/core/weather/x", "prefix"),
    ("origin/b/wis2/se-smhi/data/core/weather/x", "prefix"),
    ("origin/a/wis2/se-smhi/data/core/weather", "depth"),
    ("origin/a/wis2/se-smhi/data/core/weather/+", "wildcard"),
    ("origin/a/wis2/se-smhi/data/core/weather/#", "wildcard"),
    ("origin/a/wis2/se-smhi/data/core/weather/a+b", "wildcard"),
    ("origin/a/wis2/se-smhi/data/core/weather/Metop-B", "level"),
    ("origin/a/wis2/se-smhi/data/core/weather/metop.b", "level"),
    ("origin/a/wis2/se-smhi/data/core/weather//x", "level"),
    ("origin/a/wis2/se-smhi/data/core/weather/x/", "level"),
    ("origin/a/wis2/se-smhi/data/core/weather/metop_b", "level"),
    ("origin/a/wis2/se-smhi/data/core/weather/météo", "level"),
    ("origin/a/wis2/smhi/data/core/weather/x", "centre_id"),
    ("origin/a/wis2/s-smhi/data/core/weather/x", "centre_id"),
    ("origin/a/wis2/se-smhi/metadata/core/weather/x", "notification_type"),
    ("origin/a/wis2/se-smhi/data/open/weather/x", "policy"),
    ("origin/a/wis2/se-smhi/data/core/weather/" + "x/" * 33000 + "x", "depth"),
])
def test_publication_topic_refusals(topic, reason):
    assert reason_of(check_publication_topic, topic) == reason


def test_a_non_string_topic_is_refused():
    assert reason_of(check_publication_topic, None) == "level"


def test_tables_check_the_whole_subtopic_as_pywis_topics_does(tables):
    check_publication_topic(GOOD, tables)
    check_publication_topic(GOOD, load_tables(tables / "wis2-topic-hierarchy"))  # the folder itself works too
    assert reason_of(check_publication_topic, GOOD + "/l1b", tables) == "discipline"
    assert reason_of(check_publication_topic, GOOD.replace("metop-b", "metop-x"), tables) == "discipline"
    check_publication_topic("origin/a/wis2/se-smhi/data/core/weather/experimental/anything-goes", tables)


def test_tables_check_the_centre_id_and_accept_test_centres(tables):
    assert reason_of(check_publication_topic, GOOD.replace("se-smhi", "se-nobody"), tables) == "centre_id"
    check_publication_topic(GOOD.replace("se-smhi", "se-nobody-test"), tables)


def test_missing_tables_name_the_file(tmp_path):
    with pytest.raises(TopicError, match="centre-id.csv") as info:
        load_tables(tmp_path)
    assert info.value.reason == "tables"


def test_loaded_tables_are_plain_sets(tables):
    loaded = load_tables(tables)
    assert isinstance(loaded, TopicTables)
    assert "se-smhi" in loaded.centre_ids and "Name" not in loaded.centre_ids
    assert set(DISCIPLINES) == loaded.disciplines


# --------------------------------------------------------------------------------------------
# Templates


def test_template_composes_with_aliases_and_constants(tables):
    template = TopicTemplate(TEMPLATE, ALIASES, constants=CONSTANTS, tables=tables)
    assert template.fields == ("centre_id", "policy", "platform_name", "sensor")
    assert template.metadata_fields == ("platform_name", "sensor")
    topic = template.compose({"platform_name": "Metop-B", "sensor": "avhrr/3", "orbit_number": 1})
    assert topic == GOOD
    assert template.leaf(topic) == "weather/space-based-observations/metop-b/avhrr-3"
    assert TopicTemplate.leaf(topic) == template.leaf(topic)


def test_template_without_alias_normalises_the_raw_value():
    template = TopicTemplate(TEMPLATE, constants=CONSTANTS)
    assert template.compose({"platform_name": "NOAA 20", "sensor": "VIIRS"}).endswith("/noaa-20/viirs")


def test_template_fields_may_come_from_the_message():
    template = TopicTemplate(TEMPLATE)
    metadata = {"centre_id": "SE-SMHI", "policy": "Core", "platform_name": "Metop-B", "sensor": "avhrr/3"}
    assert template.compose(metadata) == GOOD


@pytest.mark.parametrize("sensor", [["avhrr/3"], ("avhrr/3",), {"avhrr/3"}])
def test_a_one_element_sensor_list_gives_its_level(sensor):
    template = TopicTemplate(TEMPLATE, ALIASES, constants=CONSTANTS)
    assert template.compose({"platform_name": "Metop-B", "sensor": sensor}) == GOOD


@pytest.mark.parametrize("metadata, reason, named", [
    ({"platform_name": "Metop-B"}, "field", "sensor"),
    ({"platform_name": "Metop-B", "sensor": None}, "field", "sensor"),
    ({"platform_name": "", "sensor": "avhrr"}, "field", "platform_name"),
    ({"platform_name": "Metop-B", "sensor": []}, "field", "sensor"),
    ({"platform_name": "Metop-B", "sensor": ["avhrr", "mhs"]}, "field", "sensor"),
    ({"platform_name": "Ωmega", "sensor": "avhrr"}, "level", "platform_name"),
    ({"platform_name": "---", "sensor": "avhrr"}, "level", "platform_name"),
])
def test_compose_refusals_name_the_field(metadata, reason, named):
    template = TopicTemplate(TEMPLATE, ALIASES, constants=CONSTANTS)
    with pytest.raises(TopicError, match=named) as info:
        template.compose(metadata)
    assert info.value.reason == reason


def test_compose_checks_the_result_against_the_tables(tables):
    template = TopicTemplate(TEMPLATE, ALIASES, constants=CONSTANTS, tables=tables)
    assert reason_of(template.compose, {"platform_name": "Metop-X", "sensor": "avhrr/3"}) == "discipline"


@pytest.mark.parametrize("template, reason", [
    ("origin/a/wis2/{centre_id}/data/core/weather/+", "wildcard"),
    ("origin/a/wis2/{centre_id}/data/core/weather/#", "wildcard"),
    ("origin/a/wis2/{centre_id}/data/core/weather.obs/{platform_name}", "level"),
    ("origin/a/wis2/{centre_id}/data/core/Weather/{platform_name}", "level"),
    ("origin/a/wis2/{centre_id}/data/core//{platform_name}", "level"),
    ("cache/a/wis2/{centre_id}/data/core/weather/{platform_name}", "prefix"),
    ("{channel}/a/wis2/{centre_id}/data/core/weather/{platform_name}", "prefix"),
    ("origin/a/wis2/{centre_id}/data/core/{platform_name}", "depth"),
    ("origin/a/wis2/{centre_id}/data/core/weather/sat-{platform_name}", "template"),
    ("origin/a/wis2/{centre_id}/data/core/weather/{platform_name}-{sensor}", "template"),
    ("origin/a/wis2/{centre_id}/data/core/weather/{platform-name}", "template"),
    ("origin/a/wis2/{centre_id}/data/core/{x}/{x}", "template"),
    ("origin/a/wis2/{centre_id}/metadata/core/weather/{x}", "notification_type"),
    ("origin/a/wis2/{centre_id}/data/open/weather/{x}", "policy"),
    ("", "template"),
])
def test_template_refusals(template, reason):
    assert reason_of(TopicTemplate, template) == reason


def test_template_refuses_aliases_and_constants_for_unknown_fields():
    with pytest.raises(TopicError, match="platfrom_name") as info:
        TopicTemplate(TEMPLATE, {"platfrom_name": {"Metop-B": "metop-b"}})
    assert info.value.reason == "template"
    assert reason_of(TopicTemplate, TEMPLATE, constants={"centre": "se-smhi"}) == "template"


@pytest.mark.parametrize("constants, reason", [
    ({"centre_id": "smhi", "policy": "core"}, "centre_id"),
    ({"centre_id": "se-smhi", "policy": "open"}, "policy"),
    ({"centre_id": "Ωx", "policy": "core"}, "level"),
])
def test_bad_constants_are_refused_at_construction(constants, reason):
    assert reason_of(TopicTemplate, TEMPLATE, constants=constants) == reason


def test_tables_check_constants_and_the_literal_discipline_at_construction(tables):
    assert reason_of(TopicTemplate, TEMPLATE, constants={"centre_id": "se-nobody", "policy": "core"},
                     tables=tables) == "centre_id"
    assert reason_of(TopicTemplate, TEMPLATE.replace("/weather/", "/wether/"), constants=CONSTANTS,
                     tables=tables) == "discipline"


def test_leaf_refuses_a_non_publication_topic():
    assert reason_of(TopicTemplate.leaf, "origin/a/wis2/x") == "prefix"


SAFE_VALUE = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "Zs")), min_size=1, max_size=30)


@settings(max_examples=200)
@given(platform=SAFE_VALUE, sensor=SAFE_VALUE)
def test_composed_topics_always_pass_the_publication_rules(platform, sensor):
    template = TopicTemplate(TEMPLATE, constants=CONSTANTS)
    try:
        topic = template.compose({"platform_name": platform, "sensor": sensor})
    except TopicError as err:
        assert err.reason == "level"  # nothing left once normalised, e.g. "--"
        return
    check_publication_topic(topic)
    assert template.leaf(topic) == "/".join(topic.split("/")[6:])
    assert topic.split("/")[-2:] == [normalise_level(platform), normalise_level(sensor)]


# --------------------------------------------------------------------------------------------
# Subscription filters


@pytest.mark.parametrize("topic_filter", [
    "origin/a/wis2/#", "cache/a/wis2/#", "origin/a/wis2/+/data/core/weather/#",
    "cache/a/wis2/se-smhi/data/+/weather/space-based-observations/#", GOOD,
    "$share/bridge/origin/a/wis2/+/data/core/#", "$share/g-1/cache/a/wis2/se-smhi/data/core/weather/+",
    "origin/a/wis2/+/+/+/+/+",
])
def test_subscription_filters_accepted(topic_filter):
    check_subscription_filter(topic_filter)


@pytest.mark.parametrize("topic_filter, reason", [
    ("", "filter"), (None, "filter"),
    ("origin/a/wis2", "prefix"), ("foo/a/wis2/#", "prefix"), ("+/a/wis2/#", "prefix"), ("#", "prefix"),
    ("origin/a/+/#", "prefix"), ("$share/g/foo/a/wis2/#", "prefix"),
    ("origin/a/wis2/#/data", "filter"), ("origin/a/wis2/se+/x", "filter"), ("origin/a/wis2/se#", "filter"),
    ("origin/a/wis2/Se-Smhi/#", "filter"), ("origin/a/wis2/se.smhi/#", "filter"), ("origin/a/wis2//#", "filter"),
    ("$share//origin/a/wis2/#", "filter"), ("$share/g", "filter"), ("$share/g+/origin/a/wis2/#", "filter"),
    ("origin/a/wis2/" + "x/" * 33000 + "#", "filter"),
])
def test_subscription_filter_refusals(topic_filter, reason):
    assert reason_of(check_subscription_filter, topic_filter) == reason


def test_subscription_filters_checks_each():
    check_subscription_filters(["origin/a/wis2/#", "cache/a/wis2/#"])
    assert reason_of(check_subscription_filters, ["origin/a/wis2/#", "origin/a/wis2/#/x"]) == "filter"


def test_every_refusal_reason_is_exercised():
    """The reasons are metric labels: each one above has a test that produces it."""
    produced = {
        reason_of(normalise_level, ""), reason_of(check_publication_topic, "cache/a/wis2/x/data/core/w/x"),
        reason_of(check_publication_topic, "origin/a/wis2/x"),
        reason_of(check_publication_topic, "origin/a/wis2/se-smhi/data/core/weather/+"),
        reason_of(check_publication_topic, "origin/a/wis2/smhi/data/core/weather/x"),
        reason_of(check_publication_topic, "origin/a/wis2/se-smhi/metadata/core/weather/x"),
        reason_of(check_publication_topic, "origin/a/wis2/se-smhi/data/open/weather/x"),
        reason_of(TopicTemplate(TEMPLATE).compose, {}), reason_of(TopicTemplate, "origin/a/wis2/{a}{b}"),
        reason_of(check_subscription_filter, "origin/a/wis2/#/x"), reason_of(load_tables, "/nonexistent"),
        reason_of(check_publication_topic, GOOD, TopicTables(frozenset({"se-smhi"}), frozenset())),
    }
    assert produced == TOPIC_ERROR_REASONS
