"""The push decision (trollmoves.push_plan), every branch, without sockets."""

import datetime as dt

import pytest

from trollmoves import messaging
from trollmoves.push_plan import (
    BadRequest,
    PushItem,
    PushPlan,
    Refusal,
    catch_up_window,
    clean_destination,
    path_refusal,
    plan_push,
    push_directory,
    push_reply_data,
    reply_type,
)

SERVED = "/data/out/a.dat"


def served_only(path):
    return None if path == SERVED else "not_announced"


def plan(data, allowed=(), refusal=served_only, request_type="push"):
    return plan_push(request_type, data, allowed, refusal)


@pytest.mark.parametrize("data", [None, "text", 3, ["uri"]])
def test_request_without_dict_data_is_refused_uncounted_and_unlogged(data):
    assert plan(data) == Refusal("push request without data")


@pytest.mark.parametrize("data", [{}, {"destination": "file:///x/"}, {"dataset": [{"uid": "a"}]}])
def test_request_without_any_uri_is_refused(data):
    assert plan(data) == Refusal("push request without any uri")


@pytest.mark.parametrize("destination", [None, "", 5, ["file:///x/"]])
def test_request_without_a_destination_is_refused(destination):
    data = {"uri": SERVED, "uid": "a.dat"}
    if destination is not None:
        data["destination"] = destination
    assert plan(data) == Refusal("push request without destination")


@pytest.mark.parametrize("destination", ["relative/dir/", "file:relative/dir/"])
def test_a_relative_local_destination_is_refused_as_not_allowed(destination):
    refused = plan({"uri": SERVED, "destination": destination})
    assert refused.reason == "destination_not_allowed"
    assert refused.reply.endswith("is not an absolute path") and refused.reply.startswith("destination ")
    assert refused.log.startswith("refused a push to the relative local path ")


def test_the_relative_path_check_runs_before_the_allow_list_and_the_files():
    refused = plan({"uri": "/elsewhere/b.dat", "destination": "rel/"}, allowed=("file:///data/",))
    assert refused.log.startswith("refused a push to the relative local path")


def test_a_destination_outside_allowed_destinations_is_refused_without_its_credentials():
    refused = plan({"uri": SERVED, "destination": "ftp://user:secret@elsewhere.example/in/"},
                   allowed=("file:///data/in/",))
    assert refused == Refusal("destination ftp://elsewhere.example/in/ not allowed", "destination_not_allowed",
                              "refused a push to ftp://elsewhere.example/in/ (not in allowed_destinations)")
    assert "secret" not in refused.reply + refused.log


def test_an_entry_path_leaving_the_allowed_destination_is_refused_and_named_in_the_log():
    refused = plan({"uri": SERVED, "path": "../../etc/passwd", "destination": "file:///data/in/"},
                   allowed=("file:///data/in/",))
    assert refused.reason == "destination_not_allowed"
    assert refused.log == ("refused a push to file:///data/in/ with path '../../etc/passwd' "
                           "(not in allowed_destinations)")


def test_an_allowed_destination_is_planned():
    result = plan({"uri": SERVED, "destination": "file:///data/in/sub/"}, allowed=("file:///data/in/",))
    assert isinstance(result, PushPlan)


@pytest.mark.parametrize("reason, said", [("not_announced", "not announced"), ("outside_origin", "outside origin"),
                                          ("pattern_mismatch", "pattern mismatch")])
def test_a_file_the_chain_must_not_serve_is_refused_with_its_reason(reason, said):
    refused = plan({"uri": "/data/out/b.dat", "destination": "file:///in/"}, refusal=lambda path: reason)
    assert refused == Refusal("/data/out/b.dat not reachable", reason,
                              f"refused a push request for /data/out/b.dat ({said})")


def test_a_refused_file_among_several_refuses_the_whole_push_before_any_transfer():
    data = {"dataset": [{"uri": SERVED, "uid": "a"}, {"uri": "/data/out/b.dat", "uid": "b"}],
            "destination": "file:///in/"}
    refused = plan(data)
    assert isinstance(refused, Refusal) and refused.reason == "not_announced"
    assert refused.reply == "/data/out/b.dat not reachable"


def test_only_the_path_of_a_uri_is_looked_up():
    asked = []
    plan({"uri": f"ssh://host{SERVED}", "destination": "file:///in/"}, refusal=lambda p: asked.append(p))
    assert asked == [SERVED]


