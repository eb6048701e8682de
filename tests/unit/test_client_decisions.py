"""The client's decisions, branch by branch, without sockets, threads or a state store."""

import pytest

from trollmoves.client_decisions import (
    RETRY_DELAY_CAP,
    AnnouncementAction,
    AnnouncementDecision,
    DelayedStartAction,
    DelayedStartDecision,
    MessageKind,
    RetryAction,
    RetryDecision,
    beat_interval,
    classify_message,
    confinement_error,
    decide_announcement,
    decide_delayed_start,
    decide_retry,
    refusal_reason,
)
from trollmoves.confine import ConfinementError

# --------------------------------------------------------------------------------------------------
# classify_message
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("has_uids", [True, False])
@pytest.mark.parametrize("has_request_address", [True, False])
def test_a_beat_is_a_beat_whatever_it_carries(has_uids, has_request_address):
    assert classify_message("beat", has_uids, has_request_address) is MessageKind.BEAT


@pytest.mark.parametrize("message_type", ["file", "dataset", "collection", "push", "ack", "info", "del"])
def test_a_message_naming_no_file_is_dropped(message_type):
    assert classify_message(message_type, False, True) is MessageKind.NO_FILES


@pytest.mark.parametrize("has_request_address", [True, False])
def test_a_push_is_another_client_pushing(has_request_address):
    assert classify_message("push", True, has_request_address) is MessageKind.OTHER_CLIENT_PUSHING


@pytest.mark.parametrize("has_request_address", [True, False])
def test_an_ack_is_another_client_done(has_request_address):
    assert classify_message("ack", True, has_request_address) is MessageKind.OTHER_CLIENT_DONE


@pytest.mark.parametrize("message_type", ["file", "dataset", "collection"])
def test_a_final_message_without_request_address_is_another_client_done(message_type):
    assert classify_message(message_type, True, False) is MessageKind.OTHER_CLIENT_DONE


@pytest.mark.parametrize("message_type", ["file", "dataset", "collection"])
def test_an_announcement_with_request_address_is_considered(message_type):
    assert classify_message(message_type, True, True) is MessageKind.ANNOUNCEMENT


@pytest.mark.parametrize("message_type", ["info", "del", "err", "unknown", ""])
def test_other_types_naming_files_are_ignored(message_type):
    assert classify_message(message_type, True, True) is MessageKind.IGNORE
    assert classify_message(message_type, True, False) is MessageKind.IGNORE


@pytest.mark.parametrize("data, expected", [
    ({}, 30.0), ({"min_interval": 0}, 30.0), ({"min_interval": None}, 30.0), ({"min_interval": 5}, 5.0),
    ({"min_interval": "2.5"}, 2.5), ({"min_interval": "often"}, None), ({"min_interval": [1]}, None),
])
def test_beat_interval(data, expected):
    assert beat_interval(data) == expected


# --------------------------------------------------------------------------------------------------
# decide_announcement
# --------------------------------------------------------------------------------------------------

def decide(**overrides):
    arguments = {"confined": True, "request_address": "server:9010", "handled": False, "pending_sources": None,
                 "from_catch_up": False, "processing_delay": 0.0}
    arguments.update(overrides)
    return decide_announcement(**arguments)


def test_a_path_escape_is_refused_before_anything_else():
    decision = decide(confined=False, request_address=None, handled=True, pending_sources=["server:9010"])
    assert decision == AnnouncementDecision(AnnouncementAction.REFUSE)


def test_an_unusable_request_address_is_rejected_before_the_state_is_looked_at():
    decision = decide(request_address=None, handled=True, pending_sources=["other:1"])
    assert decision == AnnouncementDecision(AnnouncementAction.REJECT_REQUEST_ADDRESS)


def test_a_handled_file_is_a_duplicate_acked_when_announced_live():
    assert decide(handled=True) == AnnouncementDecision(AnnouncementAction.DUPLICATE, ack=True)
    assert decide(handled=True, pending_sources=["other:1"]).action is AnnouncementAction.DUPLICATE


def test_a_handled_file_found_by_a_catch_up_is_not_acked():
    assert decide(handled=True, from_catch_up=True) == AnnouncementDecision(AnnouncementAction.DUPLICATE, ack=False)


def test_a_pending_file_announced_by_another_server_gains_a_source():
    decision = decide(pending_sources=["other:1", None])
    assert decision == AnnouncementDecision(AnnouncementAction.ADD_SOURCE)


def test_a_pending_file_announced_again_by_one_of_its_sources_is_already_pending():
    assert decide(pending_sources=["other:1", "server:9010"]) == AnnouncementDecision(
        AnnouncementAction.ALREADY_PENDING)


def test_a_new_file_is_requested_now():
    assert decide() == AnnouncementDecision(AnnouncementAction.REQUEST, delay=0.0, caught_up=False)
    assert decide(processing_delay=None).delay == 0.0


def test_a_new_file_is_requested_after_the_processing_delay_of_a_hot_spare():
    assert decide(processing_delay=2.5) == AnnouncementDecision(AnnouncementAction.REQUEST, delay=2.5)


