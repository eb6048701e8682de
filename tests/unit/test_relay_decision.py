"""The mirror's relay decision (trollmoves.relay_decision), without sockets."""

from trollmoves import confine, messaging
from trollmoves.relay_decision import RelayDecision, relay_decision, source_news, upstream_path

FIELDS = confine.template_fields("file:///mirror/{platform_name}/")


def announcement(**fields):
    return dict({"uri": "/upstream/a.dat", "uid": "a.dat", "request_address": "inside:9011"}, **fields)


def test_a_confined_announcement_is_keyed_by_its_first_file():
    assert relay_decision(announcement(platform_name="n19"), FIELDS) == RelayDecision(None, "/upstream/a.dat")


def test_a_dataset_is_keyed_by_the_path_of_its_first_uri():
    data = {"dataset": [{"uri": "ssh://host/upstream/b.dat", "uid": "b.dat"}, {"uri": "/upstream/c.dat",
                                                                              "uid": "c.dat"}]}
    assert relay_decision(data, FIELDS).key == "/upstream/b.dat"


def test_an_announcement_without_files_has_no_key():
    assert relay_decision({"uid": "a.dat", "request_address": "inside:9011"}, FIELDS) == RelayDecision(None, None)
    assert upstream_path({"other": 1}) is None


def test_a_field_or_uid_escaping_the_destination_is_refused():
    refused = relay_decision(announcement(platform_name="../../.."), FIELDS)
    assert refused.key is None and "platform_name" in refused.refused
    refused = relay_decision(announcement(platform_name="n19", uid="../../a.dat"), FIELDS)
    assert refused.key is None and "uid" in refused.refused


def test_a_refusal_text_is_bounded():
    refused = relay_decision(announcement(platform_name="../" * 1000), FIELDS)
    assert len(refused.refused) <= 400


def _message(address):
    return messaging.make_message("/inside", "file", announcement(request_address=address))


def test_source_news():
    assert source_news(None, "inside:9011") == (False, True), "a new file from a new source"
    known = [_message("inside:9011")]
    assert source_news(known, "inside:9011") == (True, False), "the same source again"
    assert source_news(known, "spare:9011") == (True, True), "another upstream's copy: an alternative"
    assert source_news([], "inside:9011") == (True, True)
