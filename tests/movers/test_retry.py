"""Error classification and bounded retries (pure logic)."""

import errno
import threading

import pytest

from trollmoves.errors import PermanentTransferError, TransientTransferError
from trollmoves.movers.retry import RetryPolicy, classify, with_retries


@pytest.mark.parametrize(("exc", "kind"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), TransientTransferError),
    (ConnectionResetError(errno.ECONNRESET, "reset"), TransientTransferError),
    (TimeoutError("timed out"), TransientTransferError),
    (OSError(errno.ENOSPC, "No space left on device"), PermanentTransferError),
    (PermissionError(errno.EACCES, "Permission denied"), PermanentTransferError),
    (FileNotFoundError(errno.ENOENT, "No such file"), PermanentTransferError),
    (EOFError(), TransientTransferError),
    (TypeError("bug"), PermanentTransferError),
])
def test_classify(exc, kind):
    error = classify(exc, "ftp://user@host/x")
    assert type(error) is kind and error.cause is exc and error.destination == "ftp://user@host/x"


def test_classify_redacts_urls_in_messages():
    error = classify(OSError("cannot reach sftp://me:hunter2@host/"), "sftp://me@host/")
    assert "hunter2" not in str(error)


def test_backoff_grows_and_is_capped():
    assert list(RetryPolicy(retries=4, delay=1, backoff=3, delay_max=5).delays()) == [1, 3, 5, 5]


def test_transient_errors_are_retried_a_bounded_number_of_times():
    calls = []

    def attempt(number):
        calls.append(number)
        raise TransientTransferError("down")

    with pytest.raises(TransientTransferError):
        with_retries(attempt, RetryPolicy(retries=3, delay=0), "x")
    assert calls == [1, 2, 3, 4]


def test_permanent_errors_are_not_retried_and_success_stops():
    calls = []

    def attempt(number):
        calls.append(number)
        if number == 2:
            raise PermanentTransferError("denied")
        raise TransientTransferError("down")

    with pytest.raises(PermanentTransferError):
        with_retries(attempt, RetryPolicy(retries=5, delay=0), "x")
    assert calls == [1, 2]
    assert with_retries(lambda n: "ok" if n == 2 else (_ for _ in ()).throw(TransientTransferError("x")),
                        RetryPolicy(retries=5, delay=0), "x") == "ok"


def test_cancel_stops_waiting():
    cancel = threading.Event()
    cancel.set()
    calls = []

    def attempt(number):
        calls.append(number)
        raise TransientTransferError("down")

    with pytest.raises(TransientTransferError):
        with_retries(attempt, RetryPolicy(retries=5, delay=3600), "x", cancel)
    assert calls == [1]