def test_a_long_refused_path_is_shortened_in_reply_and_log():
    long_path = "/data/" + "x" * 5000
    refused = plan({"uri": long_path, "destination": "file:///in/"}, refusal=lambda path: "not_announced")
    assert len(refused.reply) < 1000 and len(refused.log) < 1000
    assert refused.reply == f"{messaging.shorten(long_path)} not reachable"


def test_a_plan_names_each_file_its_target_and_the_reply():
    data = {"uri": SERVED, "uid": "a.dat", "destination": "ftp://user:pw@host.example:2121/in",
            "backup_targets": ["b1"]}
    result = plan(data)
    assert result == PushPlan(
        items=(PushItem(SERVED, "ftp://user:pw@host.example:2121/in/", None, "ftp://host.example/in/"),),
        backup_targets=["b1"], reply_type="file",
        reply_data={"uri": SERVED, "uid": "a.dat", "destination": "ftp://host.example/in",
                    "backup_targets": ["b1"]})


def test_with_a_path_the_destination_names_the_file_and_the_reply_includes_it():
    data = {"uri": SERVED, "path": "sub/a.dat", "destination": "file:///in"}
    result = plan(data)
    assert result.items == (PushItem(SERVED, "file:///in", "sub/a.dat", "file:///in"),)
    assert result.reply_data["destination"] == "file:///in/sub/a.dat"
    assert result.backup_targets is None


def test_a_dataset_plans_every_file_in_order_with_its_own_path():
    data = {"dataset": [{"uri": SERVED, "uid": "a"}, {"uri": SERVED, "uid": "b", "path": "x/b"}],
            "destination": "file:///in/"}
    result = plan(data)
    assert [(i.path, i.destination, i.rel_path) for i in result.items] == [
        (SERVED, "file:///in/", None), (SERVED, "file:///in/", "x/b")]
    assert result.reply_type == "dataset"


def test_the_reply_type_follows_the_data_else_the_request():
    assert reply_type({"uri": "x"}, "push") == "file"
    assert reply_type({"dataset": []}, "push") == "dataset"
    assert reply_type({"collection": []}, "push") == "collection"
    assert reply_type({"other": 1}, "ack") == "ack"
    result = plan({"collection": [{"dataset": [{"uri": SERVED}]}], "destination": "file:///in/"})
    assert result.reply_type == "collection"


def test_push_directory():
    assert push_directory("file:///in", None) == "file:///in/"
    assert push_directory("file:///in/", None) == "file:///in/"
    assert push_directory("ftp://host", None) == "ftp://host"
    assert push_directory("file:///in", "a.dat") == "file:///in"


def test_clean_destination_and_push_reply_data():
    assert clean_destination({"destination": "ftp://u:p@h:21/x?q=1", "a": 1}) == {"destination": "ftp://h/x", "a": 1}
    assert clean_destination({"destination": 3}) == {"destination": 3}
    assert clean_destination({"destination": "ftp://u:p@h/x"}, "given") == {"destination": "given"}
    assert push_reply_data({"destination": "ftp://u:p@h/x/", "path": "a/b"}) == {"destination": "ftp://h/x/a/b",
                                                                                "path": "a/b"}
    assert push_reply_data({"destination": "ftp://h/x/", "path": ""})["destination"] == "ftp://h/x/"


def test_path_refusal_of_an_ack():
    assert path_refusal("ack", "/p", "outside_origin") == Refusal("/p not reachable", "outside_origin",
                                                                  "refused a ack request for /p (outside origin)")


def test_catch_up_window():
    assert catch_up_window({}) == (0.0, 10_000)
    assert catch_up_window({"since": 12, "max_count": 5}) == (12.0, 5)
    assert catch_up_window({"since": None, "max_count": -3}) == (0.0, 0)
    assert catch_up_window({"max_count": 10 ** 9}) == (0.0, 10_000)
    when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert catch_up_window({"since": when}) == (when.timestamp(), 10_000)


@pytest.mark.parametrize("catch_up, field", [({"since": "yesterday"}, "catch_up.since"),
                                             ({"since": [1]}, "catch_up.since"),
                                             ({"since": 10 ** 400}, "catch_up.since"),
                                             ({"max_count": "x"}, "catch_up.max_count"),
                                             ({"max_count": float("inf")}, "catch_up.max_count")])
def test_catch_up_window_names_the_bad_field(catch_up, field):
    with pytest.raises(BadRequest, match=field):
        catch_up_window(catch_up)