def test_a_new_file_found_by_a_catch_up_is_counted_as_caught_up():
    assert decide(from_catch_up=True) == AnnouncementDecision(AnnouncementAction.REQUEST, caught_up=True)


def test_decisions_are_frozen():
    decision = decide()
    with pytest.raises(AttributeError):
        decision.action = AnnouncementAction.REFUSE


def test_an_announcement_within_the_destination_is_confined():
    data = {"uid": "sub/a.dat", "platform_name": "NOAA19", "dataset": [{"uid": "b.dat"}]}
    assert confinement_error(data, ("platform_name",)) is None


@pytest.mark.parametrize("data", [
    {"uid": "../a.dat", "platform_name": "NOAA19"},
    {"uid": "/etc/passwd", "platform_name": "NOAA19"},
    {"uid": "a.dat", "dataset": [{"uid": "../../b.dat"}], "platform_name": "NOAA19"},
    {"uid": "a.dat", "platform_name": "../../etc"},
])
def test_an_announcement_escaping_the_destination_is_not_confined(data):
    assert isinstance(confinement_error(data, ("platform_name",)), ConfinementError)


# --------------------------------------------------------------------------------------------------
# refusal_reason
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply_type", ["file", "dataset", "collection", "ack", "push"])
def test_a_reply_other_than_an_error_is_no_refusal(reply_type):
    assert refusal_reason(reply_type, "not reachable") is None


@pytest.mark.parametrize("reply_type", ["err", "error", "unknown"])
def test_an_unreachable_destination_is_refused_any_other_error_is_an_error(reply_type):
    assert refusal_reason(reply_type, "destination ftp://host/ not reachable: timed out") == "refused"
    assert refusal_reason(reply_type, {"text": "No space left on device"}) == "error"
    assert refusal_reason(reply_type, None) == "error"


# --------------------------------------------------------------------------------------------------
# decide_delayed_start
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pending, cancelled", [(False, False), (True, True)])
def test_a_delayed_start_is_skipped_when_done_elsewhere_or_cancelled(pending, cancelled):
    decision = decide_delayed_start(pending=pending, cancelled=cancelled, other_client_push_age=1.0, patience=30.0)
    assert decision == DelayedStartDecision(DelayedStartAction.SKIP)


def test_a_delayed_start_starts_when_no_other_client_pushed():
    decision = decide_delayed_start(pending=True, cancelled=False, other_client_push_age=None, patience=30.0)
    assert decision == DelayedStartDecision(DelayedStartAction.START)


def test_a_delayed_start_waits_out_the_patience_while_the_primary_pushes():
    decision = decide_delayed_start(pending=True, cancelled=False, other_client_push_age=10.0, patience=30.0)
    assert decision == DelayedStartDecision(DelayedStartAction.WAIT, 20.0)


def test_a_delayed_start_takes_over_an_unconfirmed_push():
    for age in (30.0, 31.0):
        decision = decide_delayed_start(pending=True, cancelled=False, other_client_push_age=age, patience=30.0)
        assert decision == DelayedStartDecision(DelayedStartAction.TAKE_OVER)


# --------------------------------------------------------------------------------------------------
# decide_retry
# --------------------------------------------------------------------------------------------------

def retry(**overrides):
    arguments = {"attempts": 1, "max_attempts": 6, "given_up": False, "age": 10.0, "max_age": 86400.0,
                 "given_up_interval": 600.0}
    arguments.update(overrides)
    return decide_retry(**arguments)


@pytest.mark.parametrize("attempts, delay", [(1, 2.0), (2, 4.0), (5, 32.0)])
def test_fast_retries_back_off_exponentially(attempts, delay):
    assert retry(attempts=attempts) == RetryDecision(RetryAction.RETRY, delay)


def test_fast_retries_wait_at_most_the_cap():
    assert retry(attempts=12, max_attempts=20) == RetryDecision(RetryAction.RETRY, RETRY_DELAY_CAP)
    assert RETRY_DELAY_CAP == 300.0


def test_fast_retries_ignore_the_age():
    assert retry(attempts=1, age=10**9).action is RetryAction.RETRY


def test_fast_retries_are_given_up_after_max_attempts():
    assert retry(attempts=6) == RetryDecision(RetryAction.GIVE_UP_FAST_RETRIES, 600.0)
    assert retry(attempts=7) == RetryDecision(RetryAction.GIVE_UP_FAST_RETRIES, 600.0)


def test_a_file_given_up_on_is_retried_slowly():
    assert retry(attempts=8, given_up=True) == RetryDecision(RetryAction.RETRY_SLOWLY, 600.0)


@pytest.mark.parametrize("interval", [0, 0.0, None])
def test_without_a_given_up_interval_the_next_request_waits_for_a_restart(interval):
    assert retry(attempts=6, given_up_interval=interval) == RetryDecision(RetryAction.GIVE_UP_FAST_RETRIES, None)


@pytest.mark.parametrize("given_up", [False, True])
def test_a_file_older_than_the_state_store_keeps_anything_expires(given_up):
    assert retry(attempts=6, given_up=given_up, age=86400.0) == RetryDecision(RetryAction.EXPIRED)
    assert retry(attempts=6, given_up=given_up, age=86399.0).action is not RetryAction.EXPIRED
